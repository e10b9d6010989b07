// App Service authentication (Easy Auth) with Microsoft Entra ID in front of the HTTP API.
// Every /api request must carry a token Easy Auth accepts, so X-MS-CLIENT-PRINCIPAL reaching the
// app always comes from the platform. The Event Grid webhook authenticates with the Functions
// system key instead and is left out.

param functionAppName string

@description('OpenID issuer, e.g. https://login.microsoftonline.com/<tenant>/v2.0.')
param openIdIssuer string

@description('Application (client) id of the app registration.')
param clientId string

@description('Accepted token audiences (e.g. api://<client id>).')
param allowedAudiences array

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/runtime/webhooks/eventgrid'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
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
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}
