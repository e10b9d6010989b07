"""The azd hooks and infra/deploy-subscriptions.sh, run as azd runs them, against a fake Azure.

azd runs each hook as `/bin/sh -c <path>` with the environment's values (its .env: what the
operator set, and the outputs of infra/main.bicep) as environment variables
(cli/azd/pkg/ext, cli/azd/pkg/tools/bash). Here the fakes in tests/infra/fakes stand in for
`az` (a small Azure kept in a directory), `sleep` (records, never waits) and `date` (the test's
clock). Tests are named after the rule they hold the script to.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from tests.infra.templates import ROOT, azure_yaml, calls, main, parameters_file, run_script, slept
from tests.infra.templates import mapped_env as env_of

pytestmark = pytest.mark.unit

SUB = "sub1"
APP_ID = f"/subscriptions/{SUB}/resourceGroups/rg-app/providers/Microsoft.Web/sites/func-prod"
OTHER_APP_ID = f"/subscriptions/{SUB}/resourceGroups/rg-other/providers/Microsoft.Web/sites/func-x"
STORAGE_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-app/providers/Microsoft.Storage/storageAccounts/st1"
)
# What azd hands a hook of environment "prod": values the operator set, then the outputs.
AZD_ENV = {
    "AZURE_ENV_NAME": "prod",
    "AZURE_SUBSCRIPTION_ID": SUB,
    "AZURE_RESOURCE_GROUP": "rg-app",
    "AZURE_LOCATION": "westeurope",
    "ACS_NAME": "acs1",
    "ACS_RESOURCE_GROUP": "rg-acs",
    "AZURE_FUNCTION_APP_NAME": "func-prod",
    "AZURE_FUNCTION_APP_ID": APP_ID,
    "AZURE_FUNCTION_PRINCIPAL_ID": "app-oid",
    "AZURE_DEPLOYER_PRINCIPAL_ID": "deployer-oid",
    "AZURE_KEY_VAULT_NAME": "kv1",
    "AZURE_STORAGE_ACCOUNT_ID": STORAGE_ID,
    "AZURE_DEAD_LETTER_CONTAINER": "eventgrid-deadletter",
    "AZURE_EVENTGRID_SYSTEM_TOPIC": "acs1-events",
    "AZURE_ACS_RESOURCE_GROUP": "rg-acs",
}
HOOK_SCRIPTS = sorted(
    [hook["run"] for hook in azure_yaml()["hooks"].values()]
    + ["infra/deploy-subscriptions.sh", "infra/hooks/common.sh"]
)


def state_with(tmp_path: Path, files: dict[str, str]) -> Path:
    """A fake Azure in tmp_path: file name to content (the names tests/infra/fakes/az reads)."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_scripts_read_only_values_azd_provides() -> None:
    """A value a script reads must be an output of main.bicep, a value azd owns, or one the
    operator sets through main.parameters.json; anything else is always empty under azd."""
    outputs = set(main()["outputs"])
    operator = {env_of(v) for v in parameters_file().values()}
    azd_owned = {"AZURE_ENV_NAME", "AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP"}
    hook_only = {"ALLOW_ACS_DELETION"}  # read by predown only, documented in operations.md
    for script in HOOK_SCRIPTS:
        text = (ROOT / script).read_text()
        for name in set(re.findall(r"\$\{?((?:AZURE|ACS|EASY_AUTH|ALLOW)_[A-Z_]+)", text)):
            known = name in outputs | operator | azd_owned | hook_only
            assert known, f"{script} reads {name}, which azd never sets"


# --- postprovision: the Key Vault secrets ------------------------------------------------------


def test_postprovision_generates_a_key_encryption_key_the_app_accepts(tmp_path: Path) -> None:
    from shared.domain.key_wrap import KeyWrapper

    state = state_with(tmp_path, {"secret.apns-apps": "[]"})
    done = run_script("infra/hooks/postprovision.sh", state, AZD_ENV)
    assert done.returncode == 0, done.stderr
    value = (tmp_path / "secret.key-encryption-keys").read_text()
    key_id, _, key = value.partition("=")
    assert KeyWrapper.from_setting(value).current_key_id == key_id
    assert len(base64.b64decode(key)) == 32


