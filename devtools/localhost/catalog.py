"""What the app declares: its functions and their bindings, as the worker reports them.

The local host never keeps a second list of routes or schedules: the app is indexed by the
Python worker's own code (``devtools.localhost.worker``), which refuses what Azure refuses, and
the catalog is built from the raw binding JSON the worker hands the host, with ``%SETTING%``
expressions resolved from app settings only, the way the Functions host resolves them (the
settings table's defaults are the app's business, not the host's).
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func

from devtools.localhost.worker import IndexedFunction, index_functions

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
    output_types: Mapping[str, tuple[str, Any]] = field(default_factory=dict)

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


def describe(function: IndexedFunction, env: Mapping[str, str]) -> FunctionSpec:
    """Turn one function the worker indexed into a FunctionSpec. Raises BindingError."""
    name = function.name
    bindings = [_binding(b, env) for b in function.raw_bindings]
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
    return FunctionSpec(
        name=name,
        trigger=trigger,
        outputs=tuple(others),
        user_function=function.user_function,
        is_async=function.is_async,
        wants_context=function.requires_context,
        output_types=function.output_types,
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
    """Describe every function of ``app``; one that cannot be served lands in ``errors``.

    Raises WorkerIndexError when the worker refuses the app (Azure would then serve nothing, so
    neither does the local host), WorkerUnavailableError when the worker's code is missing.
    """
    functions: dict[str, FunctionSpec] = {}
    errors: dict[str, str] = {}
    for function in index_functions(app_functions(app)):
        name = function.name
        try:
            functions[name] = describe(function, env)
        except BindingError as exc:
            errors[name] = str(exc)
    return Catalog(functions=functions, errors=errors)
