#!/bin/sh
# azd predown hook: `azd down` deletes this environment's whole resource group. When the ACS
# resource lives in that group (ACS_RESOURCE_GROUP empty or the same group), that deletes ACS
# too, with its phone numbers, users and chat threads, which no re-deploy brings back. Refuse,
# unless the environment says it means it: azd env set ALLOW_ACS_DELETION true.
set -eu
hook=predown
cd "$(dirname "$0")/../.."
. infra/hooks/common.sh

group=${AZURE_RESOURCE_GROUP:-}
acs_group=${ACS_RESOURCE_GROUP:-$group}
[ -n "$group" ] || exit 0

if same_name "$acs_group" "$group"; then
  if [ "$(lower "${ALLOW_ACS_DELETION:-false}")" = true ]; then
    warn "ALLOW_ACS_DELETION is true: azd down now deletes resource group $group WITH the ACS" \
      "resource ${ACS_NAME:-} in it (phone numbers, users, chat threads: gone for good)."
    exit 0
  fi
  die "refusing azd down: the ACS resource ${ACS_NAME:-} is in resource group $group, which azd" \
    "down deletes whole, ACS with it (phone numbers, users, chat threads: gone for good). To delete" \
    "only pushrelay, delete its resources by hand (docs/operations.md, \"azd down and re-create\");" \
    "to delete ACS as well: azd env set ALLOW_ACS_DELETION true, then azd down."
fi
say "resource group $group goes; the ACS resource ${ACS_NAME:-} in $acs_group stays."
