// pushrelay on Azure: a Flex Consumption Function App (Python 3.11, system-assigned identity)
// with storage (shared keys off), Key Vault (RBAC) for secrets, Application Insights, and the
// Event Grid system topic of an existing Azure Communication Services resource.
//
// The Event Grid subscriptions are not here: an AzureFunction destination must name a function
// that is already indexed, so they are their own small deployment (infra/subscriptions.bicep),
// made after the code is published by infra/deploy-subscriptions.sh (azd's postdeploy hook).
// Every parameter is mapped to an azd environment value in main.parameters.json.
targetScope = 'resourceGroup'

@description('Name of the environment (azd environment name); part of every resource name.')
@minLength(1)
@maxLength(40)
param environmentName string

@description('Region of the app and its resources. Flex Consumption must be offered there: az functionapp list-flexconsumption-locations (the preprovision hook checks).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string = resourceGroup().location

@description('Name of the existing Azure Communication Services resource.')
param acsName string

@description('Resource group of the ACS resource. Empty: this resource group.')
param acsResourceGroupName string = ''

@description('Name of the ACS Event Grid system topic. Empty: <acsName>-events. An ACS resource has at most one system topic: pass the existing one to adopt it.')
param systemTopicName string = ''

@description('Principal id of the deployer (azd fills AZURE_PRINCIPAL_ID); gets Key Vault Secrets Officer. Empty: none.')
param principalId string = ''

@description('Type of the deployer principal: azd fills AZURE_PRINCIPAL_TYPE (User, or ServicePrincipal when signed in with a client id). A role assignment whose principalType does not match fails with UnmatchedPrincipalType.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Prefix of every table name (TABLE_PREFIX; letters and digits).')
param tablePrefix string = 'pushrelay'

@description('Chat preview mode (PREVIEW_MODE).')
@allowed([
  'encrypted'
  'plaintext'
  'none'
])
param previewMode string = 'encrypted'

@description('NCRONTAB schedule of the renewal sweep (RENEWAL_SCHEDULE; six fields, seconds first).')
param renewalSchedule string = '0 */5 * * * *'

@description('NCRONTAB schedule of the purge of old records (PURGE_SCHEDULE).')
param purgeSchedule string = '0 17 3 * * *'

@description('Expected iss of the app identity provider JWTs (AUTH_JWT_ISSUER).')
param authJwtIssuer string = ''

@description('Expected aud of the app identity provider JWTs (AUTH_JWT_AUDIENCE).')
param authJwtAudience string = ''

@description('JWKS URL of the app identity provider (AUTH_JWKS_URL).')
param authJwksUrl string = ''

@description('Who may read the delivery log over HTTP, comma-separated: ISSUER SUBJECT, or a bare SUBJECT at AUTH_JWT_ISSUER (DELIVERY_LOG_ADMINS).')
param deliveryLogAdmins string = ''

@description('Turn on App Service authentication (Easy Auth) with Microsoft Entra ID; sets EASY_AUTH_ENABLED=true.')
param easyAuthEnabled bool = false

@description('Easy Auth: OpenID issuer, e.g. https://login.microsoftonline.com/<tenant>/v2.0.')
param easyAuthOpenIdIssuer string = ''

@description('Easy Auth: application (client) id of the app registration.')
param easyAuthClientId string = ''

@description('Easy Auth: accepted token audiences (e.g. api://<client id>).')
param easyAuthAllowedAudiences array = []

@description('Flex Consumption: most instances the app scales out to (1-1000).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Flex Consumption: memory per instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Log Analytics daily ingestion cap in GB; -1 for none.')
param logDailyQuotaGb int = -1

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = {
  'azd-env-name': environmentName
  app: 'pushrelay'
}
// The ACS system topic is shared by every environment on that ACS resource (a resource has at
// most one), so it carries no environment's tag.
var sharedTags = {
  app: 'pushrelay'
}
var storageAccountName = 'st${resourceToken}'
var keyVaultName = 'kv-${resourceToken}'
var functionAppName = 'func-${resourceToken}'
var planName = 'plan-${resourceToken}'
var appInsightsName = 'appi-${resourceToken}'
var logAnalyticsName = 'log-${resourceToken}'
var acsGroupName = empty(acsResourceGroupName) ? resourceGroup().name : acsResourceGroupName
var eventGridTopicName = empty(systemTopicName) ? '${acsName}-events' : systemTopicName
var deploymentContainerName = 'app-package'
var deadLetterContainerName = 'eventgrid-deadletter'
var renewalQueueName = 'renewal-shards'
var apnsAppsSecretName = 'apns-apps'
var keyEncryptionKeysSecretName = 'key-encryption-keys'

// Secrets are referenced without a version: the app follows the latest version (rotation).
var apnsAppsReference = '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.uri}secrets/${apnsAppsSecretName}/)'
var keyEncryptionKeysReference = '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.uri}secrets/${keyEncryptionKeysSecretName}/)'

resource acs 'Microsoft.Communication/communicationServices@2023-04-01' existing = {
  name: acsName
  scope: resourceGroup(acsGroupName)
}

module storage 'modules/storage.bicep' = {
  name: 'storage-${resourceToken}'
  params: {
    name: storageAccountName
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
    renewalQueueName: renewalQueueName
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring-${resourceToken}'
  params: {
    logAnalyticsName: logAnalyticsName
    appInsightsName: appInsightsName
    location: location
    tags: tags
    dailyQuotaGb: logDailyQuotaGb
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault-${resourceToken}'
  params: {
    name: keyVaultName
    location: location
    tags: tags
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  tags: union(tags, {
    'azd-service-name': 'relay'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      // Flex Consumption rejects several site properties other plans take (ftpsState: ARM error
      // 51021; see the Flex Consumption deprecations in the Functions app settings reference)
      // and hides http20Enabled; like Microsoft's Flex samples, none of them is set.
      minTlsVersion: '1.2'
      // Flex Consumption: no FUNCTIONS_WORKER_RUNTIME or FUNCTIONS_EXTENSION_VERSION here.
      appSettings: [
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storage.outputs.name
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: monitoring.outputs.connectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'Authorization=AAD'
        }
        {
          // The table endpoint URL, reached with the app identity: no key in any setting.
          name: 'STORAGE_CONNECTION'
          value: storage.outputs.tableEndpoint
        }
        {
          name: 'TABLE_PREFIX'
          value: tablePrefix
        }
        {
          name: 'RENEWAL_QUEUE'
          value: renewalQueueName
        }
        {
          name: 'RENEWAL_SCHEDULE'
          value: renewalSchedule
        }
        {
          name: 'PURGE_SCHEDULE'
          value: purgeSchedule
        }
        {
          name: 'APNS_APPS'
          value: apnsAppsReference
        }
        {
          name: 'KEY_ENCRYPTION_KEYS'
          value: keyEncryptionKeysReference
        }
        {
          name: 'PREVIEW_MODE'
          value: previewMode
        }
        {
          name: 'ACS_ENDPOINT'
          value: 'https://${acs.properties.hostName}'
        }
        {
          // Events whose topic is not this ACS resource are acknowledged and dropped.
          name: 'ACS_RESOURCE_ID'
          value: acs.id
        }
        {
          name: 'AUTH_JWT_ISSUER'
          value: authJwtIssuer
        }
        {
          name: 'AUTH_JWT_AUDIENCE'
          value: authJwtAudience
        }
        {
          name: 'AUTH_JWKS_URL'
          value: authJwksUrl
        }
        {
          name: 'DELIVERY_LOG_ADMINS'
          value: deliveryLogAdmins
        }
        {
          name: 'EASY_AUTH_ENABLED'
          value: easyAuthEnabled ? 'true' : 'false'
        }
        {
          // The app's own azure-functions (CloudEvent support) rather than the worker's copy.
          name: 'PYTHON_ISOLATE_WORKER_DEPENDENCIES'
          value: '1'
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.outputs.blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Always deployed, switched by platform.enabled: a deployment never touches a resource that left
// the template, so an `if (easyAuthEnabled)` module would leave Easy Auth on after turning it off.
// EASY_AUTH_ENABLED above follows the same parameter.
module easyAuth 'modules/easy-auth.bicep' = {
  name: 'easy-auth-${resourceToken}'
  params: {
    functionAppName: functionApp.name
    enabled: easyAuthEnabled
    openIdIssuer: easyAuthOpenIdIssuer
    clientId: easyAuthClientId
    allowedAudiences: easyAuthAllowedAudiences
  }
}

module acsEvents 'modules/acs-events.bicep' = {
  name: 'acs-events-${resourceToken}'
  scope: resourceGroup(acsGroupName)
  params: {
    acsName: acsName
    systemTopicName: eventGridTopicName
    functionPrincipalId: functionApp.identity.principalId
    tags: sharedTags
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles-${resourceToken}'
  params: {
    functionPrincipalId: functionApp.identity.principalId
    eventGridPrincipalId: acsEvents.outputs.systemTopicPrincipalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyVault.outputs.name
  }
}

// Outputs go to the azd environment, and `azd down` deletes every one of them from it again: none
// may carry a value the operator sets (AZURE_RESOURCE_GROUP, ACS_RESOURCE_GROUP, ...).
output AZURE_FUNCTION_APP_NAME string = functionApp.name
output AZURE_FUNCTION_APP_ID string = functionApp.id
output AZURE_FUNCTION_PRINCIPAL_ID string = functionApp.identity.principalId
output AZURE_DEPLOYER_PRINCIPAL_ID string = principalId
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_ACCOUNT_ID string = storage.outputs.id
output AZURE_DEAD_LETTER_CONTAINER string = deadLetterContainerName
output AZURE_APPINSIGHTS_NAME string = monitoring.outputs.appInsightsName
output AZURE_LOG_ANALYTICS_NAME string = monitoring.outputs.logAnalyticsName
output AZURE_EVENTGRID_SYSTEM_TOPIC string = acsEvents.outputs.systemTopicName
output AZURE_ACS_RESOURCE_GROUP string = acsGroupName
output AZURE_ACS_RESOURCE_ID string = acs.id
output APNS_APPS_SECRET_NAME string = apnsAppsSecretName
output KEY_ENCRYPTION_KEYS_SECRET_NAME string = keyEncryptionKeysSecretName
