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

**The stored form.** Per thread the row keeps the ids of its counted unread messages (at most
:data:`MAX_TRACKED_PER_THREAD`; older ones fold into a block, see :class:`ThreadState`), the read
marker, tombstones of messages deleted before they were counted (so a late ``ChatMessageReceived``
cannot count them), membership (left, and when), the thread's alert preference and mute, and when
it last changed. A thread with nothing unread and no preference is dropped
:data:`IDLE_KEEP` after its last change, longer than Event Grid retries an event (24 hours at
most), so a redelivery can never find its marker gone.

An id list is stored as its first id and the steps between the ids. Schema 1 (``"v": 1``) wrote
each list as a JSON array of numbers, and every event decoded every thread's ids into
:class:`ThreadState` objects and printed them again: a recipient with an unread backlog in
threads they never open cost milliseconds per event. Schema 2 writes each list as one string,
the steps in decimal joined by commas (``"u": "1772366400000,4211,90"``); a row is read with
each thread's lists checked (one regular-expression match each, so an unreadable row still
fails at read) but kept as text, a thread's ids are decoded only when that thread is asked for,
the badge, pruning and fitting answer from each thread's summary (its counts and flags), and
the threads an event did not change are written back as they were read. Both schemas are
always read; which one is written is ``INBOX_ROW_SCHEMA`` (:class:`TableInboxStore`), 1 by
default because versions before schema 2 cannot read a schema 2 row (a deployment must be able
to roll back): written as schema 1, a row is read back whole, as before.

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
import re
from collections.abc import Awaitable, Callable, Collection, ItemsView, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol, cast

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
SCHEMA: Final = 2
WRITABLE_SCHEMAS: Final = (1, 2)
"""What a row may be written as (``INBOX_ROW_SCHEMA``); both are always read."""
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


class _Stored:
    """A thread as read from the row: its fields decoded, its id lists still as stored.

    Every chat event reads the whole row but changes one thread: the others answer the badge,
    pruning and fitting from this summary and go back to the row as they came. The ids are
    decoded (once) only when the thread itself is asked for.
    """

    __slots__ = ("_state", "deleted_text", "shell", "tombstones", "tracked", "unread_text")

    def __init__(self, shell: ThreadState, unread_text: str, deleted_text: str) -> None:
        self.shell = shell  # every field but ``unread`` and ``deleted``
        self.unread_text = unread_text
        self.deleted_text = deleted_text
        self.tracked = unread_text.count(",") + 1 if unread_text else 0
        self.tombstones = deleted_text.count(",") + 1 if deleted_text else 0
        self._state: ThreadState | None = None

    @property
    def unread_count(self) -> int:
        """:attr:`ThreadState.unread_count`."""
        return 0 if self.shell.left else self.shell.folded + self.tracked

    @property
    def left(self) -> bool:
        """:attr:`ThreadState.left`."""
        return self.shell.left

    @property
    def touched(self) -> int:
        """:attr:`ThreadState.touched`."""
        return self.shell.touched

    def silenced(self, now: datetime) -> bool:
        """:meth:`ThreadState.silenced`."""
        return self.shell.silenced(now)

    def is_idle(self, now: datetime) -> bool:
        """:meth:`ThreadState.is_idle`."""
        return (
            self.unread_count == 0
            and not self.shell.silenced(now)
            and now.timestamp() - self.shell.touched > IDLE_KEEP.total_seconds()
        )

    def state(self) -> ThreadState:
        """The thread, its ids decoded (cannot fail: :func:`_checked_ids` read them)."""
        if self._state is None:
            self._state = replace(
                self.shell,
                unread=_keys(self.unread_text) if self.unread_text else (),
                deleted=_keys(self.deleted_text) if self.deleted_text else (),
            )
        return self._state


_Entry = ThreadState | _Stored


def _decoded(entry: _Entry) -> ThreadState:
    return entry if isinstance(entry, ThreadState) else entry.state()


