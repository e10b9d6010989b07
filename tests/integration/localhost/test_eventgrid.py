"""The Event Grid webhook: handshakes, both schemas, one invocation per event, failures."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import azure.functions as func
import httpx
import pytest
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter

from tests.integration.localhost.conftest import Serve, Served, base_env

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
WEBHOOK = "/runtime/webhooks/eventgrid"
NOTIFY = {"aeg-event-type": "Notification"}


def _sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def _eg_event(n: int, **data: object) -> dict[str, object]:
    return {
        "id": f"id-{n}",
        "topic": "/topics/t",
        "subject": f"s/{n}",
        "eventType": "Test.Event",
        "eventTime": "2021-02-19T00:25:59.9436666Z",
        "dataVersion": "1.0",
        "data": {"n": n, **data},
    }


def _cloud_event(n: int) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": f"ce-{n}",
        "source": "/src",
        "type": "Test.Cloud",
        "time": "2021-02-19T00:25:59.9436666Z",
        "data": {"n": n},
        "traceparent": "00-abc-def-01",
    }


async def _post(
    served: Served, body: bytes, headers: dict[str, str], fn: str = "on_event"
) -> httpx.Response:
    return await served.client.post(
        WEBHOOK, params={"functionName": fn}, content=body, headers=headers
    )


async def test_validation_is_answered_by_the_host_without_invoking(serve: Serve) -> None:
    s = await serve(base_env())
    body = _sample("subscription_validation.eventgrid.json")

    r = await _post(s, body, {"aeg-event-type": "SubscriptionValidation"})

    assert r.status_code == 200
    assert r.json() == {"validationResponse": json.loads(body)[0]["data"]["validationCode"]}
    assert s.rec.of("on_event") == []


async def test_cloudevents_validation_with_double_encoded_data_is_answered(serve: Serve) -> None:
    s = await serve(base_env())
    event = {**_cloud_event(1), "data": json.dumps({"validationCode": "abc-123"})}

    r = await _post(s, json.dumps(event).encode(), {"aeg-event-type": "SubscriptionValidation"})

    assert r.json() == {"validationResponse": "abc-123"}


async def test_cloudevents_options_handshake_allows_the_event_grid_origin(serve: Serve) -> None:
    s = await serve(base_env())

    r = await s.client.options(
        WEBHOOK,
        params={"functionName": "on_event"},
        headers={"WebHook-Request-Origin": "eventgrid.azure.net"},
    )

    assert r.status_code == 200
    assert r.headers["webhook-allowed-origin"] == "eventgrid.azure.net"


async def test_event_grid_schema_is_decoded_like_the_worker_does(serve: Serve) -> None:
    s = await serve(base_env())
    body = _sample("chat_message_received.eventgrid.json")

    r = await _post(s, body, NOTIFY)

    assert r.status_code == 202
    (got,) = s.rec.of("on_event")
    raw = json.loads(body)[0]
    want = EventGridEventInConverter.decode(
        meta.Datum(type="json", value=json.dumps(raw)), trigger_metadata={}
    )
    assert isinstance(got, func.EventGridEvent)
    assert (got.id, got.event_type, got.subject, got.topic, got.event_time, got.data_version) == (
        want.id,
        want.event_type,
        want.subject,
        want.topic,
        want.event_time,
        want.data_version,
    )
    assert got.get_json() == raw["data"]


async def test_a_single_cloudevent_becomes_a_func_cloudevent(serve: Serve) -> None:
    s = await serve(base_env())
    body = _sample("chat_message_received.cloudevents.json")

    r = await _post(s, body, {**NOTIFY, "content-type": "application/cloudevents+json"})

    assert r.status_code == 202
    (got,) = s.rec.of("on_event")
    assert isinstance(got, func.CloudEvent)
    assert got.type == "Microsoft.Communication.ChatMessageReceived"
    assert got.get_json() == json.loads(body)["data"]


async def test_a_cloudevents_batch_is_one_invocation_per_event(serve: Serve) -> None:
    s = await serve(base_env())
    body = json.dumps([_cloud_event(1), _cloud_event(2)]).encode()

    r = await _post(s, body, {**NOTIFY, "content-type": "application/cloudevents-batch+json"})

    assert r.status_code == 202
    got = s.rec.of("on_event")
    assert sorted(e.id for e in got) == ["ce-1", "ce-2"]
    assert all(e.extension_attrs == {"traceparent": "00-abc-def-01"} for e in got)


async def test_an_array_is_dispatched_one_event_per_invocation_concurrently(serve: Serve) -> None:
    s = await serve(base_env())
    # Each invocation waits for the other two: sequential dispatch would never get past it.
    s.rec.barrier = asyncio.Barrier(3)
    body = json.dumps([_eg_event(1), _eg_event(2), _eg_event(3)]).encode()

    r = await _post(s, body, NOTIFY)

    assert r.status_code == 202
    assert sorted(e.get_json()["n"] for e in s.rec.of("on_event")) == [1, 2, 3]


async def test_one_failing_invocation_makes_the_delivery_a_500(serve: Serve) -> None:
    s = await serve(base_env())
    body = json.dumps([_eg_event(1), _eg_event(2, fail=True)]).encode()

    r = await _post(s, body, NOTIFY)

    assert r.status_code == 500
    assert r.json()["failed"] == 1
    assert len(s.rec.of("on_event")) == 2


async def test_without_the_event_type_header_it_is_400(serve: Serve) -> None:
    s = await serve(base_env())

    r = await _post(s, json.dumps([_eg_event(1)]).encode(), {})

    assert r.status_code == 400
    assert s.rec.of("on_event") == []


@pytest.mark.parametrize("body", [b"{not json", b"[]", b"[1, 2]", b'"text"'])
async def test_a_malformed_body_is_400(serve: Serve, body: bytes) -> None:
    s = await serve(base_env())

    r = await _post(s, body, NOTIFY)

    assert r.status_code == 400


async def test_an_unknown_function_is_404(serve: Serve) -> None:
    s = await serve(base_env())

    for fn in ("missing", "hello"):
        r = await _post(s, json.dumps([_eg_event(1)]).encode(), NOTIFY, fn=fn)
        assert r.status_code == 404


async def test_unsubscribe_is_accepted(serve: Serve) -> None:
    s = await serve(base_env())

    r = await _post(s, b"[]", {"aeg-event-type": "Unsubscribe"})

    assert r.status_code == 202
