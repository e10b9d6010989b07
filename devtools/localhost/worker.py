"""Indexing the app with the Azure Functions Python worker's own code, as Azure does.

The Functions host does not read our decorators: it asks the Python language worker to index
``function_app.py`` and load every function, and the worker checks each function's parameters and
annotations against its bindings. Indexing is all or nothing: one function the worker refuses and
the host logs "Worker failed to index functions" and serves no function at all.

So the local host and the test suite index through the worker's code itself, published on PyPI as
``azure-functions-runtime`` (the worker's indexing, loading and binding rules, shared by the
Python 3.13+ worker; both README commands install it from ``requirements-worker.txt``).
We call the same three steps the worker runs on a ``FunctionsMetadataRequest``:
``bindings.meta.load_binding_registry()``, then ``loader.process_indexed_function`` over the app's
functions, which runs ``functions.Registry.add_indexed_function`` (every annotation rule) and
builds the metadata the host receives, raw binding JSON included.

The worker gets its message classes (``protos``) from the host's gRPC contract; only the few it
touches while indexing are written out here, with the enum values of ``BindingInfo`` in
``FunctionRpc.proto`` (Azure/azure-functions-language-worker-protobuf):
``Direction { in = 0; out = 1; inout = 2; }`` and ``DataType { undefined = 0; string = 1;
binary = 2; stream = 3; }``.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

WORKER_PACKAGE = "azure-functions-runtime"
INSTALL_HINT = (
    "python -m pip install --no-deps --ignore-requires-python -r requirements-worker.txt "
    "(bash scripts/test.sh and bash scripts/run-local.sh do)"
)


class WorkerIndexError(RuntimeError):
    """The worker refuses the app: Azure would serve none of its functions.

    ``str(error)`` is the worker's own message, e.g. ``cannot load the renewal_sweep function:
    binding shards has invalid non-type annotation ...``.
    """


class WorkerUnavailableError(RuntimeError):
    """The worker's code (``azure-functions-runtime``) is not installed."""


class _Message:
    """A protobuf message stand-in: keyword fields become attributes, as the generated classes."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


class _BindingInfo(_Message):
    # FunctionRpc.proto, message BindingInfo: enum Direction and enum DataType.
    out = 1
    inout = 2
    undefined = 0
    string = 1
    binary = 2
    stream = 3


# ``in`` is a Python keyword: the generated class carries it as an attribute all the same.
setattr(_BindingInfo, "in", 0)

PROTOS = types.SimpleNamespace(
    BindingInfo=_BindingInfo,
    RpcFunctionMetadata=_Message,
    RpcRetryOptions=_Message,
)


@dataclass(frozen=True)
class IndexedFunction:
    """One function as the worker reports it to the host (its ``RpcFunctionMetadata``)."""

    name: str
    function_id: str
    raw_bindings: tuple[dict[str, Any], ...]
    user_function: Callable[..., Any]
    is_async: bool
    requires_context: bool
    # Per output parameter: (the binding the worker encodes with, the Python type it checked).
    output_types: Mapping[str, tuple[str, Any]] = field(default_factory=dict)


def _worker() -> tuple[Any, Any, Any]:
    try:
        from azure_functions_runtime import functions, loader
        from azure_functions_runtime.bindings import meta
    except ImportError as exc:
        raise WorkerUnavailableError(
            f"the Functions worker's indexing code ({WORKER_PACKAGE}) is not installed; "
            f"run {INSTALL_HINT}"
        ) from exc
    return functions, loader, meta


def index_functions(functions: Sequence[Any], function_dir: str = "") -> list[IndexedFunction]:
    """Index ``app.get_functions()`` the way the worker does; all of them or none.

    Raises WorkerIndexError with the worker's message when it refuses any function, and
    WorkerUnavailableError when the worker's code is not installed.
    """
    worker_functions, loader, meta = _worker()
    meta.load_binding_registry()
    registry = worker_functions.Registry()
    try:
        metadata, _ = loader.process_indexed_function(
            PROTOS, registry, list(functions), function_dir
        )
    except (worker_functions.FunctionLoadError, ValueError, TypeError) as exc:
        raise WorkerIndexError(str(exc)) from exc
    indexed = []
    for m in metadata:
        info = registry.get_function(m.function_id)
        indexed.append(
            IndexedFunction(
                name=m.name,
                function_id=m.function_id,
                raw_bindings=tuple(json.loads(raw) for raw in m.raw_bindings),
                user_function=info.func,
                is_async=info.is_async,
                requires_context=info.requires_context,
                output_types={
                    name: (t.binding_name, t.pytype) for name, t in info.output_types.items()
                },
            )
        )
    return indexed


def encode_output(binding: str, value: Any, pytype: Any) -> tuple[str, Any]:
    """What the worker sends the host for one output value: (TypedData kind, value).

    The worker encodes with the binding's own converter and the annotation it checked at
    indexing (``bindings.meta.get_datum``). Raises TypeError with the worker's message when the
    value cannot be sent, as the invocation fails in Azure.
    """
    _, _, meta = _worker()
    datum = meta.get_datum(binding, value, pytype)
    return str(datum.type), datum.value
