"""Events are checked against ``ACS_RESOURCE_ID``: anything another resource (or anyone holding
the webhook's key) sends is acknowledged and logged, and pushes nobody."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum

from devtools.settings_doc import sample_settings
from shared.domain.devices import DeviceKind
from shared.domain.events import EventSource
from shared.edges.event_grid import event_json
from shared.usecases.calls import handle_call_event
from shared.usecases.chat import handle_chat_event
from tests.fakes.apns import FakeApns
from tests.fakes.clock import FakeClock
from tests.fakes.deliveries import FakeDeliveries
from tests.fakes.devices import FakeDeviceStore
from tests.fakes.inbox import FakeInbox
from tests.unit.chat_fakes import device, sample, settings

pytestmark = pytest.mark.unit

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
OURS = (
    "/subscriptions/{subscription-id}/resourceGroups/{group-name}/providers/"
    "Microsoft.Communication/communicationServices/{communication-services-resource-name}"
)
THEIRS = OURS.replace("{communication-services-resource-name}", "someone-elses")
RECEIVED = sample("chat_message_received.eventgrid.json")
RECEIVED_CE = sample("chat_message_received.cloudevents.json")
CALL = sample("incoming_call.eventgrid.json")


def as_trigger_input(event: dict[str, Any]) -> dict[str, object]:
    """The event as the trigger passes it on: decoded by the worker's own converter (either
    schema), then turned back into its JSON by the edge."""
    datum = Datum(json.dumps(event), "json")
    decoded: func.EventGridEvent | func.CloudEvent = EventGridEventInConverter.decode(
        datum, trigger_metadata={}
    )
    return event_json(decoded)


def sample_files() -> list[str]:
    return sorted(p.name for p in SAMPLES.glob("*.json") if "subscription_validation" not in p.name)


@pytest.mark.parametrize("name", sample_files())
def test_every_sample_comes_from_the_resource_the_local_run_expects(name: str) -> None:
    local = sample_settings()["Values"]["ACS_RESOURCE_ID"]  # type: ignore[index]
    assert EventSource(local).admits(as_trigger_input(sample(name)))


@pytest.mark.parametrize("event", [RECEIVED, RECEIVED_CE], ids=["eventgrid", "cloudevents"])
@pytest.mark.parametrize("shape", ["trigger", "dict"])
def test_an_event_of_another_resource_is_refused(event: dict[str, Any], shape: str) -> None:
    given = as_trigger_input(event) if shape == "trigger" else event
    assert not EventSource(THEIRS).admits(given)


def test_resource_ids_compare_without_case() -> None:
    # ARM resource ids are case-insensitive; Event Grid has sent topics in upper case.
    assert EventSource(OURS.upper()).admits(as_trigger_input(RECEIVED))


@pytest.mark.parametrize("topic", [None, "", 17, OURS + "/extra", "/" + OURS])
def test_an_event_without_our_exact_source_is_refused(topic: object) -> None:
    event = copy.deepcopy(RECEIVED)
    event["topic"] = topic
    assert not EventSource(OURS).admits(event)


def test_no_resource_id_means_no_check() -> None:
    assert EventSource("").admits(as_trigger_input(copy.deepcopy(RECEIVED) | {"topic": THEIRS}))


async def test_a_chat_event_of_another_resource_pushes_nobody(
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = RECEIVED["data"]["recipientCommunicationIdentifier"]["rawId"]
    apns, registry = FakeApns(), FakeDeviceStore(device(user, 1))
    forged = as_trigger_input(copy.deepcopy(RECEIVED) | {"topic": THEIRS})
    summary = await handle_chat_event(
        forged, devices=registry, deliveries=FakeDeliveries(), inbox=FakeInbox(),
        pushers={apns.topic: apns}, settings=settings(), clock=FakeClock(),
        source=EventSource(OURS),
    )  # fmt: skip
    assert (apns.sent, summary.note) == ([], "another source")
    assert "someone-elses" in caplog.text and RECEIVED["id"] in caplog.text


async def test_a_chat_event_of_ours_still_pushes() -> None:
    user = RECEIVED["data"]["recipientCommunicationIdentifier"]["rawId"]
    apns, registry = FakeApns(), FakeDeviceStore(device(user, 1))
    summary = await handle_chat_event(
        as_trigger_input(RECEIVED), devices=registry, deliveries=FakeDeliveries(),
        inbox=FakeInbox(), pushers={apns.topic: apns}, settings=settings(), clock=FakeClock(),
        source=EventSource(OURS),
    )  # fmt: skip
    assert (len(apns.sent), summary.delivered) == (1, 1)


async def test_a_call_of_another_resource_rings_nobody() -> None:
    callee = CALL["data"]["to"]["rawId"]
    apns = FakeApns()
    registry = FakeDeviceStore(device(callee, 1, kind=DeviceKind.VOIP))
    forged = as_trigger_input(copy.deepcopy(CALL) | {"topic": THEIRS})
    ringing = FakeClock(datetime.fromisoformat(CALL["eventTime"]) + timedelta(seconds=2))
    summary = await handle_call_event(
        forged, devices=registry, deliveries=FakeDeliveries(), inbox=FakeInbox(),
        pushers={apns.topic: apns}, settings=settings(), clock=ringing, source=EventSource(OURS),
    )  # fmt: skip
    assert (apns.sent, summary.note) == ([], "another source")


def test_an_empty_resource_id_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    from shared.wiring import Container

    required = {"STORAGE_CONNECTION": "UseDevelopmentStorage=true", "KEY_ENCRYPTION_KEYS": "k=",
                "APNS_APPS": '[{"bundleId": "com.example.chat"}]'}  # fmt: skip
    container = Container(required)
    first, again = container.event_source(), container.event_source()
    warnings = [r for r in caplog.records if "ACS_RESOURCE_ID is empty" in r.getMessage()]
    assert (first is again, first.admits(RECEIVED), len(warnings)) == (True, True, 1)
