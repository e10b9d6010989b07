"""Storage CPU per operation: a bare aiohttp request, our lean client and the SDK, side by side.

    .venv/bin/python bench/storage.py [--ops 1000] [--rounds 3] [--concurrency 8] [--batch 2 10]

Starts Azurite (in memory) and, in this one process, runs the Table Storage operations the hot
paths use, each through every path below, ``--concurrency`` at a time, ``--rounds`` times in
alternating order. Per operation and path it prints and writes (``bench/results/storage.json``)
the process's CPU ms per operation (user + system of every thread, so an executor hop counts;
Azurite is another process), operations/s and round trips per operation, the median round and
every round, and each path's CPU as a ratio of the bare request's in the same round.

Operations (the chat event's and the renewal wake's storage calls):

- ``point read``: GET one device-like entity (17 properties);
- ``conditional merge``: PATCH with If-Match, each writer chaining its own ETags (the renewal
  worker's wake claim);
- ``partition query``: GET a user's partition of 3 devices (the chat event's device query);
- ``create``: POST one new entity (a lone device's delivery claim);
- ``batch of N``: one ``$batch`` changeset creating N entities of one partition (the claims of an
  event for N devices).

Paths:

- ``bare``: aiohttp and a Shared Key signature written out here, nothing else: the floor;
- ``lean``: ``shared.storage.table_client.TableClient`` (``STORAGE_CLIENT=lean``, the default);
- ``lean+adapter``: the same through our adapters (``DeviceStore.get``, ``.claim_wake``,
  ``.list_for_user``, ``TableDeliveryStore.claim``), what the app runs;
- ``sdk`` and ``sdk+adapter``: azure-data-tables as ``STORAGE_CLIENT=sdk`` configures it;
- ``sdk-trimmed``: the SDK's async TableClient with only the policies a request needs (headers,
  Shared Key, retry, JSON decoding) on one shared transport: the attempt to make the SDK cheap.

Every path shares the session settings (keep-alive 4 s, no cookie jar, no proxy lookup, no
decompression). Each phase writes into its own table, so Azurite's cost does not grow across
paths. A benchmark, not a test: CPU per operation moves with the machine's load, so compare the
ratios of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import hmac
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from yarl import URL  # noqa: E402

from devtools.azurite import ACCOUNT, ACCOUNT_KEY, Azurite  # noqa: E402

RESULTS = REPO / "bench" / "results" / "storage.json"
KEK = "bench=" + base64.b64encode(b"\x42" * 32).decode()
PATHS = ("bare", "lean", "lean+adapter", "sdk", "sdk+adapter", "sdk-trimmed")
MINIMAL = "application/json;odata=minimalmetadata"

Op = Callable[[int, int], Awaitable[Any]]  # (slot, sequence number)
_SEQUENCE = itertools.count()  # unique across phases: created rows never collide


# --- the floor: aiohttp and a signature -----------------------------------------------------------


def bench_session() -> aiohttp.ClientSession:
    """The session settings every path uses (the SDK's transport sets the same)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(keepalive_timeout=4.0),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding",),
    )


