"""Cold start: the CPU a fresh process spends importing and setting up for its first invocation.

    .venv/bin/python bench/cold_start.py [--runs 5] [--baseline REV]

Starts Azurite, the APNs simulator, the development identity provider and the local ACS identity
service (in this process), stores a recipient's device and two callers' identities, then runs
fresh interpreters (the same virtualenv) that each:

1. import ``function_app`` (what the Functions worker does when the app loads);
2. run one trigger twice on one event loop, calling the registered function as the worker
   would: ``on_chat_event`` with a ChatMessageReceived for the recipient (its device query,
   claim, push and outcome), or ``issue_token`` for a caller whose identity exists (JWKS,
   identity read, ACS token, rate bucket);
3. report the process CPU (user + system) of each step and the modules loaded.

The first invocation's CPU minus the second's is what the cold start costs beyond the work
itself: imports, clients built, connections opened, tables checked. Each scenario runs
``--runs`` times, for this working tree and for ``--baseline`` (a commit, exported with
``git archive``; default: the commit before the lean storage client), medians reported and
written to ``bench/results/cold_start.json``. The worker imports ``azure.functions`` itself
before loading an app, so the report shows it apart (``azure.functions`` alone).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results" / "cold_start.json"
DETAIL = os.environ.get("COLD_START_DETAIL", "")  # e.g. "shared": list its modules one by one
BASELINE = "142e9a6"  # the commit before the lean storage client (issue 21)
SAMPLE = REPO / "tests" / "samples" / "chat_message_received.eventgrid.json"
KEK = "bench=" + base64.b64encode(b"\x42" * 32).decode()
TOPIC = "com.example.chat"

# Runs in a fresh interpreter whose working directory is the code under test.
PROBE = r"""
import asyncio, json, os, sys, time
sys.path.insert(0, os.getcwd())
plan = json.loads(sys.argv[1])
cpu = time.process_time
marks = {"start": cpu()}
import azure.functions as func
marks["azure.functions"] = cpu()
import function_app
marks["function_app"] = cpu()
modules = {"function_app": len(sys.modules)}
sys.stderr.write("@@ imported\n")

functions = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}

def chat_event(n):
    e = dict(plan["event"])
    e["data"] = {**e["data"], "messageId": f"{plan['tag']}-{n}", "version": 1700000000000 + n}
    e["id"] = f"{plan['tag']}-{n}"
    return func.EventGridEvent(id=e["id"], data=e["data"], topic=e["topic"], subject=e["subject"],
                               event_type=e["eventType"], event_time=None,
                               data_version=e["dataVersion"])

def token_request(n):
    return func.HttpRequest("POST", "http://127.0.0.1/api/token", params={}, route_params={},
                            headers={"Authorization": "Bearer " + plan["bearers"][n]}, body=b"")

async def invoke(n):
    if plan["scenario"] == "chat":
        await functions["on_chat_event"](chat_event(n))
    else:
        response = await functions["issue_token"](token_request(n))
        assert response.status_code == 200, response.get_body()

async def close():
    from shared import wiring
    await wiring.container().aclose()

loop = asyncio.new_event_loop()
t = cpu(); loop.run_until_complete(invoke(0)); marks["first"] = cpu() - t
modules["first"] = len(sys.modules)
sys.stderr.write("@@ first\n")
t = cpu(); loop.run_until_complete(invoke(1)); marks["second"] = cpu() - t
loop.run_until_complete(close())
heavy = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"marks": marks, "modules": modules, "packages": heavy}))
"""


def export(rev: str, into: Path) -> Path:
    """The tree of commit ``rev`` under ``into`` (git archive)."""
    archive = into / "tree.tar"
    with archive.open("wb") as fh:
        subprocess.run(["git", "archive", rev], cwd=REPO, stdout=fh, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


class Stand:
    """The services, the settings that point at them, and the seeded rows."""

    def __init__(self, tmp: Path) -> None:
        from devtools.acs_identity_service import AcsIdentityService
        from devtools.apns_simulator import ApnsSimulator
        from devtools.azurite import Azurite
        from devtools.dev_identity_provider import DevIdentityProvider
        from tests.local_apns import KEY, simulator_settings

        self.azurite = Azurite.start(None)
        self.sim = ApnsSimulator.start(tmp / "apns")
        self.idp = DevIdentityProvider.start(tmp / "idp")
        self.acs = AcsIdentityService.start(tmp / "acs")
        KEY.trust(self.sim, TOPIC)
        self.env = {
            "STORAGE_CONNECTION": self.azurite.connection_string,
            "TABLE_PREFIX": "cold",
            "KEY_ENCRYPTION_KEYS": KEK,
            "ACS_CONNECTION_STRING": self.acs.connection_string,
            "ACS_CA_FILE": str(self.acs.ca_file),
            "TOKEN_RATE_LIMIT_PER_MINUTE": "1000",
            **self.idp.settings,
            **simulator_settings(self.sim, [KEY.app(TOPIC)]),
        }

    def seed(self) -> tuple[dict[str, Any], list[str]]:
        """Store a recipient with one device and two callers with identities (with the code of
        this tree); the event template and the callers' bearer tokens."""
        from shared import wiring

        async def go() -> tuple[str, list[str]]:
            from shared.apns.notification import Environment
            from shared.domain.devices import Device, DeviceKind, device_id_for
            from shared.usecases.access_tokens import issue_token

            c = wiring.reset(self.env)
            callers = []
            for name in ("first", "second"):
                caller = await (await c.authenticator()).authenticate(
                    {"Authorization": "Bearer " + self.idp.token(f"cold-{name}")}
                )
                issued = await issue_token(
                    caller, await c.identities(), await c.acs_identity(), c.token_policy(),
                    known=c.known_identities(),
                )  # fmt: skip
                callers.append(issued.acs_user_id)
            now = datetime.now(UTC)
            token = "c0" * 32
            await (await c.device_registry()).register(
                Device(
                    user_id=callers[0], device_id=device_id_for(token), token=token,
                    kind=DeviceKind.ALERT, topic=TOPIC, environment=Environment.SANDBOX,
                    registered_at=now, renewed_at=now,
                )
            )  # fmt: skip
            await c.aclose()
            return callers[0], callers

        recipient, _ = asyncio.run(go())
        event = json.loads(SAMPLE.read_text())[0]
        raw = {"rawId": recipient, "communicationUser": {"id": recipient}}
        event["data"]["recipientCommunicationIdentifier"] = raw
        bearers = [self.idp.token("cold-first"), self.idp.token("cold-second")]
        return event, bearers

    def close(self) -> None:
        for service in (self.acs, self.idp, self.sim, self.azurite):
            service.stop()


