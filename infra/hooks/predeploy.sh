#!/bin/sh
# azd predeploy hook: on a new environment, wait until the app identity's Storage Blob Data Owner
# role on the storage account is old enough to have applied. A Flex Consumption publish writes
# the package to the deployment container with that identity, azd does not retry a failed
# publish, and a role assignment can take up to 10 minutes to apply (Azure RBAC
# troubleshooting); the assignment is made by the same provision that runs just before.
# Once the assignment is 10 minutes old (every later deploy) this costs one az call.
set -eu
hook=predeploy
cd "$(dirname "$0")/../.."
. infra/hooks/common.sh

settle_seconds=600
blob_data_owner=b7e6dc6d-f1e8-4753-8033-0f276bb0955b
principal=${AZURE_FUNCTION_PRINCIPAL_ID:-}
storage_id=${AZURE_STORAGE_ACCOUNT_ID:-}

if [ -z "$principal" ] || [ -z "$storage_id" ]; then
  warn "AZURE_FUNCTION_PRINCIPAL_ID or AZURE_STORAGE_ACCOUNT_ID is not set: run azd provision first."
  exit 0
fi
if ! az_ready; then
  warn "the az CLI is missing or not signed in: not waiting for the app's storage role. If the" \
    "publish fails with 403 on a new environment, wait a few minutes and run azd deploy again."
  exit 0
fi

# Filtered here rather than with --assignee, which would look the principal up in Graph.
created=$(az_arm role assignment list --scope "$storage_id" \
  --query "[?principalId=='$principal' && ends_with(roleDefinitionId, '$blob_data_owner')].createdOn | [0]" \
  --output tsv) || created=
if [ -z "$created" ]; then
  warn "found no Storage Blob Data Owner assignment for the app on $storage_id (or may not list" \
    "role assignments there); publishing without waiting."
  exit 0
fi

created_at=$(epoch_of "$created" 2>/dev/null) || created_at=
case $created_at in
  '' | *[!0-9]*)
    warn "could not read the assignment time $created; publishing without waiting."
    exit 0
    ;;
esac
age=$(($(date -u +%s) - created_at))
if [ "$age" -lt "$settle_seconds" ]; then
  remaining=$((settle_seconds - age))
  say "the app's storage role was assigned ${age}s ago; waiting ${remaining}s for it to apply" \
    "before publishing (new environments only)"
  sleep "$remaining"
fi