def _id_counts(entry: _Entry) -> tuple[int, int]:
    """How many unread ids and tombstones the thread holds."""
    if isinstance(entry, ThreadState):
        return len(entry.unread), len(entry.deleted)
    return entry.tracked, entry.tombstones


def _same(a: _Entry, b: _Entry) -> bool:
    if a is b:
        return True
    if isinstance(a, _Stored) and isinstance(b, _Stored) and a.shell == b.shell:
        # Stored ids are canonical (no leading zeros, no empty list), so text equality decides.
        return (a.unread_text, a.deleted_text) == (b.unread_text, b.deleted_text)
    return _decoded(a) == _decoded(b)


class _Threads(Mapping[str, ThreadState]):
    """:attr:`Inbox.threads`: a mapping that decodes a stored thread only when it is read."""

    __slots__ = ("_entries",)
    __hash__ = None  # type: ignore[assignment]  # mutable values inside, as a dict's

    def __init__(self, entries: dict[str, _Entry]) -> None:
        self._entries = entries

    def __getitem__(self, thread_id: str) -> ThreadState:
        return _decoded(self._entries[thread_id])

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, thread_id: object) -> bool:
        return thread_id in self._entries

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        theirs = other._entries if isinstance(other, _Threads) else dict(other)
        mine = self._entries
        return mine.keys() == theirs.keys() and all(_same(e, theirs[t]) for t, e in mine.items())

    def __repr__(self) -> str:
        return repr(dict(self.items()))

    def entries(self) -> ItemsView[str, _Entry]:
        """Each thread's summary (a state, or a stored thread answering the same questions)."""
        return self._entries.items()

    def entry(self, thread_id: str) -> _Entry:
        """One thread's summary (an empty thread if there is none)."""
        return self._entries.get(thread_id, _EMPTY_THREAD)

    def with_state(self, thread_id: str, state: ThreadState) -> _Threads:
        """These threads, ``thread_id`` set to ``state``."""
        entries = dict(self._entries)
        entries[thread_id] = state
        return _Threads(entries)

    def without(self, thread_ids: Collection[str]) -> _Threads:
        """These threads but ``thread_ids``."""
        return _Threads({t: e for t, e in self._entries.items() if t not in thread_ids})

    @classmethod
    def of(cls, threads: Mapping[str, ThreadState]) -> _Threads:
        """``threads`` as a :class:`_Threads` (itself if it is one)."""
        return threads if isinstance(threads, _Threads) else cls(dict(threads))


@dataclass(frozen=True, slots=True)
class Inbox:
    """A user's inbox. Every change returns a new one (unchanged when there is nothing to do)."""

    preferences: Preferences = Preferences()
    threads: Mapping[str, ThreadState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.threads, _Threads):
            object.__setattr__(self, "threads", _Threads(dict(self.threads)))

    @property
    def _table(self) -> _Threads:
        return cast(_Threads, self.threads)  # made one by __post_init__

    def thread(self, thread_id: str) -> ThreadState:
        """The state of one thread (an empty one if the inbox has none)."""
        return self.threads.get(thread_id, _EMPTY_THREAD)

    def counts(self, thread_id: str, now: datetime) -> bool:
        """Whether the thread's unread messages count towards the badge at ``now``."""
        state = self._table.entry(thread_id)
        return not state.left and (self.preferences.count_muted or not state.silenced(now))

    def badge(self, now: datetime) -> int:
        """The number on the app icon at ``now``."""
        # From each thread's summary: no thread's ids are decoded (every chat event asks).
        count_muted = self.preferences.count_muted
        return sum(
            s.unread_count
            for _, s in self._table.entries()
            if s.unread_count and not s.left and (count_muted or not s.silenced(now))
        )

    def quiet(self, now: datetime) -> bool:
        """Whether the user's quiet hours are on at ``now``."""
        quiet = self.preferences.quiet_hours
        return quiet is not None and quiet.is_quiet(now)

    # --- changes ------------------------------------------------------------------------------

    def _with(self, thread_id: str, state: ThreadState, now: datetime) -> Inbox:
        touched = replace(state, touched=int(now.timestamp()))
        return replace(self, threads=self._table.with_state(thread_id, touched))

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
            held = sum(1 for _, s in self._table.entries() if s.silenced(now))
            if held >= MAX_THREAD_PREFERENCES:
                raise InboxFullError()
        return self._with(thread_id, new, now)

    def with_preferences(self, preferences: Preferences) -> Inbox:
        """Replace the user's own choices."""
        return self if preferences == self.preferences else replace(self, preferences=preferences)

    def pruned(self, now: datetime) -> Inbox:
        """Drop the threads that are idle at ``now``."""
        idle = [t for t, s in self._table.entries() if s.is_idle(now)]
        if not idle:
            return self
        return replace(self, threads=self._table.without(idle))


