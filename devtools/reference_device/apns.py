"""The phone's APNs connection: the pushes APNs accepted for its tokens, read from the simulator.

The APNs simulator logs every request it answered; the requests to one device token that it
answered 200 are what that phone received (``GET /requests?token=HEX&since=SEQ`` on its control
endpoint, docs/apns-simulator.md). Rejected requests never reach a phone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx


@dataclass(frozen=True, slots=True)
class Push:
    """One push as the phone gets it: the APNs headers iOS acts on, and the payload."""

    seq: int
    token: str
    push_type: str
    topic: str
    priority: str | None
    collapse_id: str | None
    apns_id: str | None
    payload: Mapping[str, Any]
    received_at: float = 0.0  # the simulator's clock when it answered (epoch seconds)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Push:
        """From one of the simulator's request records (camelCase JSON)."""
        headers: Mapping[str, str] = record.get("headers") or {}
        payload = record.get("payload")
        return cls(
            seq=int(record["seq"]),
            token=str(record["token"]).lower(),
            push_type=headers.get("apns-push-type", "alert"),
            topic=headers.get("apns-topic", ""),
            priority=headers.get("apns-priority"),
            collapse_id=headers.get("apns-collapse-id"),
            apns_id=record.get("apnsId"),
            payload=payload if isinstance(payload, dict) else {},
            received_at=float(record.get("receivedAt") or 0.0),
        )

    @property
    def aps(self) -> Mapping[str, Any]:
        """The ``aps`` dictionary ({} when absent or not an object)."""
        aps = self.payload.get("aps")
        return aps if isinstance(aps, dict) else {}


class PushSource(Protocol):
    """Where a phone's pushes come from (the simulator, or a test's list)."""

    def pushes(self, token: str, since: int) -> list[Push]:
        """The pushes delivered to ``token`` after ``since`` (a sequence number), in order."""
        ...


class SimulatorPushes:
    """:class:`PushSource` over the APNs simulator's control endpoint."""

    def __init__(self, control_url: str, http: httpx.Client) -> None:
        self._url = control_url.rstrip("/") + "/requests"
        self._http = http

    def pushes(self, token: str, since: int) -> list[Push]:
        """Delivered pushes (answered 200) to ``token`` with a sequence number above ``since``."""
        answer = self._http.get(self._url, params={"token": token, "since": since})
        answer.raise_for_status()
        return [
            Push.from_record(r)
            for r in answer.json()
            if r.get("status") == 200 and r.get("outcome") == "answered"
        ]
