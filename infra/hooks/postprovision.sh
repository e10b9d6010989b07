#!/bin/sh
# azd postprovision hook: make sure the Key Vault holds the two secrets the app reads.
# - key-encryption-keys (KEY_ENCRYPTION_KEYS): generated here on first run
#   ("k<date>=<32 random bytes, base64>").
# - apns-apps (APNS_APPS): your APNs credentials; only you have them, so this tells you how to set it.
# An existing secret is never overwritten (rotation: docs/operations.md).
#
# This hook never fails: `azd up` must go on to publish the code whatever happens here, and
# everything it does can be done by hand (it prints how). It writes with the az CLI, and only
# when az is signed in as the identity the deployment made Key Vault Secrets Officer
# (AZURE_DEPLOYER_PRINCIPAL_ID, the principal azd deployed with): any other identity would be
# refused until the end of the wait.
set -eu
hook=postprovision
cd "$(dirname "$0")/../.."
. infra/hooks/common.sh

vault=${AZURE_KEY_VAULT_NAME:?run from azd (azd provision / azd up)}
kek_secret=${KEY_ENCRYPTION_KEYS_SECRET_NAME:-key-encryption-keys}
apns_secret=${APNS_APPS_SECRET_NAME:-apns-apps}
deployer=${AZURE_DEPLOYER_PRINCIPAL_ID:-}
# A new role assignment can take up to 10 minutes to apply (Azure RBAC troubleshooting).
wait_seconds=600
poll_seconds=15

manual_steps() {
  cat <<MSG
$hook: set the secrets by hand (docs/operations.md, "Secrets"), as an identity with Key Vault
  Secrets Officer on $vault:
    printf 'k%s=%s' "\$(date -u +%Y%m%d)" "\$(openssl rand -base64 32)" |
      az keyvault secret set --vault-name $vault --name $kek_secret --file /dev/stdin --output none
    az keyvault secret set --vault-name $vault --name $apns_secret --file apns-apps.json --output none
  or fix the cause above and run this hook again: azd hooks run postprovision
MSG
}

if ! az_ready; then
  warn "the az CLI is missing or not signed in (az login); no secret was checked or written."
  manual_steps
  exit 0
fi
if [ -z "$deployer" ]; then
  warn "the deployment gave no one Key Vault Secrets Officer on $vault (principalId was empty)."
  manual_steps
  exit 0
fi
signed_in=$(az_object_id || true)
if ! same_name "$signed_in" "$deployer"; then
  warn "az is signed in as object id ${signed_in:-unknown}, but the Key Vault role went to" \
    "$deployer (the identity azd deployed with). Sign az in as that identity (for a service" \
    "principal: az login --service-principal ...), or use azd config set auth.useAzCliAuth true" \
    "so that azd and az are one identity."
  manual_steps
  exit 0
fi

# Sets $state to "present" or "missing" for secret $1; returns non-zero, with the last az error
# in $az_error, when the vault kept refusing (the role not applied yet) until the deadline. A
# refusal is never taken for "missing": that would overwrite a secret the vault does hold.
secret_state() {
  waited=0
  while :; do
    if az_error=$(az keyvault secret show --vault-name "$vault" --name "$1" \
      --query id --output none 2>&1); then
      state=present
      return 0
    fi
    case $az_error in
      *SecretNotFound*)
        state=missing
        return 0
        ;;
    esac
    if [ "$waited" -ge "$wait_seconds" ]; then
      return 1
    fi
    sleep "$poll_seconds"
    waited=$((waited + poll_seconds))
  done
}

# Writes value $2 to secret $1 through stdin (never on a command line), retrying while the vault
# refuses; returns non-zero, with the last az error in $az_error, at the deadline.
write_secret() {
  waited=0
  until az_error=$(printf '%s' "$2" | az keyvault secret set --vault-name "$vault" \
    --name "$1" --file /dev/stdin --output none 2>&1); do
    if [ "$waited" -ge "$wait_seconds" ]; then
      return 1
    fi
    sleep "$poll_seconds"
    waited=$((waited + poll_seconds))
  done
}

gave_up() {
  warn "Key Vault $vault still refused after ${wait_seconds}s while $1. The last error:"
  printf '%s\n' "$az_error" >&2
  manual_steps
  exit 0
}

secret_state "$kek_secret" || gave_up "reading $kek_secret"
if [ "$state" = present ]; then
  say "$kek_secret exists in $vault (kept)"
else
  key_id="k$(date -u +%Y%m%d)"
  write_secret "$kek_secret" "$key_id=$(openssl rand -base64 32)" || gave_up "writing $kek_secret"
  say "generated $kek_secret in $vault (key id $key_id)"
fi

secret_state "$apns_secret" || gave_up "reading $apns_secret"
if [ "$state" = present ]; then
  say "$apns_secret exists in $vault (kept)"
else
  cat <<MSG
$hook: secret $apns_secret is missing in $vault. The app cannot send a push without it.
  Set it (a JSON list of your iOS apps, see docs/operations.md "Secrets"):
    az keyvault secret set --vault-name $vault --name $apns_secret --file apns-apps.json --output none
  then make the app read it (docs/operations.md "Applying a new secret version").
MSG
fi