# --- the stored form ---------------------------------------------------------------------------


def _deltas(keys: tuple[int, ...]) -> list[int]:
    """Ascending keys as their first value and the steps between them (what the row stores)."""
    return list(map(operator.sub, keys, (0, *keys[:-1])))


def _ids_text(keys: tuple[int, ...]) -> str:
    """Ascending keys as stored: :func:`_deltas` in decimal, joined by commas."""
    return ",".join(map(str, _deltas(keys)))


def _keys(text: str) -> tuple[int, ...]:
    """The keys of :func:`_ids_text` (a text :func:`_checked_ids` accepted)."""
    return tuple(itertools.accumulate(map(int, text.split(","))))


_IDS: Final = re.compile(r"[1-9][0-9]{0,18}+(?:,[1-9][0-9]{0,18}+)*+")
"""Positive steps without leading zeros (so strictly ascending keys), each of at most 19 digits."""
_IDS_NEAR: Final = re.compile(r"[1-9][0-9]{0,18}+(?:,[1-9][0-9]{0,11}+)*+")
"""The same with steps below 10**12 ms (31 years): every stored list of real message ids."""
_NEAR_STEP: Final = 10**12 - 1


def _checked_ids(text: object) -> str:
    """``text`` if it is a stored id list whose keys lie in 1..2**63-1.

    Raises TypeError/ValueError otherwise. This runs over every id the row holds, so it stays in
    C: one regular-expression match and, for steps below 10**12, a bound of the last key from the
    first (each further id takes two characters at least) instead of adding the steps up.
    """
    if type(text) is not str:
        raise TypeError("not an id list")
    if _IDS_NEAR.fullmatch(text):
        comma = text.find(",")
        first = int(text if comma < 0 else text[:comma])
        if first + len(text) // 2 * _NEAR_STEP <= _MAX_ORDER:
            return text
    elif not _IDS.fullmatch(text):
        raise ValueError("not ascending ids")
    if _keys(text)[-1] > _MAX_ORDER:
        raise ValueError("ids out of range")
    return text


def _undelta(values: object) -> tuple[int, ...]:
    """The keys of :func:`_deltas`' list (schema 1). Raises TypeError/ValueError otherwise."""
    if type(values) is not list:
        raise TypeError("not a list")
    if not set(map(type, values)) <= {int}:  # bool is an int subclass, and not a key
        raise TypeError("not an integer")
    if min(values[1:], default=1) <= 0:
        raise ValueError("keys out of order")  # strictly ascending: every step positive
    keys = tuple(itertools.accumulate(values))
    if keys and not 0 < keys[0] <= keys[-1] <= _MAX_ORDER:
        # Never written (message_order bounds every key); schema 2 could not store them.
        raise ValueError("keys out of range")
    return keys


