"""The Bicep templates agree with the code: settings, secrets, event types, roles, runtime.

How the templates are read (pycep, no compiler): tests/infra/templates.py. The rules ARM and azd
enforce on them are in test_deploy_rules.py, the deployment scripts in test_hooks.py.

``STORAGE_CONNECTION`` is marked secret in the settings table because a connection string would be
one. In Azure it holds the table endpoint URL (managed identity, no key), so the secret rule
accepts for it either a Key Vault reference or exactly the storage account's table endpoint.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest

from devtools.settings_doc import default_text
from shared.settings import SETTINGS_TABLE
from tests.infra.templates import (
    BICEP_FILES,
    ROOT,
    TOP_LEVEL_TEMPLATES,
    app_settings,
    body,
    decorator,
    deref,
    function_app,
    main,
    module_file,
    module_params,
    param_default,
    parameters_file,
    parse,
    render,
    resources,
    subscription,
    subscriptions_template,
    walk_strings,
)

pytestmark = pytest.mark.unit

KEY_VAULT_REFERENCE = "@Microsoft.KeyVault(SecretUri="
SPECS = {spec.name: spec for spec in SETTINGS_TABLE}
# Settings the platform reads (not the app's settings table).
PLATFORM_SETTINGS = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "PYTHON_ISOLATE_WORKER_DEPENDENCIES",
}
# Settings agreed between branches and set here before the app declares them (the event source
# check reads ACS_RESOURCE_ID); once shared/settings.py declares one, the rules below cover it.
AGREED_SETTINGS = {"ACS_RESOURCE_ID"}
# Identity-based connection suffixes (the host's "<connection>__<suffix>" form): never secrets.
IDENTITY_SUFFIXES = {"accountName", "blobServiceUri", "queueServiceUri", "tableServiceUri"}

# Built-in role definition ids (Azure RBAC).
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"


def int_setting(tree: dict[str, Any], value: Any) -> tuple[int, int]:
    """(default, maximum) of an int given as a parameter, or (n, n) for a literal."""
    if isinstance(value, int):
        return value, value
    return param_default(tree, value), decorator(tree, value, "max_value")


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("relative", BICEP_FILES)
def test_bicep_file_parses(relative: str) -> None:
    tree = parse(relative)
    assert tree["resources"] or tree["modules"], f"{relative} declares nothing"


def test_every_module_main_uses_exists_and_parses() -> None:
    used = {module_file(name) for name in main()["modules"]}
    assert used == set(BICEP_FILES) - TOP_LEVEL_TEMPLATES, "a module file is unused or missing"


# --- settings ---------------------------------------------------------------------------------


def test_every_required_setting_is_set() -> None:
    settings = app_settings()
    for spec in SETTINGS_TABLE:
        if not spec.required:
            continue
        assert spec.name in settings, f"required setting {spec.name} is not set"
        value = settings[spec.name]
        assert value not in ("", None), f"required setting {spec.name} is empty"
        if isinstance(value, str) and value in main()["parameters"]:
            assert param_default(main(), value) != "", f"{spec.name} defaults to empty"


def test_no_secret_setting_holds_a_plain_value() -> None:
    table_endpoint = "storage.outputs.tableEndpoint"
    for name, value in app_settings().items():
        spec = SPECS.get(name)
        if spec is None or not spec.secret:
            continue
        if isinstance(value, str) and value.startswith(KEY_VAULT_REFERENCE):
            continue
        assert name == "STORAGE_CONNECTION", f"secret {name} is a plain value: {render(value)}"
        assert render(value) == table_endpoint, f"STORAGE_CONNECTION is {render(value)}"
    outputs = parse(module_file("storage"))["outputs"]
    assert render(outputs["tableEndpoint"]["value"]) == "storage.properties.primaryEndpoints.table"


def test_identity_connections_carry_no_secret() -> None:
    for name in app_settings():
        base, sep, suffix = name.partition("__")
        if sep:
            assert base in SPECS, f"{name}: unknown connection {base}"
            assert suffix in IDENTITY_SUFFIXES, f"{name}: not an identity-based connection"


def test_no_setting_holds_an_account_key() -> None:
    for name, value in app_settings().items():
        text = render(value).lower()
        assert "listkeys" not in text and "accountkey" not in text, f"{name} carries a key"


def test_secrets_reference_this_deployments_vault_without_a_version() -> None:
    references = [
        v
        for v in app_settings().values()
        if isinstance(v, str) and v.startswith(KEY_VAULT_REFERENCE)
    ]
    assert references, "no Key Vault reference at all"
    for reference in references:
        uri = reference.removeprefix(KEY_VAULT_REFERENCE).removesuffix(")")
        assert uri.startswith("${keyVault.outputs.uri}secrets/"), reference
        # No version: the app follows the latest version of the secret (rotation).
        assert uri.endswith("/") and uri.count("/") == 2, reference


def test_every_setting_set_is_known_to_the_app_or_the_platform() -> None:
    for name in app_settings():
        base = name.partition("__")[0]
        known = base in SPECS or name in PLATFORM_SETTINGS or name in AGREED_SETTINGS
        assert known, f"unknown setting {name}"


@pytest.mark.parametrize(
    ("setting", "parameter"),
    [
        ("TABLE_PREFIX", "tablePrefix"),
        ("PREVIEW_MODE", "previewMode"),
        ("RENEWAL_SCHEDULE", "renewalSchedule"),
        ("PURGE_SCHEDULE", "purgeSchedule"),
    ],
)
def test_setting_parameter_defaults_to_the_codes_default(setting: str, parameter: str) -> None:
    assert app_settings()[setting] == parameter
    assert param_default(main(), parameter) == default_text(SPECS[setting])


def test_renewal_queue_setting_names_the_queue_the_templates_create() -> None:
    queue = app_settings()["RENEWAL_QUEUE"]
    assert queue == default_text(SPECS["RENEWAL_QUEUE"])
    assert deref(main(), module_params("storage")["renewalQueueName"]) == queue
    storage = parse(module_file("storage"))
    (created,) = resources(
        storage, "Microsoft.Storage/storageAccounts/queueServices/queues"
    ).values()
    assert body(created)["name"] == "renewalQueueName"


def test_easy_auth_setting_follows_the_easy_auth_parameter() -> None:
    assert render(app_settings()["EASY_AUTH_ENABLED"]) == "easyAuthEnabled ? 'true' : 'false'"
    assert param_default(main(), "easyAuthEnabled") is False
    assert module_params("easyAuth")["enabled"] == "easyAuthEnabled"


@functools.cache
def registered_functions() -> dict[str, Any]:
    """The app's functions by name, as the Functions host indexes them."""
    from function_app import app

    # azure-functions 1.26 refuses a second get_functions() call on one app in one process
    # (it keeps the names it has seen); other tests may have called it already.
    seen = app.functions_bindings
    app.functions_bindings = {}
    try:
        return {fn.get_function_name(): fn for fn in app.get_functions()}
    finally:
        app.functions_bindings = seen


