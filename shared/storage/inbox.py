"""Each user's inbox: unread messages per thread, read markers and preferences (inbox table).

**What is counted.** The badge counts unread *messages*, not threads with unread messages: the
per-thread numbers the app draws in its thread list then add up to the badge, every new message
raises it (so a second message in a thread does change what the user sees), and it is what
Messages and most chat apps show. A message is counted once, when its ``ChatMessageReceived``
first arrives; a redelivery finds it already counted. It stops counting when the user reads up
to it, when it is deleted, or when the user leaves the thread (or the thread is deleted).

**Order.** ACS message ids are the message's creation time in epoch milliseconds, so they order
the messages of a thread (Microsoft's own chat UI compares read receipts by message id on that
ground: Azure/communication-ui-library,
``packages/chat-component-bindings/src/utils/getParticipantsWhoHaveReadMessage.ts``). ACS read
receipts name one message id and mean "read up to here"; a read marker here is the same. A
message id that is not a decimal number cannot be ordered: it is pushed, never counted.

**One row per user.** PartitionKey = the encoded rawId, RowKey ``inbox``; the state is JSON in
string properties ``s0``, ``s1``, ... (a property holds at most 64 KiB; ~30,000 characters each).
So a chat event reads one row (a point read, concurrently with the device query) and, when the
count changes, replaces it under its ETag: one more round trip, whatever the number of devices.
A concurrent change (412, or 409 on the first write) is re-read and re-applied; every change is a
pure function of the state (:class:`Inbox`), so a redelivered event, a stale read report or a late
membership event changes nothing.

Per thread the row keeps the ids of its counted unread messages (at most
:data:`MAX_TRACKED_PER_THREAD`; older ones fold into a block, see :class:`ThreadState`), the read
marker, tombstones of messages deleted before they were counted (so a late ``ChatMessageReceived``
cannot count them), membership (left, and when), the thread's alert preference and mute, and when
it last changed. A thread with nothing unread and no preference is dropped
:data:`IDLE_KEEP` after its last change, longer than Event Grid retries an event (24 hours at
most), so a redelivery can never find its marker gone.

Storage errors are :mod:`shared.storage.tables`' (``StorageUnavailableError`` is transient).
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import itertools
import json
import logging
import operator
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from shared.domain.quiet_hours import QuietHours
from shared.errors import ConflictError, PushRelayError, TransientError
from shared.storage.tables import (
    EntityChangedError,
    EntityExistsError,
    EntityNotFoundError,
    encode_key,
    read_entity,
    write_if_unchanged,
)

log = logging.getLogger(__name__)

INBOX_TABLE: Final = "inbox"
INBOX_ROW: Final = "inbox"
SCHEMA: Final = 1
MAX_TRACKED_PER_THREAD: Final = 1000
"""Unread message ids kept per thread; older unread messages are counted as a block."""
MAX_TOMBSTONES: Final = 200
MAX_THREAD_PREFERENCES: Final = 1000
IDLE_KEEP: Final = timedelta(days=3)
MAX_STATE_CHARS: Final = 400_000
"""The JSON state's limit: 800 KB as UTF-16, under Table Storage's 1 MiB per entity."""
CHUNK_CHARS: Final = 30_000
"""Characters per string property (64 KiB as UTF-16 is the limit)."""
UPDATE_ATTEMPTS: Final = 10
PAUSE_STEP_SECONDS: Final = 0.005
FOREVER: Final = datetime.max.replace(tzinfo=UTC)
"""``muted_until`` of a thread muted for good."""
_MAX_ORDER: Final = 2**63 - 1


class UnreadableInboxError(PushRelayError):
    """An inbox row this module did not write (retrying will not help)."""


class InboxBusyError(TransientError):
    """The inbox kept changing under us (many concurrent writers): retry later."""


class InboxFullError(ConflictError):
    """Too many threads with a preference (the edge answers 409 ``too_many_thread_preferences``)."""

    def __init__(self) -> None:
        super().__init__("too_many_thread_preferences")


def message_order(message_id: str) -> int | None:
    """The order of an ACS message id (its creation time in ms), or None if it is not one."""
    if not message_id.isascii() or not message_id.isdigit() or len(message_id) > 19:
        return None
    order = int(message_id)
    return order if 0 < order <= _MAX_ORDER else None


def epoch_ms(when: datetime) -> int:
    """``when`` as epoch milliseconds: the unit of message ids."""
    return int(when.timestamp() * 1000)


class Alerts(enum.StrEnum):
    """A thread's alert setting."""

    ALL = "all"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Preferences:
    """A user's own choices."""

    count_muted: bool = False  # muted (and alerts-none) threads still count towards the badge
    quiet_hours: QuietHours | None = None