def _thread_json(entry: _Entry, schema: int = SCHEMA) -> dict[str, Any]:
    u: str | list[int]
    d: str | list[int]
    if isinstance(entry, _Stored):
        state, u, d = entry.shell, entry.unread_text, entry.deleted_text
        if schema == 1:  # the same deltas, as JSON lists
            u, d = _as_list(entry.unread_text), _as_list(entry.deleted_text)
    elif schema == 1:
        state, u, d = entry, _deltas(entry.unread), _deltas(entry.deleted)
    else:
        state, u, d = entry, _ids_text(entry.unread), _ids_text(entry.deleted)
    body: dict[str, Any] = {"at": state.touched}
    optional: dict[str, Any] = {
        "u": u or None,
        "f": state.folded or None,
        "fu": state.folded_up_to or None,
        "r": state.read_up_to or None,
        "d": d or None,
        "l": 1 if state.left else None,
        "m": state.membership_at or None,
        "a": state.alerts.value if state.alerts is not Alerts.ALL else None,
    }
    if state.muted_until is not None:
        optional["mu"] = -1 if state.muted_until == FOREVER else int(state.muted_until.timestamp())
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def _as_list(text: str) -> list[int]:
    """A stored id text (:func:`_ids_text`) as schema 1's JSON list of the same deltas."""
    return list(map(int, text.split(","))) if text else []


def _shell_from_json(
    body: Mapping[str, Any], unread: tuple[int, ...] = (), deleted: tuple[int, ...] = ()
) -> ThreadState:
    muted = body.get("mu")
    muted_until = (
        None if muted is None else FOREVER if muted == -1 else datetime.fromtimestamp(muted, UTC)
    )
    return ThreadState(
        unread=unread,
        folded=int(body.get("f", 0)),
        folded_up_to=int(body.get("fu", 0)),
        read_up_to=int(body.get("r", 0)),
        deleted=deleted,
        left=bool(body.get("l", 0)),
        membership_at=int(body.get("m", 0)),
        alerts=Alerts(body.get("a", Alerts.ALL.value)),
        muted_until=muted_until,
        touched=int(body["at"]),
    )


def _thread_from_json(body: Mapping[str, Any]) -> _Stored:
    """A schema 2 thread, its id lists checked but kept as text."""
    return _Stored(
        _shell_from_json(body),
        _checked_ids(body["u"]) if "u" in body else "",
        _checked_ids(body["d"]) if "d" in body else "",
    )


def _thread_from_json_v1(body: Mapping[str, Any]) -> ThreadState:
    """A schema 1 thread (id lists as JSON arrays of steps), decoded whole."""
    return _shell_from_json(body, _undelta(body.get("u", [])), _undelta(body.get("d", [])))


def encode_inbox(inbox: Inbox, schema: int = SCHEMA) -> str:
    """The inbox as compact JSON (what the row stores): threads read and unchanged as they came.

    ``schema`` 1 writes the id lists as JSON lists, what versions before schema 2 can read
    (``INBOX_ROW_SCHEMA``): the same length, none of the speed.
    """
    if schema not in WRITABLE_SCHEMAS:
        raise ValueError(f"inbox schema {schema} cannot be written")
    prefs = inbox.preferences
    body: dict[str, Any] = {"v": schema}
    if prefs.count_muted:
        body["cm"] = True
    if prefs.quiet_hours is not None:
        body["q"] = prefs.quiet_hours.as_json()
    body["t"] = {t: _thread_json(s, schema) for t, s in _Threads.of(inbox.threads).entries()}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def decode_inbox(text: str) -> Inbox:
    """The inbox of :func:`encode_inbox`'s JSON, of this schema or the first.

    Every field and id list is checked here, so a thread decoded later cannot fail. Raises
    UnreadableInboxError for anything else.
    """
    try:
        body = json.loads(text)
        if not isinstance(body, dict) or body.get("v") not in (1, SCHEMA):
            raise ValueError("not an inbox of a known schema")
        quiet = body.get("q")
        prefs = Preferences(
            count_muted=bool(body.get("cm", False)),
            quiet_hours=None if quiet is None else QuietHours.from_stored(quiet),
        )
        read = _thread_from_json if body["v"] == SCHEMA else _thread_from_json_v1
        threads: dict[str, _Entry] = {str(t): read(s) for t, s in dict(body.get("t", {})).items()}
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise UnreadableInboxError(f"unreadable inbox row: {type(exc).__name__}") from exc
    return Inbox(prefs, _Threads(threads))


