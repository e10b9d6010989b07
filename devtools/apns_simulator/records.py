"""What the simulator remembers: one record per request and per connection (read-only snapshots)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Outcome = Literal["answered", "no_answer", "reset", "closed"]


@dataclass(frozen=True)
class RequestRecord:
    """One request as the simulator saw and answered it.

    ``headers`` are the regular (non-pseudo) request headers, lowercase names; the ``authorization``
    value is replaced by ``bearer sha256:<16 hex>`` of the JWT so records can be compared without
    holding the token. ``status``/``reason`` are what was (or would have been) answered; ``outcome``
    says whether an answer went out at all.
    """

    seq: int
    connection_id: int
    environment: str
    stream_id: int
    method: str
    path: str
    token: str | None
    headers: dict[str, str]
    payload: Any
    raw_size: int
    jwt_header: dict[str, Any] | None
    jwt_claims: dict[str, Any] | None
    status: int | None
    reason: str | None
    apns_id: str | None
    outcome: Outcome
    received_at: float
    fault_id: str | None = None
    timestamp_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as the control endpoint serves it (camelCase keys)."""
        return _camel(asdict(self))


@dataclass(frozen=True)
class ConnectionRecord:
    """One HTTP/2 connection: its environment, auth mode and provider-token history."""

    id: int
    environment: str
    auth: Literal["token", "certificate"]
    opened_at: float
    closed_at: float | None
    team_id: str | None
    key_id: str | None
    certificate_topic: str | None
    token_changes: int
    rejected_token_updates: int
    requests: int
    max_concurrent_streams: int
    goaway_reason: str | None

    @property
    def closed(self) -> bool:
        """True once the TCP connection is gone."""
        return self.closed_at is not None

    def to_json(self) -> dict[str, Any]:
        """The record as the control endpoint serves it (camelCase keys)."""
        return _camel(asdict(self))


def _camel(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        head, *rest = key.split("_")
        out[head + "".join(part.title() for part in rest)] = value
    return out
