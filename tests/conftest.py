"""Fixtures shared by every test layer.

- ``azurite``: one real Azurite per test session (in memory, free ports).
- ``table_prefix``: a unique table-name prefix per test, so tests never see each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from devtools.azurite import Azurite


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """A real Azurite for the whole session; tests isolate themselves by table/queue names."""
    with Azurite.start(None) as az:
        yield az


@pytest.fixture
def table_prefix() -> str:
    """A unique prefix (letters and digits) for this test's tables and queues."""
    return "t" + uuid.uuid4().hex[:12]
