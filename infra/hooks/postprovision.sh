#!/bin/sh
# azd postprovision hook: make sure the Key Vault holds the two secrets the app reads.
# - KEY_ENCRYPTION_KEYS: generated here on first run ("k<date>=<32 random bytes, base64>").
# - APNS_APPS: your APNs credentials; only you have them, so this hook tells you how to set it.
# Existing secrets are never overwritten (rotation: docs/operations.md).
set -eu

vault=${AZURE_KEY_VAULT_NAME:?run from azd (azd provision / azd up)}
kek_secret=${KEY_ENCRYPTION_KEYS_SECRET_NAME:-key-encryption-keys}
apns_secret=${APNS_APPS_SECRET_NAME:-apns-apps}

if ! command -v az >/dev/null 2>&1 || ! az account show >/dev/null 2>&1; then
  echo "postprovision: az CLI not signed in; set the secrets by hand (docs/operations.md)."
  exit 0
fi

secret_exists() {
  az keyvault secret show --vault-name "$vault" --name "$1" --query id --output tsv >/dev/null 2>&1
}

# The Key Vault Secrets Officer role assigned by the deployment can take a few minutes to apply.
set_secret() {
  local name=$1 value=$2 tries=0
  until printf '%s' "$value" | az keyvault secret set --vault-name "$vault" --name "$name" \
    --file /dev/stdin --output none 2>/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -ge 12 ]; then
      echo "postprovision: could not write secret $name to $vault (role not applied yet?)" >&2
      return 1
    fi
    sleep 10
  done
}

if secret_exists "$kek_secret"; then
  echo "postprovision: $kek_secret exists in $vault (kept)"
else
  key_id="k$(date -u +%Y%m%d)"
  set_secret "$kek_secret" "$key_id=$(openssl rand -base64 32)"
  echo "postprovision: generated $kek_secret in $vault (key id $key_id)"
fi

if secret_exists "$apns_secret"; then
  echo "postprovision: $apns_secret exists in $vault (kept)"
else
  cat <<MSG
postprovision: secret $apns_secret is missing in $vault. The app cannot start without it.
  Set it (a JSON list of your iOS apps, see docs/operations.md "Secrets"):
    az keyvault secret set --vault-name $vault --name $apns_secret --file apns-apps.json
  then restart the app:
    az functionapp restart --resource-group \$AZURE_RESOURCE_GROUP --name \$AZURE_FUNCTION_APP_NAME
MSG
fi
