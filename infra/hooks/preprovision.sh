#!/bin/sh
# azd preprovision hook: checks that fail here in seconds rather than minutes into a deployment,
# and the one repair a re-created environment needs.
# 1. Easy Auth turned on without its issuer or client id: stop.
# 2. ACS in the app's own resource group: say loudly that `azd down` would delete it.
# 3. The region must offer Flex Consumption: stop if it does not (needs az).
# 4. After `azd down`, this environment's Key Vault is soft-deleted and, with purge protection,
#    keeps its name for 90 days: recover it (with its secrets) so that provisioning finds it
#    again instead of failing on the name (needs az).
set -eu
hook=preprovision
cd "$(dirname "$0")/../.."
. infra/hooks/common.sh

env_name=${AZURE_ENV_NAME:?run from azd (azd provision / azd up)}
group=${AZURE_RESOURCE_GROUP:-}
location=${AZURE_LOCATION:-}

if [ "$(lower "${EASY_AUTH_ENABLED:-false}")" = true ]; then
  if [ -z "${EASY_AUTH_OPENID_ISSUER:-}" ] || [ -z "${EASY_AUTH_CLIENT_ID:-}" ]; then
    die "EASY_AUTH_ENABLED is true but EASY_AUTH_OPENID_ISSUER or EASY_AUTH_CLIENT_ID is empty:" \
      "azd env set both (docs/operations.md, \"Easy Auth on and off\"), or azd env set EASY_AUTH_ENABLED false."
  fi
fi

if [ -z "${ACS_RESOURCE_GROUP:-}" ] || { [ -n "$group" ] && same_name "$ACS_RESOURCE_GROUP" "$group"; }; then
  warn "the ACS resource ${ACS_NAME:-} is in this environment's resource group ${group:-}:" \
    "azd down deletes the whole group, ACS and its phone numbers and data with it. The predown" \
    "hook refuses unless ALLOW_ACS_DELETION=true. Keep ACS in a group of its own (ACS_RESOURCE_GROUP)."
fi

if ! az_ready; then
  warn "the az CLI is missing or not signed in: skipping the Flex Consumption region check and" \
    "the Key Vault recovery (docs/operations.md, \"Before you start\")."
  exit 0
fi

if [ -n "$location" ]; then
  if flex_regions=$(az_arm functionapp list-flexconsumption-locations --query "[].name" --output tsv); then
    if ! printf '%s\n' "$flex_regions" | grep -qx "$(lower "$location")"; then
      die "Flex Consumption is not offered in $location. Pick one of these and azd env set AZURE_LOCATION:" \
        "$(printf '%s' "$flex_regions" | tr '\n' ' ')"
    fi
    say "Flex Consumption is offered in $location"
  else
    warn "could not list the Flex Consumption regions; not checking $location."
  fi
fi

# Soft-deleted vaults keep their tags: find this environment's by its azd-env-name tag, in this
# environment's resource group.
deleted=$(az_arm keyvault list-deleted --resource-type vault \
  --query "[?properties.tags.\"azd-env-name\"=='$env_name' && properties.tags.app=='pushrelay'].[name, properties.vaultId, properties.location]" \
  --output tsv) || {
  warn "could not list deleted Key Vaults (this needs read access on the subscription); a" \
    "vault left by azd down would have to be recovered by hand: az keyvault recover --name <vault>."
  exit 0
}
tab=$(printf '\t')
while IFS=$tab read -r vault vault_id vault_location; do
  [ -n "$vault" ] || continue
  vault_group=$(printf '%s' "$vault_id" | cut -d/ -f5)
  if [ -z "$group" ] || ! same_name "$vault_group" "$group"; then
    continue
  fi
  if [ "$(az_arm group exists --name "$group")" != true ]; then
    # Recovery puts the vault back into its resource group, which azd down deleted; the tag
    # lets azd down know the group is this environment's own.
    say "creating resource group $group in $vault_location for the vault recovery"
    az_arm group create --name "$group" --location "$vault_location" \
      --tags "azd-env-name=$env_name" --output none
  fi
  say "recovering soft-deleted Key Vault $vault (left by azd down) with its secrets"
  az_arm keyvault recover --name "$vault" --output none ||
    die "could not recover Key Vault $vault; provisioning would fail on its name." \
      "Recover it by hand (az keyvault recover --name $vault) or use another environment name."
done <<VAULTS
$deleted
VAULTS
