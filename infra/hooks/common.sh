# Shared by the azd hooks and infra/deploy-subscriptions.sh (sourced, POSIX sh: azd runs hooks
# with /bin/sh). The hooks run with the azd environment's values as environment variables.

say() {
  printf '%s: %s\n' "$hook" "$*"
}

warn() {
  printf '%s: WARNING: %s\n' "$hook" "$*" >&2
}

die() {
  printf '%s: ERROR: %s\n' "$hook" "$*" >&2
  exit 1
}

lower() {
  printf '%s' "$1" | tr 'A-Z' 'a-z'
}

# Whether two Azure names or ids are the same (Azure compares them without case).
same_name() {
  [ "$(lower "$1")" = "$(lower "$2")" ]
}

# The Azure CLI on the subscription of the azd environment, whatever `az account set` says.
az_arm() {
  if [ -n "${AZURE_SUBSCRIPTION_ID:-}" ]; then
    az "$@" --subscription "$AZURE_SUBSCRIPTION_ID"
  else
    az "$@"
  fi
}

az_ready() {
  command -v az >/dev/null 2>&1 && az account show --output none >/dev/null 2>&1
}

# The object id of the identity the az CLI is signed in as, read from the oid claim of one of
# its access tokens: the same for a user and for a service principal, and needs no Graph access.
# The token itself is never printed.
az_object_id() {
  az_token=$(az account get-access-token --resource https://vault.azure.net \
    --query accessToken --output tsv) || return 1
  az_claims=$(printf '%s' "$az_token" | cut -d. -f2 | tr '_-' '/+')
  az_token=
  case $((${#az_claims} % 4)) in
    2) az_claims="$az_claims==" ;;
    3) az_claims="$az_claims=" ;;
  esac
  printf '%s' "$az_claims" | { base64 -d 2>/dev/null || base64 -D; } |
    sed -n 's/.*"oid" *: *"\([^"]*\)".*/\1/p'
}

# Seconds since the epoch of an ISO 8601 time as ARM writes it (GNU date, then BSD date).
epoch_of() {
  date -u -d "$1" +%s 2>/dev/null ||
    date -u -j -f '%Y-%m-%dT%H:%M:%S' "$(printf '%s' "$1" | cut -c1-19)" +%s
}

# The azd environment name as it appears in the names of its Event Grid subscriptions and their
# deployment: lower case, anything but letters, digits and '-' made '-' (azd allows '_', '.',
# '(' and ')'; Event Grid subscription names allow none of them). main.bicep caps it at 40.
environment_slug() {
  printf '%s' "$1" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9-' '-' | cut -c1-40
}

# Name of this environment's subscription of KIND (chat or calls) on the shared ACS topic.
subscription_name() {
  printf 'pushrelay-%s-%s' "$(environment_slug "$AZURE_ENV_NAME")" "$1"
}

subscriptions_deployment_name() {
  printf 'pushrelay-events-%s' "$(environment_slug "$AZURE_ENV_NAME")"
}
