"""Storage-queue triggers and queue output bindings against a real Azurite."""

from __future__ import annotations

import base64
import contextlib

import azure.functions as func
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue.aio import QueueClient

from devtools.azurite import Azurite
from devtools.localhost.queues import QueuePoller
from tests.integration.localhost.conftest import FAST_QUEUES, Serve, Served, base_env, eventually

pytestmark = pytest.mark.integration


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def env(azurite: Azurite, table_prefix: str) -> dict[str, str]:
    return {**base_env(table_prefix), "AzureWebJobsStorage": azurite.connection_string}


async def _client(env: dict[str, str], name: str) -> QueueClient:
    client = QueueClient.from_connection_string(env["AzureWebJobsStorage"], name)
    with contextlib.suppress(ResourceExistsError):
        await client.create_queue()
    return client


async def _drain(client: QueueClient) -> list[str]:
    return [m.content async for m in client.receive_messages(max_messages=32)]


def _poller(s: Served) -> QueuePoller:
    spec = s.host.catalog.functions["work"]
    store = s.host._store("AzureWebJobsStorage")
    return QueuePoller(spec, store, s.host.run_function, FAST_QUEUES)


async def test_a_base64_message_triggers_the_function_with_a_queue_message(
    serve: Serve, env: dict[str, str]
) -> None:
    s = await serve(env, queues=True)
    work = await _client(env, env["WORK_QUEUE"])

    await work.send_message(_b64("job-1"))

    (msg,) = await s.rec.wait_for("work", 1)
    assert isinstance(msg, func.QueueMessage)
    assert msg.get_body() == b"job-1"
    assert msg.dequeue_count == 1
    assert msg.id and msg.insertion_time is not None
    out = await _client(env, env["OUT_QUEUE"])
    outputs: list[str] = []

    async def both_outputs() -> bool:
        outputs.extend(await _drain(out))
        return len(outputs) >= 2

    await eventually(both_outputs)
    assert sorted(base64.b64decode(m).decode() for m in outputs) == ["job-1-a", "job-1-b"]
    await work.close()
    await out.close()


async def test_a_handled_message_is_deleted(serve: Serve, env: dict[str, str]) -> None:
    s = await serve(env)
    work = await _client(env, env["WORK_QUEUE"])
    await work.send_message(_b64("job-2"))

    assert await _poller(s).poll_once() == 1

    props = await work.get_queue_properties()
    assert props.approximate_message_count == 0
    await work.close()


async def test_a_failing_message_moves_to_poison_after_five_dequeues(
    serve: Serve, env: dict[str, str]
) -> None:
    s = await serve(env)
    work = await _client(env, env["WORK_QUEUE"])
    await work.send_message(_b64("fail"))
    poller = _poller(s)

    for _ in range(5):
        assert await poller.poll_once() == 1

    assert [m.dequeue_count for m in s.rec.of("work")] == [1, 2, 3, 4, 5]
    assert await poller.poll_once() == 0
    poison = await _client(env, env["WORK_QUEUE"] + "-poison")
    assert await _drain(poison) == [_b64("fail")]
    await work.close()
    await poison.close()


async def test_a_message_that_is_not_base64_goes_to_poison_unprocessed(
    serve: Serve, env: dict[str, str]
) -> None:
    s = await serve(env)
    work = await _client(env, env["WORK_QUEUE"])
    await work.send_message("plain text, not base64!")

    assert await _poller(s).poll_once() == 1

    assert s.rec.of("work") == []
    poison = await _client(env, env["WORK_QUEUE"] + "-poison")
    assert await _drain(poison) == ["plain text, not base64!"]
    await work.close()
    await poison.close()


async def test_an_http_function_writes_its_queue_output_base64(
    serve: Serve, env: dict[str, str]
) -> None:
    s = await serve(env)

    r = await s.client.post("/api/enqueue", content=b"hello queue")

    assert r.status_code == 202
    out = await _client(env, env["OUT_QUEUE"])
    assert await _drain(out) == [_b64("hello queue")]
    await out.close()


async def test_admin_endpoint_runs_a_queue_function_with_the_input_as_body(
    serve: Serve, env: dict[str, str]
) -> None:
    s = await serve(env)

    r = await s.client.post("/admin/functions/work", json={"input": "by-hand"})

    assert r.status_code == 202
    (msg,) = await s.rec.wait_for("work", 1)
    assert msg.get_body() == b"by-hand"


async def test_queue_functions_without_a_connection_are_reported_not_served(
    serve: Serve,
) -> None:
    s = await serve(base_env(), queues=True)

    assert "AzureWebJobsStorage" in s.host.disabled["work"]
    assert "work: NOT SERVED" in s.host.banner()
