"""shared.storage.table_client against Azurite, and beside azure-data-tables on the same rows.

Azurite checks Shared Key signatures and answers with the service's formats, so a wrong escape,
signature, annotation or multipart layout fails here. What each client writes the other reads
back with the same values, so switching ``STORAGE_CLIENT`` never strands data.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from azure.data.tables import EdmType, EntityProperty
from azure.data.tables.aio import TableServiceClient

from devtools.azurite import ACCOUNT, Azurite, free_port
from shared.storage import tables
from shared.storage.table_client import ClientOptions, SharedKey, TableClient, TableService

pytestmark = pytest.mark.integration

# What our keys may hold after encode_key, plus what OData quoting must survive. (Azurite refuses
# '#', spaces and some non-ASCII in keys even from the SDK, so they are not tried here.)
ODD_PK = "m|8:acs:ab%2Fc|19:x@thread.v2~!*()$&+,;=-_."
VALUES = {
    "text": "héllo ✓",
    "small": -7,
    "big": 2**40,
    "at": datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    "blob": bytes(range(256)),
    "id": uuid.UUID("c9da6455-213d-42c9-9a79-3e9149a57833"),
    "ratio": 0.25,
    "whole": 2.0,
    "flag": True,
}


@pytest.fixture
async def service(azurite: Azurite) -> AsyncIterator[TableService]:
    svc = TableService.from_connection_string(azurite.connection_string)
    yield svc
    await svc.aclose()


@pytest.fixture
async def table(service: TableService, table_prefix: str) -> TableClient:
    assert await service.create_table(table_prefix + "lean")
    return service.table(table_prefix + "lean")


@pytest.fixture
async def sdk(azurite: Azurite) -> AsyncIterator[TableServiceClient]:
    async with TableServiceClient.from_connection_string(azurite.connection_string) as client:
        yield client


async def test_creating_a_table_twice_says_it_existed(
    service: TableService, table_prefix: str
) -> None:
    assert await service.create_table(table_prefix + "twice") is True
    assert await service.create_table(table_prefix + "twice") is False


async def test_typed_values_and_odd_keys_round_trip(table: TableClient) -> None:
    written = await table.create_entity({"PartitionKey": ODD_PK, "RowKey": "r'1", **VALUES})
    read = await table.get_entity(ODD_PK, "r'1")
    assert dict(read) == {"PartitionKey": ODD_PK, "RowKey": "r'1", **VALUES}
    assert read.metadata["etag"] == written["etag"]
    assert read.metadata["timestamp"]


async def test_what_the_lean_client_writes_the_sdk_reads_alike(
    table: TableClient, sdk: TableServiceClient
) -> None:
    await table.upsert_entity({"PartitionKey": ODD_PK, "RowKey": "a", **VALUES})
    row = await sdk.get_table_client(table.table_name).get_entity(ODD_PK, "a")
    assert {**row, "big": row["big"].value} == {"PartitionKey": ODD_PK, "RowKey": "a", **VALUES}
    assert row["big"].edm_type == EdmType.INT64


async def test_what_the_sdk_writes_the_lean_client_reads_alike(
    table: TableClient, sdk: TableServiceClient
) -> None:
    entity = {"PartitionKey": ODD_PK, "RowKey": "b", **VALUES}
    await sdk.get_table_client(table.table_name).upsert_entity(
        {**entity, "big": EntityProperty(2**40, EdmType.INT64)}
    )
    assert dict(await table.get_entity(ODD_PK, "b")) == entity


async def test_merge_keeps_other_properties_and_replace_drops_them(table: TableClient) -> None:
    await table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "a": 1, "b": 2})
    await table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "b": 3})
    assert (await table.get_entity("p", "r"))["a"] == 1
    await table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "b": 4},
                              mode=tables.UpdateMode.REPLACE)  # fmt: skip
    assert "a" not in await table.get_entity("p", "r")


async def test_conditions_are_enforced_by_the_service(table: TableClient) -> None:
    first = await table.create_entity({"PartitionKey": "p", "RowKey": "c", "n": 1})
    with pytest.raises(tables.EntityExistsError, match="EntityAlreadyExists"):
        await table.create_entity({"PartitionKey": "p", "RowKey": "c"})
    second = await table.update_entity(
        {"PartitionKey": "p", "RowKey": "c", "n": 2},
        etag=first["etag"],
        match_condition=tables.MatchConditions.IfNotModified,
    )
    with pytest.raises(tables.EntityChangedError, match="UpdateConditionNotSatisfied"):
        await table.update_entity(
            {"PartitionKey": "p", "RowKey": "c", "n": 3},
            etag=first["etag"],
            match_condition=tables.MatchConditions.IfNotModified,
        )
    with pytest.raises(tables.EntityNotFoundError):
        await table.update_entity({"PartitionKey": "p", "RowKey": "missing", "n": 1})
    await table.delete_entity(
        "p", "c", etag=second["etag"], match_condition=tables.MatchConditions.IfNotModified
    )
    await table.delete_entity("p", "c")  # gone already: fine
    with pytest.raises(tables.EntityNotFoundError):
        await table.get_entity("p", "c")


async def test_a_query_pages_through_continuations(table: TableClient) -> None:
    ops = [("upsert", {"PartitionKey": ODD_PK, "RowKey": f"{i:03d}", "i": i}) for i in range(25)]
    await table.submit_transaction(ops)
    await table.upsert_entity({"PartitionKey": "other", "RowKey": "x"})
    found = [
        e["i"]
        async for e in table.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo",
            parameters={"pk": ODD_PK, "lo": "005"},
            results_per_page=7,
        )
    ]
    assert found == list(range(5, 25))


async def test_a_transaction_applies_all_or_nothing(table: TableClient) -> None:
    await table.create_entity({"PartitionKey": "t", "RowKey": "old"})
    answers = await table.submit_transaction(
        [
            ("create", {"PartitionKey": "t", "RowKey": "new", "big": 2**40}),
            ("upsert", {"PartitionKey": "t", "RowKey": "up"}, {"mode": tables.UpdateMode.REPLACE}),
            ("update", {"PartitionKey": "t", "RowKey": "old", "n": 1}),
        ]
    )
    assert all(a["etag"] for a in answers)
    assert (await table.get_entity("t", "new"))["big"] == 2**40
    with pytest.raises(tables.EntityExistsError, match="operation 1"):
        await table.submit_transaction(
            [("create", {"PartitionKey": "t", "RowKey": "newer"}),
             ("create", {"PartitionKey": "t", "RowKey": "new"})]
        )  # fmt: skip
    with pytest.raises(tables.EntityNotFoundError):
        await table.get_entity("t", "newer")
    await table.submit_transaction([("delete", {"PartitionKey": "t", "RowKey": r})
                                    for r in ("new", "up", "old")])  # fmt: skip
    assert [e async for e in table.query_entities("PartitionKey eq 't'")] == []


async def test_a_transaction_under_a_stale_etag_changes_nothing(table: TableClient) -> None:
    first = await table.create_entity({"PartitionKey": "s", "RowKey": "a", "n": 1})
    await table.upsert_entity({"PartitionKey": "s", "RowKey": "a", "n": 2})
    guard = {"etag": first["etag"], "match_condition": tables.MatchConditions.IfNotModified}
    with pytest.raises(tables.EntityChangedError):
        await table.submit_transaction(
            [("upsert", {"PartitionKey": "s", "RowKey": "b"}),
             ("update", {"PartitionKey": "s", "RowKey": "a", "n": 3}, guard)]
        )  # fmt: skip
    assert [e["RowKey"] async for e in table.query_entities("PartitionKey eq 's'")] == ["a"]


async def test_a_wrong_account_key_is_refused_as_unavailable(
    azurite: Azurite, table_prefix: str
) -> None:
    wrong = SharedKey(ACCOUNT, "AAAA" + "A" * 84)
    svc = TableService(azurite.table_endpoint, wrong)
    try:
        with pytest.raises(tables.StorageUnavailableError, match="credentials"):
            await svc.create_table(table_prefix + "nope")
    finally:
        await svc.aclose()


async def test_storage_that_is_down_is_unavailable_after_the_retries() -> None:
    counted: list[int] = []
    options = ClientOptions(on_request=lambda: counted.append(1), connect_timeout=1.0)
    svc = TableService.from_connection_string(
        f"AccountName={ACCOUNT};AccountKey=AAAA;TableEndpoint=http://127.0.0.1:{free_port()}/x",
        options,
    )
    try:
        with pytest.raises(tables.StorageUnavailableError, match="no answer"):
            await svc.table("t").get_entity("p", "r")
    finally:
        await svc.aclose()
    assert len(counted) == 3
