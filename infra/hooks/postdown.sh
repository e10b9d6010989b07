#!/bin/sh
# azd postdown hook: `azd down` deleted this environment's resource group, but its two Event Grid
# subscriptions live on the ACS system topic in the ACS resource group, which stays. Remove them
# (they would keep failing to deliver to an app that is gone), but only if they still deliver to
# a Function App in this environment's deleted resource group. Never fails `azd down`.
#
# `azd down` has just removed the deployment's outputs from the environment, so everything here
# comes from values the operator set: AZURE_ENV_NAME, AZURE_RESOURCE_GROUP, ACS_NAME,
# ACS_RESOURCE_GROUP and EVENTGRID_SYSTEM_TOPIC (empty: "<ACS_NAME>-events", as in main.bicep).
set -eu
hook=postdown
cd "$(dirname "$0")/../.."
. infra/hooks/common.sh

: "${AZURE_ENV_NAME:?run from azd (azd down)}"
group=${AZURE_RESOURCE_GROUP:-}
acs_group=${ACS_RESOURCE_GROUP:-$group}
topic=${EVENTGRID_SYSTEM_TOPIC:-${ACS_NAME:-}-events}
[ -n "$group" ] || exit 0
# ACS in the deleted group: the topic and its subscriptions went with it.
same_name "$acs_group" "$group" && exit 0

if ! az_ready; then
  warn "the az CLI is missing or not signed in; remove this environment's Event Grid" \
    "subscriptions by hand:"
  for kind in chat calls; do
    printf '  az eventgrid system-topic event-subscription delete --resource-group %s --system-topic-name %s --name %s\n' \
      "$acs_group" "$topic" "$(subscription_name "$kind")" >&2
  done
  exit 0
fi

for kind in chat calls; do
  name=$(subscription_name "$kind")
  dest=$(az_arm eventgrid system-topic event-subscription show --resource-group "$acs_group" \
    --system-topic-name "$topic" --name "$name" \
    --query "destination.resourceId || destination.properties.resourceId" --output tsv \
    2>/dev/null) || dest=
  dest_group=$(printf '%s' "$dest" | cut -d/ -f5)
  if [ -z "$dest" ]; then
    continue
  fi
  if ! same_name "$dest_group" "$group"; then
    warn "kept subscription $name: it delivers to $dest, outside resource group $group."
    continue
  fi
  if az_arm eventgrid system-topic event-subscription delete --resource-group "$acs_group" \
    --system-topic-name "$topic" --name "$name" --output none; then
    say "removed Event Grid subscription $name from $topic"
  else
    warn "could not remove Event Grid subscription $name from $topic in $acs_group."
  fi
done
