"""The console's model: a refresh publishes only what changed (devtools/console/state.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devtools.console.sources import DeviceRow
from devtools.console.state import ConsoleState, Rules
from shared.storage.deliveries import DeliveryRecord

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
USER = "8:acs:r_u"


def row(token: str, *, sent: tuple[datetime, ...] = ()) -> DeviceRow:
    return DeviceRow(
        user_id=USER,
        device_id="d" + token[:8],
        token=token,
        kind="alert",
        topic="com.example.chat",
        environment="sandbox",
        has_key=True,
        key_expires_at=T0 + timedelta(minutes=45),
        registered_at=T0,
        renewed_at=T0,
        background_sent=sent,
        stale=False,
        unanswered_wakes=0,
        last_result="",
    )


class FakeTables:
    """The app's tables as the console reads them, held in memory."""

    def __init__(self, rows: list[DeviceRow]) -> None:
        self.rows = rows

    async def devices(self) -> list[DeviceRow]:
        return list(self.rows)

    async def renewal_wakes(self) -> dict[tuple[str, str], datetime]:
        return {}

    async def deliveries(self, user: str, thread: str, message: str) -> list[DeliveryRecord]:
        return []


class Clocks:
    def __init__(self) -> None:
        self.now = T0
        self.tick = 0.0

    def wall(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.tick

    def step(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.tick += seconds


def state_with(rows: list[DeviceRow], clocks: Clocks) -> ConsoleState:
    return ConsoleState(
        FakeTables(rows),  # type: ignore[arg-type]
        None,
        Rules(),
        clock=clocks.wall,
        monotonic=clocks.monotonic,
    )


async def test_a_refresh_with_nothing_new_publishes_nothing() -> None:
    clocks = Clocks()
    state = state_with([row("ab" * 32)], clocks)
    first = await state.refresh()
    clocks.step(3)  # the registry is read again, the clock moved: nothing the page shows changed
    assert (first, await state.refresh()) == (True, False)


async def test_a_new_device_in_the_registry_is_a_change_and_a_phone() -> None:
    clocks = Clocks()
    tables_rows = [row("ab" * 32)]
    state = state_with(tables_rows, clocks)
    await state.refresh()
    tables_rows.append(row("cd" * 32))
    clocks.step(3)
    assert (await state.refresh(), len(state.phones)) == (True, 2)


async def test_a_device_gone_from_the_registry_leaves_the_page() -> None:
    clocks = Clocks()
    tables_rows = [row("ab" * 32)]
    state = state_with(tables_rows, clocks)
    await state.refresh()
    tables_rows.clear()
    clocks.step(3)
    await state.refresh()
    assert (state.phones, "left" in state.activity[0]["text"]) == ({}, True)


async def test_the_budget_names_when_the_next_background_push_may_go() -> None:
    clocks = Clocks()
    state = state_with([row("ab" * 32, sent=(T0 - timedelta(minutes=5),))], clocks)
    await state.refresh()
    (phone,) = state.snapshot()["phones"]
    assert (phone["budget"]["used"], phone["budget"]["nextAllowedAt"]) == (
        1,
        "2026-01-01T12:15:00Z",
    )
