"""shared.storage.tables: library errors become ours (with their cause); both ways to connect."""

from __future__ import annotations

import asyncio

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
from azure.data.tables import TableErrorCode

from shared.errors import TransientError
from shared.storage import tables

pytestmark = pytest.mark.unit


def http_error(status: int | None, code: object = None) -> HttpResponseError:
    error = HttpResponseError(message="refused")
    error.status_code = status
    error.error_code = code  # the SDK sets it on what it raises
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
    assert caught.value.__cause__ is raised
    assert str(caught.value).startswith("read device")


def test_outages_are_transient_and_conflicts_are_not() -> None:
    assert issubclass(tables.StorageUnavailableError, TransientError)
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
