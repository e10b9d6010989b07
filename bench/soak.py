"""Soak: N minutes of mixed load through the local host, with faults injected all along.

    .venv/bin/python bench/soak.py --minutes 30 --out bench/results/soak.json

Starts Azurite (on disk, so it can be stopped and restarted), the APNs simulator (its own
process), the development identity provider and the local ACS identity service (threads of this
process) and the real app on the local development host (its own process, so its RSS is the
app's alone). Then, for ``--minutes``:

- chat: ``--chat-rate`` ChatMessageReceived events per second to registered users (1-3 phones
  each), posted to the Event Grid webhook; an answer other than 202 is re-posted the way Event
  Grid redelivers (shortened schedule: 1, 2, 4, 8, 15, 30 s ...);
- registrations: new users (POST /api/token, then PUT /api/devices) and renewals of existing
  phones (PUT with a fresh preview key), retried like an app would after a 5xx;
- token requests: POST /api/token for existing users;
- calls (only if the app has ``on_call_event``): IncomingCall events to users with a VoIP phone;
- renewal sweeps (only if the app has ``renewal_sweep``): run once a minute through the host's
  admin endpoint (queue-triggered workers poll Azurite);
- faults: the simulator is scripted with one APNs fault at a time, rotating every
  ``--fault-period`` seconds, hitting every ``--fault-every``-th request (500, 503, 429,
  GOAWAY, connection close, stalled stream, slow answer past the client deadline,
  REFUSED_STREAM, ExpiredProviderToken, TooManyProviderTokenUpdates); Azurite is stopped for
  ``--storage-outage`` seconds every ``--storage-fault-minutes`` minutes; the JWKS endpoint is
  down for 15 s every 10 minutes.

Every minute it prints pushes sent, events lost and duplicated so far, p99 latency (first
webhook post to the APNs request that was answered 200) and the app host's RSS; at the end it
drains outstanding redeliveries and writes a JSON file with start and end times, every minute's
row and the totals. "Lost": a (phone, message) pair of a finished event that APNs never accepted.
"Duplicated": a pair APNs accepted twice (the phone shows it twice; each is listed with its
cause: an answer after the app's deadline, an answer lost with its connection, or what was
injected at the time). "Possible duplicate": a pair accepted once and also sent on a stream that
stalled (real APNs may or may not have delivered that one).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import itertools
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

from devtools.acs_identity_service import AcsIdentityService  # noqa: E402
from devtools.azurite import Azurite, free_port  # noqa: E402
from devtools.dev_identity_provider import DevIdentityProvider  # noqa: E402
from devtools.settings_doc import defaults  # noqa: E402

SAMPLES = REPO / "tests" / "samples"
WEBHOOK = "/runtime/webhooks/eventgrid?functionName="
RESULTS = REPO / "bench" / "results" / "soak.json"
BUNDLE = "com.example.soak"
THREAD = "19:soaksoaksoaksoaksoaksoaksoak00@thread.v2"
KEK = "soak=" + base64.b64encode(b"\x53" * 32).decode()
EG_HEADERS = {"aeg-event-type": "Notification", "content-type": "application/json"}
REDELIVERY = (1, 2, 4, 8, 15, 30, 30, 30, 30, 30)  # Event Grid: 10 s, 30 s, 1 min, ... shortened


def fault_kinds(request_timeout: float) -> list[tuple[str, dict[str, Any]]]:
    """The APNs faults the soak rotates through (simulator control API form)."""
    return [
        ("500 InternalServerError", {"status": 500, "reason": "InternalServerError"}),
        ("503 ServiceUnavailable", {"reason": "ServiceUnavailable"}),
        ("429 TooManyRequests", {"reason": "TooManyRequests"}),
        ("GOAWAY", {"goaway": "Shutdown"}),
        ("connection close", {"closeConnection": True}),
        ("stalled stream", {"noAnswer": True}),
        ("answer after the deadline", {"delay": request_timeout + 0.5}),
        ("REFUSED_STREAM", {"refuseStream": True}),
        ("ExpiredProviderToken", {"reason": "ExpiredProviderToken"}),
        ("TooManyProviderTokenUpdates", {"reason": "TooManyProviderTokenUpdates"}),
    ]


# --- the moving parts ---------------------------------------------------------------------------


def start_simulator(state_dir: Path, stack: ExitStack) -> dict[str, Any]:
    """The APNs simulator in its own process; returns its JSON line (settings, control URL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.apns_simulator", "--state-dir", str(state_dir),
         "--dev-app", BUNDLE],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    stack.callback(lambda: (proc.terminate(), proc.wait(timeout=10)))
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        raise RuntimeError("the APNs simulator did not start")
    info: dict[str, Any] = json.loads(line)
    info["pid"] = proc.pid
    # Let the same key push to the VoIP topic (BUNDLE.voip) too.
    entry = json.loads(info["settings"]["APNS_APPS"])[0]
    key = serialization.load_pem_private_key(Path(entry["privateKeyFile"]).read_bytes(), None)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    httpx.post(
        info["control_url"] + "/keys",
        json={"keyId": entry["keyId"], "teamId": entry["teamId"], "publicKeyPem": public.decode()},
        timeout=10,
    ).raise_for_status()
    return info


