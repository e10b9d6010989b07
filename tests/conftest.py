"""Fixtures shared by every test layer.

- ``azurite``: one real Azurite per test session (in memory, free ports).
- ``table_prefix``: a unique table-name prefix per test, so tests never see each other's rows.
- Hypothesis profiles: ``dev`` (no deadline) and ``ci`` (no deadline, derandomized), chosen by
  the ``CI`` environment variable.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from devtools.azurite import Azurite

# Property tests: no deadline (a loaded CI machine stalls), and in CI the same examples every run.
hypothesis_settings.register_profile("ci", deadline=None, derandomize=True)
hypothesis_settings.register_profile("dev", deadline=None)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """A real Azurite for the whole session; tests isolate themselves by table/queue names."""
    with Azurite.start(None) as az:
        yield az


@pytest.fixture
def table_prefix() -> str:
    """A unique prefix (letters and digits) for this test's tables and queues."""
    return "t" + uuid.uuid4().hex[:12]