class Bare:
    """Table requests with aiohttp and Shared Key signing, written out plainly."""

    def __init__(self, endpoint: str, table: str, session: aiohttp.ClientSession) -> None:
        self.base = endpoint
        self.origin = str(URL(endpoint).origin())
        self.path = URL(endpoint).raw_path
        self.table = table
        self.session = session
        self.key = base64.b64decode(ACCOUNT_KEY)

    def headers(self, method: str, path: str, content_type: str = "") -> dict[str, str]:
        date = formatdate(usegmt=True)
        text = f"{method}\n\n{content_type}\n{date}\n/{ACCOUNT}{path}"
        mac = hmac.new(self.key, text.encode(), hashlib.sha256).digest()
        headers = {
            "x-ms-date": date,
            "x-ms-version": "2019-02-02",
            "DataServiceVersion": "3.0",
            "Accept": MINIMAL,
            "Authorization": f"SharedKey {ACCOUNT}:{base64.b64encode(mac).decode()}",
        }
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def send(
        self, method: str, path: str, query: str = "", body: bytes | None = None,
        content_type: str = "", **extra: str,
    ) -> tuple[int, Any, bytes]:  # fmt: skip
        headers = {**self.headers(method, path, content_type), **extra}
        url = URL(self.origin + path + query, encoded=True)
        count_round_trip()
        async with self.session.request(method, url, headers=headers, data=body) as r:
            return r.status, r.headers, await r.read()

    def entity_path(self, pk: str, rk: str) -> str:
        return f"{self.path}/{self.table}(PartitionKey='{pk}',RowKey='{rk}')"

    async def get(self, pk: str, rk: str) -> dict[str, Any]:
        status, _, body = await self.send("GET", self.entity_path(pk, rk))
        assert status == 200, status
        return dict(json.loads(body))

    async def merge(self, pk: str, rk: str, props: dict[str, Any], etag: str) -> str:
        body = json.dumps({"PartitionKey": pk, "RowKey": rk, **props}).encode()
        status, headers, _ = await self.send(
            "PATCH", self.entity_path(pk, rk), body=body, content_type="application/json",
            **{"If-Match": etag},
        )  # fmt: skip
        assert status == 204, status
        return str(headers["ETag"])

    async def query(self, pk: str) -> list[dict[str, Any]]:
        status, _, body = await self.send(
            "GET", f"{self.path}/{self.table}()", f"?$filter=PartitionKey%20eq%20'{pk}'"
        )
        assert status == 200, status
        return list(json.loads(body)["value"])

    async def create(self, entity: dict[str, Any]) -> None:
        status, _, _ = await self.send(
            "POST", f"{self.path}/{self.table}", body=json.dumps(entity).encode(),
            content_type="application/json", Prefer="return-no-content",
        )  # fmt: skip
        assert status == 204, status

    async def batch(self, entities: list[dict[str, Any]]) -> None:
        parts = [b"--batch_b\r\nContent-Type: multipart/mixed; boundary=changeset_c\r\n\r\n"]
        for e in entities:
            body = json.dumps(e).encode()
            parts.append(
                (
                    "--changeset_c\r\nContent-Type: application/http\r\n"
                    "Content-Transfer-Encoding: binary\r\n\r\n"
                    f"POST {self.base}/{self.table} HTTP/1.1\r\nContent-Type: application/json\r\n"
                    f"Accept: {MINIMAL}\r\nPrefer: return-no-content\r\n"
                    f"DataServiceVersion: 3.0\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
                + body
                + b"\r\n"
            )
        parts.append(b"--changeset_c--\r\n--batch_b--\r\n")
        status, _, answer = await self.send(
            "POST", f"{self.path}/$batch", body=b"".join(parts),
            content_type="multipart/mixed; boundary=batch_b",
        )  # fmt: skip
        assert status == 202 and b" 204 " in answer, (status, answer[:300])


def count_round_trip() -> None:
    """Count a bare request where ``shared.storage.tables.round_trips`` counts the clients' own."""
    from shared.storage.tables import _ROUND_TRIPS

    _ROUND_TRIPS.on_request()


# --- fixtures -------------------------------------------------------------------------------------


def user(n: int) -> str:
    return f"8:acs:bench_{n:08d}-0000-0000-0000-000000000000"


def token(user_n: int, device: int) -> str:
    return f"{user_n:08x}{device:02x}".ljust(64, "d")


def now() -> datetime:
    return datetime.now(UTC)


class Stand:
    """Azurite, the three connections and the seeded rows of one run."""

    def __init__(self, az: Azurite, concurrency: int) -> None:
        self.az = az
        self.concurrency = concurrency
        self.table_seq = 0

    async def open(self) -> None:
        from azure.core.credentials import AzureNamedKeyCredential

        from shared.domain.key_wrap import KeyWrapper
        from shared.storage.tables import Tables

        self.session = bench_session()
        self.lean = Tables.connect(self.az.connection_string, "bench", "lean")
        self.sdk = Tables.connect(self.az.connection_string, "bench", "sdk")
        self.keys = KeyWrapper.from_setting(KEK)
        self.credential = AzureNamedKeyCredential(ACCOUNT, ACCOUNT_KEY)
        self.trimmed_transport = trimmed_transport()

    async def close(self) -> None:
        await self.session.close()
        await self.lean.aclose()
        await self.sdk.aclose()
        await self.trimmed_transport.close()

    def new_table(self, label: str) -> str:
        self.table_seq += 1
        return f"{label}{self.table_seq:04d}"

    async def tables_for(self, path: str, name: str) -> Any:
        """The table client of ``path`` for table ``name`` (created)."""
        from shared.storage.tables import Tables

        if path == "bare":
            await self.lean.table(name)
            return Bare(self.az.table_endpoint, "bench" + name, self.session)
        if path == "sdk-trimmed":
            await self.lean.table(name)
            return trimmed_client(self.az.table_endpoint, "bench" + name, self.credential,
                                  self.trimmed_transport)  # fmt: skip
        tables: Tables = self.sdk if path.startswith("sdk") else self.lean
        return await tables.table(name)

    async def device_store(self, path: str, name: str) -> Any:
        from shared.storage.devices import DeviceStore

        tables = self.sdk if path.startswith("sdk") else self.lean
        return DeviceStore(await tables.table(name), await tables.table(name + "o"), self.keys)

    async def delivery_store(self, path: str, name: str) -> Any:
        from shared.storage.deliveries import TableDeliveryStore

        tables = self.sdk if path.startswith("sdk") else self.lean
        return TableDeliveryStore(await tables.table(name))


def trimmed_transport() -> Any:
    """One aiohttp transport for every trimmed SDK client (the app's transport settings)."""
    from shared.storage.tables_sdk import _Transport

    return _Transport(connection_timeout=5, read_timeout=15, use_env_settings=False)


def trimmed_client(endpoint: str, table: str, credential: Any, transport: Any) -> Any:
    """The SDK's TableClient with the policies a request needs and nothing else: headers,
    Shared Key, host selection, retry and JSON decoding (no request-id, user-agent, proxy,
    redirect, custom-hook, logging or tracing policies)."""
    from azure.core.pipeline.policies import ContentDecodePolicy
    from azure.data.tables._authentication import SharedKeyCredentialPolicy
    from azure.data.tables._policies import StorageHeadersPolicy, StorageHosts
    from azure.data.tables.aio import TableClient
    from azure.data.tables.aio._base_client_async import AsyncTransportWrapper
    from azure.data.tables.aio._policies_async import AsyncTablesRetryPolicy

    needed = (StorageHeadersPolicy, SharedKeyCredentialPolicy, ContentDecodePolicy, StorageHosts,
              AsyncTablesRetryPolicy)  # fmt: skip
    full = TableClient(endpoint, table, credential=credential, retry_total=2)
    policies = [p for p in full._policies if isinstance(p, needed)]
    return TableClient(
        endpoint, table, credential=credential, policies=policies,
        transport=AsyncTransportWrapper(transport), connection_timeout=5, read_timeout=15,
    )  # fmt: skip


async def seed_devices(store: Any, users: int, per_user: int) -> list[tuple[str, str]]:
    """Register ``per_user`` devices (no preview key) for each of ``users`` users."""
    from shared.apns.notification import Environment
    from shared.domain.devices import Device, DeviceKind, device_id_for

    at = now()
    out = []
    for u in range(users):
        for d in range(per_user):
            t = token(u, d)
            device = Device(
                user_id=user(u), device_id=device_id_for(t), token=t, kind=DeviceKind.ALERT,
                topic="com.example.bench", environment=Environment.SANDBOX, registered_at=at,
                renewed_at=at, app_version="1.4.2", locale="en-US",
            )  # fmt: skip
            await store.register(device)
            out.append((user(u), device.device_id))
    return out


# --- the operations, per path ---------------------------------------------------------------------


async def point_read(stand: Stand, path: str, name: str) -> Op:
    from shared.storage.tables import encode_key

    store = await stand.device_store("lean", name)
    devices = await seed_devices(store, stand.concurrency, 1)
    if path.endswith("+adapter"):
        store = await stand.device_store(path, name)

        async def adapter(slot: int, _: int) -> None:
            assert await store.get(*devices[slot]) is not None

        return adapter
    client = await stand.tables_for(path, name)

    async def read(slot: int, _: int) -> None:
        u, d = devices[slot]
        await client.get_entity(encode_key(u), d) if path != "bare" else await client.get(u, d)

    return read


async def conditional_merge(stand: Stand, path: str, name: str) -> Op:
    from shared.storage.tables import MatchConditions, UpdateMode, encode_key

    store = await stand.device_store("lean", name)
    devices = await seed_devices(store, stand.concurrency, 1)
    etags = [str((await store.get(u, d)).etag) for u, d in devices]
    if path.endswith("+adapter"):
        store = await stand.device_store(path, name)

        async def adapter(slot: int, seq: int) -> None:
            at = now()
            guarded = await store.claim_wake(
                *devices[slot], etags[slot], sent=[at], unanswered_wakes=seq % 3, wake_at=at,
                wake_sweep=f"s{seq}",
            )  # fmt: skip
            etags[slot] = guarded.etag

        return adapter
    client = await stand.tables_for(path, name)

    def fields(slot: int, seq: int) -> dict[str, Any]:
        at = now().isoformat()
        u, d = devices[slot]
        return {"PartitionKey": encode_key(u), "RowKey": d, "renewalSent": at,
                "unansweredWakes": seq % 3, "wakeAt": at, "wakeSweep": f"s{seq}"}  # fmt: skip

    if path == "bare":

        async def bare(slot: int, seq: int) -> None:
            f = fields(slot, seq)
            pk, rk = f.pop("PartitionKey"), f.pop("RowKey")
            etags[slot] = await client.merge(pk, rk, f, etags[slot])

        return bare
    sdk = path.startswith("sdk")

    async def merge(slot: int, seq: int) -> None:
        if path == "sdk-trimmed":
            from azure.core import MatchConditions as SdkMatch

            meta = await client.update_entity(
                fields(slot, seq), etag=etags[slot], match_condition=SdkMatch.IfNotModified
            )
        else:
            meta = await client.update_entity(
                fields(slot, seq), mode=UpdateMode.MERGE, etag=etags[slot],
                match_condition=MatchConditions.IfNotModified,
            )  # fmt: skip
        etags[slot] = meta["etag"]
        assert sdk or meta["etag"]

    return merge


async def partition_query(stand: Stand, path: str, name: str) -> Op:
    from shared.storage.tables import encode_key

    store = await stand.device_store("lean", name)
    await seed_devices(store, stand.concurrency, 3)
    if path.endswith("+adapter"):
        store = await stand.device_store(path, name)

        async def adapter(slot: int, _: int) -> None:
            assert len(await store.list_for_user(user(slot))) == 3

        return adapter
    client = await stand.tables_for(path, name)

    async def query(slot: int, _: int) -> None:
        if path == "bare":
            rows = await client.query(encode_key(user(slot)))
        else:
            found = client.query_entities("PartitionKey eq @pk",
                                          parameters={"pk": encode_key(user(slot))})  # fmt: skip
            rows = [e async for e in found]
        assert len(rows) == 3

    return query


def claim_rows(seq: int, n: int) -> list[dict[str, Any]]:
    """N delivery-claim-like rows of one partition (what an event's claims look like)."""
    at = now()
    return [
        {"PartitionKey": f"m|{user(seq % 97)}|19:bench@thread.v2",
         "RowKey": f"{seq}|received|1|{d}",
         "userId": user(seq % 97), "threadId": "19:bench@thread.v2", "messageId": str(seq),
         "kind": "received", "version": "1", "deviceId": f"{d:064x}", "token": "abcdef…",
         "topic": "com.example.bench", "environment": "sandbox", "state": "pending",
         "claimedAt": at, "leaseUntil": at + timedelta(seconds=30), "claims": 1,
         "eventId": f"e{seq}", "apnsAttempts": 0}
        for d in range(n)
    ]  # fmt: skip


def _bare_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        typed = dict(row)
        for k in ("claimedAt", "leaseUntil"):
            typed[k] = row[k].isoformat().replace("+00:00", "Z")
            typed[k + "@odata.type"] = "Edm.DateTime"
        out.append(typed)
    return out


async def creates(stand: Stand, path: str, name: str, n: int) -> Op:
    """One create (n = 1) or a changeset of n creates per operation."""
    if path.endswith("+adapter"):
        from shared.storage.deliveries import DeliveryKey, DeliveryKind, DeviceTarget

        store = await stand.delivery_store(path, name)
        targets = [DeviceTarget(f"{d:064x}", "abcdef…", "com.example.bench", "sandbox")
                   for d in range(n)]  # fmt: skip

        async def adapter(slot: int, seq: int) -> None:
            key = DeliveryKey(user(slot), "19:bench@thread.v2", f"{seq}", DeliveryKind.RECEIVED, 1)
            claims = await store.claim(key, targets, now=now(), lease=timedelta(seconds=30),
                                       event_id=f"e{seq}")  # fmt: skip
            assert len(claims.claimed) == n

        return adapter
    client = await stand.tables_for(path, name)

    async def write(slot: int, seq: int) -> None:
        rows = claim_rows(seq, n)
        if path == "bare":
            rows = _bare_rows(rows)
            await (client.create(rows[0]) if n == 1 else client.batch(rows))
        elif n == 1:
            await client.create_entity(rows[0])
        else:
            await client.submit_transaction([("create", r) for r in rows])

    return write


# --- measuring ------------------------------------------------------------------------------------


async def measure(op: Op, count: int, concurrency: int, warmup: int) -> dict[str, float]:
    """Run ``op`` ``count`` times, ``concurrency`` in flight; CPU, rate and round trips."""
    from shared.storage.tables import round_trips

    seq = _SEQUENCE

    async def worker(slot: int, n: int) -> None:
        for _ in range(n):
            await op(slot, next(seq))

    share = [
        count // concurrency + (1 if i < count % concurrency else 0) for i in range(concurrency)
    ]
    await asyncio.gather(*(worker(s, max(1, warmup // concurrency)) for s in range(concurrency)))
    gc.collect()
    trips0, cpu0, wall0 = round_trips(), time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(s, share[s]) for s in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "cpu_ms": cpu * 1000 / count,
        "ops_per_s": count / wall,
        # The trimmed SDK has no hook policy to count with: its requests are not counted.
        "round_trips": (round_trips() - trips0) / count,
    }


OPERATIONS: dict[str, Callable[..., Awaitable[Op]]] = {
    "point read": point_read,
    "conditional merge": conditional_merge,
    "partition query": partition_query,
    "create": lambda stand, path, name: creates(stand, path, name, 1),
}


async def run(args: argparse.Namespace, az: Azurite) -> dict[str, Any]:
    operations = dict(OPERATIONS)
    for n in args.batch:
        operations[f"batch of {n}"] = lambda stand, path, name, n=n: creates(stand, path, name, n)
    stand = Stand(az, args.concurrency)
    await stand.open()
    rounds: dict[str, dict[str, list[dict[str, float]]]] = {o: {p: [] for p in args.paths}
                                                             for o in operations}  # fmt: skip
    try:
        for r in range(args.rounds):
            order = list(args.paths) if r % 2 == 0 else list(reversed(args.paths))
            for name, build in operations.items():
                for path in order:
                    op = await build(stand, path, stand.new_table("t"))
                    figures = await measure(op, args.ops, args.concurrency, args.warmup)
                    rounds[name][path].append(figures)
                    print(f"round {r + 1} {name:<18} {path:<13} {figures['cpu_ms']:.3f} ms CPU"
                          f"  {figures['ops_per_s']:.0f}/s", flush=True)  # fmt: skip
    finally:
        await stand.close()
    return summarize(rounds)


def summarize(rounds: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, Any]:
    """Median round per (operation, path), and each path's CPU over bare's, round by round."""
    out: dict[str, Any] = {}
    for name, paths in rounds.items():
        bare = [f["cpu_ms"] for f in paths.get("bare", [])]
        row: dict[str, Any] = {}
        for path, figures in paths.items():
            cpu = [f["cpu_ms"] for f in figures]
            entry: dict[str, Any] = {
                "cpu_ms": round(statistics.median(cpu), 4),
                "cpu_ms_rounds": [round(c, 4) for c in cpu],
                "ops_per_s": round(statistics.median(f["ops_per_s"] for f in figures), 1),
                "round_trips": (
                    round(statistics.median(f["round_trips"] for f in figures), 2)
                    if path != "sdk-trimmed"
                    else None
                ),
            }
            if bare:
                ratios = [c / b for c, b in zip(cpu, bare, strict=True)]
                entry["vs_bare"] = round(statistics.median(ratios), 2)
                entry["vs_bare_rounds"] = [round(x, 2) for x in ratios]
            row[path] = entry
        out[name] = row
    return out


def report(results: dict[str, Any], paths: list[str]) -> None:
    print(f"\nCPU ms per operation (median round), and x bare in the same round\n{'':<19}", end="")
    print("".join(f"{p:>19}" for p in paths))
    for name, row in results.items():
        cells = []
        for p in paths:
            e = row[p]
            cells.append(f"{e['cpu_ms']:.3f} ({e.get('vs_bare', 1):.2f}x)")
        print(f"{name:<19}" + "".join(f"{c:>19}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=1000, help="operations per phase")
    parser.add_argument("--warmup", type=int, default=80, help="operations before measuring")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8, help="operations in flight")
    parser.add_argument("--batch", type=int, nargs="*", default=[2, 10], help="batch sizes")
    parser.add_argument("--paths", nargs="*", default=list(PATHS), choices=PATHS)
    parser.add_argument("--out", type=Path, default=RESULTS, help="'-' for no file")
    args = parser.parse_args(argv)
    if "bare" not in args.paths:
        parser.error("the bare path is the baseline: keep it")

    started = datetime.now(UTC)
    with Azurite.start(None) as az:
        results = asyncio.run(run(args, az))
    report(results, args.paths)
    if str(args.out) == "-":
        return 0
    document = {
        "benchmark": "storage CPU per operation",
        "when": started.isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "aiohttp": aiohttp.__version__,
            "azure-data-tables": _version("azure-data-tables"),
            "azure-core": _version("azure-core"),
        },
        "settings": {
            "ops": args.ops,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "batch": args.batch,
        },
        "operations": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    sys.exit(main())
