#!/bin/sh
# The Event Grid step: this environment's two subscriptions (chat, calls) on the ACS system
# topic, deployed on their own (infra/subscriptions.bicep) once the code is published. An
# AzureFunction destination names a function, and Event Grid refuses it until that function is
# indexed, hence the wait. Deploying again changes nothing and restarts nothing, so this runs
# after every deploy (azd's postdeploy hook); nothing is remembered between runs.
#
#   infra/deploy-subscriptions.sh
#       inside an azd environment (the postdeploy hook runs it): the values come from the
#       environment (the outputs of infra/main.bicep, AZURE_ENV_NAME, AZURE_SUBSCRIPTION_ID).
#   infra/deploy-subscriptions.sh --from-deployment RESOURCE_GROUP DEPLOYMENT ENVIRONMENT
#       plain az CLI: the values come from the outputs of deployment DEPLOYMENT of
#       infra/main.bicep in RESOURCE_GROUP, deployed with environmentName=ENVIRONMENT.
#
# Subscriptions are named pushrelay-<environment>-chat and -calls, so environments sharing an
# ACS resource never touch each other's. A subscription of that name that delivers to another
# Function App stops this step: it belongs to another deployment with the same environment name.
set -eu
hook=event-subscriptions
cd "$(dirname "$0")/.."
. infra/hooks/common.sh

# Outputs of an ARM deployment as KEY=value lines. ARM may return output names in another case
# (azd upper-cases them for the same reason), so they are upper-cased here too.
deployment_outputs() {
  az_arm deployment group show --resource-group "$1" --name "$2" \
    --query properties.outputs --output json |
    python3 -c 'import json, sys
for key, out in json.load(sys.stdin).items():
    print(key.upper() + "=" + str(out["value"]))'
}

if [ "${1:-}" = --from-deployment ]; then
  [ "$#" -eq 4 ] || die "usage: $0 --from-deployment RESOURCE_GROUP DEPLOYMENT ENVIRONMENT"
  az_ready || die "the az CLI is missing or not signed in (az login)."
  outputs=$(deployment_outputs "$2" "$3") || die "could not read the outputs of deployment $3 in $2."
  while IFS='=' read -r key value; do
    case $key in
      AZURE_FUNCTION_APP_NAME | AZURE_FUNCTION_APP_ID | AZURE_STORAGE_ACCOUNT_ID | \
        AZURE_DEAD_LETTER_CONTAINER | AZURE_EVENTGRID_SYSTEM_TOPIC | AZURE_ACS_RESOURCE_GROUP)
        eval "$key=\$value"
        ;;
    esac
  done <<OUTPUTS
$outputs
OUTPUTS
  AZURE_RESOURCE_GROUP=$2
  AZURE_ENV_NAME=$4
elif [ "$#" -ne 0 ]; then
  die "usage: $0 [--from-deployment RESOURCE_GROUP DEPLOYMENT ENVIRONMENT]"
fi

: "${AZURE_ENV_NAME:?run inside an azd environment, or pass --from-deployment}"
: "${AZURE_RESOURCE_GROUP:?run inside an azd environment, or pass --from-deployment}"
: "${AZURE_FUNCTION_APP_NAME:?run azd provision first}"
: "${AZURE_FUNCTION_APP_ID:?run azd provision first}"
: "${AZURE_STORAGE_ACCOUNT_ID:?run azd provision first}"
: "${AZURE_DEAD_LETTER_CONTAINER:?run azd provision first}"
: "${AZURE_EVENTGRID_SYSTEM_TOPIC:?run azd provision first}"
: "${AZURE_ACS_RESOURCE_GROUP:?run azd provision first}"

if ! az_ready; then
  die "the az CLI is missing or not signed in, so the Event Grid subscriptions were not" \
    "deployed and the app receives no ACS event. Run az login, then: azd hooks run postdeploy"
fi

topic=$AZURE_EVENTGRID_SYSTEM_TOPIC
acs_group=$AZURE_ACS_RESOURCE_GROUP
app_id=$AZURE_FUNCTION_APP_ID
chat=$(subscription_name chat)
calls=$(subscription_name calls)

# Resource id of the Function App subscription $1 delivers to, or nothing when it does not exist.
# (The CLI shows the destination's properties flattened; the raw ARM shape is covered too.)
destination_app() {
  dest=$(az_arm eventgrid system-topic event-subscription show --resource-group "$acs_group" \
    --system-topic-name "$topic" --name "$1" \
    --query "destination.resourceId || destination.properties.resourceId" --output tsv \
    2>/dev/null) || dest=
  printf '%s' "${dest%%/functions/*}"
}

for name in "$chat" "$calls"; do
  owner=$(destination_app "$name")
  if [ -n "$owner" ] && ! same_name "$owner" "$app_id"; then
    die "subscription $name on topic $topic delivers to $owner, not to this environment's app" \
      "$app_id: another deployment uses the environment name $AZURE_ENV_NAME on this ACS" \
      "resource. Use another environment name, or delete that subscription if it is stale."
  fi
done

# The functions' names are fixed by function_app.py; a new app indexes them within minutes.
wait_seconds=600
poll_seconds=10
for fn in on_chat_event on_call_event; do
  waited=0
  until az_arm functionapp function show --resource-group "$AZURE_RESOURCE_GROUP" \
    --name "$AZURE_FUNCTION_APP_NAME" --function-name "$fn" --query name --output none \
    >/dev/null 2>&1; do
    if [ "$waited" -ge "$wait_seconds" ]; then
      die "function $fn is not indexed on $AZURE_FUNCTION_APP_NAME after ${wait_seconds}s: is the" \
        "code published (azd deploy)? Look at the app's logs, then run: azd hooks run postdeploy"
    fi
    sleep "$poll_seconds"
    waited=$((waited + poll_seconds))
  done
  say "function $fn is indexed"
done

say "deploying $chat and $calls on $topic in $acs_group"
az_arm deployment group create --resource-group "$acs_group" \
  --name "$(subscriptions_deployment_name)" --template-file infra/subscriptions.bicep \
  --parameters systemTopicName="$topic" chatSubscriptionName="$chat" \
  callsSubscriptionName="$calls" functionAppId="$app_id" \
  deadLetterStorageId="$AZURE_STORAGE_ACCOUNT_ID" \
  deadLetterContainerName="$AZURE_DEAD_LETTER_CONTAINER" \
  --output none

# Earlier versions named the pair plainly "chat" and "calls" (one pair per ACS resource). Once
# this environment's own pair exists, remove an old one that delivers to this same app, or every
# event would reach the app twice.
for old in chat calls; do
  if same_name "$(destination_app "$old")" "$app_id"; then
    say "removing the old subscription $old (now $(subscription_name "$old"))"
    az_arm eventgrid system-topic event-subscription delete --resource-group "$acs_group" \
      --system-topic-name "$topic" --name "$old" --output none
  fi
done
say "done: $chat, $calls"
