"""Two awaitables at once, for the hot paths that overlap two storage calls.

``asyncio.gather(a, b, return_exceptions=True)`` wraps both in tasks and adds a gathering future
and its callbacks; on a chat event at one device that bookkeeping was a measurable share of the
event's CPU (``bench/chat.py``, docs/performance.md). :func:`both` runs the first as a task and
awaits the second in place: the same overlap, one task fewer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

A = TypeVar("A")
B = TypeVar("B")


async def both(
    first: Coroutine[Any, Any, A], second: Awaitable[B]
) -> tuple[A | BaseException, B | BaseException]:
    """Run ``first`` and ``second`` concurrently; each result, or the exception it raised.

    Like ``gather(first, second, return_exceptions=True)``: both run to the end whatever the
    other does. If the caller is cancelled, ``first`` is cancelled too (as gather would) and the
    cancellation propagates; it is never returned as a result.
    """
    task = asyncio.ensure_future(first)
    second_result: B | BaseException
    try:
        second_result = await second
    except asyncio.CancelledError:
        task.cancel()
        raise
    except Exception as exc:  # noqa: BLE001 - returned, as gather(return_exceptions=True) does
        second_result = exc
    first_result: A | BaseException
    try:
        # Cancelling the caller here cancels the task it awaits: nothing is left running.
        first_result = await task
    except asyncio.CancelledError as exc:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        first_result = exc  # the task alone was cancelled (by someone else)
    except Exception as exc:  # noqa: BLE001 - returned, as above
        first_result = exc
    return first_result, second_result


def result(value: A | BaseException) -> A:
    """``value`` itself, or raise it if it is an exception (gather's raise, for callers)."""
    if isinstance(value, BaseException):
        raise value
    return value
