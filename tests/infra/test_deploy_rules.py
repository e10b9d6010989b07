"""What ARM and azd require of infra/ and azure.yaml, one rule per test, named after the rule.

Each rule comes from the component that enforces it, named where it is used: the Flex Consumption
docs and ARM's own errors for site properties, the generated types (Azure/bicep-types-az) for API
versions, and azd's source (Azure/azure-dev, cli/azd) for how it maps parameters, outputs,
principals, `azd down` and Python packaging. No Bicep compiler or Azure account is reachable
here, so the templates are read as parsed trees (tests/infra/templates.py).
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.infra.templates import (
    BICEP_FILES,
    INFRA,
    ROOT,
    TOP_LEVEL_TEMPLATES,
    app_settings,
    azure_yaml,
    body,
    condition,
    decorator,
    every_template,
    function_app,
    main,
    mapped_env,
    module_file,
    module_params,
    param_default,
    parameters_file,
    parse,
    render,
    resources,
    subscriptions_template,
)

pytestmark = pytest.mark.unit

# Site properties the Flex Consumption plan does not take ("Flex Consumption plan deprecations"
# in the Functions app settings reference; ftpsState and linuxFxVersion come back as ARM error
# 51021, "The following site configuration property (Site.SiteConfig.FtpsState) for Flex
# Consumption sites is invalid"; http20Enabled is not offered on Flex). Compared without case:
# the docs write some of them LinuxFxVersion, IsXenon.
FLEX_REJECTED_SITE_PROPERTIES = {
    "ftpsstate",
    "http20enabled",
    "use32bitworkerprocess",
    "isreserved",
    "isxenon",
    "windowsfxversion",
    "linuxfxversion",
    "alwayson",
    "prewarmedinstancecount",
    "functionappscalelimit",
    "containersize",
    "javaversion",
    "powershellversion",
    "netframeworkversion",
}
# App settings the same table replaces by functionAppConfig or declares not valid.
FLEX_REJECTED_APP_SETTINGS = {
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY",
    "FUNCTIONS_WORKER_PROCESS_COUNT",
    "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
}
# azd's principal types (cli/azd/pkg/infra/provisioning/current_principal_id_provider.go:
# "ServicePrincipal" when logged in with a client id, else "User").
AZD_PRINCIPAL_TYPES = {"User", "ServicePrincipal"}
# Values azd owns or the operator sets: an output of the same name would be deleted from .env by
# `azd down` (it invalidates every output name, cli/azd/pkg/infra/provisioning/bicep/
# bicep_provider.go, Destroy), and the next `azd up` would prompt again or use a default.
AZD_OWNED_VALUES = {
    "AZURE_ENV_NAME",
    "AZURE_LOCATION",
    "AZURE_SUBSCRIPTION_ID",
    "AZURE_RESOURCE_GROUP",
    "AZURE_PRINCIPAL_ID",
    "AZURE_PRINCIPAL_TYPE",
    "AZURE_TENANT_ID",
}
# Newest non-preview API version in Azure/bicep-types-az (generated/*/<provider>/<version>)
# of the resource types that were behind. Microsoft.Insights/components stays at 2020-02-02:
# the generated types have no newer stable version of it (only 2025-01-23-preview).
NEWEST_STABLE_API = {
    "Microsoft.EventGrid/systemTopics": "2025-02-15",
    "Microsoft.EventGrid/systemTopics/eventSubscriptions": "2025-02-15",
}
# Hook names azd runs (schemas/v1.0/azure.yaml.json, "hooks").
AZD_HOOKS = {
    "preprovision", "postprovision", "preinfracreate", "postinfracreate", "preinfradelete",
    "postinfradelete", "predown", "postdown", "preup", "postup", "prepackage", "postpackage",
    "prepublish", "postpublish", "predeploy", "postdeploy", "prerestore", "postrestore",
}  # fmt: skip


def site_properties() -> dict[str, Any]:
    return dict(function_app()["properties"])


# --- 1. Flex Consumption site ------------------------------------------------------------------


def test_flex_site_sets_no_site_property_or_app_setting_flex_consumption_rejects() -> None:
    props = site_properties()
    given = {key.lower() for key in props} | {key.lower() for key in props["siteConfig"]}
    assert not given & FLEX_REJECTED_SITE_PROPERTIES, given & FLEX_REJECTED_SITE_PROPERTIES
    assert not set(app_settings()) & FLEX_REJECTED_APP_SETTINGS


# --- 2. the deployer's principal type ------------------------------------------------------------


def test_deployer_role_takes_azds_principal_type_not_user() -> None:
    """UnmatchedPrincipalType: under a service principal azd fills principalId with its id."""
    assert mapped_env(parameters_file()["principalType"]) == "AZURE_PRINCIPAL_TYPE"
    assert set(decorator(main(), "principalType", "allowed")) >= AZD_PRINCIPAL_TYPES
    assert module_params("roles")["deployerPrincipalType"] == "principalType"
    roles = parse(module_file("roles"))
    assert set(decorator(roles, "deployerPrincipalType", "allowed")) >= AZD_PRINCIPAL_TYPES
    (deployer,) = (
        body(r)["properties"]
        for r in resources(roles, "Microsoft.Authorization/roleAssignments").values()
        if body(r)["properties"]["principalId"] == "deployerPrincipalId"
    )
    assert deployer["principalType"] == "deployerPrincipalType"


# --- 3 and 7. nothing kept between runs; the subscriptions are their own step -----------------


def test_provision_deploys_the_same_resources_every_time() -> None:
    """`azd down` keeps every value the operator set: a flag such as DEPLOY_SUBSCRIPTIONS=true
    that switches part of main.bicep makes the next `azd up` deploy that part too early."""
    for name, module in main()["modules"].items():
        assert condition(module) is None, f"module {name} is conditional"
    for name, res in main()["resources"].items():
        assert condition(res) is None, f"resource {name} is conditional"
    mapped = {mapped_env(v) for v in parameters_file().values()}
    assert "DEPLOY_SUBSCRIPTIONS" not in mapped


def test_event_subscriptions_are_not_part_of_the_provision() -> None:
    """An AzureFunction destination must name an indexed function: the subscriptions are a
    separate deployment made after the code is published, never a pass of main.bicep."""
    subscription_type = "Microsoft.EventGrid/systemTopics/eventSubscriptions"
    for relative in BICEP_FILES:
        if relative == "subscriptions.bicep":
            continue
        assert not resources(parse(relative), subscription_type), relative
    assert set(resources(subscriptions_template(), subscription_type)) == {"chat", "calls"}
    assert "subscriptions.bicep" not in {module_file(m) for m in main()["modules"]}


def test_outputs_never_shadow_a_value_the_operator_sets() -> None:
    outputs = set(main()["outputs"])
    operator_values = {mapped_env(v) for v in parameters_file().values()}
    assert not outputs & (AZD_OWNED_VALUES | operator_values), outputs & (
        AZD_OWNED_VALUES | operator_values
    )


# --- 4 and 8. Easy Auth ----------------------------------------------------------------------


def easy_auth() -> dict[str, Any]:
    (auth,) = resources(parse(module_file("easyAuth")), "Microsoft.Web/sites/config").values()
    assert body(auth)["name"] == "authsettingsV2"
    return dict(body(auth)["properties"])


def test_easy_auth_is_always_deployed_and_switched_by_platform_enabled() -> None:
    """An incremental deployment never touches a resource that left the template: an
    `if (easyAuthEnabled)` module would leave Easy Auth on after turning it off."""
    assert condition(main()["modules"]["easyAuth"]) is None
    assert module_params("easyAuth")["enabled"] == "easyAuthEnabled"
    props = easy_auth()
    assert props["platform"]["enabled"] == "enabled"
    providers = props["identityProviders"]["operator"]
    assert providers["type"] == "conditional"
    assert providers["operands"]["condition"] == "enabled"
    assert providers["operands"]["false_value"] == {}


def test_event_grid_webhook_is_never_gated_by_easy_auth() -> None:
    """Event Grid calls /runtime/webhooks/EventGrid with the system key; whether excludedPaths
    match case is undocumented, so the platform rejects nothing and lists no path."""
    validation = easy_auth()["globalValidation"]
    assert validation["requireAuthentication"] is False
    assert validation["unauthenticatedClientAction"] == "AllowAnonymous"
    assert "excludedPaths" not in validation


# --- 9. two environments on one ACS resource -------------------------------------------------


def test_deployments_into_the_acs_group_are_named_per_environment() -> None:
    """Module deployment names are scoped to the target resource group: fixed names in the
    shared ACS group make one environment's deployment replace another's."""
    token = render(main()["variables"]["resourceToken"]["value"])
    assert "environmentName" in token
    for name, module in main()["modules"].items():
        assert "${resourceToken}" in str(body(module)["name"]), f"module {name}"


def test_event_subscription_names_come_from_the_environment_not_the_template() -> None:
    tree = subscriptions_template()
    subs = resources(tree, "Microsoft.EventGrid/systemTopics/eventSubscriptions")
    for resource, param in (("chat", "chatSubscriptionName"), ("calls", "callsSubscriptionName")):
        assert body(subs[resource])["name"] == param
        assert param_default(tree, param) is None


def test_shared_system_topic_carries_no_environment_tag() -> None:
    assert module_params("acsEvents")["tags"] == "sharedTags"
    assert "azd-env-name" not in main()["variables"]["sharedTags"]["value"]


# --- conventions -------------------------------------------------------------------------------


# Parameters that hold an app setting's value: the operator sets them by the setting's own name.
SETTING_PARAMETERS = {
    "tablePrefix": "TABLE_PREFIX",
    "previewMode": "PREVIEW_MODE",
    "renewalSchedule": "RENEWAL_SCHEDULE",
    "purgeSchedule": "PURGE_SCHEDULE",
    "authJwtIssuer": "AUTH_JWT_ISSUER",
    "authJwtAudience": "AUTH_JWT_AUDIENCE",
    "authJwksUrl": "AUTH_JWKS_URL",
    "deliveryLogAdmins": "DELIVERY_LOG_ADMINS",
    "easyAuthEnabled": "EASY_AUTH_ENABLED",
}


def test_every_parameter_can_be_set_with_azd_env_set() -> None:
    """azd passes a parameter only when main.parameters.json maps it to an environment value
    (cli/azd/pkg/infra/provisioning/bicep/bicep_provider.go, loadParameters); an unset value is
    left out, so the template's default applies."""
    unmapped = set(main()["parameters"]) - set(parameters_file())
    assert not unmapped, unmapped
    for param, value in parameters_file().items():
        assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*\}", value), f"{param}: {value}"
    for param, setting in SETTING_PARAMETERS.items():
        assert mapped_env(parameters_file()[param]) == setting, param
        assert setting in app_settings(), setting


