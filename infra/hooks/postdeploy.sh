#!/bin/sh
# azd postdeploy hook: the functions now exist, so run the second pass that creates the Event
# Grid subscriptions (a no-op once DEPLOY_SUBSCRIPTIONS is true in this azd environment).
set -eu
exec "$(dirname "$0")/../deploy-subscriptions.sh"
