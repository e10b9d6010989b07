// Deployed into the resource group of the existing Azure Communication Services resource: the
// Event Grid system topic of that resource (with an identity for dead-lettering) and the app's
// access to ACS (the Identity API, reached with the app's managed identity via ACS_ENDPOINT).
// The topic is shared by every environment on the ACS resource; each environment's event
// subscriptions are its own (infra/subscriptions.bicep).

@description('Name of the existing Azure Communication Services resource.')
param acsName string

@description('Name of the Event Grid system topic for the ACS resource. A resource has at most one system topic: if one exists already, pass its name and it is adopted (an identity is added).')
param systemTopicName string

@description('Principal id of the Function App system-assigned identity.')
param functionPrincipalId string

@description('Role the app holds on the ACS resource to create identities and issue tokens with Entra ID. Default: Contributor, scoped to this one ACS resource.')
param acsRoleDefinitionId string = 'b24988ac-6180-42a0-ab88-20f7382dd24c'

@description('Tags of the topic: no environment tag, the topic is shared.')
param tags object

resource acs 'Microsoft.Communication/communicationServices@2023-04-01' existing = {
  name: acsName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: systemTopicName
  location: 'global'
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: acs.id
    topicType: 'Microsoft.Communication.CommunicationServices'
  }
}

resource functionAcsAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(acs.id, functionPrincipalId, acsRoleDefinitionId)
  scope: acs
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acsRoleDefinitionId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output systemTopicName string = systemTopic.name
output systemTopicPrincipalId string = systemTopic.identity.principalId
