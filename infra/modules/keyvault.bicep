// Key Vault (RBAC authorization) for the app's secrets: the APNs credentials (APNS_APPS) and the
// key-encryption keys (KEY_ENCRYPTION_KEYS). The deployment never writes secret values: operators
// set them (docs/operations.md), so a re-deployment can never roll a rotated secret back.
// The app reads them through Key Vault references, resolved by the platform with its identity.

param name string
param location string
param tags object

@description('Days a deleted vault or secret can be recovered (7-90).')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
