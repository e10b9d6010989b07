// pushrelay on Azure: a Flex Consumption Function App (Python 3.11, system-assigned identity)
// with storage (shared keys off), Key Vault (RBAC) for secrets, Application Insights, and the
// Event Grid system topic of an existing Azure Communication Services resource.
//
// Two passes (docs/operations.md): deploy with deploySubscriptions=false, publish the code, then
// deploy again with deploySubscriptions=true (infra/deploy-subscriptions.sh does the last step).
targetScope = 'resourceGroup'

@description('Name of the environment (azd environment name); part of every resource name.')
@minLength(1)
@maxLength(40)
param environmentName string

@description('Region of the app and its resources (Flex Consumption must be available there).')
param location string = resourceGroup().location

@description('Name of the existing Azure Communication Services resource.')
param acsName string

@description('Resource group of the ACS resource. Empty: this resource group.')
param acsResourceGroupName string = ''

@description('Name of the ACS Event Grid system topic. Empty: <acsName>-events. An ACS resource has at most one system topic: pass the existing one to adopt it.')
param systemTopicName string = ''

@description('Second pass: create the Event Grid subscriptions. The functions must be published first.')
param deploySubscriptions bool = false

@description('Principal id of the deployer (azd fills AZURE_PRINCIPAL_ID); gets Key Vault Secrets Officer. Empty: none.')
param principalId string = ''

@description('Type of the deployer principal.')
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

@description('Comma-separated caller subjects allowed to read the delivery log (DELIVERY_LOG_ADMINS).')
param deliveryLogAdmins string = ''

@description('Turn on App Service authentication (Easy Auth) with Microsoft Entra ID; sets EASY_AUTH_ENABLED=true.')
param easyAuthEnabled bool = false

@description('Easy Auth: OpenID issuer, e.g. https://login.microsoftonline.com/<tenant>/v2.0.')
param easyAuthOpenIdIssuer string = ''

@description('Easy Auth: application (client) id of the app registration.')
param easyAuthClientId string = ''

@description('Easy Auth: accepted token audiences (e.g. api://<client id>).')
param easyAuthAllowedAudiences array = []

@description('Flex Consumption: most instances the app scales out to.')
@minValue(40)
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
  name: 'storage'
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
  name: 'monitoring'
  params: {
    logAnalyticsName: logAnalyticsName
    appInsightsName: appInsightsName
    location: location
    tags: tags
    dailyQuotaGb: logDailyQuotaGb
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
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
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
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

// Easy Auth validates tokens in front of /api/*; the app then trusts X-MS-CLIENT-PRINCIPAL
// (EASY_AUTH_ENABLED above follows the same parameter).
module easyAuth 'modules/easy-auth.bicep' = if (easyAuthEnabled) {
  name: 'easy-auth'
  params: {
    functionAppName: functionApp.name
    openIdIssuer: easyAuthOpenIdIssuer
    clientId: easyAuthClientId
    allowedAudiences: easyAuthAllowedAudiences
  }
}

module acsEvents 'modules/acs-events.bicep' = {
  name: 'acs-events'
  scope: resourceGroup(acsGroupName)
  params: {
    acsName: acsName
    systemTopicName: eventGridTopicName
    functionPrincipalId: functionApp.identity.principalId
    tags: tags
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
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

module subscriptions 'modules/event-subscriptions.bicep' = if (deploySubscriptions) {
  name: 'event-subscriptions'
  scope: resourceGroup(acsGroupName)
  params: {
    systemTopicName: acsEvents.outputs.systemTopicName
    functionAppId: functionApp.id
    deadLetterStorageId: storage.outputs.id
    deadLetterContainerName: deadLetterContainerName
  }
  dependsOn: [
    roles
  ]
}

output AZURE_FUNCTION_APP_NAME string = functionApp.name
output AZURE_RESOURCE_GROUP string = resourceGroup().name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_DEAD_LETTER_CONTAINER string = deadLetterContainerName
output AZURE_APPINSIGHTS_NAME string = monitoring.outputs.appInsightsName
output AZURE_LOG_ANALYTICS_NAME string = monitoring.outputs.logAnalyticsName
output AZURE_EVENTGRID_SYSTEM_TOPIC string = acsEvents.outputs.systemTopicName
output ACS_RESOURCE_GROUP string = acsGroupName
output APNS_APPS_SECRET_NAME string = apnsAppsSecretName
output KEY_ENCRYPTION_KEYS_SECRET_NAME string = keyEncryptionKeysSecretName