def test_binding_expressions_name_settings_the_templates_set() -> None:
    settings = app_settings()
    for name, fn in registered_functions().items():
        for text in walk_strings(json.loads(fn.get_function_json())):
            if len(text) > 2 and text.startswith("%") and text.endswith("%"):
                assert text.strip("%") in settings, f"{name}: binding {text} names no setting"


# --- Event Grid -------------------------------------------------------------------------------


def test_chat_subscription_types_are_the_ones_the_code_handles() -> None:
    from shared.domain.events import CHAT_EVENT_TYPES

    types = subscription("chat")["filter"]["includedEventTypes"]
    assert len(types) == len(set(types))
    assert sorted(types) == sorted(CHAT_EVENT_TYPES)


def test_call_subscription_types_are_the_ones_the_code_handles() -> None:
    from shared.domain.events import CALL_EVENT_TYPES

    assert subscription("calls")["filter"]["includedEventTypes"] == list(CALL_EVENT_TYPES)


@pytest.mark.parametrize(
    ("name", "function", "key"),
    [
        ("chat", "on_chat_event", "data.recipientCommunicationIdentifier.rawId"),
        ("calls", "on_call_event", "data.to.rawId"),
    ],
)
def test_subscription_delivers_one_event_per_call_to_acs_users(
    name: str, function: str, key: str
) -> None:
    from shared.domain.events import ACS_USER_PREFIXES

    props = subscription(name)
    destination = props["destination"]
    assert destination["endpointType"] == "AzureFunction"
    assert destination["properties"]["resourceId"] == "${functionAppId}/functions/" + function
    assert destination["properties"]["maxEventsPerBatch"] == 1
    assert props["eventDeliverySchema"] == "EventGridSchema"
    (rule,) = props["filter"]["advancedFilters"]
    assert (rule["operatorType"], rule["key"]) == ("StringBeginsWith", key)
    assert sorted(rule["values"]) == sorted(ACS_USER_PREFIXES)