@dataclass(frozen=True, slots=True)
class ThreadState:
    """One thread in a user's inbox.

    ``unread`` holds the order keys of counted unread messages, ascending. Past
    :data:`MAX_TRACKED_PER_THREAD` the oldest fold into ``folded`` (a count) up to
    ``folded_up_to``: a message at or below that key is taken as counted, a read marker at or past
    it clears the block, and one that stops inside it leaves the whole block unread (a thread with
    over a thousand unread messages may over-count until the user reads further).
    """

    unread: tuple[int, ...] = ()
    folded: int = 0
    folded_up_to: int = 0
    read_up_to: int = 0
    deleted: tuple[int, ...] = ()
    left: bool = False
    membership_at: int = 0  # epoch ms of the last leave or join applied
    alerts: Alerts = Alerts.ALL
    muted_until: datetime | None = None
    touched: int = 0  # epoch seconds of the last change

    @property
    def unread_count(self) -> int:
        """Counted unread messages."""
        return 0 if self.left else self.folded + len(self.unread)

    def silenced(self, now: datetime) -> bool:
        """Whether alerts for this thread are off at ``now`` (alerts none, or muted)."""
        return self.alerts is Alerts.NONE or (
            self.muted_until is not None and self.muted_until > now
        )

    def is_idle(self, now: datetime) -> bool:
        """Nothing unread, no preference in force, unchanged for :data:`IDLE_KEEP`."""
        return (
            self.unread_count == 0
            and not self.silenced(now)
            and now.timestamp() - self.touched > IDLE_KEEP.total_seconds()
        )

    def _seen(self, order: int) -> bool:
        """Whether a message of this order was counted, read, folded or deleted already."""
        return (
            order <= self.read_up_to
            or order <= self.folded_up_to
            or _contains(self.unread, order)
            or _contains(self.deleted, order)
        )

    def knows_deleted(self, order: int) -> bool | None:
        """Whether the message of ``order`` was deleted, as far as this thread's state tells.

        None when it cannot tell: at or below the read marker or the folded block, or older than
        every tombstone kept (they are capped), where deletes are not remembered here.
        """
        if order <= self.read_up_to or order <= self.folded_up_to:
            return None
        if _contains(self.deleted, order):
            return True
        if len(self.deleted) >= MAX_TOMBSTONES and order < self.deleted[0]:
            return None
        return False

    def fold(self, count: int) -> ThreadState:
        """Fold the ``count`` oldest tracked messages into the block."""
        count = min(count, len(self.unread))
        if count <= 0:
            return self
        up_to = max(self.folded_up_to, self.unread[count - 1])
        return replace(
            self,
            unread=self.unread[count:],
            folded=self.folded + count,
            folded_up_to=up_to,
            deleted=tuple(k for k in self.deleted if k > up_to),
        )


_EMPTY_THREAD: Final = ThreadState()


def _contains(keys: tuple[int, ...], order: int) -> bool:
    at = bisect.bisect_left(keys, order)
    return at < len(keys) and keys[at] == order


def _insert(keys: tuple[int, ...], order: int) -> tuple[int, ...]:
    at = bisect.bisect_left(keys, order)
    return (*keys[:at], order, *keys[at:])


