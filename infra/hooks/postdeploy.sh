#!/bin/sh
# azd postdeploy hook: the functions now exist, so deploy this environment's Event Grid
# subscriptions (infra/deploy-subscriptions.sh). It runs after every deploy and changes nothing
# when nothing changed. If it fails, the code is deployed but no ACS event reaches the app: fix
# the cause it prints, then run `azd hooks run postdeploy`.
set -eu
exec "$(dirname "$0")/../deploy-subscriptions.sh"