def test_maximum_instance_count_allows_flex_minimum_of_one() -> None:
    assert decorator(main(), "maximumInstanceCount", "min_value") == 1
    assert decorator(main(), "maximumInstanceCount", "max_value") == 1000


def test_location_is_an_azd_location() -> None:
    """azd prompts a location picker for a parameter typed as one; the preprovision hook then
    checks Flex Consumption is offered there (test_hooks.py)."""
    assert decorator(main(), "location", "metadata") == {"azd": {"type": "location"}}
    assert mapped_env(parameters_file()["location"]) == "AZURE_LOCATION"


def test_acs_resource_id_setting_is_the_acs_resource_id() -> None:
    assert render(app_settings()["ACS_RESOURCE_ID"]) == "acs.id"
    assert main()["resources"]["acs"]["type"] == "Microsoft.Communication/communicationServices"


@pytest.mark.parametrize("resource_type", sorted(NEWEST_STABLE_API))
def test_api_version_is_the_newest_stable(resource_type: str) -> None:
    found = [
        (relative, res["api_version"])
        for relative, tree in every_template()
        for res in tree["resources"].values()
        if res["type"] == resource_type
    ]
    assert found, resource_type
    for relative, version in found:
        assert version == NEWEST_STABLE_API[resource_type], f"{relative}: {version}"