def test_postprovision_never_overwrites_a_secret(tmp_path: Path) -> None:
    state = state_with(
        tmp_path, {"secret.apns-apps": "[]", "secret.key-encryption-keys": "old=AAAA"}
    )
    done = run_script("infra/hooks/postprovision.sh", state, AZD_ENV)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "secret.key-encryption-keys").read_text() == "old=AAAA"
    assert not calls(state, "az keyvault secret set")


def test_postprovision_never_takes_a_refusal_for_a_missing_secret(tmp_path: Path) -> None:
    """While the new role applies the vault answers Forbidden: that is not SecretNotFound, and
    writing then would replace the key-encryption key a recovered vault holds."""
    state = state_with(
        tmp_path,
        {"kv-refusals": "3", "secret.apns-apps": "[]", "secret.key-encryption-keys": "old=AAAA"},
    )
    done = run_script("infra/hooks/postprovision.sh", state, AZD_ENV)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "secret.key-encryption-keys").read_text() == "old=AAAA"
    assert not calls(state, "az keyvault secret set")
    assert len(slept(state)) == 3


def test_postprovision_waits_ten_minutes_for_the_role_then_shows_the_error_and_succeeds(
    tmp_path: Path,
) -> None:
    """A role assignment can take up to 10 minutes to apply (Azure RBAC troubleshooting); the
    hook must not stop `azd up` before the code is deployed, and must say why it gave up."""
    state = state_with(tmp_path, {"kv-refusals": "1000"})
    done = run_script("infra/hooks/postprovision.sh", state, AZD_ENV)
    assert done.returncode == 0
    assert sum(slept(state)) >= 600
    assert "(Forbidden) Caller is not authorized" in done.stderr
    assert "azd hooks run postprovision" in done.stdout
    assert not (tmp_path / "secret.key-encryption-keys").exists()


def test_postprovision_writes_only_as_the_identity_azd_granted(tmp_path: Path) -> None:
    """azd grants Key Vault Secrets Officer to the principal it deploys with; an az CLI signed
    in as anyone else would only be refused."""
    state = state_with(tmp_path, {"oid": "someone-else"})
    done = run_script("infra/hooks/postprovision.sh", state, AZD_ENV)
    assert done.returncode == 0
    assert "someone-else" in done.stderr and "deployer-oid" in done.stderr
    assert not calls(state, "az keyvault")


def test_postprovision_without_az_says_what_to_run(tmp_path: Path) -> None:
    state = state_with(tmp_path, {"signed-out": ""})
    done = run_script("infra/hooks/postprovision.sh", state, AZD_ENV)
    assert done.returncode == 0
    assert "az keyvault secret set --vault-name kv1 --name key-encryption-keys" in done.stdout


def test_postprovision_says_how_to_set_missing_apns_credentials(tmp_path: Path) -> None:
    done = run_script("infra/hooks/postprovision.sh", tmp_path, AZD_ENV)
    assert done.returncode == 0, done.stderr
    assert "az keyvault secret set --vault-name kv1 --name apns-apps" in done.stdout
    assert not (tmp_path / "secret.apns-apps").exists()


# --- predeploy: the first publish of a new environment ---------------------------------------

NOW = 1_800_000_000


