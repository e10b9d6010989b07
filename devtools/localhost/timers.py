"""Timer triggers on their NCRONTAB schedules, with an injectable clock.

NCRONTAB has six fields, seconds first (``0 */5 * * * *``); croniter reads it with
``second_at_beginning=True``. A ``hh:mm:ss`` TimeSpan schedule is an interval. Schedules are
evaluated in UTC (the Linux host's default). Like the host, a runner never overlaps its own
invocations, and when the clock jumped past several occurrences it fires once, past due.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from azure.functions import meta
from azure.functions.timer import TimerRequest, TimerRequestConverter
from croniter import croniter

from devtools.localhost.catalog import FunctionSpec

log = logging.getLogger(__name__)

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})$")
# The host calls an invocation past due when it starts noticeably after its scheduled time.
PAST_DUE_AFTER = timedelta(seconds=1)


class Clock(Protocol):
    """Wall-clock time and waiting for it (tests inject :class:`ManualClock`)."""

    def now(self) -> datetime: ...

    async def sleep_until(self, when: datetime) -> None: ...


class SystemClock:
    """The real clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        # Re-check at least every minute so a changed wall clock is noticed.
        while (remaining := (when - self.now()).total_seconds()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(remaining, 60.0))


class ManualClock:
    """A clock that only moves when a test calls :meth:`advance`."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._waiters: list[tuple[datetime, asyncio.Future[None]]] = []
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (when, future)
        self._waiters.append(entry)
        async with self._condition():
            self._condition().notify_all()
        try:
            await future
        finally:
            self._waiters.remove(entry)

    def advance(self, delta: timedelta) -> None:
        """Move time forward and wake every sleeper whose time has come."""
        self._now += delta
        for when, future in list(self._waiters):
            if when <= self._now and not future.done():
                future.set_result(None)

    @property
    def sleepers(self) -> int:
        """Tasks currently waiting for a time still in the future."""
        return sum(1 for _, f in self._waiters if not f.done())

    async def wait_for_sleepers(self, count: int) -> None:
        """Wait until ``count`` tasks sleep (every woken runner has finished and sleeps again).

        Callers bound the wait themselves (``asyncio.timeout``).
        """
        condition = self._condition()
        async with condition:
            await condition.wait_for(lambda: self.sleepers >= count)


class Schedule:
    """An NCRONTAB expression or a TimeSpan interval."""

    def __init__(self, expression: str) -> None:
        self.expression = expression.strip()
        span = _TIMESPAN.match(self.expression)
        self.interval: timedelta | None = None
        if span is not None:
            days, hours, minutes, seconds = (int(g or 0) for g in span.groups())
            self.interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
            if self.interval <= timedelta(0):
                raise ValueError(f"schedule {expression!r} must be a positive interval")
            return
        if len(self.expression.split()) != 6:
            raise ValueError(
                f"schedule {expression!r} must be NCRONTAB with six fields, seconds first"
            )
        if not croniter.is_valid(self.expression, second_at_beginning=True):
            raise ValueError(f"schedule {expression!r} is not a valid NCRONTAB expression")

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment``."""
        if self.interval is not None:
            return moment + self.interval
        it = croniter(self.expression, moment, second_at_beginning=True)
        result = it.get_next(datetime)
        assert isinstance(result, datetime)
        return result


def timer_request(
    *, past_due: bool, last: datetime | None, next_at: datetime, now: datetime
) -> TimerRequest:
    """A TimerRequest decoded from the JSON the host sends, by the worker's own converter."""
    info = {
        "Schedule": {"AdjustForDST": True},
        "ScheduleStatus": {
            "Last": (last or datetime.min.replace(tzinfo=UTC)).isoformat(),
            "Next": next_at.isoformat(),
            "LastUpdated": now.isoformat(),
        },
        "IsPastDue": past_due,
    }
    datum = meta.Datum(type="json", value=json.dumps(info))
    request = TimerRequestConverter.decode(datum, trigger_metadata={})
    assert isinstance(request, TimerRequest)
    return request


Fire = Callable[[FunctionSpec, Any], Awaitable[Any]]


class TimerRunner:
    """Runs one timer-triggered function on its schedule until cancelled."""

    def __init__(self, spec: FunctionSpec, fire: Fire, clock: Clock) -> None:
        self.spec = spec
        self.schedule = Schedule(str(spec.trigger.get("schedule", "")))
        self._fire = fire
        self._clock = clock

    async def _invoke(self, request: TimerRequest) -> None:
        try:
            await self._fire(self.spec, request)
        except Exception:
            log.exception("timer function %s failed", self.spec.name)

    async def run(self) -> None:
        """Sleep until each occurrence and invoke; never returns (cancel it)."""
        last: datetime | None = None
        next_at = self.schedule.next_after(self._clock.now())
        if self.spec.trigger.get("runOnStartup"):
            now = self._clock.now()
            await self._invoke(timer_request(past_due=False, last=None, next_at=next_at, now=now))
        while True:
            await self._clock.sleep_until(next_at)
            now = self._clock.now()
            following = self.schedule.next_after(max(now, next_at))
            past_due = now - next_at > PAST_DUE_AFTER
            await self._invoke(
                timer_request(past_due=past_due, last=last, next_at=following, now=now)
            )
            last = next_at
            next_at = self.schedule.next_after(max(self._clock.now(), next_at))
