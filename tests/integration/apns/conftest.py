"""The APNs simulator (real HTTP/2 + TLS on 127.0.0.1) and clients pointed at it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.apns_simulator import ApnsSimulator
from shared.apns.client import ApnsClient, ApnsConfig
from shared.apns.token import TokenCredential
from tests.unit.apns.keys import new_p8

KEY_ID = "KEYSIM0001"
TEAM_ID = "TEAMSIM001"
TOPIC = "com.example.chat"


@pytest.fixture(scope="session")
def p8() -> tuple[str, str]:
    return new_p8()


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApnsSimulator]:
    with ApnsSimulator.start(Path(tmp_path_factory.mktemp("apns-sim"))) as sim:
        yield sim


@pytest.fixture
def sim(simulator: ApnsSimulator, p8: tuple[str, str]) -> ApnsSimulator:
    """A clean simulator trusting our provider key for any topic."""
    simulator.reset()
    simulator.set_time(time.time())  # reset() keeps the clock; earlier tests may have moved it
    simulator.register_key(KEY_ID, TEAM_ID, p8[1])
    return simulator


@pytest.fixture
async def make_client(sim: ApnsSimulator, p8: tuple[str, str]) -> AsyncIterator[Any]:
    clients: list[ApnsClient] = []

    def build(**overrides: Any) -> ApnsClient:
        settings: dict[str, Any] = {
            "credential": TokenCredential(KEY_ID, TEAM_ID, p8[0]),
            "sandbox_origin": sim.sandbox_origin,
            "production_origin": sim.production_origin,
            "ca_file": str(sim.ca_file),
            "request_timeout": 2.0,
            "connect_timeout": 2.0,
            "backoff_base": 0.01,
        }
        settings.update(overrides)
        client = ApnsClient(ApnsConfig(**settings))
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()