@dataclass(frozen=True, slots=True)
class Inbox:
    """A user's inbox. Every change returns a new one (unchanged when there is nothing to do)."""

    preferences: Preferences = Preferences()
    threads: Mapping[str, ThreadState] = field(default_factory=dict)

    def thread(self, thread_id: str) -> ThreadState:
        """The state of one thread (an empty one if the inbox has none)."""
        return self.threads.get(thread_id, _EMPTY_THREAD)

    def counts(self, thread_id: str, now: datetime) -> bool:
        """Whether the thread's unread messages count towards the badge at ``now``."""
        state = self.thread(thread_id)
        return not state.left and (self.preferences.count_muted or not state.silenced(now))

    def badge(self, now: datetime) -> int:
        """The number on the app icon at ``now``."""
        return sum(
            s.unread_count
            for t, s in self.threads.items()
            if s.unread_count and self.counts(t, now)
        )

    def quiet(self, now: datetime) -> bool:
        """Whether the user's quiet hours are on at ``now``."""
        quiet = self.preferences.quiet_hours
        return quiet is not None and quiet.is_quiet(now)

    # --- changes ------------------------------------------------------------------------------

    def _with(self, thread_id: str, state: ThreadState, now: datetime) -> Inbox:
        threads = dict(self.threads)
        threads[thread_id] = replace(state, touched=int(now.timestamp()))
        return replace(self, threads=threads)

    def received(self, thread_id: str, order: int, now: datetime) -> Inbox:
        """Count a new message, unless it was seen already or the user left the thread."""
        state = self.thread(thread_id)
        if state.left or state._seen(order):
            return self
        state = replace(state, unread=_insert(state.unread, order))
        if len(state.unread) > MAX_TRACKED_PER_THREAD:
            state = state.fold(len(state.unread) - MAX_TRACKED_PER_THREAD)
        return self._with(thread_id, state, now)

    def deleted(self, thread_id: str, order: int, now: datetime) -> Inbox:
        """Take a deleted message off; one not counted yet is remembered so it never will be."""
        state = self.thread(thread_id)
        unread = state.unread
        if _contains(unread, order):
            unread = tuple(k for k in unread if k != order)
        elif state.left or state._seen(order):
            return self
        # Remembered either way: a redelivered ChatMessageReceived must not count it again.
        tombstones = _insert(state.deleted, order)[-MAX_TOMBSTONES:]
        return self._with(thread_id, replace(state, unread=unread, deleted=tombstones), now)

    def read(self, thread_id: str, order: int, now: datetime) -> Inbox:
        """The user read the thread up to the message of ``order``; an older marker is ignored."""
        state = self.thread(thread_id)
        if order <= state.read_up_to:
            return self
        state = replace(
            state,
            read_up_to=order,
            unread=tuple(k for k in state.unread if k > order),
            deleted=tuple(k for k in state.deleted if k > order),
            folded=0 if order >= state.folded_up_to else state.folded,
        )
        return self._with(thread_id, state, now)

    def left(self, thread_id: str, at: datetime, now: datetime) -> Inbox:
        """The user left the thread (or it was deleted) at ``at``; a later join wins."""
        state, when = self.thread(thread_id), epoch_ms(at)
        if when < state.membership_at or (state.left and when == state.membership_at):
            return self
        top = max(state.read_up_to, state.folded_up_to, *state.unread[-1:])
        state = replace(
            state,
            left=True,
            membership_at=when,
            read_up_to=top,
            unread=(),
            folded=0,
            deleted=(),
        )
        return self._with(thread_id, state, now)

    def joined(self, thread_id: str, at: datetime, now: datetime) -> Inbox:
        """The user was added to the thread at ``at``: counted again from then on."""
        state, when = self.thread(thread_id), epoch_ms(at)
        if when <= state.membership_at:
            return self
        if state.left:
            state = replace(state, left=False, read_up_to=max(state.read_up_to, when))
        return self._with(thread_id, replace(state, membership_at=when), now)

    def with_thread_preference(
        self, thread_id: str, alerts: Alerts, muted_until: datetime | None, now: datetime
    ) -> Inbox:
        """Set a thread's alerts and mute. Raises InboxFullError past MAX_THREAD_PREFERENCES."""
        state = self.thread(thread_id)
        if (state.alerts, state.muted_until) == (alerts, muted_until):
            return self
        new = replace(state, alerts=alerts, muted_until=muted_until)
        if new.silenced(now) and not state.silenced(now):
            held = sum(1 for s in self.threads.values() if s.silenced(now))
            if held >= MAX_THREAD_PREFERENCES:
                raise InboxFullError()
        return self._with(thread_id, new, now)

    def with_preferences(self, preferences: Preferences) -> Inbox:
        """Replace the user's own choices."""
        return self if preferences == self.preferences else replace(self, preferences=preferences)

    def pruned(self, now: datetime) -> Inbox:
        """Drop the threads that are idle at ``now``."""
        idle = [t for t, s in self.threads.items() if s.is_idle(now)]
        if not idle:
            return self
        return replace(self, threads={t: s for t, s in self.threads.items() if t not in idle})


# --- the stored form ---------------------------------------------------------------------------


def _deltas(keys: tuple[int, ...]) -> list[int]:
    """Ascending keys as their first value and the steps between them (what the row stores)."""
    return list(map(operator.sub, keys, (0, *keys[:-1])))


