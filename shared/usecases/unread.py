"""What chat events do to a user's inbox (:mod:`shared.storage.inbox`), and how their alerts look.

- ``ChatMessageReceived`` counts the message (once, however often Event Grid delivers it);
  ``ChatMessageDeleted`` takes it off if it was unread; ``ChatMessageEdited`` changes nothing.
- ``ChatThreadWithUserDeleted`` and the recipient's own ``ChatParticipantRemovedFromThreadWithUser``
  take the thread's unread messages off and stop its pushes; the recipient's own
  ``ChatParticipantAddedToThreadWithUser`` starts them again. They are ordered by their time, so
  a late event never undoes a newer one.

The :class:`Presentation` of a message event says what its pushes carry: the badge after the
change, no alert for a silenced thread (a badge-only update instead when the user counts
silenced threads and this message raised the number), and ``interruption-level: passive`` with
no sound during quiet hours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from shared.domain.chat_payload import ChatPayloadOptions
from shared.domain.events import ChatMessageEvent, MessageEventKind, ThreadEvent, ThreadEventKind
from shared.settings import Settings
from shared.storage.inbox import (
    Inbox,
    InboxChange,
    InboxSnapshot,
    InboxStore,
    change_inbox,
    message_order,
)

log = logging.getLogger(__name__)

PASSIVE = "passive"


@dataclass(frozen=True, slots=True)
class Presentation:
    """How one message event's pushes look for its recipient."""

    badge: int | None  # None: the inbox could not be read, the alert carries no badge
    silenced: bool = False  # the thread is muted or its alerts are off: no alert
    quiet: bool = False  # quiet hours: passive, no sound
    badge_update: bool = False  # silenced, counted, and the number rose: a badge-only push
    fell: bool = False  # the number fell (an unread message was deleted)

    def payload_options(self, settings: Settings) -> ChatPayloadOptions:
        """The deployment's alert options with this recipient's badge and quiet hours."""
        options = replace(ChatPayloadOptions.from_settings(settings), badge=self.badge)
        if self.quiet:
            options = replace(options, sound="", interruption_level=PASSIVE)
        return options


def message_change(event: ChatMessageEvent, now: datetime) -> Callable[[Inbox], Inbox] | None:
    """The inbox change of a message event (None: it changes nothing)."""
    order = message_order(event.message_id)
    if order is None:
        if event.kind is MessageEventKind.RECEIVED:
            log.warning("message id is not an ACS message id, not counted: %s", event.event_id)
        return None
    if event.kind is MessageEventKind.RECEIVED:
        return lambda inbox: inbox.received(event.thread_id, order, now)
    if event.kind is MessageEventKind.DELETED:
        return lambda inbox: inbox.deleted(event.thread_id, order, now)
    return None


async def note_message(
    store: InboxStore, event: ChatMessageEvent, snapshot: InboxSnapshot, now: datetime
) -> Presentation:
    """Apply a message event to the recipient's inbox; how its pushes look.

    Raises InboxBusyError and storage errors (the event is then redelivered; the change is
    idempotent).
    """
    change = message_change(event, now)
    if change is None:
        done = InboxChange(snapshot.inbox, snapshot.inbox)
    else:
        done = await change_inbox(store, event.recipient_id, change, now, first=snapshot)
    return presentation(done, event.thread_id, now)


def presentation(done: InboxChange, thread_id: str, now: datetime) -> Presentation:
    """What the pushes of a message event in ``thread_id`` carry after ``done``."""
    after = done.after
    before_badge, badge = done.before.badge(now), after.badge(now)
    silenced = after.thread(thread_id).silenced(now)
    return Presentation(
        badge=badge,
        silenced=silenced,
        quiet=after.quiet(now),
        badge_update=silenced and badge > before_badge,
        fell=badge < before_badge,
    )


def membership_change(
    event: ThreadEvent, at: datetime, now: datetime
) -> Callable[[Inbox], Inbox] | None:
    """The inbox change of a per-user thread event (None: it changes nothing for the recipient)."""
    if event.kind is ThreadEventKind.THREAD_DELETED or event.recipient_was_removed:
        return lambda inbox: inbox.left(event.thread_id, at, now)
    if (
        event.kind is ThreadEventKind.PARTICIPANT_ADDED
        and event.participant_id == event.recipient_id
    ):
        return lambda inbox: inbox.joined(event.thread_id, at, now)
    return None
