"""A table deleted under the running app (an operator cleaning up, a storage account restored), on
Azurite with each Table Storage client.

The adapters keep the table client they got for the life of the process. The first call after
the deletion must fail as an outage (TableMissingError, a StorageUnavailableError: Event Grid
redelivers, the HTTP edge answers 503), never as "this row is absent" (a device read answering
None, a claim taken as lost to another delivery); the next call creates the table again and
works on it. (Azurite drops a table at once; Azure answers 409 TableBeingDeleted for 40 s or
more first, which ``test_table_real_service.py`` replays.)
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables.aio import TableServiceClient

from devtools.azurite import Azurite
from shared.apns.notification import Environment
from shared.domain.devices import Device, DeviceKind, device_id_for
from shared.domain.key_wrap import KeyWrapper
from shared.storage.deliveries import (
    DELIVERIES_TABLE,
    DeliveryKey,
    DeliveryKind,
    DeviceTarget,
    TableDeliveryStore,
)
from shared.storage.devices import DEVICES_TABLE, OWNERS_TABLE, DeviceStore
from shared.storage.tables import StorageUnavailableError, TableMissingError, Tables

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ALICE = "8:acs:res_00000008-578d-7d05-83fe-084822000f6d"
KEK = "k1=" + base64.b64encode(b"\x07" * 32).decode()
THREAD = "19:6e5d6ca1d75044a49a36a7965ec4a906@thread.v2"
DEVICES = [DeviceTarget(f"{n:064x}", f"dev{n}", "com.example.chat", "sandbox") for n in range(3)]


@pytest.fixture
async def tables(azurite: Azurite, table_prefix: str, storage_client: str) -> AsyncIterator[Tables]:
    connected = Tables.connect(azurite.connection_string, table_prefix, storage_client)
    yield connected
    await connected.aclose()


async def delete_table(azurite: Azurite, name: str) -> None:
    """What an operator does in the portal or with the CLI."""
    async with TableServiceClient.from_connection_string(azurite.connection_string) as account:
        await account.delete_table(name)


def device() -> Device:
    token = "a1" * 32
    return Device(
        user_id=ALICE,
        device_id=device_id_for(token),
        token=token,
        kind=DeviceKind.ALERT,
        topic="com.example.chat",
        environment=Environment.SANDBOX,
        registered_at=NOW,
        renewed_at=NOW,
    )


async def test_a_device_read_on_a_deleted_table_is_an_outage_then_the_table_is_back(
    azurite: Azurite, tables: Tables
) -> None:
    store = DeviceStore(
        await tables.table(DEVICES_TABLE),
        await tables.table(OWNERS_TABLE),
        KeyWrapper.from_setting(KEK),
    )
    sent = device()
    await store.register(sent)
    await delete_table(azurite, tables.name(DEVICES_TABLE))

    with pytest.raises(StorageUnavailableError) as raised:
        await store.get(ALICE, sent.device_id)  # not None: the device was never removed
    assert isinstance(raised.value, TableMissingError)

    # The same store (the client it kept): the table is created again, empty.
    assert await store.get(ALICE, sent.device_id) is None
    await store.register(sent)
    got = await store.get(ALICE, sent.device_id)
    assert got is not None and got.token == sent.token


async def test_a_registration_on_a_deleted_table_is_an_outage_then_it_lands(
    azurite: Azurite, tables: Tables
) -> None:
    store = DeviceStore(
        await tables.table(DEVICES_TABLE),
        await tables.table(OWNERS_TABLE),
        KeyWrapper.from_setting(KEK),
    )
    sent = device()
    await store.register(sent)
    await delete_table(azurite, tables.name(DEVICES_TABLE))

    # Its renewal merge must not read the missing table as "no such device".
    with pytest.raises(TableMissingError):
        await store.register(sent)
    await store.register(sent)
    assert [d.device_id for d in await store.list_for_user(ALICE)] == [sent.device_id]


@pytest.mark.parametrize("devices", [1, 3], ids=["one-create", "transaction"])
async def test_a_claim_on_a_deleted_table_is_an_outage_not_a_claim_lost(
    azurite: Azurite, tables: Tables, devices: int
) -> None:
    store = TableDeliveryStore(await tables.table(DELIVERIES_TABLE))
    first = DeliveryKey(ALICE, THREAD, "1613694358927", DeliveryKind.RECEIVED, 1613694358927)
    second = DeliveryKey(ALICE, THREAD, "1613694358999", DeliveryKind.RECEIVED, 1613694358999)
    lease = timedelta(seconds=30)
    targets = DEVICES[:devices]
    await store.claim(first, targets, now=NOW, lease=lease, event_id="e1")
    await delete_table(azurite, tables.name(DELIVERIES_TABLE))

    with pytest.raises(TableMissingError):
        await store.claim(second, targets, now=NOW, lease=lease, event_id="e2")

    # Event Grid redelivers: the table is back and every device is claimed.
    again = await store.claim(second, targets, now=NOW, lease=lease, event_id="e2")
    assert sorted(r.device.device_id for r in again.claimed) == [d.device_id for d in targets]
    assert not again.in_flight and not again.done


async def test_a_query_on_a_deleted_table_is_an_outage_then_an_empty_answer(
    azurite: Azurite, tables: Tables
) -> None:
    store = DeviceStore(
        await tables.table(DEVICES_TABLE),
        await tables.table(OWNERS_TABLE),
        KeyWrapper.from_setting(KEK),
    )
    await store.register(device())
    await delete_table(azurite, tables.name(DEVICES_TABLE))

    with pytest.raises(TableMissingError):
        await store.list_for_user(ALICE)
    assert await store.list_for_user(ALICE) == []
