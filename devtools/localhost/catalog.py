"""What the app declares: its functions and their bindings, read from the app object itself.

The local host never keeps a second list of routes or schedules: everything comes from
``app.get_functions()`` and each function's ``get_function_json()``, with ``%SETTING%``
expressions resolved from the environment the way the Functions host resolves them.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func

_EXPRESSION = re.compile(r"%([^%\s]+)%")

TRIGGERS = ("httpTrigger", "eventGridTrigger", "timerTrigger", "queueTrigger")
OUTPUTS = ("http", "queue")


class BindingError(ValueError):
    """A function's bindings cannot be served locally (unresolved setting, unsupported type)."""


@dataclass(frozen=True)
class Binding:
    """One binding of a function, with ``%SETTING%`` expressions already resolved."""

    name: str
    type: str
    direction: str
    props: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        """A binding property (``route``, ``queueName``, ``schedule`` ...) or ``default``."""
        return self.props.get(key, default)


@dataclass(frozen=True)
class FunctionSpec:
    """A function as the local host serves it."""

    name: str
    trigger: Binding
    outputs: tuple[Binding, ...]
    user_function: Callable[..., Any]
    is_async: bool
    wants_context: bool

    @property
    def trigger_type(self) -> str:
        return self.trigger.type


@dataclass(frozen=True)
class Catalog:
    """Every function of the app; ``errors`` names the ones that cannot be served and why."""

    functions: Mapping[str, FunctionSpec]
    errors: Mapping[str, str]

    def of_type(self, trigger_type: str) -> list[FunctionSpec]:
        """The functions with this trigger type, in declaration order."""
        return [f for f in self.functions.values() if f.trigger_type == trigger_type]


def import_app(target: str = "function_app", *, app_dir: Path | None = None) -> func.FunctionApp:
    """Import ``module`` or ``module:attribute`` (default attribute ``app``) and return the app.

    Raises ImportError or AttributeError when the target does not exist, TypeError when it is not
    a FunctionApp.
    """
    module_name, _, attribute = target.partition(":")
    if app_dir is not None and str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    module = importlib.import_module(module_name)
    app = getattr(module, attribute or "app")
    if not isinstance(app, func.FunctionApp):
        raise TypeError(f"{target} is not an azure.functions.FunctionApp")
    return app


def resolve(value: Any, env: Mapping[str, str]) -> Any:
    """Replace ``%NAME%`` in strings (also inside lists) by ``env[NAME]``.

    Raises BindingError naming the setting when it is not set, like the host's
    "does not resolve to a value".
    """
    if isinstance(value, str):

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise BindingError(f"'%{name}%' does not resolve to a value: set {name}")
            return env[name]

        return _EXPRESSION.sub(one, value)
    if isinstance(value, list):
        return [resolve(v, env) for v in value]
    return value


def _binding(raw: Mapping[str, Any], env: Mapping[str, str]) -> Binding:
    props = {k: resolve(v, env) for k, v in raw.items() if k not in ("name", "type", "direction")}
    return Binding(
        name=str(raw["name"]),
        type=str(raw["type"]),
        direction=str(raw.get("direction", "IN")).upper(),
        props=props,
    )


def describe(function: Any, env: Mapping[str, str]) -> FunctionSpec:
    """Turn one ``azure.functions`` Function into a FunctionSpec. Raises BindingError."""
    name = function.get_function_name()
    raw = json.loads(function.get_function_json())["bindings"]
    bindings = [_binding(b, env) for b in raw]
    triggers = [b for b in bindings if b.type.endswith("Trigger")]
    if len(triggers) != 1:
        raise BindingError(f"function {name} must have exactly one trigger")
    trigger = triggers[0]
    if trigger.type not in TRIGGERS:
        raise BindingError(f"trigger type {trigger.type} is not supported by the local host")
    others = [b for b in bindings if b is not trigger]
    for b in others:
        if b.direction != "OUT" or b.type not in OUTPUTS:
            raise BindingError(f"binding {b.name} ({b.type}) is not supported by the local host")
    user_function = function.get_user_function()
    parameters = inspect.signature(user_function).parameters
    return FunctionSpec(
        name=name,
        trigger=trigger,
        outputs=tuple(others),
        user_function=user_function,
        is_async=inspect.iscoroutinefunction(user_function),
        wants_context="context" in parameters,
    )


def app_functions(app: func.FunctionApp) -> list[Any]:
    """``app.get_functions()``, callable more than once on the same app.

    azure-functions 1.26 remembers the names it indexed and rejects a second call as duplicate
    names; the worker indexes once per process, but tests and the local host index one imported
    app many times. The memory is cleared before and after, so a plain ``get_functions()``
    elsewhere in the same process still works.
    """
    app.functions_bindings = {}
    try:
        return list(app.get_functions())
    finally:
        app.functions_bindings = {}


def build_catalog(app: func.FunctionApp, env: Mapping[str, str]) -> Catalog:
    """Describe every function of ``app``; one that cannot be served lands in ``errors``."""
    functions: dict[str, FunctionSpec] = {}
    errors: dict[str, str] = {}
    for function in app_functions(app):
        name = function.get_function_name()
        try:
            functions[name] = describe(function, env)
        except BindingError as exc:
            errors[name] = str(exc)
    return Catalog(functions=functions, errors=errors)
