"""What the chat and call use cases do first with an Event Grid event, the same for both.

Check its source against ``ACS_RESOURCE_ID`` (:class:`~shared.domain.events.EventSource`), then
parse it. An event from another source, or one no retry can fix (malformed), is acknowledged
with a :class:`~shared.push.pipeline.PushSummary` saying so, and logged: it never reaches a push.
"""

from __future__ import annotations

import logging

from shared.domain.events import (
    ChatMessageEvent,
    EventSource,
    Ignored,
    IncomingCallEvent,
    MalformedEvent,
    ParsedEvent,
    ThreadEvent,
    parse_event,
)
from shared.push.pipeline import PushSummary

_PARSED = (ChatMessageEvent, ThreadEvent, IncomingCallEvent, Ignored)


def parsed_or_acknowledged(
    event: object, *, source: EventSource | None, what: str, log: logging.Logger
) -> ParsedEvent | PushSummary:
    """The event parsed (or as given, when already parsed), else the summary acknowledging it.

    ``event`` is a dict of the delivered JSON (:func:`shared.edges.event_grid.event_json`) or an
    already parsed event; ``source`` None checks nothing. A malformed event is logged on ``log``
    (the use case's own logger) as a "malformed ``what`` event". Raises nothing.
    """
    if source is not None and not source.admits(event):
        return PushSummary(note="another source")
    if isinstance(event, _PARSED):
        return event
    try:
        return parse_event(event)
    except MalformedEvent as exc:
        log.warning("malformed %s event %s acknowledged: %s", what, exc.event_id or "(no id)", exc)
        return PushSummary(note="malformed")