@pytest.mark.parametrize("function", ["on_chat_event", "on_call_event"])
def test_subscribed_function_is_an_event_grid_trigger(function: str) -> None:
    functions = registered_functions()
    if function not in functions:
        pytest.skip(f"{function} is not registered in function_app yet")
    bindings = json.loads(functions[function].get_function_json())["bindings"]
    assert [b["type"] for b in bindings if b["direction"] == "IN"] == ["eventGridTrigger"]


def test_chat_subscription_retries_and_dead_letters_with_the_topic_identity() -> None:
    tree = subscriptions_template()
    props = subscription("chat")
    attempts, max_attempts = int_setting(tree, props["retryPolicy"]["maxDeliveryAttempts"])
    ttl, max_ttl = int_setting(tree, props["retryPolicy"]["eventTimeToLiveInMinutes"])
    assert 1 < attempts <= max_attempts <= 30
    assert 60 <= ttl <= max_ttl <= 1440
    dead_letter = props["deadLetterWithResourceIdentity"]
    assert dead_letter["identity"]["type"] == "SystemAssigned"
    destination = dead_letter["deadLetterDestination"]
    assert destination["endpointType"] == "StorageBlob"
    assert destination["properties"]["resourceId"] == "deadLetterStorageId"
    assert destination["properties"]["blobContainerName"] == "deadLetterContainerName"


