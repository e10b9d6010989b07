"""The simulator's state and its decision for each request: stateless checks, provider-token or
certificate auth, device registry, scripted faults. Shared by the HTTP/2 listeners (event-loop
thread) and the API/control endpoint (any thread): registries and the log sit behind one lock;
per-connection token state is touched only on the event-loop thread."""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from devtools.apns_simulator.faults import Fault, FaultBook
from devtools.apns_simulator.reasons import status_for
from devtools.apns_simulator.records import ConnectionRecord, Outcome, RequestRecord
from devtools.apns_simulator.tokens import (
    DecodedToken,
    ProviderKey,
    decode_token,
    decode_unverified,
    iat_reason,
    topic_allowed,
)
from devtools.apns_simulator.validation import CheckedRequest, base_topic, check_request

Environment = Literal["sandbox", "production"]
ENVIRONMENTS: tuple[Environment, ...] = ("sandbox", "production")
# Apple: a new provider token more than once per 20 minutes on one connection -> 429.
TOKEN_UPDATE_INTERVAL_SECONDS = 20 * 60
_JWT_CACHE_SIZE = 16
_random = random.Random()  # noqa: S311 - identifiers in a test double, not secrets


class SimClock:
    """Wall-clock time (or an injected clock) shifted by a settable offset."""

    def __init__(self, source: Callable[[], float] | None) -> None:
        self._source = source or time.time
        self._offset = 0.0

    def now(self) -> float:
        """Current simulator time, epoch seconds."""
        return self._source() + self._offset

    def set_time(self, epoch_seconds: float) -> None:
        """Make ``now()`` return ``epoch_seconds`` at this instant (time keeps flowing)."""
        self._offset = epoch_seconds - self._source()

    def advance(self, seconds: float) -> None:
        """Move simulator time forward (or back, if negative)."""
        self._offset += seconds


@dataclass
class Device:
    """A registered device token."""

    environment: Environment
    topics: frozenset[str] | None


@dataclass
class ConnState:
    """Mutable per-connection state (event-loop thread only)."""

    id: int
    environment: Environment
    auth: Literal["token", "certificate"]
    opened_at: float
    stream_limit: int
    cert_topic: str | None = None
    cert_not_after: float | None = None
    closed_at: float | None = None
    team_id: str | None = None
    key_id: str | None = None
    token: str | None = None
    token_since: float = 0.0
    token_changes: int = 0
    rejected_updates: int = 0
    requests: int = 0
    first_success: bool = False
    goaway_reason: str | None = None
    jwt_cache: dict[str, tuple[int, DecodedToken]] = field(default_factory=dict)

    def snapshot(self) -> ConnectionRecord:
        """A read-only copy for callers."""
        return ConnectionRecord(
            id=self.id,
            environment=self.environment,
            auth=self.auth,
            opened_at=self.opened_at,
            closed_at=self.closed_at,
            team_id=self.team_id,
            key_id=self.key_id,
            certificate_topic=self.cert_topic,
            token_changes=self.token_changes,
            rejected_token_updates=self.rejected_updates,
            requests=self.requests,
            max_concurrent_streams=self.stream_limit,
            goaway_reason=self.goaway_reason,
        )


@dataclass(frozen=True)
class IncomingRequest:
    """A complete request as received on one stream."""

    stream_id: int
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_size: int


Action = Literal["answer", "no_answer", "reset", "close", "goaway"]


@dataclass(frozen=True)
class Decision:
    """What the connection does with a request; ``record`` gets its outcome when done."""

    action: Action
    status: int
    body: bytes
    apns_id: str
    unique_id: bool
    delay: float
    goaway: str | None
    lower_streams_to: int | None
    record: RequestRecord


