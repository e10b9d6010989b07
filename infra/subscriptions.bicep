// One environment's two Event Grid subscriptions on the ACS system topic, deployed on their own
// into the ACS resource group after the code is published (infra/deploy-subscriptions.sh, run by
// azd's postdeploy hook): an AzureFunction destination must name a function that is already
// indexed. The same step as Microsoft's Flex Consumption + Event Grid quickstart, as a template:
// deploying it again changes nothing and restarts nothing, so it runs after every deploy.
//
// The names come from the script and are unique per azd environment: two environments on one
// ACS resource each keep their own pair instead of taking over the other's.
targetScope = 'resourceGroup'

@description('Name of the chat subscription (unique per environment on this topic).')
@minLength(3)
@maxLength(64)
param chatSubscriptionName string

@description('Name of the calls subscription (unique per environment on this topic).')
@minLength(3)
@maxLength(64)
param callsSubscriptionName string

@description('Name of the Event Grid system topic of the ACS resource.')
param systemTopicName string

@description('Resource id of the Function App.')
param functionAppId string

@description('Resource id of the storage account that receives dead-lettered events.')
param deadLetterStorageId string

@description('Blob container that receives dead-lettered events.')
param deadLetterContainerName string

@description('Chat: delivery attempts before an event is dead-lettered (Event Grid: 1-30).')
@minValue(1)
@maxValue(30)
param chatMaxDeliveryAttempts int = 30

@description('Chat: minutes Event Grid keeps retrying an event (Event Grid: 1-1440).')
@minValue(1)
@maxValue(1440)
param chatEventTimeToLiveInMinutes int = 1440

@description('Calls: delivery attempts. A call rings for about 20 s; a late VoIP push rings a call that is over.')
@minValue(1)
@maxValue(3)
param callMaxDeliveryAttempts int = 2

@description('Calls: minutes Event Grid keeps retrying an IncomingCall event.')
@minValue(1)
@maxValue(2)
param callEventTimeToLiveInMinutes int = 1

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: systemTopicName
}

// One event per invocation: a failed invocation makes the host answer 500 for the whole batch,
// and Event Grid then redelivers every event in it.
resource chat 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: systemTopic
  name: chatSubscriptionName
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/on_chat_event'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      // Exactly shared.domain.events.CHAT_EVENT_TYPES (tests/infra/test_bicep.py checks).
      includedEventTypes: [
        'Microsoft.Communication.ChatMessageReceived'
        'Microsoft.Communication.ChatMessageEdited'
        'Microsoft.Communication.ChatMessageDeleted'
        'Microsoft.Communication.ChatThreadCreatedWithUser'
        'Microsoft.Communication.ChatThreadWithUserDeleted'
        'Microsoft.Communication.ChatThreadPropertiesUpdatedPerUser'
        'Microsoft.Communication.ChatParticipantAddedToThreadWithUser'
        'Microsoft.Communication.ChatParticipantRemovedFromThreadWithUser'
      ]
      // Only ACS users have devices here (not phone numbers or Teams users). The prefixes are
      // shared.domain.events.ACS_USER_PREFIXES: public cloud, the older spool form, GCC High, DoD.
      advancedFilters: [
        {
          operatorType: 'StringBeginsWith'
          key: 'data.recipientCommunicationIdentifier.rawId'
          values: [
            '8:acs:'
            '8:spool:'
            '8:gcch-acs:'
            '8:dod-acs:'
          ]
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: chatMaxDeliveryAttempts
      eventTimeToLiveInMinutes: chatEventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

// IncomingCall names the callee in data.to, not in recipientCommunicationIdentifier. A call is
// worth ringing for seconds only: a short time-to-live and few attempts, dead-lettered for the
// record (never replayed).
resource calls 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: systemTopic
  name: callsSubscriptionName
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/on_call_event'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      // Exactly shared.domain.events.CALL_EVENT_TYPES.
      includedEventTypes: [
        'Microsoft.Communication.IncomingCall'
      ]
      advancedFilters: [
        {
          operatorType: 'StringBeginsWith'
          key: 'data.to.rawId'
          values: [
            '8:acs:'
            '8:spool:'
            '8:gcch-acs:'
            '8:dod-acs:'
          ]
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: callMaxDeliveryAttempts
      eventTimeToLiveInMinutes: callEventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}