def _undelta(values: object) -> tuple[int, ...]:
    """The keys of :func:`_deltas`' list. Raises TypeError/ValueError on anything else.

    Every chat event reads and rewrites the whole inbox, so this runs over every id the row
    holds (up to MAX_TRACKED_PER_THREAD per thread): each step is one C-level pass (map, min,
    accumulate) rather than a Python loop per id, several times faster for a thread holding
    hundreds.
    """
    if type(values) is not list:
        raise TypeError("not a list")
    if not set(map(type, values)) <= {int}:  # bool is an int subclass, and not a key
        raise TypeError("not an integer")
    if min(values[1:], default=1) <= 0:
        raise ValueError("keys out of order")  # strictly ascending: every step positive
    return tuple(itertools.accumulate(values))


def _thread_json(state: ThreadState) -> dict[str, Any]:
    body: dict[str, Any] = {"at": state.touched}
    optional: dict[str, Any] = {
        "u": _deltas(state.unread) if state.unread else None,
        "f": state.folded or None,
        "fu": state.folded_up_to or None,
        "r": state.read_up_to or None,
        "d": _deltas(state.deleted) if state.deleted else None,
        "l": 1 if state.left else None,
        "m": state.membership_at or None,
        "a": state.alerts.value if state.alerts is not Alerts.ALL else None,
    }
    if state.muted_until is not None:
        optional["mu"] = -1 if state.muted_until == FOREVER else int(state.muted_until.timestamp())
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def _thread_from_json(body: Mapping[str, Any]) -> ThreadState:
    muted = body.get("mu")
    muted_until = (
        None if muted is None else FOREVER if muted == -1 else datetime.fromtimestamp(muted, UTC)
    )
    return ThreadState(
        unread=_undelta(body.get("u", [])),
        folded=int(body.get("f", 0)),
        folded_up_to=int(body.get("fu", 0)),
        read_up_to=int(body.get("r", 0)),
        deleted=_undelta(body.get("d", [])),
        left=bool(body.get("l", 0)),
        membership_at=int(body.get("m", 0)),
        alerts=Alerts(body.get("a", Alerts.ALL.value)),
        muted_until=muted_until,
        touched=int(body["at"]),
    )


def encode_inbox(inbox: Inbox) -> str:
    """The inbox as compact JSON (what the row stores)."""
    prefs = inbox.preferences
    body: dict[str, Any] = {"v": SCHEMA}
    if prefs.count_muted:
        body["cm"] = True
    if prefs.quiet_hours is not None:
        body["q"] = prefs.quiet_hours.as_json()
    body["t"] = {t: _thread_json(s) for t, s in inbox.threads.items()}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def decode_inbox(text: str) -> Inbox:
    """The inbox of :func:`encode_inbox`'s JSON. Raises UnreadableInboxError otherwise."""
    try:
        body = json.loads(text)
        if not isinstance(body, dict) or body.get("v") != SCHEMA:
            raise ValueError("not an inbox of this schema")
        quiet = body.get("q")
        prefs = Preferences(
            count_muted=bool(body.get("cm", False)),
            quiet_hours=None if quiet is None else QuietHours.from_stored(quiet),
        )
        threads = {str(t): _thread_from_json(s) for t, s in dict(body.get("t", {})).items()}
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise UnreadableInboxError(f"unreadable inbox row: {type(exc).__name__}") from exc
    return Inbox(prefs, threads)