def iso(epoch: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(timespec="microseconds")


def test_predeploy_waits_until_the_apps_storage_role_is_ten_minutes_old(tmp_path: Path) -> None:
    """A Flex publish writes the package with the app identity and azd does not retry it."""
    state = state_with(tmp_path, {"role-created": iso(NOW - 120)})
    done = run_script("infra/hooks/predeploy.sh", state, {**AZD_ENV, "FAKE_NOW": str(NOW)})
    assert done.returncode == 0, done.stderr
    assert slept(state) == [480]
    (listed,) = calls(state, "az role assignment list")
    assert f"--scope {STORAGE_ID}" in listed and "principalId=='app-oid'" in listed
    assert "b7e6dc6d-f1e8-4753-8033-0f276bb0955b" in listed  # Storage Blob Data Owner


def test_predeploy_does_not_wait_once_the_role_has_applied(tmp_path: Path) -> None:
    state = state_with(tmp_path, {"role-created": iso(NOW - 3600)})
    done = run_script("infra/hooks/predeploy.sh", state, {**AZD_ENV, "FAKE_NOW": str(NOW)})
    assert done.returncode == 0, done.stderr
    assert slept(state) == []


def test_predeploy_never_stops_a_deploy_it_cannot_time(tmp_path: Path) -> None:
    state = state_with(tmp_path, {"role-created": "not a time"})
    done = run_script("infra/hooks/predeploy.sh", state, {**AZD_ENV, "FAKE_NOW": str(NOW)})
    assert done.returncode == 0, done.stderr
    assert slept(state) == []


# --- postdeploy: the Event Grid subscriptions ---------------------------------------------------


def deployed(state: Path) -> list[str]:
    return calls(state, "az deployment group create")


def parameters_of(call: str) -> dict[str, str]:
    after = call.split(" --parameters ", 1)[1].split(" --", 1)[0]
    return dict(item.split("=", 1) for item in after.split())


def test_subscriptions_step_waits_for_the_functions_then_deploys_only_the_subscriptions(
    tmp_path: Path,
) -> None:
    state = state_with(tmp_path, {"functions": "on_chat_event\non_call_event\n"})
    done = run_script("infra/hooks/postdeploy.sh", state, AZD_ENV)
    assert done.returncode == 0, done.stderr
    assert len(calls(state, "az functionapp function show")) == 2
    (create,) = deployed(state)
    assert "--resource-group rg-acs " in create
    assert "--template-file infra/subscriptions.bicep" in create
    assert f"--subscription {SUB}" in create
    assert parameters_of(create) == {
        "systemTopicName": "acs1-events",
        "chatSubscriptionName": "pushrelay-prod-chat",
        "callsSubscriptionName": "pushrelay-prod-calls",
        "functionAppId": APP_ID,
        "deadLetterStorageId": STORAGE_ID,
        "deadLetterContainerName": "eventgrid-deadletter",
    }
    # Never azd provision, never a flag in the environment.
    assert not calls(state, "azd ")
    assert calls(state).index(create) > max(
        calls(state).index(c) for c in calls(state, "az functionapp function show")
    )


def test_subscriptions_step_is_idempotent_and_keeps_no_state(tmp_path: Path) -> None:
    """Nothing is remembered between runs (no DEPLOY_SUBSCRIPTIONS): a second run after a
    failure, a re-deploy or `azd down` and up does the same again, and changes nothing."""
    state = state_with(tmp_path, {"functions": "on_chat_event\non_call_event\n"})
    first = run_script("infra/hooks/postdeploy.sh", state, AZD_ENV)
    assert first.returncode == 0, first.stderr
    first_calls = calls(state)
    assert (tmp_path / "subscription.pushrelay-prod-chat").read_text().startswith(APP_ID)
    assert (tmp_path / "subscription.pushrelay-prod-calls").read_text().startswith(APP_ID)
    (tmp_path / "calls.log").unlink()
    second = run_script("infra/hooks/postdeploy.sh", state, AZD_ENV)
    assert second.returncode == 0, second.stderr
    assert calls(state) == first_calls
    assert not [c for c in first_calls if c.startswith("azd ")]


def test_subscriptions_step_never_skips_the_wait_it_cannot_do(tmp_path: Path) -> None:
    """Without a signed-in az CLI nothing can be checked or deployed: fail, say what to run."""
    state = state_with(tmp_path, {"signed-out": "", "functions": "on_chat_event\non_call_event\n"})
    done = run_script("infra/hooks/postdeploy.sh", state, AZD_ENV)
    assert done.returncode != 0
    assert "azd hooks run postdeploy" in done.stderr
    assert not deployed(state)


def test_subscriptions_step_fails_when_the_functions_never_appear(tmp_path: Path) -> None:
    state = state_with(tmp_path, {"functions": "on_chat_event\n"})
    done = run_script("infra/hooks/postdeploy.sh", state, AZD_ENV)
    assert done.returncode != 0
    assert "on_call_event" in done.stderr
    assert sum(slept(state)) >= 600
    assert not deployed(state)


def test_two_environments_on_one_acs_keep_their_own_subscriptions(tmp_path: Path) -> None:
    state = state_with(tmp_path, {"functions": "on_chat_event\non_call_event\n"})
    staging = {**AZD_ENV, "AZURE_ENV_NAME": "staging", "AZURE_FUNCTION_APP_ID": OTHER_APP_ID}
    assert run_script("infra/hooks/postdeploy.sh", state, AZD_ENV).returncode == 0
    done = run_script("infra/hooks/postdeploy.sh", state, staging)
    assert done.returncode == 0, done.stderr
    prod_create, staging_create = deployed(state)
    name = re.compile(r"--name (\S+)")
    assert name.search(prod_create)[1] != name.search(staging_create)[1]  # type: ignore[index]
    assert (tmp_path / "subscription.pushrelay-prod-chat").read_text().startswith(APP_ID)
    assert (tmp_path / "subscription.pushrelay-staging-chat").read_text().startswith(OTHER_APP_ID)


def test_subscriptions_step_never_takes_over_another_deployments_subscription(
    tmp_path: Path,
) -> None:
    state = state_with(
        tmp_path,
        {
            "functions": "on_chat_event\non_call_event\n",
            "subscription.pushrelay-prod-chat": OTHER_APP_ID + "/functions/on_chat_event",
        },
    )
    done = run_script("infra/hooks/postdeploy.sh", state, AZD_ENV)
    assert done.returncode != 0
    assert OTHER_APP_ID in done.stderr
    assert not deployed(state)


def test_subscriptions_step_removes_the_old_shared_pair_only_when_it_is_this_apps(
    tmp_path: Path,
) -> None:
    """Earlier deployments named the pair "chat" and "calls" for the whole ACS resource; kept
    beside the new pair it would deliver every event twice."""
    state = state_with(
        tmp_path,
        {
            "functions": "on_chat_event\non_call_event\n",
            "subscription.chat": APP_ID.upper() + "/functions/on_chat_event",
            "subscription.calls": OTHER_APP_ID + "/functions/on_call_event",
        },
    )
    done = run_script("infra/hooks/postdeploy.sh", state, AZD_ENV)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "subscription.chat").exists()
    assert (tmp_path / "subscription.calls").exists()
    deletes = calls(state, "az eventgrid system-topic event-subscription delete")
    assert calls(state).index(deletes[0]) > calls(state).index(deployed(state)[0])


