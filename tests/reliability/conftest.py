"""Fixtures of the reliability suite: the real app on the local host with every development
service around it, storage snapshots, Event Grid-style redelivery and the figures the suite
measures.

- ``sim`` / ``idp`` / ``acs``: the APNs simulator (a key registered for :data:`APP`), the
  development identity provider and the local ACS identity service, one per module.
- ``serve(env)``: the app served by the local host with ``env`` (module-scoped servers use
  :func:`served_app`); ``app_env(...)`` builds the settings that point it at those services.
- ``snapshot(connection, prefix)``: every entity of the test's tables, to compare storage
  before and after.
- ``figures``: what a test measured (lost, duplicated, faults hit...); printed at the end of
  the run and written to ``$RELIABILITY_FIGURES`` (JSON) when that is set.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.data.tables import TableServiceClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devtools.acs_identity_service import AcsIdentityService
from devtools.apns_simulator import ApnsSimulator
from devtools.dev_identity_provider import DevIdentityProvider
from devtools.localhost import HostJson, HostOptions, SystemClock
from devtools.settings_doc import defaults
from tests.e2e.conftest import FAST_QUEUES, REPO, ServedApp

APP, TEAM, KEY_ID = "com.example.chat", "TEAM123456", "KEY1234567"
SIGNING_KEY = ec.generate_private_key(ec.SECP256R1())
KEK = "rel1=" + base64.b64encode(b"\x11" * 32).decode()
WEBHOOK = "/runtime/webhooks/eventgrid?functionName="
EG_HEADERS = {"aeg-event-type": "Notification", "content-type": "application/json"}
SAMPLES = REPO / "tests" / "samples"

_FIGURES: dict[str, dict[str, Any]] = {}


# --- services -------------------------------------------------------------------------------------


def register_app_key(sim: ApnsSimulator) -> None:
    """Trust the test app's provider key (for the alert and the VoIP topic)."""
    public = SIGNING_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sim.register_key(KEY_ID, TEAM, public)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApnsSimulator]:
    with ApnsSimulator.start(tmp_path_factory.mktemp("apns")) as simulator:
        register_app_key(simulator)
        yield simulator


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevIdentityProvider]:
    with DevIdentityProvider.start(tmp_path_factory.mktemp("idp")) as provider:
        yield provider


@pytest.fixture(scope="module")
def acs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcsIdentityService]:
    with AcsIdentityService.start(tmp_path_factory.mktemp("acs")) as service:
        yield service


def app_env(
    connection: str,
    prefix: str,
    *,
    sim: ApnsSimulator | None = None,
    idp: DevIdentityProvider | None = None,
    acs: AcsIdentityService | None = None,
    **overrides: str,
) -> dict[str, str]:
    """Settings that point the app at Azurite (``connection``, tables ``prefix``) and at the
    given services; ``overrides`` win."""
    pem = SIGNING_KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    env = {
        "STORAGE_CONNECTION": connection,
        "TABLE_PREFIX": prefix,
        "APNS_APPS": json.dumps(
            [{"bundleId": APP, "teamId": TEAM, "keyId": KEY_ID, "privateKey": pem}]
        ),
        "KEY_ENCRYPTION_KEYS": KEK,
        "APNS_REQUEST_TIMEOUT_SECONDS": "1.0",
        "APNS_RETRY_BUDGET_SECONDS": "1.5",
        "DELIVERY_LOG_ADMINS": "ops-admin",
    }
    if sim is not None:
        env.update(
            APNS_SANDBOX_ORIGIN=sim.sandbox_origin,
            APNS_PRODUCTION_ORIGIN=sim.production_origin,
            APNS_CA_FILE=str(sim.ca_file),
        )
    if idp is not None:
        env.update(idp.settings)
    if acs is not None:
        env.update(ACS_CONNECTION_STRING=acs.connection_string, ACS_CA_FILE=str(acs.ca_file))
    env.update(overrides)
    return env


@dataclass
class Served:
    """A running app: its base URL, its settings and the host's loop (``app.run(coro)``)."""

    app: ServedApp
    base: str
    env: dict[str, str]


@contextmanager
def served_app(settings: Mapping[str, str]) -> Iterator[Served]:
    """The real ``function_app`` on the local host with ``settings`` (over every default)."""
    from shared import wiring

    saved = dict(os.environ)
    env = {**defaults(), **settings}
    os.environ.update(env)
    wiring.reset(dict(os.environ))
    host_json = HostJson.read(REPO / "host.json")
    options = HostOptions(
        port=0,
        route_prefix=host_json.route_prefix,
        timers=False,
        clock=SystemClock(),
        queue=FAST_QUEUES,
    )
    app = ServedApp(env, options)
    try:
        yield Served(app, app.start(), env)
    finally:
        try:
            app.stop()
        finally:
            os.environ.clear()
            os.environ.update(saved)
            wiring.reset()