class SimulatorState:
    """Registries, faults, log and the per-request decision."""

    def __init__(
        self,
        clock: SimClock,
        max_concurrent_streams: int,
        log_limit: int | None,
    ) -> None:
        self.clock = clock
        self.max_concurrent_streams = max_concurrent_streams
        self.cond = threading.Condition()
        self.keys: dict[str, ProviderKey] = {}
        self.keys_generation = 0
        self.devices: dict[str, Device] = {}
        self.unregistered: dict[str, int] = {}
        self.strict_devices = False
        self.faults = FaultBook()
        self._processed = 0
        self._seq = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self.log: collections.deque[RequestRecord] = collections.deque(maxlen=log_limit)
        self.logged = 0
        self.connections: dict[int, ConnState] = {}

    # --- registries ---------------------------------------------------------------------------
    def register_key(self, key: ProviderKey) -> None:
        with self.cond:
            self.keys = {**self.keys, key.key_id: key}
            self.keys_generation += 1

    def register_device(self, token: str, device: Device) -> None:
        with self.cond:
            self.devices[token.lower()] = device
            self.unregistered.pop(token.lower(), None)

    def unregister_device(self, token: str, at_ms: int) -> None:
        with self.cond:
            self.unregistered[token.lower()] = at_ms

    def add_fault(self, fault: Fault) -> str:
        with self.cond:
            return self.faults.add(fault, self._processed)

    def reset(self) -> None:
        with self.cond:
            self.keys = {}
            self.keys_generation += 1
            self.devices.clear()
            self.unregistered.clear()
            self.strict_devices = False
            self.faults.clear()
            self.log.clear()
            self.logged = 0
            for conn_id in [c.id for c in self.connections.values() if c.closed_at is not None]:
                del self.connections[conn_id]

    # --- connections --------------------------------------------------------------------------
    def open_connection(
        self,
        environment: Environment,
        auth: Literal["token", "certificate"],
        cert_topic: str | None,
        cert_not_after: dt.datetime | None,
    ) -> ConnState:
        # Apple: with token auth only one stream until a request with a valid token succeeded.
        limit = 1 if auth == "token" else self.max_concurrent_streams
        with self.cond:
            conn = ConnState(
                id=next(self._conn_ids),
                environment=environment,
                auth=auth,
                opened_at=self.clock.now(),
                stream_limit=limit,
                cert_topic=cert_topic,
                cert_not_after=None if cert_not_after is None else cert_not_after.timestamp(),
            )
            self.connections[conn.id] = conn
        return conn

    def close_connection(self, conn: ConnState) -> None:
        with self.cond:
            conn.closed_at = self.clock.now()

    # --- log ----------------------------------------------------------------------------------
    def finish(self, record: RequestRecord, outcome: Outcome) -> None:
        """Append ``record`` with its final outcome to the log and wake waiters."""
        with self.cond:
            self.log.append(replace(record, outcome=outcome))
            self.logged += 1
            self.cond.notify_all()

    def refused_by_limit(self, conn: ConnState, stream_id: int, method: str, path: str) -> None:
        """Log a stream reset because it exceeded the advertised stream limit."""
        record = RequestRecord(
            seq=next(self._seq), connection_id=conn.id, environment=conn.environment,
            stream_id=stream_id, method=method, path=path, token=None, headers={},
            payload=None, raw_size=0, jwt_header=None, jwt_claims=None, status=None,
            reason="REFUSED_STREAM", apns_id=None, outcome="reset", received_at=self.clock.now(),
        )  # fmt: skip
        self.finish(record, "reset")

    # --- the decision -------------------------------------------------------------------------
    def decide(self, conn: ConnState, req: IncomingRequest) -> Decision:
        """Validate ``req`` like APNs (or apply a matching fault) and say how to answer."""
        checked = check_request(req.method, req.path, req.headers, req.body, req.raw_size)
        with self.cond:
            self._processed += 1
            count = self._processed
            seq = next(self._seq)
        conn.requests += 1
        now = self.clock.now()
        auth = _first(req.headers, "authorization")
        matched = self.faults.match(count, checked.token)
        fault_id, fault = matched if matched else (None, None)
        jwt_header: dict[str, Any] | None = None
        jwt_claims: dict[str, Any] | None = None
        timestamp: int | None = None
        if fault is not None and fault.replaces_answer:
            reason = fault.answer_reason
            status = fault.answer_status or 200
            if reason in ("Unregistered", "ExpiredToken"):
                timestamp = int(now * 1000)
        else:
            reason = checked.reason
            if reason is None:
                reason, decoded = self._authenticate(conn, checked, auth, now)
                if decoded is not None:
                    jwt_header, jwt_claims = decoded.header, decoded.claims
            if reason is None:
                reason, timestamp = self._device_state(conn, checked)
            status = 200 if reason is None else status_for(reason)
        if jwt_header is None and auth is not None and conn.auth == "token":
            jwt_header, jwt_claims = decode_unverified(_bearer(auth))
        apns_id = checked.apns_id if checked.reason != "BadMessageId" and checked.apns_id else None
        record = RequestRecord(
            seq=seq, connection_id=conn.id, environment=conn.environment,
            stream_id=req.stream_id, method=req.method, path=req.path, token=checked.token,
            headers=_header_dict(req.headers), payload=checked.payload, raw_size=req.raw_size,
            jwt_header=jwt_header, jwt_claims=jwt_claims, status=status, reason=reason,
            apns_id=apns_id or fast_uuid4(), outcome="answered", received_at=now,
            fault_id=fault_id, timestamp_ms=timestamp,
        )  # fmt: skip
        return Decision(
            action=_action(fault),
            status=status,
            body=_error_body(reason, timestamp),
            apns_id=record.apns_id or "",
            unique_id=conn.environment == "sandbox" and status == 200,
            delay=fault.delay if fault else 0.0,
            goaway=fault.goaway if fault else None,
            lower_streams_to=fault.max_concurrent_streams if fault else None,
            record=record,
        )

    def _authenticate(
        self, conn: ConnState, checked: CheckedRequest, auth: str | None, now: float
    ) -> tuple[str | None, DecodedToken | None]:
        topic = checked.topic or ""
        if conn.auth == "certificate":
            if conn.cert_not_after is not None and conn.cert_not_after <= now:
                return "BadCertificate", None
            uid = conn.cert_topic or ""
            if topic not in (uid, f"{uid}.voip", f"{uid}.complication"):
                return "BadTopic", None
            return None, None
        if auth is None or auth[:7].lower() != "bearer ":
            return "MissingProviderToken", None
        jwt = _bearer(auth)
        decoded = self._decode_cached(conn, jwt)
        reason = decoded.reason or iat_reason(decoded.iat or 0, now)
        if reason is not None:
            return reason, decoded
        key = decoded.key
        assert key is not None
        if conn.team_id is not None and key.team_id != conn.team_id:
            return "InvalidProviderToken", decoded
        changed = conn.token is not None and jwt != conn.token
        if changed and now - conn.token_since < TOKEN_UPDATE_INTERVAL_SECONDS:
            conn.rejected_updates += 1
            return "TooManyProviderTokenUpdates", decoded
        if not topic_allowed(key, topic, base_topic(topic)):
            return "InvalidProviderToken", decoded
        if jwt != conn.token:
            conn.token_changes += int(changed)
            conn.token, conn.token_since = jwt, now
            conn.team_id, conn.key_id = key.team_id, key.key_id
        return None, decoded

    def _decode_cached(self, conn: ConnState, jwt: str) -> DecodedToken:
        generation = self.keys_generation
        cached = conn.jwt_cache.get(jwt)
        if cached is not None and cached[0] == generation:
            return cached[1]
        decoded = decode_token(jwt, self.keys)
        if len(conn.jwt_cache) >= _JWT_CACHE_SIZE:
            conn.jwt_cache.clear()
        conn.jwt_cache[jwt] = (generation, decoded)
        return decoded

    def _device_state(
        self, conn: ConnState, checked: CheckedRequest
    ) -> tuple[str | None, int | None]:
        token = (checked.token or "").lower()
        topic = checked.topic or ""
        with self.cond:
            at_ms = self.unregistered.get(token)
            device = self.devices.get(token)
            strict = self.strict_devices
        if at_ms is not None:
            return "Unregistered", at_ms
        if device is None:
            return ("BadDeviceToken" if strict else None), None
        if strict and device.environment != conn.environment:
            return "BadDeviceToken", None
        if device.topics is not None and not {topic, base_topic(topic)} & device.topics:
            return "DeviceTokenNotForTopic", None
        return None, None


def fast_uuid4() -> str:
    """A random lowercase UUID (version 4). Not for secrets: ``uuid.uuid4()`` reads os.urandom,
    which costs more than the rest of a request under load."""
    return str(uuid.UUID(int=_random.getrandbits(128), version=4))


def _first(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((value for key, value in headers if key == name), None)


def _bearer(auth: str) -> str:
    return auth[7:].strip()


def _header_dict(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, raw in headers:
        value = raw
        if name == "authorization":
            digest = hashlib.sha256(_bearer(raw).encode()).hexdigest()[:16]
            value = f"bearer sha256:{digest}"
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _action(fault: Fault | None) -> Action:
    if fault is None:
        return "answer"
    if fault.close_connection:
        return "close"
    if fault.goaway is not None:
        return "goaway"
    if fault.refuse_stream:
        return "reset"
    if fault.no_answer:
        return "no_answer"
    return "answer"


def _error_body(reason: str | None, timestamp: int | None) -> bytes:
    if reason is None:
        return b""
    if timestamp is not None:
        return b'{"reason":"%s","timestamp":%d}' % (reason.encode(), timestamp)
    return b'{"reason":"%s"}' % reason.encode()