def start_host(env: dict[str, str], log_path: Path, stack: ExitStack) -> tuple[str, int]:
    """The real app on the local host in its own process; returns (base URL, pid)."""
    port = free_port()
    log_file = stack.enter_context(log_path.open("ab"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.localhost", "--port", str(port), "--no-timers",
         "--settings", str(log_path.parent / "no-local-settings.json"), "--poll-interval", "0.2"],
        cwd=REPO, env={**os.environ, **env}, stdout=log_file, stderr=log_file,
    )  # fmt: skip
    stack.callback(lambda: (proc.terminate(), proc.wait(timeout=20)))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the local host exited with {proc.returncode}; see {log_path}")
        try:
            httpx.get(base + "/", timeout=1)
            return base, proc.pid
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError("the local host did not start")


def app_function_names() -> set[str]:
    """The app's function names, read the way the host indexes them."""
    from devtools.localhost.catalog import app_functions
    from function_app import app

    return {f.get_function_name() for f in app_functions(app)}


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))], 1)


# --- state of the run ---------------------------------------------------------------------------


@dataclass
class User:
    subject: str
    acs_id: str
    tokens: list[str]
    voip: str | None = None


@dataclass
class Event:
    message_id: str
    body: bytes
    expected: tuple[str, ...]
    first_post: float
    attempts: int = 0
    done_at: float | None = None
    gave_up: bool = False