def test_dead_letter_container_is_created_in_the_apps_storage() -> None:
    # The subscriptions step passes these two outputs as deadLetterStorageId and
    # deadLetterContainerName (test_hooks.py checks the script does).
    outputs = main()["outputs"]
    assert render(outputs["AZURE_STORAGE_ACCOUNT_ID"]["value"]) == "storage.outputs.id"
    container = deref(main(), outputs["AZURE_DEAD_LETTER_CONTAINER"]["value"])
    assert container == deref(main(), module_params("storage")["deadLetterContainerName"])
    storage = parse(module_file("storage"))
    containers = resources(storage, "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert "deadLetterContainerName" in {body(c)["name"] for c in containers.values()}


def test_calls_subscription_gives_up_fast() -> None:
    tree = subscriptions_template()
    retry = subscription("calls")["retryPolicy"]
    attempts, max_attempts = int_setting(tree, retry["maxDeliveryAttempts"])
    ttl, max_ttl = int_setting(tree, retry["eventTimeToLiveInMinutes"])
    # A phone rings for about 20 s: no retries beyond a minute or two.
    assert 2 <= attempts <= max_attempts <= 3
    assert ttl == 1 and max_ttl <= 2


# --- identity and roles -----------------------------------------------------------------------


def role_assignments() -> set[tuple[str, str, str]]:
    """(role id, type of the scope resource, principal as main.bicep passes it) of every file."""
    found: set[tuple[str, str, str]] = set()
    for module in main()["modules"]:
        tree = parse(module_file(module))
        passed = module_params(module)
        for res in resources(tree, "Microsoft.Authorization/roleAssignments").values():
            props = body(res)["properties"]
            role_fn = props["roleDefinitionId"]["function"]
            assert role_fn["type"] == "subscription_resource_id"
            role = role_fn["parameters"]["resource_name_1"]
            role = deref(tree, role)
            if role in tree["parameters"]:
                role = param_default(tree, role)
            scope = tree["resources"][body(res)["scope"]]["type"]
            principal = render(passed.get(props["principalId"], props["principalId"]))
            found.add((role, scope, principal))
    return found


@pytest.mark.parametrize(
    ("role", "scope", "principal"),
    [
        (STORAGE_BLOB_DATA_OWNER, "Microsoft.Storage/storageAccounts", "app"),
        (STORAGE_QUEUE_DATA_CONTRIBUTOR, "Microsoft.Storage/storageAccounts", "app"),
        (STORAGE_TABLE_DATA_CONTRIBUTOR, "Microsoft.Storage/storageAccounts", "app"),
        (MONITORING_METRICS_PUBLISHER, "Microsoft.Insights/components", "app"),
        (KEY_VAULT_SECRETS_USER, "Microsoft.KeyVault/vaults", "app"),
        (CONTRIBUTOR, "Microsoft.Communication/communicationServices", "app"),
        (STORAGE_BLOB_DATA_CONTRIBUTOR, "Microsoft.Storage/storageAccounts", "topic"),
    ],
)
def test_role_is_assigned(role: str, scope: str, principal: str) -> None:
    principals = {
        "app": "functionApp.identity.principalId",
        "topic": "acsEvents.outputs.systemTopicPrincipalId",
    }
    assert (role, scope, principals[principal]) in role_assignments()


def test_topic_identity_is_the_system_topics_own() -> None:
    tree = parse(module_file("acsEvents"))
    (topic,) = resources(tree, "Microsoft.EventGrid/systemTopics").values()
    assert body(topic)["identity"]["type"] == "SystemAssigned"
    assert body(topic)["properties"]["topicType"] == "Microsoft.Communication.CommunicationServices"
    output = tree["outputs"]["systemTopicPrincipalId"]["value"]
    assert render(output) == "systemTopic.identity.principalId"


def test_app_reaches_acs_with_its_identity() -> None:
    settings = app_settings()
    assert settings["ACS_ENDPOINT"] == "https://${acs.properties.hostName}"
    assert "ACS_CONNECTION_STRING" not in settings


# --- runtime, storage, monitoring -------------------------------------------------------------


def test_function_app_is_flex_consumption_python_3_11_with_system_identity() -> None:
    app = function_app()
    assert app["kind"] == "functionapp,linux"
    assert app["identity"]["type"] == "SystemAssigned"
    config = app["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["deployment"]["storage"]["authentication"]["type"] == "SystemAssignedIdentity"
    (plan,) = resources(main(), "Microsoft.Web/serverfarms").values()
    assert body(plan)["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    # Flex Consumption rejects these; the runtime comes from functionAppConfig.
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"} & set(app_settings())


def test_storage_has_shared_keys_off_and_the_host_uses_its_identity() -> None:
    storage = parse(module_file("storage"))
    (account,) = resources(storage, "Microsoft.Storage/storageAccounts").values()
    props = body(account)["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    settings = app_settings()
    assert "AzureWebJobsStorage" not in settings
    assert render(settings["AzureWebJobsStorage__accountName"]) == "storage.outputs.name"


def test_telemetry_is_sent_with_entra_id() -> None:
    assert app_settings()["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"
    monitoring = parse(module_file("monitoring"))
    (insights,) = resources(monitoring, "Microsoft.Insights/components").values()
    assert body(insights)["properties"]["DisableLocalAuth"] is True


def test_key_vault_uses_rbac() -> None:
    vaults = resources(parse(module_file("keyVault")), "Microsoft.KeyVault/vaults")
    (vault,) = vaults.values()
    assert body(vault)["properties"]["enableRbacAuthorization"] is True


# --- parameters file, docs -----------------------------------------------------------


def test_parameters_file_matches_the_template() -> None:
    given = parameters_file()
    declared = main()["parameters"]
    assert set(given) <= set(declared), set(given) - set(declared)
    # pycep writes a parameter without a default as "default": null.
    without_default = {name for name, p in declared.items() if p.get("default") is None}
    assert without_default <= set(given), without_default - set(given)


def test_operations_guide_covers_every_setting() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    missing = [spec.name for spec in SETTINGS_TABLE if f"`{spec.name}`" not in guide]
    assert not missing, f"docs/operations.md does not mention {missing}"
