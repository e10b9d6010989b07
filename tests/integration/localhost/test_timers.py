"""Timer triggers: NCRONTAB schedules on an injected clock, and running one now."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from azure.functions.timer import TimerRequest

from devtools.localhost import ManualClock
from devtools.localhost.timers import Schedule
from tests.integration.localhost.conftest import Serve, base_env

pytestmark = pytest.mark.integration

START = datetime(2025, 3, 1, 12, 0, 5, tzinfo=UTC)


def test_ncrontab_has_seconds_first() -> None:
    schedule = Schedule("30 */5 * * * *")

    assert schedule.next_after(START) == datetime(2025, 3, 1, 12, 0, 30, tzinfo=UTC)
    assert schedule.next_after(datetime(2025, 3, 1, 12, 0, 30, tzinfo=UTC)) == datetime(
        2025, 3, 1, 12, 5, 30, tzinfo=UTC
    )


def test_a_timespan_schedule_is_an_interval() -> None:
    assert Schedule("00:05:00").next_after(START) == START + timedelta(minutes=5)


@pytest.mark.parametrize("bad", ["*/5 * * * *", "not a schedule", "61 * * * * *"])
def test_a_schedule_that_is_not_six_field_ncrontab_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="schedule"):
        Schedule(bad)


async def test_a_timer_fires_on_its_schedule_and_not_before(serve: Serve) -> None:
    clock = ManualClock(START)
    s = await serve(base_env(), timers=True, clock=clock)  # TICK_SCHEDULE: every 10 seconds
    async with asyncio.timeout(10):
        await clock.wait_for_sleepers(1)

        clock.advance(timedelta(seconds=4))  # 12:00:09
        await clock.wait_for_sleepers(1)
        assert s.rec.of("tick") == []

        clock.advance(timedelta(seconds=1))  # 12:00:10
        (first,) = await s.rec.wait_for("tick", 1)
        await clock.wait_for_sleepers(1)
        clock.advance(timedelta(seconds=10))  # 12:00:20
        ticks = await s.rec.wait_for("tick", 2)
        await clock.wait_for_sleepers(1)

    assert len(s.rec.of("tick")) == 2
    assert isinstance(first, TimerRequest)
    assert first.past_due is False
    assert ticks[1].schedule_status["Next"] == "2025-03-01T12:00:30+00:00"
    assert ticks[1].schedule_status["Last"] == "2025-03-01T12:00:10+00:00"


async def test_a_clock_jump_over_many_occurrences_fires_once_past_due(serve: Serve) -> None:
    clock = ManualClock(START)
    s = await serve(base_env(), timers=True, clock=clock)
    async with asyncio.timeout(10):
        await clock.wait_for_sleepers(1)

        clock.advance(timedelta(minutes=5))
        (tick,) = await s.rec.wait_for("tick", 1)
        await clock.wait_for_sleepers(1)

    assert len(s.rec.of("tick")) == 1
    assert tick.past_due is True


async def test_admin_endpoint_runs_a_timer_now(serve: Serve) -> None:
    s = await serve(base_env())  # timers not scheduled

    r = await s.client.post("/admin/functions/tick", json={"input": ""})

    assert r.status_code == 202
    (tick,) = await s.rec.wait_for("tick", 1)
    assert tick.past_due is False


async def test_admin_endpoint_rejects_unknown_and_http_functions(serve: Serve) -> None:
    s = await serve(base_env())

    missing = await s.client.post("/admin/functions/nope", json={"input": ""})
    http = await s.client.post("/admin/functions/hello", json={"input": ""})

    assert (missing.status_code, http.status_code) == (404, 400)


async def test_admin_endpoint_runs_an_event_grid_function_with_the_input_event(
    serve: Serve,
) -> None:
    s = await serve(base_env())
    event = '{"id": "1", "eventType": "T", "subject": "s", "data": {"x": 1}, "dataVersion": "1"}'

    r = await s.client.post("/admin/functions/on_event", json={"input": event})

    assert r.status_code == 202
    (got,) = await s.rec.wait_for("on_event", 1)
    assert got.get_json() == {"x": 1}
