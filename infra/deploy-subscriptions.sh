#!/usr/bin/env bash
# Second deployment pass: create the Event Grid subscriptions (chat, calls) once the functions
# they deliver to exist. An AzureFunction destination names a function, and Azure rejects the
# subscription while that function is not yet indexed, hence the wait.
#
#   infra/deploy-subscriptions.sh                       inside an azd environment (the postdeploy
#                                                       hook runs this): sets DEPLOY_SUBSCRIPTIONS
#                                                       and runs `azd provision` again
#   infra/deploy-subscriptions.sh RG PARAMS.json [k=v]  plain az CLI: re-deploys infra/main.bicep
#                                                       to resource group RG with your parameters
#                                                       file, plus deploySubscriptions=true
set -euo pipefail
cd "$(dirname "$0")/.."

wait_for_functions() {
  local group=$1 app=$2 fn tries
  if ! command -v az >/dev/null 2>&1 || ! az account show >/dev/null 2>&1; then
    echo "az CLI not signed in: not waiting for the functions to be indexed"
    return 0
  fi
  for fn in on_chat_event on_call_event; do
    tries=0
    until az functionapp function show --resource-group "$group" --name "$app" \
      --function-name "$fn" --query name --output tsv >/dev/null 2>&1; do
      tries=$((tries + 1))
      if [ "$tries" -ge 30 ]; then
        echo "function $fn not found on $app after 5 minutes: is the code published?" >&2
        return 1
      fi
      sleep 10
    done
    echo "function $fn is indexed"
  done
}

if [ "$#" -eq 0 ]; then
  : "${AZURE_RESOURCE_GROUP:?run inside an azd environment, or pass RESOURCE_GROUP PARAMS.json}"
  : "${AZURE_FUNCTION_APP_NAME:?run azd provision first}"
  if [ "${DEPLOY_SUBSCRIPTIONS:-false}" = "true" ]; then
    echo "Event Grid subscriptions are already part of this environment's deployment"
    exit 0
  fi
  wait_for_functions "$AZURE_RESOURCE_GROUP" "$AZURE_FUNCTION_APP_NAME"
  azd env set DEPLOY_SUBSCRIPTIONS true
  azd provision --no-prompt
else
  group=$1
  params=$2
  shift 2
  app=$(az functionapp list --resource-group "$group" \
    --query "[?tags.app=='pushrelay'].name | [0]" --output tsv)
  : "${app:?no pushrelay Function App in $group: run the first pass first}"
  wait_for_functions "$group" "$app"
  az deployment group create --resource-group "$group" --name main \
    --template-file infra/main.bicep --parameters "@$params" deploySubscriptions=true "$@"
fi
