"""shared.overlap.both: gather(return_exceptions=True) semantics with one task fewer."""

from __future__ import annotations

import asyncio

import pytest

from shared.overlap import both, result

pytestmark = pytest.mark.unit


async def test_both_results_come_back_in_order() -> None:
    async def value(v: int) -> int:
        await asyncio.sleep(0)
        return v

    assert await both(value(1), value(2)) == (1, 2)


async def test_the_two_overlap() -> None:
    order: list[str] = []
    gate = asyncio.Event()

    async def first() -> str:
        order.append("first started")
        gate.set()
        return "a"

    async def second() -> str:
        await gate.wait()  # would never end if first did not run meanwhile
        order.append("second done")
        return "b"

    assert await both(first(), second()) == ("a", "b")
    assert order == ["first started", "second done"]


async def test_an_exception_is_returned_and_the_other_still_finishes() -> None:
    finished: list[str] = []

    async def fails() -> int:
        raise ValueError("boom")

    async def slow() -> str:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        finished.append("slow")
        return "ok"

    first, second = await both(slow(), fails())
    assert (first, type(second), finished) == ("ok", ValueError, ["slow"])
    first2, second2 = await both(fails(), slow())
    assert (type(first2), second2) == (ValueError, "ok")


async def test_cancelling_the_caller_cancels_both() -> None:
    started = asyncio.Event()
    cancelled: list[str] = []

    async def waits(name: str) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    caller = asyncio.ensure_future(both(waits("first"), waits("second")))
    await started.wait()
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert sorted(cancelled) == ["first", "second"]


def test_result_raises_an_exception_and_passes_a_value() -> None:
    assert result(3) == 3
    with pytest.raises(KeyError):
        result(KeyError("k"))
