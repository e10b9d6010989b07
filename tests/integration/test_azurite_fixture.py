"""The Azurite fixture gives a working Table and Queue service."""

from __future__ import annotations

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from devtools.azurite import Azurite

pytestmark = pytest.mark.integration


def test_azurite_stores_and_returns_an_entity(azurite: Azurite, table_prefix: str) -> None:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    table = service.create_table_if_not_exists(table_prefix + "probe")
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "value": 42})
    assert table.get_entity("p", "r")["value"] == 42


def test_azurite_queues_round_trip_a_message(azurite: Azurite, table_prefix: str) -> None:
    queue = QueueServiceClient.from_connection_string(azurite.connection_string).get_queue_client(
        table_prefix + "q"
    )
    queue.create_queue()
    queue.send_message("hello")
    assert [m.content for m in queue.receive_messages()] == ["hello"]
