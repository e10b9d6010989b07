"""Storage-queue triggers and queue output bindings against Azurite (or any Storage account).

As the Functions host does: messages are base64 on the wire (the host's default
``messageEncoding``); a message is hidden while its function runs, deleted on success, made
visible again after ``visibilityTimeout`` on failure, and moved to ``<queue>-poison`` once it
has been dequeued ``maxDequeueCount`` times (5). A message that is not base64 goes straight to
the poison queue. Output bindings accept ``str``, ``bytes``, ``func.QueueMessage`` or a list of
them; each becomes one base64-encoded message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.functions import meta
from azure.functions.queue import QueueMessageInConverter
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from devtools.localhost.catalog import Binding, FunctionSpec
from devtools.localhost.worker import encode_output

log = logging.getLogger(__name__)

DEFAULT_CONNECTION = "AzureWebJobsStorage"


@dataclass(frozen=True)
class QueueOptions:
    """Polling behaviour; tests shorten the intervals (host.json gives the real ones)."""

    poll_interval: float = 1.0
    visibility_timeout: float = 30.0
    lease_seconds: int = 600
    max_dequeue_count: int = 5
    batch_size: int = 16


class QueueStore:
    """Queue clients for one connection string, created on first use."""

    def __init__(self, connection_string: str) -> None:
        self._service = QueueServiceClient.from_connection_string(connection_string)
        self._queues: dict[str, QueueClient] = {}
        self._created: set[str] = set()

    async def queue(self, name: str) -> QueueClient:
        """The client of queue ``name``, which exists once this returns."""
        client = self._queues.get(name)
        if client is None:
            client = self._queues[name] = self._service.get_queue_client(name)
        if name not in self._created:
            with contextlib.suppress(ResourceExistsError):
                await client.create_queue()
            self._created.add(name)
        return client

    async def send(self, name: str, payload: bytes) -> None:
        """Enqueue ``payload`` base64-encoded, as the host's output binding does."""
        client = await self.queue(name)
        await client.send_message(base64.b64encode(payload).decode("ascii"))

    async def aclose(self) -> None:
        for client in self._queues.values():
            await client.close()
        await self._service.close()


def connection_name(binding: Binding) -> str:
    """The app setting that holds a queue binding's connection string."""
    return str(binding.get("connection") or DEFAULT_CONNECTION)


def output_payloads(value: Any, binding: str = "queue", pytype: Any = None) -> list[bytes]:
    """The messages a queue output value stands for, encoded by the worker's own rules.

    The worker skips an output that was never set, encodes the rest with the binding's converter
    (a string, bytes, a QueueMessage or a list of them) and the host writes one message per item
    of a JSON array. Raises TypeError with the worker's message for anything else.
    """
    if value is None:
        return []
    kind, data = encode_output(binding, value, pytype)
    if kind == "bytes":
        return [bytes(data)]
    if kind != "json":
        return [str(data).encode("utf-8")]
    decoded = json.loads(data)
    items = decoded if isinstance(decoded, list) else [decoded]
    return [
        (item["body"] if isinstance(item, dict) else str(item)).encode("utf-8") for item in items
    ]


def _iso(moment: datetime | None) -> meta.Datum | None:
    return None if moment is None else meta.Datum(type="string", value=moment.isoformat())


def queue_message(message: Any, body: bytes) -> Any:
    """A func.QueueMessage built by the worker's converter from the host's trigger metadata."""
    metadata = {
        "Id": meta.Datum(type="string", value=message.id),
        "DequeueCount": meta.Datum(type="int", value=int(message.dequeue_count or 0)),
        "ExpirationTime": _iso(message.expires_on),
        "InsertionTime": _iso(message.inserted_on),
        "NextVisibleTime": _iso(message.next_visible_on),
        "PopReceipt": meta.Datum(type="string", value=message.pop_receipt),
    }
    present = {k: v for k, v in metadata.items() if v is not None}
    try:
        datum = meta.Datum(type="string", value=body.decode("utf-8"))
    except UnicodeDecodeError:
        datum = meta.Datum(type="bytes", value=body)
    return QueueMessageInConverter.decode(datum, trigger_metadata=present)


Run = Callable[[FunctionSpec, Any], Awaitable[Any]]


class QueuePoller:
    """Feeds one queue-triggered function from its queue until cancelled."""

    def __init__(self, spec: FunctionSpec, store: QueueStore, run: Run, options: QueueOptions):
        self.spec = spec
        self.queue_name = str(spec.trigger.get("queueName", "")).lower()
        self.poison_name = self.queue_name + "-poison"
        self._store = store
        self._run = run
        self._options = options

    async def run(self) -> None:
        """Poll forever (cancel it); waits ``poll_interval`` only when the queue was empty."""
        while True:
            try:
                handled = await self.poll_once()
            except Exception:
                log.exception("polling queue %s failed", self.queue_name)
                handled = 0
            if not handled:
                await asyncio.sleep(self._options.poll_interval)

    async def poll_once(self) -> int:
        """Receive one batch and process it concurrently; returns how many messages it held."""
        queue = await self._store.queue(self.queue_name)
        messages = [
            m
            async for m in queue.receive_messages(
                messages_per_page=self._options.batch_size,
                max_messages=self._options.batch_size,
                visibility_timeout=self._options.lease_seconds,
            )
        ]
        await asyncio.gather(*(self._process(queue, m) for m in messages))
        return len(messages)

    async def _poison(self, queue: QueueClient, message: Any, why: str) -> None:
        log.warning(
            "moving message %s from %s to %s: %s",
            message.id,
            self.queue_name,
            self.poison_name,
            why,
        )
        poison = await self._store.queue(self.poison_name)
        await poison.send_message(message.content)
        await queue.delete_message(message)

    async def _process(self, queue: QueueClient, message: Any) -> None:
        limit = self._options.max_dequeue_count
        if message.dequeue_count > limit:
            await self._poison(queue, message, f"dequeued more than {limit} times")
            return
        try:
            body = base64.b64decode(message.content or "", validate=True)
        except (binascii.Error, ValueError):
            await self._poison(queue, message, "the message is not base64 (send it base64-encoded)")
            return
        try:
            await self._run(self.spec, queue_message(message, body))
        except Exception:
            log.exception(
                "function %s failed on message %s (dequeue count %d)",
                self.spec.name,
                message.id,
                message.dequeue_count,
            )
            if message.dequeue_count >= limit:
                await self._poison(queue, message, f"failed {message.dequeue_count} times")
            else:
                await queue.update_message(
                    message, visibility_timeout=int(self._options.visibility_timeout)
                )
            return
        await queue.delete_message(message)
