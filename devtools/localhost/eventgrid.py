"""The Event Grid webhook, as the Event Grid extension of the Functions host answers it.

``POST /runtime/webhooks/eventgrid?functionName=NAME`` with header ``aeg-event-type``:

- ``SubscriptionValidation``: the host answers ``{"validationResponse": code}`` itself; the
  function is not invoked (an Event Grid schema array, or a CloudEvent whose ``data`` may be
  JSON-encoded twice).
- ``Notification``: one invocation per event of an array (or of a single CloudEvents object), all
  concurrently; 202 when all succeed, 500 when any raised (Event Grid then resends everything).
- ``Unsubscribe``: 202. No or another header: 400. Unknown function: 404.

``OPTIONS`` is the CloudEvents abuse-protection handshake: ``WebHook-Request-Origin`` is echoed
in ``WebHook-Allowed-Origin`` for the Azure clouds' origins, anything else gets the public
cloud's origin (as the extension does).

Events are decoded by ``azure.functions.eventgrid.EventGridEventInConverter`` itself, so a
function receives exactly what the worker would give it: ``func.CloudEvent`` for a body with
``specversion``, ``func.EventGridEvent`` otherwise.
"""

from __future__ import annotations

import json
from typing import Any

from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter

from shared.edges.http_api import nested_deeper_than

PUBLIC_CLOUD_ORIGIN = "eventgrid.azure.net"
# The host reads JSON with Json.NET, whose default MaxDepth (64) refuses deeper documents.
HOST_JSON_MAX_DEPTH = 64
ALLOWED_ORIGINS = frozenset(
    {
        PUBLIC_CLOUD_ORIGIN,
        "eventgrid.azure.us",
        "eventgrid.azure.eaglex.ic.gov",
        "eventgrid.azure.microsoft.scloud",
        "eventgrid.azure.cn",
    }
)


class MalformedEventsError(ValueError):
    """The body is not a JSON object or array of JSON objects."""


def allowed_origin(request_origin: str | None) -> str:
    """The ``WebHook-Allowed-Origin`` answer to a CloudEvents OPTIONS handshake."""
    if request_origin in ALLOWED_ORIGINS:
        return request_origin
    return PUBLIC_CLOUD_ORIGIN


def parse_events(body: bytes) -> list[dict[str, Any]]:
    """The events of a delivery (an array or one CloudEvent). Raises MalformedEventsError."""
    text = body.decode("utf-8", errors="replace")
    if nested_deeper_than(text, HOST_JSON_MAX_DEPTH):
        # Refused before parsing: the json module recurses per level, and finalizers that a
        # garbage collection runs at the recursion limit fail there.
        raise MalformedEventsError("body is nested too deeply")
    try:
        token = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEventsError(f"body is not JSON: {exc}") from exc
    events = token if isinstance(token, list) else [token]
    if not events or not all(isinstance(e, dict) for e in events):
        raise MalformedEventsError("body must be a JSON object or a non-empty array of objects")
    return events


def validation_code(body: bytes) -> str:
    """The ``validationCode`` of a subscription validation event. Raises MalformedEventsError."""
    event = parse_events(body)[0]
    data = event.get("data")
    if isinstance(data, str):
        # A CloudEvents validation event carries its data JSON-encoded a second time.
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise MalformedEventsError("validation event data is not JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("validationCode"), str):
        raise MalformedEventsError("validation event has no data.validationCode")
    return str(data["validationCode"])


def decode_event(event: dict[str, Any]) -> Any:
    """One event as the worker hands it to the function (EventGridEvent or CloudEvent)."""
    datum = meta.Datum(type="json", value=json.dumps(event))
    return EventGridEventInConverter.decode(datum, trigger_metadata={})