@dataclass
class Run:
    users: list[User] = field(default_factory=list)
    events: dict[str, Event] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    # Copies APNs accepted per (token, messageId): (receivedAt, connection, the app saw the 200).
    accepted: dict[tuple[str, str], list[tuple[float, int, bool]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    stalled: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    seen_seqs: set[int] = field(default_factory=set)
    dropped_connections: set[int] = field(default_factory=set)
    faults_hit: Counter[str] = field(default_factory=Counter)
    fault_ids: dict[str, str] = field(default_factory=dict)
    push_types: Counter[str] = field(default_factory=Counter)
    last_seq: int = 0
    outstanding: set[asyncio.Task[None]] = field(default_factory=set)
    minutes: list[dict[str, Any]] = field(default_factory=list)
    storage_outages: list[dict[str, float]] = field(default_factory=list)
    fault_periods: list[tuple[float, str]] = field(default_factory=list)
    serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


def device_token(n: int) -> str:
    return f"{n:016x}".rjust(64, "5")


def registration_body(token: str, kind: str = "alert", keyed: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"token": token, "kind": kind, "topic": BUNDLE,
                            "environment": "sandbox", "appVersion": "soak"}  # fmt: skip
    if keyed and kind == "alert":
        body["key"] = base64.b64encode(os.urandom(64)).decode()
    return body


class Driver:
    """Posts the load, injects the faults, reads the simulator's log and keeps the figures."""

    def __init__(
        self, args: argparse.Namespace, base: str, sim: dict[str, Any], host_pid: int,
        azurite: Azurite, idp: DevIdentityProvider, functions: set[str],
    ) -> None:  # fmt: skip
        self.args = args
        self.sim = sim
        self.host_pid = host_pid
        self.azurite = azurite
        self.idp = idp
        self.functions = functions
        self.run = Run()
        self.rng = random.Random(args.seed)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        self.client = httpx.AsyncClient(base_url=base, timeout=60, limits=limits)
        self.control = httpx.AsyncClient(base_url=sim["control_url"], timeout=60)
        self.chat_template = json.loads((SAMPLES / "chat_message_received.eventgrid.json").read_text())[0]  # fmt: skip  # noqa: E501
        self.call_template = json.loads((SAMPLES / "incoming_call.eventgrid.json").read_text())[0]
        self.kinds = fault_kinds(args.request_timeout)

    # --- app-side requests ------------------------------------------------------------------
    def bearer(self, subject: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.idp.token(subject)}

    async def call_app(self, method: str, path: str, counter: str, **kw: Any) -> httpx.Response:
        """One request with app-like retries of 5xx and transport errors (1 s apart, 30 tries)."""
        for _ in range(30):
            try:
                r = await self.client.request(method, path, **kw)
            except httpx.TransportError:
                self.run.counts[counter + " transport error"] += 1
            else:
                self.run.counts[f"{counter} {r.status_code}"] += 1
                if r.status_code < 500:
                    return r
            await asyncio.sleep(1)
        raise RuntimeError(f"{counter}: no answer below 500 after 30 tries")

    async def new_user(self, with_voip: bool) -> None:
        n = next(self.run.serial)
        subject = f"soak-user-{n}"
        r = await self.call_app("POST", "/api/token", "token", headers=self.bearer(subject))
        if r.status_code != 200:
            return
        acs_id = r.json()["acsUserId"]
        tokens = [device_token(n * 10 + d) for d in range(1 + n % 3)]
        for i, token in enumerate(tokens):
            body = registration_body(token, keyed=(n + i) % 2 == 0)
            await self.call_app("PUT", "/api/devices", "register", headers=self.bearer(subject),
                                json=body)  # fmt: skip
        voip = None
        if with_voip:
            voip = device_token(n * 10 + 9)
            await self.call_app("PUT", "/api/devices", "register", headers=self.bearer(subject),
                                json=registration_body(voip, kind="voip"))  # fmt: skip
        self.run.users.append(User(subject, acs_id, tokens, voip))

    async def renew(self) -> None:
        user = self.rng.choice(self.run.users)
        token = self.rng.choice(user.tokens)
        await self.call_app("PUT", "/api/devices", "renew", headers=self.bearer(user.subject),
                            json=registration_body(token))  # fmt: skip

    async def token_request(self) -> None:
        user = self.rng.choice(self.run.users)
        await self.call_app("POST", "/api/token", "token", headers=self.bearer(user.subject))

    # --- events -----------------------------------------------------------------------------
    def chat_event(self, user: User) -> Event:
        seq = next(self.run.serial)
        e = copy.deepcopy(self.chat_template)
        e["id"] = f"soak-{seq}"
        e["eventTime"] = datetime.now(UTC).isoformat()
        e["data"].update(
            messageId=str(seq),
            version=1_700_000_000_000 + seq,
            threadId=THREAD,
            messageBody=f"Soak message {seq}: still on for 3pm?",
            recipientCommunicationIdentifier={
                "rawId": user.acs_id,
                "communicationUser": {"id": user.acs_id},
            },
        )
        return Event(str(seq), json.dumps([e]).encode(), tuple(user.tokens), time.time())

    async def deliver(self, event: Event, function: str) -> None:
        """Post like Event Grid: redeliver on anything but 2xx, on the shortened schedule."""
        for delay in (0, *REDELIVERY):
            if delay:
                await asyncio.sleep(delay)
            event.attempts += 1
            self.run.counts[f"{function} posts"] += 1
            try:
                r = await self.client.post(WEBHOOK + function, content=event.body,
                                           headers=EG_HEADERS)  # fmt: skip
                status = r.status_code
            except httpx.TransportError:
                status = 0
            self.run.counts[f"{function} answered {status}"] += 1
            if 200 <= status < 300:
                event.done_at = time.time()
                return
        event.gave_up = True
        self.run.counts[f"{function} given up"] += 1

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self.run.outstanding.add(task)
        task.add_done_callback(self.run.outstanding.discard)

    async def chat_loop(self, until: float) -> None:
        while time.monotonic() < until:
            event = self.chat_event(self.rng.choice(self.run.users))
            self.run.events[event.message_id] = event
            self.spawn(self.deliver(event, "on_chat_event"))
            await asyncio.sleep(self.rng.expovariate(self.args.chat_rate))

    async def call_loop(self, until: float) -> None:
        while time.monotonic() < until:
            await asyncio.sleep(self.rng.expovariate(self.args.call_rate))
            callees = [u for u in self.run.users if u.voip]
            if not callees:
                continue
            user = self.rng.choice(callees)
            e = copy.deepcopy(self.call_template)
            seq = next(self.run.serial)
            e["id"] = f"soak-call-{seq}"
            e["eventTime"] = datetime.now(UTC).isoformat()
            e["data"]["to"] = {"kind": "communicationUser", "rawId": user.acs_id,
                               "communicationUser": {"id": user.acs_id}}  # fmt: skip
            e["data"]["serverCallId"] = f"soak-call-{seq}"
            e["data"]["correlationId"] = f"soak-call-{seq}"
            call = Event(f"call-{seq}", json.dumps([e]).encode(), (), time.time())
            self.spawn(self.deliver(call, "on_call_event"))

    async def registration_loop(self, until: float) -> None:
        while time.monotonic() < until:
            await asyncio.sleep(self.rng.expovariate(self.args.registration_rate))
            if self.rng.random() < 0.25:
                self.spawn(self.new_user(with_voip="on_call_event" in self.functions))
            else:
                self.spawn(self.renew())

    async def token_loop(self, until: float) -> None:
        while time.monotonic() < until:
            await asyncio.sleep(self.rng.expovariate(self.args.token_rate))
            self.spawn(self.token_request())

    async def sweep_loop(self, until: float) -> None:
        while time.monotonic() < until:
            await asyncio.sleep(60)
            try:
                r = await self.client.post("/admin/functions/renewal_sweep", json={"input": ""})
                self.run.counts[f"renewal_sweep {r.status_code}"] += 1
            except httpx.TransportError:
                self.run.counts["renewal_sweep transport error"] += 1

    # --- faults -----------------------------------------------------------------------------
    async def apns_fault_loop(self, until: float) -> None:
        for name, spec in itertools.cycle(self.kinds):
            if time.monotonic() >= until:
                break
            await self.control.delete("/faults")
            answer = await self.control.post(
                "/faults", json={"every": self.args.fault_every, **spec}
            )
            self.run.fault_ids[answer.json()["id"]] = name
            self.run.fault_periods.append((time.time(), name))
            self.run.counts["APNs fault periods"] += 1
            await asyncio.sleep(min(self.args.fault_period, max(0.0, until - time.monotonic())))
        await self.control.delete("/faults")

    async def storage_fault_loop(self, until: float) -> None:
        period = self.args.storage_fault_minutes * 60
        while time.monotonic() + period < until:
            await asyncio.sleep(period)
            started = time.time()
            await asyncio.to_thread(self.azurite.stop)
            await asyncio.sleep(self.args.storage_outage)
            await asyncio.to_thread(self.azurite.restart)
            self.run.storage_outages.append({"at": started, "seconds": round(time.time() - started, 1)})  # fmt: skip  # noqa: E501

    async def jwks_outage_loop(self, until: float) -> None:
        while time.monotonic() + 600 < until:
            await asyncio.sleep(600)
            self.idp.outage = True
            await asyncio.sleep(15)
            self.idp.outage = False
            self.run.counts["JWKS outages"] += 1

    # --- the simulator's log ----------------------------------------------------------------
    async def read_simulator(self) -> list[dict[str, Any]]:
        """New records of the simulator's log. Records are logged when they finish, not in
        ``seq`` order (a delayed answer finishes late), so each read overlaps the last one."""
        since = max(0, self.run.last_seq - 3000)
        answer = await self.control.get("/requests", params={"since": since})
        records = [r for r in answer.json() if r["seq"] not in self.run.seen_seqs]
        for r in records:
            self.run.seen_seqs.add(r["seq"])
            self.run.last_seq = max(self.run.last_seq, r["seq"])
            self.count(r)
        return records

    def count(self, r: dict[str, Any]) -> None:
        """One record: an accepted copy (seen by the app or not), a stalled one, or neither.

        APNs accepted a copy when it validated the request and answered 200, whether or not the
        answer reached the app: a late answer (the app had given up) or an answer on a connection
        the fault then dropped was still delivered to the device.
        """
        fault = self.run.fault_ids.get(r.get("faultId") or "")
        if fault:
            self.run.faults_hit[fault] += 1
            if fault == "connection close":
                self.run.dropped_connections.add(r["connectionId"])
        payload = r.get("payload") if isinstance(r.get("payload"), dict) else {}
        self.run.push_types[(r.get("headers") or {}).get("apns-push-type", "?")] += 1
        message = payload.get("messageId") if payload else None
        if message is None or r.get("status") != 200:
            return
        key = (r["token"], str(message))
        if fault == "stalled stream":
            self.run.stalled[key] += 1
        elif fault == "answer after the deadline":
            self.run.accepted[key].append((r["receivedAt"], r["connectionId"], False))
        elif r["outcome"] == "answered":
            self.run.accepted[key].append((r["receivedAt"], r["connectionId"], True))

    def tally(self, finished_only: bool = True) -> dict[str, Any]:
        """Lost, duplicated and possible duplicates over the events that finished."""
        pairs = lost = dup = maybe = 0
        for event in self.run.events.values():
            if finished_only and event.done_at is None and not event.gave_up:
                continue
            for token in event.expected:
                key = (token, event.message_id)
                pairs += 1
                accepted = len(self.run.accepted.get(key, ()))
                lost += accepted == 0
                dup += accepted > 1
                maybe += accepted == 1 and self.run.stalled.get(key, 0) > 0
        return {"pairs": pairs, "lost": lost, "duplicated": dup, "possible_duplicates": maybe}

    def context(self, at: float) -> str:
        """What was being injected at ``at``: a storage outage (or its minute after), else the
        APNs fault of that period."""
        for outage in self.run.storage_outages:
            if outage["at"] <= at <= outage["at"] + outage["seconds"] + 60:
                return "storage outage (or the minute after)"
        earlier = [name for start, name in self.run.fault_periods if start <= at]
        return earlier[-1] if earlier else "none"

    def duplicates(self) -> list[dict[str, Any]]:
        """Every pair APNs accepted more than once, with why the app sent it again."""
        out = []
        for (token, message), found in sorted(self.run.accepted.items()):
            if len(found) < 2:
                continue
            copies = sorted(found)
            earlier = copies[:-1]
            if any(not seen for _, _, seen in earlier):
                cause = "the app never saw the first answer (it came after the deadline)"
            elif any(conn in self.run.dropped_connections for _, conn, _ in earlier):
                cause = "the first answer was lost with its connection"
            else:
                cause = "during " + self.context(copies[0][0])
            out.append({
                "token": token[:8] + "…", "messageId": message, "accepted": len(copies),
                "seconds_apart": round(copies[-1][0] - copies[0][0], 2), "cause": cause,
            })  # fmt: skip
        return out

    def latencies(self, since: float, until: float) -> list[float]:
        out = []
        for event in self.run.events.values():
            for token in event.expected:
                copies = self.run.accepted.get((token, event.message_id))
                first = min(c[0] for c in copies) if copies else None
                if first is not None and since <= first < until:
                    out.append((first - event.first_post) * 1000)
        return out

    async def minute_loop(self, until: float, started: float) -> None:
        minute = 0
        while time.monotonic() < until:
            await asyncio.sleep(min(60.0, max(0.0, until - time.monotonic())))
            minute += 1
            await self.report(minute, started)

    async def report(self, minute: int, started: float) -> dict[str, Any]:
        now = time.time()
        records = await self.read_simulator()
        window = self.latencies(now - 60, now + 1)
        totals = self.tally()
        row = {
            "minute": minute,
            "at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            "apns_requests": len(records),
            "pushes_sent": sum(
                1 for r in records if r.get("status") == 200 and r["outcome"] == "answered"
            ),
            "events_posted": len(self.run.events),
            "events_in_flight": sum(
                1 for e in self.run.events.values() if e.done_at is None and not e.gave_up
            ),
            "users": len(self.run.users),
            **totals,
            "latency_ms_p50": pct(window, 50),
            "latency_ms_p99": pct(window, 99),
            "host_rss_mb": rss_mb(self.host_pid),
            "simulator_rss_mb": rss_mb(self.sim["pid"]),
        }
        self.run.minutes.append(row)
        print(
            f"[{row['at']}] min {minute:>3}: pushes sent {row['pushes_sent']:>5}  "
            f"events {row['events_posted']:>6} (in flight {row['events_in_flight']:>3})  "
            f"lost {totals['lost']}  duplicated {totals['duplicated']} "
            f"(possible {totals['possible_duplicates']})  p99 {row['latency_ms_p99']} ms  "
            f"RSS {row['host_rss_mb']} MB",
            flush=True,
        )
        return row

    # --- the run ----------------------------------------------------------------------------
    async def main(self) -> dict[str, Any]:
        start_wall = datetime.now(UTC)
        for i in range(self.args.users):
            await self.new_user(with_voip="on_call_event" in self.functions and i % 4 == 0)
        rss_start = rss_mb(self.host_pid)
        started = time.monotonic()
        until = started + self.args.minutes * 60
        loops = [
            self.chat_loop(until), self.registration_loop(until), self.token_loop(until),
            self.apns_fault_loop(until), self.storage_fault_loop(until),
            self.jwks_outage_loop(until), self.minute_loop(until, started),
        ]  # fmt: skip
        if "on_call_event" in self.functions:
            loops.append(self.call_loop(until))
        if "renewal_sweep" in self.functions:
            loops.append(self.sweep_loop(until))
        await asyncio.gather(*loops)
        load_end = datetime.now(UTC)
        await self.control.delete("/faults")
        drain_start = time.monotonic()
        while self.run.outstanding and time.monotonic() - drain_start < 300:
            await asyncio.sleep(1)
        await asyncio.sleep(1)
        await self.read_simulator()
        end_wall = datetime.now(UTC)
        await self.client.aclose()
        await self.control.aclose()
        return self.summary(start_wall, load_end, end_wall, rss_start)

    def summary(
        self, start: datetime, load_end: datetime, end: datetime, rss_start: float
    ) -> dict[str, Any]:
        totals = self.tally(finished_only=False)
        every = [
            (min(c[0] for c in t) - e.first_post) * 1000
            for e in self.run.events.values()
            for tok in e.expected
            if (t := self.run.accepted.get((tok, e.message_id)))
        ]
        chat = [e for e in self.run.events.values()]
        rss = [m["host_rss_mb"] for m in self.run.minutes]
        dups = self.duplicates()
        maybe = totals["possible_duplicates"]
        stalls = self.run.faults_hit["stalled stream"]
        return {
            "benchmark": "soak",
            "start": start.isoformat(timespec="seconds"),
            "load_end": load_end.isoformat(timespec="seconds"),
            "end": end.isoformat(timespec="seconds"),
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
            "settings": {k: v for k, v in vars(self.args).items() if k != "out"},
            "functions_exercised": sorted(
                {"on_chat_event", "issue_token", "put_device"}
                | ({"on_call_event", "renewal_sweep", "renewal_worker"} & self.functions)
            ),
            "totals": {
                "chat_events": len(chat),
                "chat_events_redelivered": sum(1 for e in chat if e.attempts > 1),
                "chat_events_given_up": sum(1 for e in chat if e.gave_up),
                "push_pairs_expected": totals["pairs"],
                "pushes_accepted": sum(len(v) for v in self.run.accepted.values()),
                "lost": totals["lost"],
                "duplicated": totals["duplicated"],
                "possible_duplicates": maybe,
                "stalled_streams_injected": stalls,
                "possible_duplicate_rate_per_stalled_stream": round(maybe / stalls, 3)
                if stalls
                else None,
                "latency_ms_p50": pct(every, 50),
                "latency_ms_p99": pct(every, 99),
                "users": len(self.run.users),
                "host_rss_mb_start": rss_start,
                "host_rss_mb_end": rss[-1] if rss else None,
                "host_rss_mb_max": max(rss) if rss else None,
            },
            "apns_faults_hit": dict(self.run.faults_hit),
            "apns_push_types": dict(self.run.push_types),
            "storage_outages": self.run.storage_outages,
            "duplicates_by_cause": dict(Counter(d["cause"] for d in dups)),
            "duplicates": dups,
            "requests": dict(sorted(self.run.counts.items())),
            "minutes": self.run.minutes,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--users", type=int, default=60, help="users registered before the load")
    parser.add_argument("--chat-rate", type=float, default=4.0, help="chat events per second")
    parser.add_argument("--registration-rate", type=float, default=0.5, help="per second")
    parser.add_argument("--token-rate", type=float, default=0.5, help="per second")
    parser.add_argument("--call-rate", type=float, default=0.2, help="per second")
    parser.add_argument("--fault-every", type=int, default=20, help="every k-th APNs request")
    parser.add_argument("--fault-period", type=float, default=20, help="seconds per APNs fault")
    parser.add_argument("--storage-fault-minutes", type=float, default=7)
    parser.add_argument("--storage-outage", type=float, default=5, help="seconds Azurite is down")
    parser.add_argument("--request-timeout", type=float, default=2.0, help="APNs deadline (s)")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    work = REPO / ".local" / "soak"
    work.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=work)))
        azurite = Azurite.start(tmp / "azurite", log=tmp / "azurite.log")
        stack.callback(azurite.stop)
        sim = start_simulator(tmp / "apns", stack)
        idp = stack.enter_context(DevIdentityProvider.start(tmp / "idp"))
        acs = stack.enter_context(AcsIdentityService.start(tmp / "acs"))
        env = {
            **defaults(),
            **sim["settings"],
            **idp.settings,
            "STORAGE_CONNECTION": azurite.connection_string,
            "AzureWebJobsStorage": azurite.connection_string,
            "TABLE_PREFIX": "soak",
            "RENEWAL_QUEUE": "soak-renewal",
            "KEY_ENCRYPTION_KEYS": KEK,
            "ACS_CONNECTION_STRING": acs.connection_string,
            "ACS_CA_FILE": str(acs.ca_file),
            "APNS_REQUEST_TIMEOUT_SECONDS": str(args.request_timeout),
            "APNS_RETRY_BUDGET_SECONDS": "4",
            "TOKEN_RATE_LIMIT_PER_MINUTE": "60",
        }
        base, host_pid = start_host(env, tmp / "host.log", stack)
        functions = app_function_names()
        print(
            f"soak: {args.minutes} min against {base}; functions: {sorted(functions)}", flush=True
        )
        driver = Driver(args, base, sim, host_pid, azurite, idp, functions)
        result = asyncio.run(driver.main())

    t = result["totals"]
    print(
        f"\n{t['chat_events']} chat events, {t['push_pairs_expected']} pushes expected, "
        f"{t['pushes_accepted']} accepted; lost {t['lost']}, duplicated {t['duplicated']}, "
        f"possible duplicates {t['possible_duplicates']} of {t['stalled_streams_injected']} "
        f"stalled streams; p50 {t['latency_ms_p50']} ms, p99 {t['latency_ms_p99']} ms; "
        f"host RSS {t['host_rss_mb_start']} → {t['host_rss_mb_end']} MB (max {t['host_rss_mb_max']})"  # noqa: E501
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
