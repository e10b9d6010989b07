"""Scripted faults: which requests they hit and what they do instead of (or on top of) a normal
answer. Matching is by arrival order of complete requests, counted from when the fault was added."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, fields
from typing import Any

from devtools.apns_simulator.reasons import REASON_STATUS, status_for


@dataclass(frozen=True)
class Fault:
    """One scripted fault.

    Selection (all given conditions must hold; none given hits every request): ``token`` (a device
    token), ``nth`` (the n-th request counted from when the fault was added, 1-based), ``every``
    (every k-th request), ``times`` (hits before the fault is spent; None: unlimited).

    Effect: ``reason``/``status`` answer with that rejection instead of validating; ``delay``
    seconds before answering; ``no_answer`` never answers the stream; ``close_connection`` drops
    the TCP connection; ``goaway`` sends GOAWAY with ``{"reason": goaway}`` and a last_stream_id
    below this stream (so it must be resent), then closes; ``refuse_stream`` resets the stream with
    REFUSED_STREAM; ``max_concurrent_streams`` sends SETTINGS lowering the limit before answering.
    """

    token: str | None = None
    nth: int | None = None
    every: int | None = None
    times: int | None = None
    status: int | None = None
    reason: str | None = None
    delay: float = 0.0
    no_answer: bool = False
    close_connection: bool = False
    goaway: str | None = None
    refuse_stream: bool = False
    max_concurrent_streams: int | None = None

    def __post_init__(self) -> None:
        for name in ("nth", "every", "times", "max_concurrent_streams"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"Fault.{name} must be a positive whole number, got {value!r}")
        if self.delay < 0:
            raise ValueError("Fault.delay must be >= 0")
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"Fault.status must be an HTTP status, got {self.status!r}")

    @property
    def answer_status(self) -> int | None:
        """The status this fault answers with, derived from ``reason`` when not given."""
        if self.status is not None:
            return self.status
        if self.reason is not None:
            return status_for(self.reason)
        return None

    @property
    def answer_reason(self) -> str | None:
        """The reason this fault answers with; derived from ``status`` when not given."""
        if self.reason is not None or self.status is None or self.status == 200:
            return self.reason
        matches = (r for r, s in REASON_STATUS.items() if s == self.status)
        return next(matches, "InternalServerError")

    @property
    def replaces_answer(self) -> bool:
        """True when the request is not validated: the fault decides what (if anything) is sent."""
        return (
            self.answer_status is not None
            or self.no_answer
            or self.close_connection
            or self.goaway is not None
            or self.refuse_stream
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        """Build a fault from the control API / faults file form (camelCase field names)."""
        names = {f.name: f.name for f in fields(cls)}
        names.update(
            noAnswer="no_answer",
            closeConnection="close_connection",
            refuseStream="refuse_stream",
            maxConcurrentStreams="max_concurrent_streams",
        )
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
        return cls(**{names[key]: value for key, value in data.items()})


@dataclass
class _Armed:
    id: str
    fault: Fault
    base: int
    hits: int = 0


class FaultBook:
    """The active faults, in the order they were added; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[_Armed] = []
        self._ids = itertools.count(1)

    def add(self, fault: Fault, processed_so_far: int) -> str:
        """Arm ``fault``; ``processed_so_far`` is the request count it starts counting from."""
        with self._lock:
            fault_id = f"f{next(self._ids)}"
            self._armed.append(_Armed(fault_id, fault, processed_so_far))
            return fault_id

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._armed.clear()

    def match(self, count: int, token: str | None) -> tuple[str, Fault] | None:
        """The first live fault that hits request number ``count`` (and spend one hit of it)."""
        with self._lock:
            if not self._armed:
                return None
            for armed in self._armed:
                f = armed.fault
                relative = count - armed.base
                if f.times is not None and armed.hits >= f.times:
                    continue
                if f.token is not None and (token is None or f.token.lower() != token.lower()):
                    continue
                if f.nth is not None and relative != f.nth:
                    continue
                if f.every is not None and relative % f.every != 0:
                    continue
                armed.hits += 1
                return armed.id, f
            return None