# --- storage --------------------------------------------------------------------------------------


def snapshot(connection: str, prefix: str) -> dict[str, list[dict[str, Any]]]:
    """Every entity of every table named ``prefix...`` (sorted; empty tables left out)."""
    service = TableServiceClient.from_connection_string(connection)
    out: dict[str, list[dict[str, Any]]] = {}
    for table in service.list_tables():
        if not table.name.startswith(prefix):
            continue
        rows = [
            {k: _plain(v) for k, v in entity.items()}
            for entity in service.get_table_client(table.name).list_entities()
        ]
        if rows:  # tables are created on first use: an empty one holds no state
            out[table.name] = sorted(rows, key=lambda r: (r["PartitionKey"], r["RowKey"]))
    return out


def _plain(value: Any) -> Any:
    raw = getattr(value, "value", value)
    return raw.isoformat() if isinstance(raw, datetime) else raw


def rows(connection: str, table: str) -> list[dict[str, Any]]:
    """Every entity of one table (empty when the table does not exist)."""
    service = TableServiceClient.from_connection_string(connection)
    if not any(t.name == table for t in service.list_tables()):
        return []
    return [dict(e) for e in service.get_table_client(table).list_entities()]


async def store_devices(
    env: Mapping[str, str], devices: list[tuple[str, str, bool]], kind: str = "alert"
) -> None:
    """Store (user rawId, token, with a live preview key) devices as registration would."""
    from shared.apns.notification import Environment
    from shared.domain.devices import Device, DeviceKind, device_id_for
    from shared.domain.key_wrap import KeyWrapper
    from shared.storage.devices import DEVICES_TABLE, OWNERS_TABLE, DeviceStore
    from shared.storage.tables import Tables

    tables = Tables.connect(env["STORAGE_CONNECTION"], env["TABLE_PREFIX"])
    try:
        store = DeviceStore(
            await tables.table(DEVICES_TABLE),
            await tables.table(OWNERS_TABLE),
            KeyWrapper.from_setting(env["KEY_ENCRYPTION_KEYS"]),
        )
        now = datetime.now(UTC)
        for user, token, keyed in devices:
            await store.register(
                Device(
                    user_id=user,
                    device_id=device_id_for(token),
                    token=token,
                    kind=DeviceKind(kind),
                    topic=APP,
                    environment=Environment.SANDBOX,
                    registered_at=now,
                    renewed_at=now,
                    preview_key=bytes(range(64)) if keyed else None,
                    key_expires_at=now + timedelta(minutes=45) if keyed else None,
                )
            )
    finally:
        await tables.aclose()


def principal(subject: str) -> str:
    """An Easy Auth client principal naming ``subject`` (what the platform would add)."""
    data = {"auth_typ": "aad", "claims": [{"typ": "sub", "val": subject}]}
    return base64.b64encode(json.dumps(data).encode()).decode()


# --- events ---------------------------------------------------------------------------------------


def sample_event(name: str) -> dict[str, Any]:
    """The first event of a sample delivery file."""
    doc = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    return doc[0] if isinstance(doc, list) else doc


def raw_id(n: int) -> str:
    return f"8:acs:00000000-0000-0000-0000-00000000rel0_{n:08d}-0000-0000-0000-000000000000"


def device_token(user: int, n: int) -> str:
    return f"{user:06x}{n:02x}".rjust(64, "c")


async def redeliver(
    client: httpx.AsyncClient,
    function: str,
    bodies: Mapping[str, bytes],
    *,
    delay: float = 0.2,
    rounds: int = 30,
) -> dict[str, list[int]]:
    """Post every body; re-post those not answered 2xx after ``delay`` (Event Grid's behaviour,
    with a short schedule), up to ``rounds`` times. Returns each body's statuses in order."""
    statuses: dict[str, list[int]] = {name: [] for name in bodies}

    async def post(name: str) -> None:
        try:
            r = await client.post(WEBHOOK + function, content=bodies[name], headers=EG_HEADERS)
            statuses[name].append(r.status_code)
        except httpx.TransportError:
            statuses[name].append(0)

    pending = list(bodies)
    for attempt in range(rounds):
        if attempt:
            await asyncio.sleep(delay)
        await asyncio.gather(*(post(name) for name in pending))
        pending = [n for n in pending if not 200 <= statuses[n][-1] < 300]
        if not pending:
            break
    return statuses


# --- figures --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def figures() -> dict[str, dict[str, Any]]:
    """Measured figures by test (``figures["name"] = {...}``), reported at the end."""
    return _FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name, values in _FIGURES.items():
        terminalreporter.write_line(f"{name}: {json.dumps(values, sort_keys=True)}")
    target = os.environ.get("RELIABILITY_FIGURES")
    if target:
        Path(target).write_text(json.dumps(_FIGURES, indent=2, sort_keys=True) + "\n")
