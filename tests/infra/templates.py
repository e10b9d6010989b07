"""Reading infra/ the way ARM and azd read it, without a Bicep compiler or an Azure account.

Every Bicep file is parsed with pycep-parser (the parser checkov uses) and the tests walk the
parsed tree; nothing reads Bicep text with string matching. pycep writes a reference to a variable
or parameter as its bare name, so :func:`deref` follows variable names, and :func:`render` turns an
expression back into Bicep-like text for comparisons such as ``storage.outputs.tableEndpoint``.

The deployment scripts run as they would under azd, with fake ``az``, ``azd``, ``sleep`` and
``date`` first on PATH (tests/infra/fakes): the fake ``az`` keeps a small Azure in a directory, the
fake ``sleep`` records what it was asked to wait and returns at once.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
FAKES = Path(__file__).parent / "fakes"
BICEP_FILES = sorted(p.relative_to(INFRA).as_posix() for p in INFRA.rglob("*.bicep"))
# Deployed on their own, not as modules of main.bicep.
TOP_LEVEL_TEMPLATES = {"main.bicep", "subscriptions.bicep"}


@functools.cache
def parse(relative: str) -> dict[str, Any]:
    """The pycep tree of ``infra/<relative>``."""
    tree: dict[str, Any] = BicepParser().parse(file_path=INFRA / relative)
    for section in ("parameters", "variables", "resources", "modules", "outputs"):
        tree.setdefault(section, {})
    return tree


def main() -> dict[str, Any]:
    return parse("main.bicep")


def subscriptions_template() -> dict[str, Any]:
    return parse("subscriptions.bicep")


def module_file(name: str) -> str:
    """The file (relative to infra/) of the module declared as ``name`` in main.bicep."""
    return str(main()["modules"][name]["detail"]["path"])


def module_params(name: str) -> dict[str, Any]:
    return dict(body(main()["modules"][name])["params"])


def body(element: dict[str, Any]) -> dict[str, Any]:
    """A resource's or module's properties, unwrapped from an ``if (...)`` condition."""
    config: dict[str, Any] = element["config"]
    if "condition" in config and "config" in config:
        config = config["config"]
    return config


def condition(element: dict[str, Any]) -> Any:
    return element["config"].get("condition")


def resources(tree: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    """Resources of one type, by symbolic name (existing references left out)."""
    return {
        name: res
        for name, res in tree["resources"].items()
        if res["type"] == type_ and not res["existing"]
    }


def deref(tree: dict[str, Any], value: Any) -> Any:
    """Follow variable names to their values (pycep writes a reference as the bare name)."""
    seen: set[str] = set()
    while isinstance(value, str) and value in tree["variables"] and value not in seen:
        seen.add(value)
        value = tree["variables"][value]["value"]
    return value


def param_default(tree: dict[str, Any], name: str) -> Any:
    return tree["parameters"][name]["default"]


def decorator(tree: dict[str, Any], param: str, kind: str) -> Any:
    for deco in tree["parameters"][param]["decorators"]:
        if deco["type"] == kind:
            return deco.get("argument")
    raise AssertionError(f"parameter {param} has no @{kind} decorator")


def render(value: Any) -> str:
    """A pycep expression as Bicep-like text, e.g. ``storage.outputs.tableEndpoint``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str | int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    if set(value) == {"operator"}:
        op = value["operator"]
        operands = op["operands"]
        if op["type"] == "property_accessor":
            return f"{render(operands['operand_1'])}.{render(operands['operand_2'])}"
        if op["type"] == "conditional":
            return (
                f"{render(operands['condition'])} ? '{render(operands['true_value'])}'"
                f" : '{render(operands['false_value'])}'"
            )
        if op["type"] == "not":
            return "!" + render(operands["bool_value"])
        return op["type"] + "(" + ", ".join(render(v) for v in operands.values()) + ")"
    if set(value) == {"function"}:
        fn = value["function"]
        args = [render(v) for v in fn["parameters"].values() if v is not None]
        return fn["type"] + "(" + ", ".join(args) + ")"
    return "{" + ", ".join(f"{k}: {render(v)}" for k, v in value.items()) + "}"


def function_app() -> dict[str, Any]:
    (site,) = resources(main(), "Microsoft.Web/sites").values()
    return body(site)


def app_settings() -> dict[str, Any]:
    """Every app setting main.bicep sets, name to (variable-resolved) value."""
    rows = function_app()["properties"]["siteConfig"]["appSettings"]
    names = [row["name"] for row in rows]
    assert len(names) == len(set(names)), "an app setting is set twice"
    return {row["name"]: deref(main(), row["value"]) for row in rows}


def subscription(name: str) -> dict[str, Any]:
    """Properties of the event subscription declared as resource ``name`` (chat, calls)."""
    subs = resources(
        subscriptions_template(), "Microsoft.EventGrid/systemTopics/eventSubscriptions"
    )
    return body(subs[name])["properties"]


def walk_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from walk_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_strings(item)


def every_template() -> Iterator[tuple[str, dict[str, Any]]]:
    for relative in BICEP_FILES:
        yield relative, parse(relative)


# --- azd: azure.yaml and the parameters file ---------------------------------------------------


@functools.cache
def azure_yaml() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "azure.yaml").read_text())
    return loaded


def parameters_file() -> dict[str, str]:
    """main.parameters.json: parameter name to its value text (``${ENV}`` for azd's values)."""
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    return {name: entry["value"] for name, entry in given.items()}


def mapped_env(value: str) -> str:
    """The azd environment value a ``${NAME}`` (or ``${NAME=default}``) parameter value reads."""
    assert value.startswith("${") and value.endswith("}"), value
    return value[2:-1].split("=", 1)[0]


# --- running the scripts -------------------------------------------------------------------------


def run_script(
    script: str, state: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """Run a deployment script with the fakes first on PATH and ``state`` as the fake Azure."""
    full_env = {
        "PATH": f"{FAKES}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(state),
        "FAKE_LOG": str(state / "calls.log"),
        "FAKE_STATE": str(state),
        **env,
    }
    return subprocess.run(
        [str(ROOT / script), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def calls(state: Path, prefix: str = "") -> list[str]:
    """The az/azd calls the script made, in order, those starting with ``prefix``."""
    log = state / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line.startswith(prefix)]


def slept(state: Path) -> list[int]:
    """The seconds the script asked ``sleep`` for, in order."""
    log = state / "slept"
    return [int(s) for s in log.read_text().split()] if log.exists() else []
