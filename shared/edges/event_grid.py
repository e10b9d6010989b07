"""An Event Grid trigger's input, turned back into the JSON Event Grid delivered.

The Functions worker decodes each delivered event with azure-functions'
``EventGridEventInConverter``: a body with ``specversion`` becomes a ``func.CloudEvent``, any
other a ``func.EventGridEvent`` (its times already parsed to datetimes). :func:`event_json` puts
either back into the schema it came in, so :mod:`shared.domain.events` reads plain JSON only and
never imports azure.functions.
"""

from __future__ import annotations

from datetime import datetime

import azure.functions as func


def event_json(event: func.EventGridEvent | func.CloudEvent) -> dict[str, object]:
    """The event as a dict of its own schema (Event Grid or CloudEvents 1.0); raises nothing."""
    if isinstance(event, func.CloudEvent):
        return {
            "specversion": event.specversion,
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "time": _iso(event.time),
            "subject": event.subject,
            "data": event.get_json(),
        }
    return {
        "id": event.id,
        "topic": event.topic,
        "subject": event.subject,
        "eventType": event.event_type,
        "eventTime": _iso(event.event_time),
        "data": event.get_json(),
        "dataVersion": event.data_version,
    }


def _iso(value: object) -> str | None:
    # The converter gives a datetime or None; anything else (an object built by hand) reads as
    # no time, as a missing one does.
    return value.isoformat() if isinstance(value, datetime) else None
