// App Service authentication (Easy Auth) with Microsoft Entra ID in front of the HTTP API.
//
// Always deployed, switched by `enabled`: a deployment never touches a resource that left the
// template, so deploying this only when Easy Auth is on would leave it on after turning it off.
//
// Easy Auth validates the Entra ID token a request carries and hands the app the caller in
// X-MS-CLIENT-PRINCIPAL; App Service strips that header from external requests, so the app can
// trust it (EASY_AUTH_ENABLED). The platform turns no request away (AllowAnonymous): the app
// authenticates every /api request itself (shared/edges/auth.py answers 401 without a caller), and the
// Event Grid webhook (/runtime/webhooks/EventGrid, which keeps its Functions system key) is
// never gated, whatever casing a caller uses. No excludedPaths: how they match case is not
// documented.

param functionAppName string

@description('Turn Easy Auth on (platform.enabled). Off: the platform does no authentication.')
param enabled bool

@description('OpenID issuer, e.g. https://login.microsoftonline.com/<tenant>/v2.0.')
param openIdIssuer string

@description('Application (client) id of the app registration.')
param clientId string

@description('Accepted token audiences (e.g. api://<client id>).')
param allowedAudiences array

var entraId = {
  azureActiveDirectory: {
    enabled: true
    registration: {
      openIdIssuer: openIdIssuer
      clientId: clientId
    }
    validation: {
      allowedAudiences: allowedAudiences
    }
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: enabled
    }
    globalValidation: {
      requireAuthentication: false
      unauthenticatedClientAction: 'AllowAnonymous'
    }
    httpSettings: {
      requireHttps: true
    }
    // Off: no provider at all, so no empty issuer or client id is ever sent.
    identityProviders: enabled ? entraId : {}
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}
