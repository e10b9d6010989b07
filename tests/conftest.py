"""Fixtures shared by every test layer.

- ``azurite``: one real Azurite per test session (in memory, free ports).
- ``table_prefix``: a unique table-name prefix per test, so tests never see each other's rows.
- ``storage_client``: each Table Storage client (``lean``, ``sdk``): the adapter tests that take
  it run once per client, so both keep answering the adapters alike.
- ``sim``, ``idp``, ``acs``: the APNs simulator, the development identity provider and the local
  ACS identity service, one of each per test module that asks (a module may define its own).
- ``apns``: that simulator, reset for the test, trusting ``tests.local_apns.KEY`` for its app.
- Hypothesis profiles: ``dev`` (no deadline) and ``ci`` (no deadline, derandomized), chosen by
  the ``CI`` environment variable.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from devtools.acs_identity_service import AcsIdentityService
from devtools.apns_simulator import ApnsSimulator
from devtools.azurite import Azurite
from devtools.dev_identity_provider import DevIdentityProvider
from tests.local_apns import APP, KEY

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


@pytest.fixture(params=["lean", "sdk"])
def storage_client(request: pytest.FixtureRequest) -> str:
    """A Table Storage client (``STORAGE_CLIENT``); tests taking it run with each."""
    return str(request.param)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApnsSimulator]:
    """The APNs simulator (HTTP/2 + TLS on 127.0.0.1) for this module; tests reset it."""
    with ApnsSimulator.start(tmp_path_factory.mktemp("apns")) as simulator:
        yield simulator


@pytest.fixture
def apns(sim: ApnsSimulator) -> ApnsSimulator:
    """The module's simulator, reset, trusting the app's provider key (its .voip topic too)."""
    sim.reset()
    KEY.trust(sim, APP)
    return sim


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevIdentityProvider]:
    """The development identity provider (JWKS over HTTP) for this module."""
    with DevIdentityProvider.start(tmp_path_factory.mktemp("idp")) as provider:
        yield provider


@pytest.fixture(scope="module")
def acs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcsIdentityService]:
    """The local ACS identity service (HTTPS) for this module."""
    with AcsIdentityService.start(tmp_path_factory.mktemp("acs")) as service:
        yield service
