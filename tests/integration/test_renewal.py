"""Renewal on real parts: Azurite tables and queue, the APNs simulator over HTTP/2+TLS, our client.

The use cases get their collaborators from the composition root (``shared.wiring.Container``)
built from settings, on an injected clock; one test drives the real ``renewal_sweep`` and
``renewal_worker`` functions through the local host (timer → queue output → queue trigger).
Assertions count what the simulator received and what storage holds.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devtools import renewal_rate
from devtools.apns_simulator import ApnsSimulator, RequestRecord
from devtools.azurite import Azurite
from devtools.localhost import HostOptions, LocalHost, QueueOptions, import_app
from devtools.settings_doc import defaults
from shared.domain.devices import device_id_for
from shared.storage.renewal_schedule import ScheduleEntry, bucket_for, bucket_start
from shared.storage.renewal_sweeps import ShardReport
from shared.storage.tables import round_trips
from shared.usecases.registration import register_device
from shared.usecases.renewal import SweepResult, parse_shard, renew_shard, run_sweep
from shared.wiring import Container

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
APP = "com.example.chat"
TEAM, KEY_ID = "TEAM123456", "KEY1234567"
USER = "8:acs:resource_00000000-0000-0000-0000-0000000000aa"
PREVIEW_KEY = base64.b64encode(bytes(range(64))).decode()
PRIVATE = ec.generate_private_key(ec.SECP256R1())
PRIVATE_PEM = PRIVATE.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
# A bucket-aligned start two hours back: the simulator's 410 timestamps (its real clock) are later.
T0 = bucket_start(bucket_for(datetime.now(UTC) - timedelta(hours=2)))


def token(n: int) -> str:
    return f"{n:02x}" * 32


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApnsSimulator]:
    with ApnsSimulator.start(tmp_path_factory.mktemp("apns")) as simulator:
        yield simulator


@pytest.fixture
def apns(sim: ApnsSimulator) -> ApnsSimulator:
    sim.reset()
    sim.register_key(KEY_ID, TEAM, PRIVATE_PEM, topics=[APP])
    return sim


def app_settings(sim: ApnsSimulator, azurite: Azurite, prefix: str, **extra: str) -> dict[str, str]:
    apps = [{"bundleId": APP, "teamId": TEAM, "keyId": KEY_ID, "privateKey": PRIVATE_PEM}]
    return {
        "STORAGE_CONNECTION": azurite.connection_string,
        "AzureWebJobsStorage": azurite.connection_string,
        "TABLE_PREFIX": prefix,
        "RENEWAL_QUEUE": prefix + "-renewal",
        "APNS_APPS": json.dumps(apps),
        "APNS_SANDBOX_ORIGIN": sim.sandbox_origin,
        "APNS_PRODUCTION_ORIGIN": sim.production_origin,
        "APNS_CA_FILE": str(sim.ca_file),
        "APNS_RETRY_BUDGET_SECONDS": "0.6",
        "APNS_REQUEST_TIMEOUT_SECONDS": "0.5",
        "KEY_ENCRYPTION_KEYS": "k1=" + base64.b64encode(bytes(range(32))).decode(),
        "RENEWAL_SHARD_SIZE": "3",
        "MAX_DEVICES_PER_USER": "50",  # one user's many phones stand for many users' here
        **extra,
    }


class Stack:
    """The real collaborators from the composition root, on a clock the test moves."""

    def __init__(self, container: Container, sim: ApnsSimulator) -> None:
        self.c = container
        self.sim = sim
        self.now = T0

    def clock(self) -> datetime:
        return self.now

    def at(self, minutes: float) -> None:
        self.now = T0 + timedelta(minutes=minutes)

    async def register(self, n: int, *, key: bool = True) -> str:
        body = {"token": token(n), "kind": "alert", "topic": APP, "environment": "sandbox"}
        if key:
            body["key"] = PREVIEW_KEY
        done = await register_device(
            USER,
            body,
            self.now,
            registry=await self.c.device_registry(),
            schedule=await self.c.renewal_schedule(),
            rules=self.c.registration_rules(),
        )
        return done.device_id

    async def sweep(self) -> SweepResult:
        return await run_sweep(
            schedule=await self.c.renewal_schedule(),
            sweeps=await self.c.sweep_log(),
            now=self.now,
            rules=self.c.renewal_rules(),
        )

    async def work(self, message: str) -> ShardReport:
        return await renew_shard(
            parse_shard(message),
            devices=await self.c.device_registry(),
            schedule=await self.c.renewal_schedule(),
            sweeps=await self.c.sweep_log(),
            pushers=await self.c.pushers(),
            rules=self.c.renewal_rules(),
            clock=self.clock,
            alarm=self.c.config_alarm(),
        )

    async def tick(self) -> SweepResult:
        swept = await self.sweep()
        await asyncio.gather(*(self.work(m) for m in swept.messages))
        return swept

    async def entries(self) -> list[tuple[str, str]]:
        schedule = await self.c.renewal_schedule()
        return [
            (e.bucket, e.device_id) for e in await schedule.read_due("200001010000", "299912312355")
        ]

    def pushes_to(self, n: int) -> list[RequestRecord]:
        return [r for r in self.sim.requests() if r.token == token(n)]


@pytest.fixture
async def stack(apns: ApnsSimulator, azurite: Azurite, table_prefix: str) -> AsyncIterator[Stack]:
    container = Container(app_settings(apns, azurite, table_prefix))
    try:
        yield Stack(container, apns)
    finally:
        await container.aclose()


async def test_due_devices_get_one_background_push_each(stack: Stack) -> None:
    for n in range(1, 6):
        await stack.register(n)
    stack.at(35)
    swept = await stack.tick()
    assert (swept.devices, len(swept.messages)) == (5, 2)
    pushes = stack.sim.requests()
    assert sorted(r.token for r in pushes if r.status == 200) == [token(n) for n in range(1, 6)]
    expiry = str(int((stack.now + timedelta(minutes=10)).timestamp()))
    assert {
        (r.headers["apns-push-type"], r.headers["apns-priority"], r.headers["apns-topic"],
         r.headers["apns-expiration"], json.dumps(r.payload)) for r in pushes
    } == {("background", "5", APP, expiry, '{"aps": {"content-available": 1}}')}  # fmt: skip


async def test_woken_devices_are_scheduled_again_when_their_budget_allows(stack: Stack) -> None:
    ids = [await stack.register(n) for n in (1, 2)]
    stack.at(35)
    await stack.tick()
    retry = bucket_for(T0 + timedelta(minutes=55))
    pending = [e for e in await stack.entries() if e[0] > bucket_for(stack.now)]
    assert sorted(pending) == sorted((retry, i) for i in ids)
    device = await (await stack.c.device_registry()).get(USER, ids[0])
    assert device is not None
    assert (device.background_sent, device.unanswered_wakes) == ((stack.now,), 1)


async def test_a_device_that_renewed_by_itself_is_skipped(stack: Stack) -> None:
    await stack.register(1)
    stack.at(30)
    await stack.register(1)
    stack.at(35)
    await stack.tick()
    assert stack.pushes_to(1) == []


async def test_a_timer_firing_twice_enqueues_the_buckets_once(stack: Stack) -> None:
    for n in range(1, 5):
        await stack.register(n)
    stack.at(35)
    results = await asyncio.gather(stack.sweep(), stack.sweep(), stack.sweep())
    assert sorted(len(r.messages) for r in results) == [0, 0, 2]


async def test_a_redelivered_shard_pushes_nobody_twice(stack: Stack) -> None:
    for n in range(1, 4):
        await stack.register(n)
    stack.at(35)
    [message] = (await stack.sweep()).messages
    reports = await asyncio.gather(stack.work(message), stack.work(message))
    again = await stack.work(message)
    assert sorted(r.token for r in stack.sim.requests()) == [token(1), token(2), token(3)]
    assert [r.count("woken") for r in (*reports, again)] == [3, 3, 3]


async def test_an_app_down_for_an_hour_catches_up_without_bursting_past_the_budget(
    stack: Stack,
) -> None:
    registry = await stack.c.device_registry()
    for n in range(1, 13):
        stack.at(n * 5 - 5)
        await stack.register(n)  # due at 35, 40, ..., 90 minutes
        if n == 8:
            await stack.tick()  # at 35: wakes device 1; then no sweep runs for an hour
    stack.at(60)
    await stack.register(3)  # renewed by itself while sweeps were down: now due at 95
    stack.at(90)
    withdrawn = device_id_for(token(5))
    await registry.record_background_push(USER, withdrawn, stack.now, renewal=False)
    stack.at(95)
    caught_up = await stack.tick()
    assert caught_up.devices == 12
    # Device 1 again (an hour after its first wake); device 5 is within the spacing of the
    # withdraw push it got at 90 and waits; device 3 once although it is due in two buckets.
    assert [len(stack.pushes_to(n)) for n in range(1, 13)] == [2, 1, 1, 1, 0] + [1] * 7
    assert (await stack.entries()).count((bucket_for(T0 + timedelta(minutes=110)), withdrawn)) == 1
    device = await registry.get(USER, device_id_for(token(1)))
    assert device is not None
    assert device.background_sent == (T0 + timedelta(minutes=95),)  # the budget keeps an hour


async def test_an_unregistered_device_is_removed(stack: Stack) -> None:
    device_id = await stack.register(1)
    stack.sim.unregister_device(token(1))
    stack.at(35)
    await stack.tick()
    assert await (await stack.c.device_registry()).get(USER, device_id) is None


async def test_the_worker_costs_one_storage_round_trip_per_woken_device(
    apns: ApnsSimulator, azurite: Azurite, table_prefix: str
) -> None:
    stack = Stack(
        Container(app_settings(apns, azurite, table_prefix, RENEWAL_SHARD_SIZE="30")), apns
    )
    try:
        for n in range(1, 31):
            await stack.register(n)
        stack.at(35)
        [message] = (await stack.sweep()).messages
        await stack.work(message)  # warm: tables exist, connections are open
        stack.at(35 + 3 * 60)  # their next entries are due and their budgets allow again
        [message] = [m for m in (await stack.sweep()).messages if parse_shard(m).purge is None]
        before = round_trips()
        report = await stack.work(message)
        spent = round_trips() - before
    finally:
        await stack.c.aclose()
    assert report.count("woken") == 30
    # The claim per device (no read: the message carries what the entries carry); one
    # transaction per partition for the next entries (a bucket spans LANES partitions, and a
    # device keeps its lane) and one for the shard's report.
    lanes = len({ScheduleEntry("202601010000", USER, device_id_for(token(n))).partition
                 for n in range(1, 31)})  # fmt: skip
    assert spent == 30 + lanes + 1


async def test_the_renewal_rate_command_prints_woken_renewed_and_the_rate(
    stack: Stack, azurite: Azurite, table_prefix: str
) -> None:
    for n in range(1, 5):
        await stack.register(n)
    stack.at(35)
    woke = await stack.tick()
    stack.at(40)
    await stack.register(2)  # one app ran after the wake and renewed its key
    for minutes in range(45, 80, 5):
        stack.at(minutes)
        await stack.tick()
    out = io.StringIO()
    argv = ["--storage", azurite.connection_string, "--prefix", table_prefix, "--hours", "6"]
    later = stack.now + timedelta(hours=1)
    status = await asyncio.to_thread(renewal_rate.main, [*argv, "--json"], out, later)
    data = json.loads(out.getvalue())
    [first] = [s for s in data["sweeps"] if s["sweep"] == woke.sweep_id]
    assert (status, first["woken"], first["renewed"], first["rate"]) == (0, 4, 1, 0.25)
    text = io.StringIO()
    await asyncio.to_thread(renewal_rate.main, argv, text, later)
    [line] = [ln for ln in text.getvalue().splitlines() if ln.startswith(str(woke.sweep_id))]
    assert line.split()[5:8] == ["4", "1", "25.0%"]


async def test_sweep_and_worker_run_through_the_function_triggers(
    apns: ApnsSimulator, azurite: Azurite, table_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared import wiring

    # Keys live 10 minutes and wakes lead by 10: a device is due as it registers (real clock).
    env = {
        **defaults(),
        **app_settings(apns, azurite, table_prefix),
        "PREVIEW_KEY_LIFETIME_MINUTES": "10",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    container = wiring.reset(env)
    queue = QueueOptions(poll_interval=0.05, visibility_timeout=0.0, lease_seconds=60)
    options = HostOptions(port=0, timers=False, queues=True, queue=queue)
    host = LocalHost(import_app("function_app", app_dir=REPO), env, options)
    base = await host.start()
    try:
        stack = Stack(container, apns)
        stack.now = datetime.now(UTC)
        for n in (1, 2, 3, 4):
            await stack.register(n)
        async with httpx.AsyncClient(base_url=base) as client:
            r = await client.post("/admin/functions/renewal_sweep", json={"input": ""})
            assert r.status_code == 202
        records = await asyncio.to_thread(apns.wait_for_requests, 4, 20.0)
    finally:
        await host.stop()
        await container.aclose()
        wiring.reset()
    assert sorted(r.token for r in records if r.status == 200) == [token(n) for n in (1, 2, 3, 4)]
