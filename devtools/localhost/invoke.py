"""Calling a user function the way the Python worker does.

Async functions run on the host's event loop; sync functions run in a worker thread (the
worker's default executor), so a blocking function never stalls the server. Output bindings are
``func.Out`` objects the function sets; ``$return`` is the return value.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import azure.functions as func
from azure.functions import _abc as functions_abc

from devtools.localhost.catalog import Binding, FunctionSpec

log = logging.getLogger(__name__)

T = TypeVar("T")


class Out(func.Out[T], Generic[T]):
    """An output binding parameter: the function calls ``set``; the host reads ``get``."""

    def __init__(self) -> None:
        self._value: T | None = None

    def set(self, val: T) -> None:
        self._value = val

    def get(self) -> T:
        return self._value  # type: ignore[return-value]


class _TraceContext(functions_abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(functions_abc.RetryContext):
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:
        return None


class Context(func.Context):
    """The ``context`` parameter a function may declare."""

    def __init__(self, function_name: str, invocation_id: str) -> None:
        self._function_name = function_name
        self._invocation_id = invocation_id
        self._local = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return ""

    @property
    def trace_context(self) -> Any:
        return _TraceContext()

    @property
    def retry_context(self) -> Any:
        return _RetryContext()


@dataclass
class Invocation:
    """What one invocation produced: the return value and every output binding's value."""

    function: str
    invocation_id: str
    return_value: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)

    def output(self, binding: Binding) -> Any:
        """The value an output binding received (``$return`` is the return value)."""
        if binding.name == "$return":
            return self.return_value
        return self.outputs.get(binding.name)


async def call(spec: FunctionSpec, trigger_value: Any) -> Invocation:
    """Invoke ``spec`` with its trigger value; exceptions from the function propagate."""
    invocation_id = str(uuid.uuid4())
    outs: dict[str, Out[Any]] = {b.name: Out() for b in spec.outputs if b.name != "$return"}
    kwargs: dict[str, Any] = {spec.trigger.name: trigger_value, **outs}
    if spec.wants_context:
        kwargs["context"] = Context(spec.name, invocation_id)
    log.info("Executing 'Functions.%s' (Id=%s)", spec.name, invocation_id)
    try:
        if spec.is_async:
            result = await spec.user_function(**kwargs)
        else:
            result = await asyncio.to_thread(spec.user_function, **kwargs)
    except BaseException:
        log.info("Executed 'Functions.%s' (Failed, Id=%s)", spec.name, invocation_id)
        raise
    log.info("Executed 'Functions.%s' (Succeeded, Id=%s)", spec.name, invocation_id)
    values: Mapping[str, Any] = {name: out.get() for name, out in outs.items()}
    return Invocation(spec.name, invocation_id, result, dict(values))