def test_subscriptions_step_from_a_plain_az_deployment(tmp_path: Path) -> None:
    """ARM may return output names in another case (azd upper-cases them too)."""
    outputs = {
        "azurE_FUNCTION_APP_NAME": "func-prod",
        "AZURE_FUNCTION_APP_ID": APP_ID,
        "azurE_STORAGE_ACCOUNT_ID": STORAGE_ID,
        "AZURE_DEAD_LETTER_CONTAINER": "eventgrid-deadletter",
        "AZURE_EVENTGRID_SYSTEM_TOPIC": "acs1-events",
        "AZURE_ACS_RESOURCE_GROUP": "rg-acs",
        "AZURE_KEY_VAULT_NAME": "kv1",
    }
    arm_outputs = {key: {"type": "String", "value": value} for key, value in outputs.items()}
    state = state_with(
        tmp_path,
        {
            "functions": "on_chat_event\non_call_event\n",
            "deployment-outputs.json": json.dumps(arm_outputs),
        },
    )
    done = run_script(
        "infra/deploy-subscriptions.sh", state, {}, "--from-deployment", "rg-app", "main", "prod"
    )
    assert done.returncode == 0, done.stderr
    (create,) = deployed(state)
    assert parameters_of(create)["chatSubscriptionName"] == "pushrelay-prod-chat"
    assert parameters_of(create)["functionAppId"] == APP_ID


@pytest.mark.parametrize(
    ("environment", "chat"),
    [
        ("prod", "pushrelay-prod-chat"),
        ("Prod_EU.2", "pushrelay-prod-eu-2-chat"),
        ("a" * 40, "pushrelay-" + "a" * 40 + "-chat"),
    ],
)
def test_subscription_names_are_valid_event_grid_names(
    tmp_path: Path, environment: str, chat: str
) -> None:
    state = state_with(tmp_path, {"functions": "on_chat_event\non_call_event\n"})
    done = run_script(
        "infra/hooks/postdeploy.sh", state, {**AZD_ENV, "AZURE_ENV_NAME": environment}
    )
    assert done.returncode == 0, done.stderr
    params = parameters_of(deployed(state)[0])
    assert params["chatSubscriptionName"] == chat
    for name in (params["chatSubscriptionName"], params["callsSubscriptionName"]):
        assert re.fullmatch(r"[a-zA-Z0-9-]{3,64}", name), name


# --- predown and postdown ---------------------------------------------------------------------