def probe(
    code: Path, plan: dict[str, Any], env: dict[str, str], flags: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One fresh interpreter running :data:`PROBE` in ``code`` (its stderr under ``stderr``)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    done = subprocess.run(
        [sys.executable, *flags, "-c", PROBE, json.dumps(plan)],
        cwd=code, env={**keep, **env}, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"probe failed in {code}:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["stderr"] = done.stderr
    return result


def import_costs(stderr: str) -> list[tuple[str, float]]:
    """Self import time (ms) by top-level package of what the first invocation imported
    (``-X importtime`` lines between the probe's marks)."""
    by_package: dict[str, float] = {}
    inside = False
    for line in stderr.splitlines():
        if line.startswith("@@ "):
            inside = line == "@@ imported"
            continue
        if inside and line.startswith("import time:") and "|" in line:
            self_us, _, name = (part.strip() for part in line[12:].split("|"))
            if self_us.isdigit():
                package = name if DETAIL and name.startswith(DETAIL) else name.split(".")[0]
                by_package[package] = by_package.get(package, 0.0) + int(self_us) / 1000
    return sorted(by_package.items(), key=lambda kv: -kv[1])


def figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians (CPU ms) of a scenario's runs."""

    def med(values: list[float]) -> float:
        return round(statistics.median(values) * 1000, 1)

    m = [r["marks"] for r in runs]
    return {
        "azure_functions_ms": med([x["azure.functions"] - x["start"] for x in m]),
        "import_function_app_ms": med([x["function_app"] - x["azure.functions"] for x in m]),
        "first_invocation_ms": med([x["first"] for x in m]),
        "second_invocation_ms": med([x["second"] for x in m]),
        "cold_extra_ms": med([x["first"] - x["second"] for x in m]),
        "cold_total_ms": med(
            [x["function_app"] - x["azure.functions"] + x["first"] - x["second"] for x in m]
        ),
        "modules_after_import": runs[0]["modules"]["function_app"],
        "modules_after_first": runs[0]["modules"]["first"],
        "top_level_packages": runs[0]["packages"],
        "cold_total_ms_runs": [
            round((x["function_app"] - x["azure.functions"] + x["first"] - x["second"]) * 1000, 1)
            for x in m
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", default=BASELINE, help="commit to compare with ('' for none)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="'-' for no file")
    parser.add_argument(
        "--importtime",
        choices=("chat", "token"),
        help="print one probe's -X importtime, by package",
    )
    args = parser.parse_args(argv)

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": REPO}
        if args.baseline:
            trees[f"baseline {args.baseline}"] = export(args.baseline, Path(tmp))
        stand = Stand(Path(tmp))
        try:
            event, bearers = stand.seed()
            if args.importtime:
                plan = {"scenario": args.importtime, "event": event, "bearers": bearers,
                        "tag": uuid.uuid4().hex[:8]}  # fmt: skip
                for label, code in trees.items():
                    costs = import_costs(
                        probe(code, plan, stand.env, ("-X", "importtime"))["stderr"]
                    )
                    print(f"{label}: {sum(c for _, c in costs):.0f} ms of imports")
                    for package, ms in costs[:25]:
                        print(f"  {package:<28}{ms:8.1f} ms")
                return 0
            for scenario in ("chat", "token"):
                for label, code in trees.items():
                    runs = []
                    for n in range(args.runs):
                        plan = {"scenario": scenario, "event": event, "bearers": bearers,
                                "tag": f"{uuid.uuid4().hex[:8]}-{n}"}  # fmt: skip
                        runs.append(probe(code, plan, stand.env))
                        time.sleep(0.2)
                    results.setdefault(scenario, {})[label] = figures(runs)
                    f = results[scenario][label]
                    print(
                        f"{scenario:<6}{label:<22} import {f['import_function_app_ms']:>6} ms, "
                        f"first {f['first_invocation_ms']:>7} ms, second "
                        f"{f['second_invocation_ms']:>6} ms: cold start {f['cold_total_ms']} ms "
                        f"(azure.functions alone {f['azure_functions_ms']} ms)",
                        flush=True,
                    )
        finally:
            stand.close()
    if str(args.out) != "-":
        document = {
            "benchmark": "cold start CPU",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
            },
            "settings": {"runs": args.runs, "baseline": args.baseline},
            "scenarios": results,
        }
        args.out.write_text(json.dumps(document, indent=2) + "\n")
        shown = args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out
        print(f"wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