def test_azure_yaml_requires_the_azd_version_it_was_checked_against() -> None:
    wanted = azure_yaml()["requiredVersions"]["azd"]
    match = re.fullmatch(r">=\s*(\d+)\.(\d+)\.(\d+)", wanted)
    assert match, wanted
    # 1.23.4: array parameters from the environment; 1.17.1: AZURE_PRINCIPAL_TYPE.
    assert tuple(int(n) for n in match.groups()) >= (1, 23, 4)


def test_every_hook_is_an_azd_hook_running_a_posix_script() -> None:
    """azd runs a hook as `/bin/sh -c <path>` (cli/azd/pkg/exec/command_runner.go): the file
    must be executable, and its interpreter line decides what runs it. The scripts a hook runs
    are held to the same: POSIX sh, as /bin/sh is on Debian and Ubuntu (dash)."""
    hooks = azure_yaml()["hooks"]
    assert set(hooks) <= AZD_HOOKS, set(hooks) - AZD_HOOKS
    wanted = {"preprovision", "postprovision", "predeploy", "postdeploy", "predown", "postdown"}
    assert wanted <= set(hooks), wanted - set(hooks)
    scripts = [ROOT / hook["run"] for hook in hooks.values()] + [INFRA / "deploy-subscriptions.sh"]
    for name, hook in hooks.items():
        assert hook["shell"] == "sh", name
        assert hook.get("continueOnError", False) is False, name
    for script in scripts:
        assert script.is_file() and script.stat().st_mode & 0o111, script
        assert script.read_text().startswith("#!/bin/sh\n"), script