def fit_inbox(inbox: Inbox, now: datetime, limit: int = MAX_STATE_CHARS) -> Inbox:
    """``inbox`` shrunk until its JSON fits ``limit``.

    First the threads holding nothing but a read marker or a left thread go, least recently
    changed first (a redelivery of one of their messages could then count again); then the
    threads tracking most ids fold half of them. Raises InboxFullError if preferences alone
    fill it (MAX_THREAD_PREFERENCES prevents that).
    """
    while len(encode_inbox(inbox)) > limit:
        bare = sorted(
            (s.touched, t)
            for t, s in inbox.threads.items()
            if s.unread_count == 0 and not s.deleted and not s.silenced(now)
        )
        threads = dict(inbox.threads)
        if bare:
            for _, thread_id in bare[: max(1, len(bare) // 2)]:
                del threads[thread_id]
        else:
            thread_id, state = max(threads.items(), key=lambda item: len(item[1].unread))
            if len(state.unread) < 2:
                raise InboxFullError()
            threads[thread_id] = state.fold(len(state.unread) // 2)
        inbox = replace(inbox, threads=threads)
    return inbox


# --- storage -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InboxSnapshot:
    """An inbox as read, with the row's ETag (None: no row yet)."""

    inbox: Inbox
    etag: str | None = None


EMPTY: Final = InboxSnapshot(Inbox())


class InboxStore(Protocol):
    """Port: read and conditionally replace one user's inbox row."""

    async def read(self, user_id: str) -> InboxSnapshot:
        """The user's inbox (empty, without an ETag, when there is no row)."""
        ...

    async def write(self, user_id: str, prior: InboxSnapshot, inbox: Inbox) -> InboxSnapshot | None:
        """Store ``inbox`` if the row is still ``prior``; None when someone else changed it."""
        ...


@dataclass(frozen=True, slots=True)
class InboxChange:
    """What one change did: the inbox before and after (equal when nothing changed)."""

    before: Inbox
    after: Inbox

    @property
    def changed(self) -> bool:
        """Whether the change was written."""
        return self.before != self.after


async def jittered_pause(attempt: int) -> None:
    """Wait a random while, longer after each lost race, so concurrent writers spread out."""
    await asyncio.sleep(random.uniform(0, PAUSE_STEP_SECONDS * 2 ** min(attempt, 4)))  # noqa: S311


async def change_inbox(
    store: InboxStore,
    user_id: str,
    change: Callable[[Inbox], Inbox],
    now: datetime,
    *,
    first: InboxSnapshot | None = None,
    pause: Callable[[int], Awaitable[None]] = jittered_pause,
) -> InboxChange:
    """Apply ``change`` (pure) to the user's inbox, re-reading and re-applying after a race.

    ``first`` is a snapshot already read (saves a round trip). Idle threads are pruned and the
    result fitted before it is written; after a lost race ``pause(attempt)`` runs before the
    re-read. Raises InboxBusyError after :data:`UPDATE_ATTEMPTS` races, InboxFullError from
    ``change``, and storage errors.
    """
    snapshot = first if first is not None else await store.read(user_id)
    for attempt in range(UPDATE_ATTEMPTS):
        after = change(snapshot.inbox)
        if after == snapshot.inbox:
            return InboxChange(snapshot.inbox, after)
        after = fit_inbox(after.pruned(now), now)
        written = await store.write(user_id, snapshot, after)
        if written is not None:
            return InboxChange(snapshot.inbox, after)
        await pause(attempt)
        snapshot = await store.read(user_id)
    raise InboxBusyError(f"inbox changed {UPDATE_ATTEMPTS} times while we wrote it")


class TableInboxStore:
    """:class:`InboxStore` on an (already created) :class:`shared.storage.tables.TableClient`.

    Raises :class:`~shared.storage.tables.StorageUnavailableError` when storage does not answer,
    :class:`~shared.storage.tables.StorageRejectedError` on a request it refuses, and
    :class:`UnreadableInboxError`.
    """

    def __init__(self, table: Any) -> None:
        self._table = table

    async def read(self, user_id: str) -> InboxSnapshot:
        """One point read."""
        entity = await read_entity(
            self._table, encode_key(user_id), INBOX_ROW, what="read an inbox"
        )
        if entity is None:
            return EMPTY
        return InboxSnapshot(decode_inbox(_joined(entity)), _etag_of(entity))

    async def write(self, user_id: str, prior: InboxSnapshot, inbox: Inbox) -> InboxSnapshot | None:
        """Create the row, or replace it under ``prior``'s ETag: one round trip."""
        entity = _entity(user_id, encode_inbox(inbox))
        try:
            answer = await write_if_unchanged(
                self._table, entity, prior.etag, what="write an inbox"
            )
        except (EntityExistsError, EntityChangedError, EntityNotFoundError):
            return None
        etag = answer.get("etag") if isinstance(answer, Mapping) else None
        return InboxSnapshot(inbox, None if etag is None else str(etag))


def _entity(user_id: str, text: str) -> dict[str, Any]:
    parts = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]
    entity: dict[str, Any] = {
        "PartitionKey": encode_key(user_id),
        "RowKey": INBOX_ROW,
        "schema": SCHEMA,
        "chunks": len(parts),
    }
    entity.update({f"s{n}": part for n, part in enumerate(parts)})
    return entity


def _joined(entity: Mapping[str, Any]) -> str:
    try:
        return "".join(str(entity[f"s{n}"]) for n in range(int(entity["chunks"])))
    except (KeyError, ValueError, TypeError) as exc:
        raise UnreadableInboxError(f"unreadable inbox row: {type(exc).__name__}") from exc


def _etag_of(entity: Any) -> str | None:
    metadata = getattr(entity, "metadata", None)
    value = metadata.get("etag") if isinstance(metadata, Mapping) else None
    return None if value is None else str(value)
