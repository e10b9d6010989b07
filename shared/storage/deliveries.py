"""Delivery claims and the delivery log (the deliveries table).

A push is *claimed* before it is sent, so that a redelivered Event Grid event never pushes a
device twice, and its outcome is written to the same row afterwards: the claim *is* the log.

Keys (one table, three kinds of partition; ``|`` never occurs inside an encoded part)::

    PartitionKey        RowKey                                  holds
    m|<user>|<thread>   <message>|<kind>|<version>|<deviceId>   one claim and its outcome
    m|<user>|calls      <call id>|call|0|<deviceId>             an IncomingCall's VoIP push
    m|<user>|<thread>   !thread                                 legacy mute flag: purged
    m|<user>|<thread>   %t|<message>                            tombstone: the message was deleted
    i|<YYYYMMDD>        m|<user>|<thread>                       purge index: claimed that day
    c|purge             cursor                                  last day purged

Each part is :func:`~shared.storage.tables.encode_key`'d; a part longer than
:data:`MAX_PART_UNITS` is replaced by ``%h`` and its SHA-256 (``%h`` never starts an encoded
part), so a key stays within
Table Storage's 1 KiB however long an id an event carries: a 2,000-character messageId is logged
and pushed like any other, not a 400 from storage that Event Grid retries for 24 hours.

A delete leaves a tombstone that later events of the message respect: an edit (or the original
message) arriving after its delete pushes nothing, and says so in the log. Tombstones are purged
with the claims (they carry ``claimedAt``).

- "What happened to message M in thread T for user U" is one partition query: the partition of
  (U, T), RowKeys from ``M|`` up to ``M}``.
- A redelivery of one event for one recipient touches one partition, so claims and outcomes for
  all of the recipient's devices go in one transaction each (a plain write for a single
  device, which costs a third of the CPU): round trips per event do not grow with the number
  of devices.
- Whether a thread is muted (left, deleted, or by the user's choice) lives in the user's inbox
  (:mod:`shared.storage.inbox`); the ``!thread`` rows earlier versions wrote are deleted by the
  purge.
- Table Storage has no TTL; the purge walks the per-day index partitions (never a full scan),
  deletes the claims older than the retention in each partition named there, then the index
  rows, then moves its cursor. The index names (user, thread) partitions, not messages, and a
  process writes each one once a day, so a busy conversation costs one index write a day.

States: ``pending`` (with a lease: an expired pending claim may be claimed again, so a crash
mid-send does not strand the device), ``delivered``, ``failed`` (permanent: never retried) and
``released`` (retryable failure: a redelivery claims it again), ``skipped`` and ``muted`` (the
thread is muted: no alert, at most a badge-only update). Claims are created with
``create_entity`` semantics (409: someone else has it) and changed with ETag-guarded updates
(412: someone else changed it).

Storage errors are :mod:`shared.storage.tables`' (``StorageUnavailableError`` is transient: retry
later).
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Protocol

from shared.errors import PushRelayError
from shared.overlap import both
from shared.storage.tables import (
    MAX_BATCH,
    EntityChangedError,
    EntityExistsError,
    EntityNotFoundError,
    MatchConditions,
    UpdateMode,
    encode_key,
    key_units,
    read_entity,
    storage_errors,
)

log = logging.getLogger(__name__)

DELIVERIES_TABLE: Final = "deliveries"
LEGACY_MUTE_ROW = "!thread"
TOMBSTONE_PREFIX: Final = "%t|"  # "%t" never starts an encoded part (encode_key writes "%25")
MAX_PART_UNITS: Final = 200
"""Longest key part kept as text (UTF-16 units): a partition (two parts) and a claim's RowKey
(one part, kind, version, deviceId) then stay far within Table Storage's 512. Real ids are far
shorter (rawIds ~90, threadIds ~50, messageIds 13)."""
CURSOR_PARTITION = "c|purge"
CURSOR_ROW = "cursor"
PURGE_FIRST_LOOKBACK_DAYS = 60  # how far back a purge with no cursor yet starts


class UnreadableRecordError(PushRelayError):
    """A deliveries row that is not a record this module wrote (retrying will not help)."""


class DeliveryKind(enum.StrEnum):
    """Which event a push is for; an edit or a delete of a message is a new delivery."""

    RECEIVED = "received"
    EDITED = "edited"
    DELETED = "deleted"
    CALL = "call"  # an IncomingCall's VoIP push: thread CALLS_THREAD, message = the call's id


CALLS_THREAD: Final = "calls"
"""The "thread" of every call delivery: a user's calls share one partition (``m|<user>|calls``).