def test_templates_are_each_deployed_once() -> None:
    assert {"main.bicep", "subscriptions.bicep"} == TOP_LEVEL_TEMPLATES
    assert azure_yaml()["infra"]["module"] == "main"
    assert (INFRA / "subscriptions.bicep").is_file()


# --- azd's Python packaging ------------------------------------------------------------------


def test_azd_pip_install_dot_builds_the_app(tmp_path: Path) -> None:
    """azd 1.23.7+ restores a Python service with `pip install .` when pyproject.toml exists
    (cli/azd/pkg/project/framework_service_python.go); the flat layout must not stop the build.
    Built here from a copy, as azd would, without the network (no isolation, no dependencies)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt", "function_app.py", "host.json"):
        shutil.copy(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__")
    for folder in ("shared", "devtools", "tests", "bench"):
        shutil.copytree(ROOT / folder, source / folder, ignore=skip)
    wheels = tmp_path / "wheels"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--quiet", "-w", str(wheels)],
        cwd=source, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.startswith("pushrelay-")} == {
        "function_app.py",
        "shared",
    }
    metadata = next(n for n in names if n.endswith("/METADATA"))
    requires = {
        line.removeprefix("Requires-Dist: ").split(";")[0].replace(" ", "")
        for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist: ")
    }
    wanted = {
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {normal_requirement(r) for r in requires} == {normal_requirement(r) for r in wanted}


def normal_requirement(text: str) -> tuple[str, frozenset[str]]:
    name = re.split(r"[<>=!~\[]", text, maxsplit=1)[0].lower().replace("_", "-")
    return name, frozenset(re.findall(r"[<>=!~]=?[^,<>=!~]+", text.replace(" ", "")))


def funcignore_patterns() -> list[str]:
    lines = (ROOT / ".funcignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def packaged(path: str) -> bool:
    """Whether azd's zip keeps `path`: .funcignore patterns here have no '/', so (as in
    .gitignore) each matches a file or directory name at any depth."""
    patterns = funcignore_patterns()
    assert all("/" not in p for p in patterns), "pattern with a path: extend this check"
    return not any(fnmatch.fnmatchcase(part, p) for part in path.split("/") for p in patterns)


def test_azd_package_holds_the_app_and_leaves_out_azds_venv_and_build_output() -> None:
    """With an ignore file present azd applies only its rules, not its default Python
    exclusions (cli/azd/pkg/project/project_utils.go, createDeployableZip); its own virtual
    environment is "<project directory>_env" in the project directory, which here is the
    repository root (cli/azd/pkg/tools/python/helpers.go, VenvNameForDir)."""
    left_out = [
        "pushrelay_env/pyvenv.cfg",
        "14_env/lib/python3.11/site-packages/x.py",
        # What `pip install .` leaves in the source tree.
        "build/lib/shared/usecases/chat.py",
        "pushrelay.egg-info/PKG-INFO",
        "pyproject.toml",
        "tests/infra/test_bicep.py",
        "infra/main.bicep",
    ]
    kept = ["function_app.py", "host.json", "requirements.txt", "shared/usecases/chat.py"]
    assert [path for path in left_out if packaged(path)] == []
    assert [path for path in kept if not packaged(path)] == []
