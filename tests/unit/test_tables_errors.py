"""shared.storage.tables: library errors become ours (with their cause); both ways to connect."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableErrorCode, TableTransactionError

from shared.errors import TransientError
from shared.settings import StorageClient
from shared.storage import tables

pytestmark = pytest.mark.unit


def http_error(status: int | None, code: object = None) -> HttpResponseError:
    error = HttpResponseError(message="refused")
    error.status_code = status
    error.error_code = code  # the SDK sets it on what it raises
    return error


def not_found(code: object) -> ResourceNotFoundError:
    """What the SDK raises for a 404 outside a transaction: ``_decode_error`` turns both
    ResourceNotFound and TableNotFound into ResourceNotFoundError, the code a TableErrorCode."""
    error = ResourceNotFoundError(message="The table specified does not exist.")
    error.status_code = 404
    error.error_code = code
    return error


def failed_transaction(status: int, code: str, message: str) -> TableTransactionError:
    """What the SDK raises for a failed operation of a transaction: the part's status and its
    code as the plain string the answer held (azure-data-tables ``_batch_send``)."""
    error = TableTransactionError(message=message)
    error.status_code = status
    error.error_code = code
    return error


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "table_service"


class Answer:
    """The answer an azure-core error holds (``body()``, ``headers``)."""

    def __init__(self, fixture: str) -> None:
        answer = json.loads((FIXTURES / fixture).read_text(encoding="utf-8"))["answer"]
        self.status_code = answer["status"]
        self.headers = answer["headers"]
        self._body = answer["body"].encode()

    def body(self) -> bytes:
        return self._body


def undecoded(error: HttpResponseError, fixture: str) -> HttpResponseError:
    """What the SDK's ``create_entity`` raises: azure-core's error for the status, its answer
    undecoded (no ``error_code``; azure-data-tables 12.7 ``aio/_table_client_async.py``)."""
    answer = Answer(fixture)
    error.response = answer  # type: ignore[assignment]
    error.status_code = answer.status_code
    return error


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (ResourceModifiedError("412"), tables.EntityChangedError),
        (ResourceExistsError("409"), tables.EntityExistsError),
        (ResourceNotFoundError("404"), tables.EntityNotFoundError),
        (ClientAuthenticationError("403"), tables.StorageUnavailableError),
        (ServiceRequestError("connection refused"), tables.StorageUnavailableError),
        (ServiceResponseError("reset"), tables.StorageUnavailableError),
        (http_error(503), tables.StorageUnavailableError),
        (http_error(429), tables.StorageUnavailableError),
        (http_error(None), tables.StorageUnavailableError),
        (http_error(409), tables.EntityExistsError),
        # The SDK raises a plain HttpResponseError for this code (azure-data-tables _error.py).
        (http_error(409, TableErrorCode.TABLE_BEING_DELETED), tables.StorageUnavailableError),
        # Its create_entity raises azure-core's error for the status: the code is in the answer.
        (
            undecoded(ResourceExistsError("409"), "table_being_deleted.json"),
            tables.StorageUnavailableError,
        ),
        # A missing table is an outage of that table, never an absent entity.
        (
            undecoded(ResourceNotFoundError("404"), "table_not_found.json"),
            tables.TableMissingError,
        ),
        (not_found(TableErrorCode.TABLE_NOT_FOUND), tables.TableMissingError),
        (not_found(TableErrorCode.RESOURCE_NOT_FOUND), tables.EntityNotFoundError),
        (
            failed_transaction(404, "TableNotFound", "0:The table specified does not exist."),
            tables.TableMissingError,
        ),
        (
            failed_transaction(404, "ResourceNotFound", "0:The specified resource does not exist."),
            tables.EntityNotFoundError,
        ),
        (http_error(412), tables.EntityChangedError),
        (http_error(400), tables.StorageRejectedError),
        (http_error(413), tables.StorageRejectedError),
    ],
)
def test_library_errors_become_ours_with_their_cause(
    raised: Exception, expected: type[Exception]
) -> None:
    with pytest.raises(expected) as caught, tables.storage_errors("read device"):
        raise raised
    assert type(caught.value) is expected
    assert caught.value.__cause__ is raised
    assert str(caught.value).startswith("read device")


def test_outages_are_transient_and_conflicts_are_not() -> None:
    assert issubclass(tables.StorageUnavailableError, TransientError)
    assert issubclass(tables.TableMissingError, tables.StorageUnavailableError)
    assert not issubclass(tables.TableMissingError, tables.EntityNotFoundError)
    assert not issubclass(tables.StorageConflictError, TransientError)
    assert not issubclass(tables.StorageRejectedError, TransientError)


def test_other_exceptions_pass_through_untouched() -> None:
    with pytest.raises(KeyError), tables.storage_errors("read"):
        raise KeyError("x")


def _connected(connection: str, client: str) -> tuple[str, str, str]:
    """Which backend, authorization and credential ``Tables.connect`` chose."""

    async def connect() -> tuple[str, str, str]:
        t = tables.Tables.connect(connection, "pr", client)
        try:
            backend = t._backend
            auth = getattr(backend, "_auth", None)
            credential = getattr(auth, "_credential", None) or getattr(backend, "credential", None)
            return type(backend).__name__, type(auth).__name__, type(credential).__name__
        finally:
            await t.aclose()

    return asyncio.run(connect())


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ("lean", ("TableService", "TokenAuth", "DefaultAzureCredential")),
        ("sdk", ("SdkTables", "NoneType", "DefaultAzureCredential")),
    ],
)
def test_a_table_endpoint_url_connects_with_a_token_credential(
    client: str, expected: tuple[str, str, str]
) -> None:
    assert _connected("https://acct.table.core.windows.net", client) == expected


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ("lean", ("TableService", "SharedKey", "NoneType")),
        ("sdk", ("SdkTables", "NoneType", "NoneType")),
    ],
)
def test_a_connection_string_connects_with_the_account_key(
    client: str, expected: tuple[str, str, str]
) -> None:
    assert _connected("UseDevelopmentStorage=true", client) == expected


def test_a_sas_connection_string_uses_the_sdk_client() -> None:
    sas = "TableEndpoint=https://acct.table.core.windows.net;SharedAccessSignature=sv=2019-02-02&sig=x"
    assert _connected(sas, "lean")[0] == "SdkTables"


def test_the_table_names_carry_the_prefix() -> None:
    t = tables.Tables.connect("UseDevelopmentStorage=true", "pr")
    assert t.name("devices") == "prdevices"
    asyncio.run(t.aclose())


def test_an_empty_connection_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="no storage connection"):
        tables.Tables.connect("  ", "pr")


# --- a table deleted under the running app --------------------------------------------------------


class Account:
    """A storage account in memory, as a TableBackend: tables an operator can delete."""

    def __init__(self, missing: Callable[[str], Exception]) -> None:
        self.rows: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self.created: list[str] = []
        self.missing = missing  # the error a request to a missing table raises

    def table(self, name: str) -> Table:
        return Table(self, name)

    async def create_table(self, name: str) -> bool:
        self.created.append(name)
        return self.rows.setdefault(name, {}) == {}

    async def aclose(self) -> None:
        return None

    def rows_of(self, name: str) -> dict[tuple[str, str], dict[str, Any]]:
        if name not in self.rows:
            raise self.missing(name)
        return self.rows[name]


class Table:
    """The calls the tests make, on :class:`Account`."""

    def __init__(self, account: Account, name: str) -> None:
        self.account = account
        self.table_name = name

    async def get_entity(self, pk: str, rk: str, *, select: object = None) -> dict[str, Any]:
        row = self.account.rows_of(self.table_name).get((pk, rk))
        if row is None:
            raise tables.EntityNotFoundError("read: not found (404 ResourceNotFound)")
        return row

    async def upsert_entity(self, entity: dict[str, Any], mode: object = None) -> dict[str, Any]:
        rows = self.account.rows_of(self.table_name)
        rows[(entity["PartitionKey"], entity["RowKey"])] = dict(entity)
        return {"etag": "e"}

    async def query_entities(self, query_filter: str, **_: object) -> AsyncIterator[Any]:
        for row in list(self.account.rows_of(self.table_name).values()):
            yield row

    async def submit_transaction(self, operations: list[tuple[Any, ...]]) -> list[Any]:
        for _kind, entity in operations:
            await self.upsert_entity(entity)
        return [{"etag": "e"} for _ in operations]


def lean_missing(name: str) -> Exception:
    return tables.TableMissingError(f"read on {name}: table missing (404 TableNotFound)")


def sdk_missing(name: str) -> Exception:
    return not_found(TableErrorCode.TABLE_NOT_FOUND)


def sdk_transaction_missing(name: str) -> Exception:
    return failed_transaction(404, "TableNotFound", "0:The table specified does not exist.")


MISSING = pytest.mark.parametrize(
    "missing",
    [lean_missing, sdk_missing, sdk_transaction_missing],
    ids=["lean", "sdk", "sdk-transaction"],
)


def connected(account: Account) -> tables.Tables:
    return tables.Tables(cast(tables.TableBackend, account), "p", StorageClient.LEAN)


async def _read_after_delete(account: Account) -> tuple[tables.TableClient, Exception]:
    store = connected(account)
    table = await store.table("devices")
    await table.upsert_entity({"PartitionKey": "u", "RowKey": "d"})
    del account.rows["pdevices"]  # an operator deletes the table
    with pytest.raises(Exception) as raised, tables.storage_errors("read device"):
        await table.get_entity("u", "d")
    return table, raised.value


@MISSING
def test_a_call_on_a_deleted_table_raises_transient_and_the_next_creates_it(
    missing: Callable[[str], Exception],
) -> None:
    account = Account(missing)

    async def go() -> None:
        table, raised = await _read_after_delete(account)
        assert isinstance(raised, tables.TableMissingError)
        assert account.created == ["pdevices"]
        # The client the adapter kept: its next call creates the table, then reads it.
        with pytest.raises(tables.EntityNotFoundError):
            await table.get_entity("u", "d")
        assert account.created == ["pdevices", "pdevices"]
        await table.upsert_entity({"PartitionKey": "u", "RowKey": "d"})
        assert (await table.get_entity("u", "d"))["RowKey"] == "d"
        assert account.created == ["pdevices", "pdevices"]

    asyncio.run(go())


@MISSING
def test_tables_hands_out_the_same_client_and_creates_a_missing_table_again(
    missing: Callable[[str], Exception],
) -> None:
    account = Account(missing)

    async def go() -> None:
        store = connected(account)
        table = await store.table("devices")
        del account.rows["pdevices"]
        with pytest.raises(Exception) as raised:
            await table.submit_transaction([("upsert", {"PartitionKey": "u", "RowKey": "d"})])
        assert tables.says_table_missing(raised.value)
        assert await store.table("devices") is table
        assert account.created == ["pdevices", "pdevices"]
        assert "pdevices" in account.rows

    asyncio.run(go())


def test_a_query_on_a_deleted_table_marks_it_missing() -> None:
    account = Account(lean_missing)

    async def go() -> None:
        table = await connected(account).table("devices")
        del account.rows["pdevices"]
        with pytest.raises(tables.TableMissingError):
            _ = [row async for row in table.query_entities("PartitionKey eq @pk")]
        assert [row async for row in table.query_entities("")] == []
        assert account.created == ["pdevices", "pdevices"]

    asyncio.run(go())


def test_an_absent_entity_creates_nothing() -> None:
    account = Account(lean_missing)

    async def go() -> None:
        table = await connected(account).table("devices")
        for _ in range(2):
            with pytest.raises(tables.EntityNotFoundError):
                await table.get_entity("u", "nobody")
        assert account.created == ["pdevices"]

    asyncio.run(go())