_ID_CHARS: Final = 21
"""At most per stored id: a step of up to 19 digits (keys are below 2**63) and a comma."""
_THREAD_CHARS: Final = 300
"""At most per thread beside its id and ids: nine short keys, eight numbers of at most 20
characters, a flag and an alert value, with the JSON punctuation."""
_FIXED_CHARS: Final = 200
"""At most for the schema, count_muted and the braces."""


def size_bound(inbox: Inbox) -> int:
    """An upper bound of ``len(encode_inbox(inbox))``, counted without encoding it.

    Encoding prints every id; this counts them, or takes the length of a thread's id lists as
    read (they are written back as they are). Thread ids and the quiet hours' time zone are
    bounded as if every character were escaped (six characters each).
    """
    quiet = inbox.preferences.quiet_hours
    total = _FIXED_CHARS + (0 if quiet is None else 100 + 6 * len(quiet.time_zone))
    for thread_id, entry in _Threads.of(inbox.threads).entries():
        if isinstance(entry, _Stored):  # printed as read: its length is known
            ids = len(entry.unread_text) + len(entry.deleted_text)
        else:
            ids = _ID_CHARS * (len(entry.unread) + len(entry.deleted))
        total += 6 * len(thread_id) + 2 + _THREAD_CHARS + ids
    return total


def fit_inbox(inbox: Inbox, now: datetime, limit: int = MAX_STATE_CHARS) -> Inbox:
    """``inbox`` shrunk until its JSON fits ``limit``.

    First the threads holding nothing but a read marker or a left thread go, least recently
    changed first (a redelivery of one of their messages could then count again); then the
    threads tracking most ids fold half of them. Raises InboxFullError if preferences alone
    fill it (MAX_THREAD_PREFERENCES prevents that).
    """
    if size_bound(inbox) <= limit:
        # Nearly every inbox: the store encodes it once, for the write, instead of twice.
        return inbox
    while len(encode_inbox(inbox)) > limit:
        threads = _Threads.of(inbox.threads)
        bare = sorted(
            (s.touched, t)
            for t, s in threads.entries()
            if s.unread_count == 0 and not _id_counts(s)[1] and not s.silenced(now)
        )
        if bare:
            threads = threads.without({t for _, t in bare[: max(1, len(bare) // 2)]})
        else:
            thread_id, entry = max(threads.entries(), key=lambda item: _id_counts(item[1])[0])
            state = _decoded(entry)
            if len(state.unread) < 2:
                raise InboxFullError()
            threads = threads.with_state(thread_id, state.fold(len(state.unread) // 2))
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

    def __init__(self, table: Any, *, write_schema: int = 1) -> None:
        """``write_schema``: what rows are written as (``INBOX_ROW_SCHEMA``; both are read)."""
        if write_schema not in WRITABLE_SCHEMAS:
            raise ValueError(f"inbox schema {write_schema} cannot be written")
        self._table = table
        self._schema = write_schema

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
        entity = _entity(user_id, encode_inbox(inbox, self._schema), self._schema)
        try:
            answer = await write_if_unchanged(
                self._table, entity, prior.etag, what="write an inbox"
            )
        except (EntityExistsError, EntityChangedError, EntityNotFoundError):
            return None
        etag = answer.get("etag") if isinstance(answer, Mapping) else None
        return InboxSnapshot(inbox, None if etag is None else str(etag))


def _entity(user_id: str, text: str, schema: int) -> dict[str, Any]:
    parts = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]
    entity: dict[str, Any] = {
        "PartitionKey": encode_key(user_id),
        "RowKey": INBOX_ROW,
        "schema": schema,
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
