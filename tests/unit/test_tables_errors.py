"""shared.tables: library errors become ours (with their cause), and both ways to connect."""

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

from shared import tables
from shared.errors import TransientError

pytestmark = pytest.mark.unit


def http_error(status: int | None) -> HttpResponseError:
    error = HttpResponseError(message="refused")
    error.status_code = status
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


def test_a_table_endpoint_url_connects_with_a_token_credential() -> None:
    async def connect() -> tuple[str, str]:
        t = tables.Tables.connect("https://acct.table.core.windows.net", "pr")
        try:
            return type(t._credential).__name__, t.name("devices")
        finally:
            await t.aclose()

    assert asyncio.run(connect()) == ("DefaultAzureCredential", "prdevices")


def test_a_connection_string_connects_with_the_account_key() -> None:
    async def connect() -> object:
        t = tables.Tables.connect("UseDevelopmentStorage=true", "pr")
        try:
            return t._credential
        finally:
            await t.aclose()

    assert asyncio.run(connect()) is None


def test_an_empty_connection_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="no storage connection"):
        tables.Tables.connect("  ", "pr")