@pytest.mark.parametrize("acs_group", ["", "rg-app", "RG-APP"])
def test_predown_refuses_to_delete_acs_in_the_apps_resource_group(
    tmp_path: Path, acs_group: str
) -> None:
    done = run_script(
        "infra/hooks/predown.sh", tmp_path, {**AZD_ENV, "ACS_RESOURCE_GROUP": acs_group}
    )
    assert done.returncode != 0
    assert "ALLOW_ACS_DELETION" in done.stderr


def test_predown_deletes_acs_only_when_the_environment_says_so(tmp_path: Path) -> None:
    env = {**AZD_ENV, "ACS_RESOURCE_GROUP": "", "ALLOW_ACS_DELETION": "true"}
    done = run_script("infra/hooks/predown.sh", tmp_path, env)
    assert done.returncode == 0
    assert "WITH the ACS resource" in done.stderr


def test_predown_lets_down_run_when_acs_has_its_own_group(tmp_path: Path) -> None:
    done = run_script("infra/hooks/predown.sh", tmp_path, AZD_ENV)
    assert done.returncode == 0, done.stderr


# azd down removes every output from the environment before postdown runs.
OPERATOR_ENV = {k: v for k, v in AZD_ENV.items() if k not in main()["outputs"]}


def test_postdown_removes_only_this_environments_subscriptions(tmp_path: Path) -> None:
    state = state_with(
        tmp_path,
        {
            "subscription.pushrelay-prod-chat": APP_ID + "/functions/on_chat_event",
            # Same name, but it delivers outside this environment's group: kept.
            "subscription.pushrelay-prod-calls": OTHER_APP_ID + "/functions/on_call_event",
            "subscription.pushrelay-staging-chat": OTHER_APP_ID + "/functions/on_chat_event",
        },
    )
    done = run_script("infra/hooks/postdown.sh", state, OPERATOR_ENV)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "subscription.pushrelay-prod-chat").exists()
    assert (tmp_path / "subscription.pushrelay-prod-calls").exists()
    assert (tmp_path / "subscription.pushrelay-staging-chat").exists()
    (delete,) = calls(state, "az eventgrid system-topic event-subscription delete")
    assert "--resource-group rg-acs --system-topic-name acs1-events" in delete


def test_postdown_never_fails_azd_down(tmp_path: Path) -> None:
    state = state_with(tmp_path, {"signed-out": ""})
    done = run_script("infra/hooks/postdown.sh", state, OPERATOR_ENV)
    assert done.returncode == 0
    assert "--name pushrelay-prod-chat" in done.stderr


# --- preprovision ------------------------------------------------------------------------------


def test_preprovision_stops_in_a_region_without_flex_consumption(tmp_path: Path) -> None:
    state = state_with(tmp_path, {"flex-locations": "eastus\nnortheurope\n"})
    done = run_script("infra/hooks/preprovision.sh", state, AZD_ENV)
    assert done.returncode != 0
    assert "westeurope" in done.stderr and "northeurope" in done.stderr


def test_preprovision_goes_on_in_a_flex_consumption_region(tmp_path: Path) -> None:
    state = state_with(tmp_path, {"flex-locations": "eastus\nwesteurope\n"})
    done = run_script("infra/hooks/preprovision.sh", state, AZD_ENV)
    assert done.returncode == 0, done.stderr
    assert not calls(state, "az keyvault recover")


def test_preprovision_recovers_the_vault_azd_down_left_soft_deleted(tmp_path: Path) -> None:
    """Purge protection keeps a deleted vault's name for 90 days; provisioning this environment
    again would fail on it. Only this environment's vault, in its own group, is recovered."""
    vault_id = f"/subscriptions/{SUB}/resourceGroups/rg-app/providers/Microsoft.KeyVault/vaults/"
    rows = [
        f"kv-prod\t{vault_id}kv-prod\twesteurope",
        f"kv-elsewhere\t{vault_id.replace('rg-app', 'rg-b')}kv-elsewhere\twesteurope",
    ]
    state = state_with(
        tmp_path, {"flex-locations": "westeurope\n", "deleted-vaults": "\n".join(rows) + "\n"}
    )
    done = run_script("infra/hooks/preprovision.sh", state, AZD_ENV)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "recovered.kv-prod").exists()
    assert not (tmp_path / "recovered.kv-elsewhere").exists()
    (created,) = calls(state, "az group create")
    assert "--name rg-app --location westeurope --tags azd-env-name=prod" in created
    assert calls(state).index(created) < calls(state).index(calls(state, "az keyvault recover")[0])
    (listed,) = calls(state, "az keyvault list-deleted")
    assert "'azd-env-name'" not in listed and "\"azd-env-name\"=='prod'" in listed