ACS thread ids look like ``19:...@thread.v2``, so no chat thread can be called this.
"""


class DeliveryState(enum.StrEnum):
    """Where one device's push for one (message, kind, version) stands."""

    PENDING = "pending"  # claimed, lease running, outcome not written yet
    DELIVERED = "delivered"  # APNs answered 200
    FAILED = "failed"  # permanent: no retry can fix it (410, BadDeviceToken, a rejected request)
    RELEASED = "released"  # retryable failure: the next delivery of the event claims it again
    SKIPPED = "skipped"  # decided not to push (over the background budget, no key, ...)
    MUTED = "muted"  # the recipient silenced the thread: no alert (a badge update at most)


FINAL_STATES = frozenset(
    {DeliveryState.DELIVERED, DeliveryState.FAILED, DeliveryState.SKIPPED, DeliveryState.MUTED}
)


@dataclass(frozen=True, slots=True)
class DeliveryKey:
    """What is delivered: one version of one message (kind) in one thread, to one user."""

    user_id: str
    thread_id: str
    message_id: str
    kind: DeliveryKind
    version: int


@dataclass(frozen=True, slots=True)
class DeviceTarget:
    """The parts of a device the log keeps (never the full token)."""

    device_id: str
    short_token: str
    topic: str
    environment: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one push: the state it ends in and APNs' answer."""

    state: DeliveryState
    status: int | None = None
    reason: str | None = None
    apns_id: str | None = None
    attempts: int = 0
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One row of the delivery log: a device's claim and, once known, its outcome."""

    key: DeliveryKey
    device: DeviceTarget
    state: DeliveryState
    claimed_at: datetime
    lease_until: datetime
    claims: int = 1  # how many times the push was claimed (redeliveries after a release)
    event_id: str = ""
    completed_at: datetime | None = None
    status: int | None = None
    reason: str | None = None
    apns_id: str | None = None
    apns_attempts: int = 0
    detail: str | None = None
    etag: str | None = field(default=None, compare=False)

    def with_outcome(self, outcome: Outcome, now: datetime) -> DeliveryRecord:
        """This record with ``outcome`` written (the lease ends)."""
        return replace(
            self,
            state=outcome.state,
            completed_at=now,
            lease_until=now,
            status=outcome.status,
            reason=outcome.reason,
            apns_id=outcome.apns_id,
            apns_attempts=outcome.attempts,
            detail=outcome.detail,
        )


class ClaimVerdict(enum.StrEnum):
    """What a claimer may do with a device, given what the log already holds."""

    CLAIM = "claim"  # nothing there yet: create
    RECLAIM = "reclaim"  # released, or pending with an expired lease: take it over (ETag)
    DONE = "done"  # delivered, failed or skipped: never push again
    IN_FLIGHT = "in_flight"  # pending under someone else's live lease


def verdict(record: DeliveryRecord | None, now: datetime) -> ClaimVerdict:
    """Decide whether a device may be claimed at ``now`` given its existing record."""
    if record is None:
        return ClaimVerdict.CLAIM
    if record.state in FINAL_STATES:
        return ClaimVerdict.DONE
    if record.state is DeliveryState.RELEASED or record.lease_until <= now:
        return ClaimVerdict.RECLAIM
    return ClaimVerdict.IN_FLIGHT