def test_preprovision_stops_when_easy_auth_lacks_its_issuer(tmp_path: Path) -> None:
    env = {**AZD_ENV, "EASY_AUTH_ENABLED": "true", "EASY_AUTH_CLIENT_ID": "client"}
    done = run_script("infra/hooks/preprovision.sh", tmp_path, env)
    assert done.returncode != 0
    assert "EASY_AUTH_OPENID_ISSUER" in done.stderr


def test_preprovision_warns_when_acs_shares_the_apps_group(tmp_path: Path) -> None:
    state = state_with(tmp_path, {"flex-locations": "westeurope\n"})
    done = run_script("infra/hooks/preprovision.sh", state, {**AZD_ENV, "ACS_RESOURCE_GROUP": ""})
    assert done.returncode == 0, done.stderr
    assert "azd down deletes the whole group" in done.stderr


# --- docs/operations.md against the scripts ----------------------------------------------------

GUIDE = ROOT / "docs" / "operations.md"


def test_operations_guide_sets_only_values_the_deployment_reads() -> None:
    guide = GUIDE.read_text()
    mapped = {env_of(v) for v in parameters_file().values()}
    read_elsewhere = {"AZURE_RESOURCE_GROUP", "ALLOW_ACS_DELETION"}
    for name in re.findall(r"azd env set ([A-Z_]+)", guide):
        assert name in mapped | read_elsewhere, f"the guide sets {name}, which nothing reads"
    for name in mapped | read_elsewhere:
        assert f"`{name}`" in guide or f"azd env set {name}" in guide, f"{name} is not in the guide"


def test_operations_guide_names_every_hook_and_the_script_it_runs() -> None:
    guide = GUIDE.read_text()
    for name, hook in azure_yaml()["hooks"].items():
        assert f"`{name}` (`{hook['run']}`" in guide, f"hook {name} ({hook['run']})"
    for path in set(re.findall(r"(?<![\w/])infra/[\w./-]+\.(?:sh|bicep|json)", guide)):
        assert (ROOT / path).is_file(), f"the guide names {path}, which does not exist"


def test_operations_guide_runs_what_the_scripts_tell_the_operator_to_run(tmp_path: Path) -> None:
    guide = GUIDE.read_text()
    signed_out = state_with(tmp_path, {"signed-out": ""})
    printed = "\n".join(
        [
            run_script("infra/hooks/postprovision.sh", signed_out, AZD_ENV).stdout,
            run_script("infra/hooks/postdeploy.sh", signed_out, AZD_ENV).stderr,
            run_script(
                "infra/hooks/predown.sh", signed_out, {**AZD_ENV, "ACS_RESOURCE_GROUP": ""}
            ).stderr,
            run_script("infra/deploy-subscriptions.sh", signed_out, {}, "--bad").stderr,
        ]
    )
    for command in (
        "azd hooks run postprovision",
        "azd hooks run postdeploy",
        "ALLOW_ACS_DELETION",
    ):
        assert command in printed, f"no script prints {command}"
        assert command in guide, f"the guide does not say {command}"
    assert "--from-deployment RESOURCE_GROUP DEPLOYMENT ENVIRONMENT" in printed
    (used,) = re.findall(
        r"infra/deploy-subscriptions\.sh --from-deployment (\S+) (\S+) (\S+)", guide
    )
    assert len(used) == 3


def test_operations_guide_shows_the_names_the_subscriptions_step_gives(tmp_path: Path) -> None:
    state = state_with(tmp_path, {"functions": "on_chat_event\non_call_event\n"})
    env = {**AZD_ENV, "AZURE_ENV_NAME": "pushrelay-prod"}
    done = run_script("infra/hooks/postdeploy.sh", state, env)
    assert done.returncode == 0, done.stderr
    params = parameters_of(deployed(state)[0])
    guide = GUIDE.read_text()
    assert f"done: {params['chatSubscriptionName']}," in done.stdout
    assert params["chatSubscriptionName"] in guide
    assert params["callsSubscriptionName"] in guide
    assert "`pushrelay-<environment>-chat`" in guide