@dataclass(frozen=True, slots=True)
class ClaimSet:
    """The result of claiming a fan-out: ours to send, already finished, and in flight elsewhere."""

    claimed: tuple[DeliveryRecord, ...] = ()
    done: tuple[DeliveryRecord, ...] = ()
    in_flight: tuple[DeliveryRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class MessageState:
    """What the log knows of one message for one user before pushing it."""

    deleted_at: datetime | None = None  # a delete of the message arrived (tombstone)


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What one purge run removed."""

    days: int = 0
    records: int = 0
    index_rows: int = 0


class DeliveryStore(Protocol):
    """Port: claims, outcomes, tombstones and the log (see the module docstring)."""

    async def claim(
        self,
        key: DeliveryKey,
        devices: Sequence[DeviceTarget],
        *,
        now: datetime,
        lease: timedelta,
        event_id: str,
    ) -> ClaimSet:
        """Claim ``key`` for each device; returns which were claimed by us."""
        ...

    async def complete(
        self, results: Sequence[tuple[DeliveryRecord, Outcome]], now: datetime
    ) -> None:
        """Write each claim's outcome (releasing it when the state is ``released``)."""
        ...

    async def message_state(self, user_id: str, thread_id: str, message_id: str) -> MessageState:
        """Whether the message was deleted (its tombstone)."""
        ...

    async def mark_deleted(
        self, user_id: str, thread_id: str, message_id: str, *, at: datetime, event_id: str
    ) -> None:
        """Leave the message's tombstone (idempotent): later events of it push nothing."""
        ...

    async def history(self, user_id: str, thread_id: str, message_id: str) -> list[DeliveryRecord]:
        """Every record of one message in one thread for one user, oldest claim first."""
        ...

    async def purge(self, *, now: datetime, retention: timedelta) -> PurgeReport:
        """Remove records claimed before ``now - retention`` through the per-day index."""
        ...


# --- keys -------------------------------------------------------------------------------------


def _part(text: str) -> str:
    """One key component: Table-safe, never containing the ``|`` separator (encode_key escapes
    it), and at most :data:`MAX_PART_UNITS` long (a longer one is ``%h`` and the SHA-256 of the
    text)."""
    part = encode_key(text)
    if key_units(part) <= MAX_PART_UNITS:
        return part
    return "%h" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def partition_key(user_id: str, thread_id: str) -> str:
    """The partition of one user's deliveries (and mute state) in one thread."""
    return f"m|{_part(user_id)}|{_part(thread_id)}"


def message_prefix(message_id: str) -> str:
    """RowKey prefix of every record of one message."""
    return f"{_part(message_id)}|"


def claim_prefix(key: DeliveryKey) -> str:
    """RowKey prefix of the records of one (message, kind, version)."""
    return f"{message_prefix(key.message_id)}{key.kind.value}|{key.version:020d}|"


def row_key(key: DeliveryKey, device_id: str) -> str:
    """RowKey of one device's claim for one (message, kind, version)."""
    return claim_prefix(key) + _part(device_id)


def tombstone_row(message_id: str) -> str:
    """RowKey of a message's tombstone (in the (user, thread) partition)."""
    return TOMBSTONE_PREFIX + _part(message_id)


def prefix_range(prefix: str) -> tuple[str, str]:
    """Lower (inclusive) and upper (exclusive) RowKey bounds of a ``|``-terminated prefix."""
    return prefix, prefix[:-1] + "}"  # "}" sorts right after "|"


def index_partition(day: date) -> str:
    """The purge-index partition of one UTC day."""
    return f"i|{day:%Y%m%d}"


def index_row(key: DeliveryKey) -> str:
    """The purge-index RowKey: the (user, thread) partition that got claims that day."""
    return partition_key(key.user_id, key.thread_id)


# --- entities ---------------------------------------------------------------------------------


def to_entity(record: DeliveryRecord) -> dict[str, Any]:
    """The table entity of a record (the version as text: it is an int64)."""
    key = record.key
    entity: dict[str, Any] = {
        "PartitionKey": partition_key(key.user_id, key.thread_id),
        "RowKey": row_key(key, record.device.device_id),
        "userId": key.user_id,
        "threadId": key.thread_id,
        "messageId": key.message_id,
        "kind": key.kind.value,
        "version": str(key.version),
        "deviceId": record.device.device_id,
        "token": record.device.short_token,
        "topic": record.device.topic,
        "environment": record.device.environment,
        "state": record.state.value,
        "claimedAt": record.claimed_at,
        "leaseUntil": record.lease_until,
        "claims": record.claims,
        "eventId": record.event_id,
        "apnsAttempts": record.apns_attempts,
    }
    optional: dict[str, object | None] = {
        "completedAt": record.completed_at,
        "status": record.status,
        "reason": record.reason,
        "apnsId": record.apns_id,
        "detail": record.detail,
    }
    entity.update({k: v for k, v in optional.items() if v is not None})
    return entity


def _utc(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise UnreadableRecordError(
            f"deliveries row holds a non-time value: {type(value).__name__}"
        )
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _opt_str(entity: Mapping[str, Any], name: str) -> str | None:
    value = entity.get(name)
    return None if value is None else str(value)


def from_entity(entity: Mapping[str, Any], etag: str | None = None) -> DeliveryRecord:
    """The record of a table entity. Raises UnreadableRecordError on a row it cannot read."""
    try:
        key = DeliveryKey(
            user_id=str(entity["userId"]),
            thread_id=str(entity["threadId"]),
            message_id=str(entity["messageId"]),
            kind=DeliveryKind(entity["kind"]),
            version=int(entity["version"]),
        )
        device = DeviceTarget(
            device_id=str(entity["deviceId"]),
            short_token=str(entity.get("token", "")),
            topic=str(entity.get("topic", "")),
            environment=str(entity.get("environment", "")),
        )
        completed = entity.get("completedAt")
        status = entity.get("status")
        return DeliveryRecord(
            key=key,
            device=device,
            state=DeliveryState(entity["state"]),
            claimed_at=_utc(entity["claimedAt"]),
            lease_until=_utc(entity["leaseUntil"]),
            claims=int(entity.get("claims", 1)),
            event_id=str(entity.get("eventId", "")),
            completed_at=None if completed is None else _utc(completed),
            status=None if status is None else int(status),
            reason=_opt_str(entity, "reason"),
            apns_id=_opt_str(entity, "apnsId"),
            apns_attempts=int(entity.get("apnsAttempts", 0)),
            detail=_opt_str(entity, "detail"),
            etag=etag,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise UnreadableRecordError(f"unreadable deliveries row: {exc}") from exc


def new_claim(
    key: DeliveryKey,
    device: DeviceTarget,
    *,
    now: datetime,
    lease: timedelta,
    event_id: str,
    previous: DeliveryRecord | None = None,
) -> DeliveryRecord:
    """A pending record for ``device`` (a re-claim keeps the count of earlier claims)."""
    return DeliveryRecord(
        key=key,
        device=device,
        state=DeliveryState.PENDING,
        claimed_at=now,
        lease_until=now + lease,
        claims=1 if previous is None else previous.claims + 1,
        event_id=event_id,
        etag=None if previous is None else previous.etag,
    )


def chunks(items: Sequence[Any], size: int = MAX_BATCH) -> Iterable[Sequence[Any]]:
    """``items`` in slices of at most ``size`` (one transaction each)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def days_to_purge(cursor: date | None, now: datetime, retention: timedelta) -> list[date]:
    """The UTC days whose index partitions a purge at ``now`` walks, oldest first."""
    last = (now - retention).date() - timedelta(days=1)
    first = (
        cursor + timedelta(days=1)
        if cursor is not None
        else last - timedelta(days=PURGE_FIRST_LOOKBACK_DAYS)
    )
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


# --- the Table Storage adapter ----------------------------------------------------------------


class TableDeliveryStore:
    """:class:`DeliveryStore` on an (already created) :class:`shared.storage.tables.TableClient`.

    Raises :class:`~shared.storage.tables.StorageUnavailableError` when storage does not answer,
    :class:`~shared.storage.tables.StorageRejectedError` on a request it refuses, and
    :class:`UnreadableRecordError`.
    """

    def __init__(self, table: Any) -> None:
        self._table = table
        self._indexed: tuple[date, set[str]] = (date.min, set())

    async def claim(
        self,
        key: DeliveryKey,
        devices: Sequence[DeviceTarget],
        *,
        now: datetime,
        lease: timedelta,
        event_id: str,
    ) -> ClaimSet:
        """Claim ``key`` for each device: one transaction; a read and one more on redelivery."""
        if not devices:
            return ClaimSet()
        fresh = [new_claim(key, d, now=now, lease=lease, event_id=event_id) for d in devices]
        created: list[DeliveryRecord] | BaseException
        if self._index_needed(key, now):
            created, indexed = await both(self._create_all(fresh), self._touch_index(key, now))
            if isinstance(indexed, BaseException):
                raise indexed
        else:
            # The partition is in today's index already (every message of a conversation but
            # its first of the day): the claim is awaited in place, without gather's two tasks.
            try:
                created = await self._create_all(fresh)
            except EntityExistsError as exc:
                created = exc
        if isinstance(created, EntityExistsError):
            return await self._claim_existing(key, devices, now=now, lease=lease, event_id=event_id)
        if isinstance(created, BaseException):
            raise created
        return ClaimSet(claimed=tuple(created))

    def _index_needed(self, key: DeliveryKey, now: datetime) -> bool:
        """Whether this process has not yet named the claim's partition in today's index."""
        day, seen = self._indexed
        return day != now.date() or index_row(key) not in seen

    async def _touch_index(self, key: DeliveryKey, now: datetime) -> None:
        """Name the claim's partition in today's purge index (once a day per process)."""
        day, seen = self._indexed
        if day != now.date():
            day, seen = now.date(), set()
            self._indexed = (day, seen)
        row = index_row(key)
        if row in seen:
            return
        entity = {"PartitionKey": index_partition(day), "RowKey": row}
        with storage_errors("index a delivery"):
            await self._table.upsert_entity(entity)
        seen.add(row)

    async def _create_all(self, records: Sequence[DeliveryRecord]) -> list[DeliveryRecord]:
        """Create the claims; raises EntityExistsError when any already exists."""
        out: list[DeliveryRecord] = []
        for part in chunks(records):
            with storage_errors("claim deliveries"):
                if len(part) == 1:
                    # A lone entity skips the transaction's multipart encoding (a third the CPU).
                    answers = [await self._table.create_entity(to_entity(part[0]))]
                else:
                    answers = await self._table.submit_transaction(
                        [("create", to_entity(r)) for r in part]
                    )
            out += [replace(r, etag=_etag(a)) for r, a in zip(part, answers, strict=True)]
        return out

    async def _claim_existing(
        self,
        key: DeliveryKey,
        devices: Sequence[DeviceTarget],
        *,
        now: datetime,
        lease: timedelta,
        event_id: str,
    ) -> ClaimSet:
        pk = partition_key(key.user_id, key.thread_id)
        existing = {
            r.device.device_id: r async for r in self._records(pk, *prefix_range(claim_prefix(key)))
        }
        wanted: list[tuple[ClaimVerdict, DeliveryRecord]] = []
        done: list[DeliveryRecord] = []
        busy: list[DeliveryRecord] = []
        for device in devices:
            prior = existing.get(device.device_id)
            what = verdict(prior, now)
            if prior is not None and what is ClaimVerdict.DONE:
                done.append(prior)
            elif prior is not None and what is ClaimVerdict.IN_FLIGHT:
                busy.append(prior)
            else:
                claim = new_claim(
                    key, device, now=now, lease=lease, event_id=event_id, previous=prior
                )
                wanted.append((what, claim))
        claimed, lost = await self._write_claims(wanted)
        return ClaimSet(claimed=tuple(claimed), done=tuple(done), in_flight=tuple(busy + lost))

    async def _write_claims(
        self, wanted: Sequence[tuple[ClaimVerdict, DeliveryRecord]]
    ) -> tuple[list[DeliveryRecord], list[DeliveryRecord]]:
        """Create or take over claims in one transaction, or one by one after a race."""
        if not wanted:
            return [], []
        if 1 < len(wanted) <= MAX_BATCH:
            try:
                with storage_errors("claim deliveries again"):
                    answers = await self._table.submit_transaction(
                        [_claim_op(what, record) for what, record in wanted]
                    )
            except (EntityExistsError, EntityChangedError):
                pass
            else:
                pairs = zip(wanted, answers, strict=True)
                return [replace(r, etag=_etag(a)) for (_, r), a in pairs], []
        claimed: list[DeliveryRecord] = []
        lost: list[DeliveryRecord] = []
        for what, record in wanted:
            mine = await self._write_one_claim(what, record)
            if mine is None:
                lost.append(record)
            else:
                claimed.append(mine)
        return claimed, lost

    async def _write_one_claim(
        self, what: ClaimVerdict, record: DeliveryRecord
    ) -> DeliveryRecord | None:
        try:
            with storage_errors("claim a delivery"):
                if what is ClaimVerdict.CLAIM:
                    answer = await self._table.create_entity(to_entity(record))
                else:
                    answer = await self._table.update_entity(
                        to_entity(record),
                        mode=UpdateMode.REPLACE,
                        etag=record.etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
        except (EntityExistsError, EntityChangedError, EntityNotFoundError):
            log.info(
                "claim lost to a concurrent delivery thread=%s message=%s device=%s",
                record.key.thread_id,
                record.key.message_id,
                record.device.short_token,
            )
            return None
        return replace(record, etag=_etag(answer))

    async def complete(
        self, results: Sequence[tuple[DeliveryRecord, Outcome]], now: datetime
    ) -> None:
        """Write outcomes: one ETag-guarded transaction per partition, row by row after a race."""
        by_partition: dict[str, list[DeliveryRecord]] = {}
        for record, outcome in results:
            pk = partition_key(record.key.user_id, record.key.thread_id)
            by_partition.setdefault(pk, []).append(record.with_outcome(outcome, now))
        for records in by_partition.values():
            for part in chunks(records):
                if len(part) == 1:
                    await self._complete_one(part[0])
                    continue
                try:
                    with storage_errors("record outcomes"):
                        await self._table.submit_transaction([_replace_op(r) for r in part])
                except (EntityChangedError, EntityNotFoundError):
                    for record in part:
                        await self._complete_one(record)

    async def _complete_one(self, record: DeliveryRecord) -> None:
        try:
            with storage_errors("record an outcome"):
                await self._table.update_entity(
                    to_entity(record),
                    mode=UpdateMode.REPLACE,
                    etag=record.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (EntityChangedError, EntityNotFoundError):
            # Our lease ran out and another delivery took the claim over; its outcome wins.
            log.warning(
                "outcome not recorded, claim taken over thread=%s message=%s device=%s state=%s",
                record.key.thread_id,
                record.key.message_id,
                record.device.short_token,
                record.state,
            )

    async def message_state(self, user_id: str, thread_id: str, message_id: str) -> MessageState:
        """The message's tombstone: one point read."""
        row = await read_entity(
            self._table,
            partition_key(user_id, thread_id),
            tombstone_row(message_id),
            what="read a message's tombstone",
        )
        return MessageState() if row is None else MessageState(deleted_at=_utc(row["claimedAt"]))

    async def mark_deleted(
        self, user_id: str, thread_id: str, message_id: str, *, at: datetime, event_id: str
    ) -> None:
        """Write the tombstone (an upsert: redeliveries of the delete write the same row)."""
        entity = {
            "PartitionKey": partition_key(user_id, thread_id),
            "RowKey": tombstone_row(message_id),
            "userId": user_id,
            "threadId": thread_id,
            "messageId": message_id,
            "claimedAt": at,  # the purge removes it with the claims of that day
            "eventId": event_id,
        }
        key = DeliveryKey(user_id, thread_id, message_id, DeliveryKind.DELETED, 0)
        with storage_errors("write a message's tombstone"):
            await self._table.upsert_entity(entity)
        await self._touch_index(key, at)

    async def history(self, user_id: str, thread_id: str, message_id: str) -> list[DeliveryRecord]:
        """Every record of the message for the user: one partition query."""
        pk = partition_key(user_id, thread_id)
        records = [r async for r in self._records(pk, *prefix_range(message_prefix(message_id)))]
        return sorted(records, key=lambda r: (r.claimed_at, r.key.kind, r.device.device_id))

    async def purge(self, *, now: datetime, retention: timedelta) -> PurgeReport:
        """Walk the index partitions of the days past ``retention``, oldest first."""
        cutoff = now - retention
        days = records = rows = 0
        for day in days_to_purge(await self._cursor(), now, retention):
            gone, index_rows = await self._purge_day(day, cutoff)
            days, records, rows = days + 1, records + gone, rows + index_rows
            await self._set_cursor(day)
        if records:
            log.info("purged %d delivery records over %d days", records, days)
        return PurgeReport(days=days, records=records, index_rows=rows)

    async def _purge_day(self, day: date, cutoff: datetime) -> tuple[int, int]:
        rows = [e async for e in self._query(index_partition(day))]
        deleted = 0
        for row in rows:
            old = [
                e
                async for e in self._query(str(row["RowKey"]))
                if ("claimedAt" in e and _utc(e["claimedAt"]) < cutoff)
                or e["RowKey"] == LEGACY_MUTE_ROW
            ]
            await self._delete_rows(old)
            deleted += len(old)
        await self._delete_rows(rows)
        return deleted, len(rows)

    async def _delete_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        by_partition: dict[str, list[Mapping[str, Any]]] = {}
        for row in rows:
            by_partition.setdefault(str(row["PartitionKey"]), []).append(row)
        for group in by_partition.values():
            for part in chunks(group):
                ops = [
                    ("delete", {"PartitionKey": r["PartitionKey"], "RowKey": r["RowKey"]})
                    for r in part
                ]
                try:
                    with storage_errors("purge deliveries"):
                        await self._table.submit_transaction(ops)
                except EntityNotFoundError:
                    # A purge that crashed half-way: delete what is still there, one by one.
                    for _, entity in ops:
                        await self._delete_one(entity)

    async def _delete_one(self, entity: Mapping[str, Any]) -> None:
        try:
            with storage_errors("purge a delivery"):
                await self._table.delete_entity(entity["PartitionKey"], entity["RowKey"])
        except EntityNotFoundError:
            pass

    async def _cursor(self) -> date | None:
        row = await read_entity(
            self._table, CURSOR_PARTITION, CURSOR_ROW, what="read the purge cursor"
        )
        if row is None:
            return None
        return datetime.strptime(str(row["day"]), "%Y%m%d").replace(tzinfo=UTC).date()

    async def _set_cursor(self, day: date) -> None:
        entity = {"PartitionKey": CURSOR_PARTITION, "RowKey": CURSOR_ROW, "day": f"{day:%Y%m%d}"}
        with storage_errors("move the purge cursor"):
            await self._table.upsert_entity(entity)

    async def _records(self, pk: str, lo: str, hi: str) -> AsyncIterator[DeliveryRecord]:
        async for entity in self._query(pk, lo, hi):
            yield from_entity(entity, _meta_etag(entity))

    async def _query(
        self, pk: str, lo: str | None = None, hi: str | None = None
    ) -> AsyncIterator[Mapping[str, Any]]:
        flt = "PartitionKey eq @pk"
        params: dict[str, str] = {"pk": pk}
        if lo is not None and hi is not None:
            flt += " and RowKey ge @lo and RowKey lt @hi"
            params |= {"lo": lo, "hi": hi}
        with storage_errors("query deliveries"):
            async for entity in self._table.query_entities(flt, parameters=params):
                yield entity


def _etag(answer: Mapping[str, Any] | None) -> str | None:
    value = None if not answer else answer.get("etag")
    return None if value is None else str(value)


def _meta_etag(entity: Any) -> str | None:
    metadata = getattr(entity, "metadata", None)
    value = metadata.get("etag") if isinstance(metadata, Mapping) else None
    return None if value is None else str(value)


def _claim_op(what: ClaimVerdict, record: DeliveryRecord) -> tuple[Any, ...]:
    return ("create", to_entity(record)) if what is ClaimVerdict.CLAIM else _replace_op(record)


def _replace_op(record: DeliveryRecord) -> tuple[Any, ...]:
    options = {
        "mode": UpdateMode.REPLACE,
        "etag": record.etag,
        "match_condition": MatchConditions.IfNotModified,
    }
    return ("update", to_entity(record), options)
