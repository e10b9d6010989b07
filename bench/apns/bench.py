"""The APNs benchmark: our client, aioapns, @parse/node-apn and h2load against one local nginx.

    bash bench/apns/run.sh [--pushes 20000] [--warmup 2000] [--rounds 3] [--only NAME ...]

(``run.sh`` installs nginx, h2load, aioapns and node-apn, then runs this with ``.venv``'s Python.)

Every client gets the same server, ES256 key, device token, topic, payload and headers
(``apns-topic``, ``apns-push-type: alert``, ``apns-priority: 10``, ``apns-collapse-id``, a
fresh ``apns-id`` and ``authorization: bearer <JWT>``), one HTTP/2 connection and 100 pushes in
flight. Each runner is its own process, pinned to the same core (nginx to another); it sends a
warm-up, then the measured pushes, and reports wall time, its own CPU time over the measured
phase (user + system, all threads) and every push's latency. The orchestrator adds the peak RSS
of the child (``wait4``) and nginx's CPU time. Rounds alternate the order of the clients; the
table shows each client's median round (by CPU per push). h2load is the ceiling: C, one
connection, ``-m 100``, the same headers (one fixed ``apns-id``), all of its pushes measured.

Goal (issue "APNs hot path"): our pushes per CPU-second at least twice aioapns'.
A benchmark, not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

from server import HOST, Credentials, Nginx, make_credentials, run_nginx  # noqa: E402
from workload import percentile  # noqa: E402

AIOAPNS_PYTHON = REPO / "bench" / ".venv-aioapns" / "bin" / "python"
NODE_DIR = HERE / "node"
DEFAULT_OUT = REPO / "bench" / "results" / "apns.json"
CLIENTS = ("pushrelay", "aioapns", "node-apn", "h2load")
# Not run unless named with --only: the design our client replaced (see docs/performance.md).
EXTRA_CLIENTS = ("httpx",)
GOAL_RATIO = 2.0

KEY_ID = "BENCH00001"
TEAM_ID = "TEAMBENCH1"
TOPIC = "com.example.bench"
DEVICE_TOKEN = "a1b2c3d4" * 8
COLLAPSE_ID = "1700000000000"
# A chat push as pushrelay sends one (plaintext preview mode): ~300 bytes of JSON.
PAYLOAD: dict[str, Any] = {
    "aps": {
        "alert": {
            "title": "Alice Example",
            "body": "Are we still on for lunch tomorrow? I can book the usual place at noon.",
        },
        "sound": "default",
        "thread-id": "19:b3a4c1d2e5f60718293a4b5c6d7e8f90@thread.v2",
        "mutable-content": 1,
    },
    "threadId": "19:b3a4c1d2e5f60718293a4b5c6d7e8f90@thread.v2",
    "messageId": COLLAPSE_ID,
    "senderId": "8:acs:00000000-0000-0000-0000-000000000001_00000000-0000-0000-0000-000000000002",
}


def main() -> int:
    args = _arguments()
    clients = args.only or list(CLIENTS)
    runner_cpus, server_cpus = _cpu_split()
    with tempfile.TemporaryDirectory(prefix="apns-bench-") as tmp:
        directory = Path(tmp)
        credentials = make_credentials(directory)
        with run_nginx(directory, credentials, server_cpus) as nginx:
            plan = _plan(args, credentials, nginx)
            plan_file = directory / "plan.json"
            plan_file.write_text(json.dumps(plan), encoding="utf-8")
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in clients}
            for number in range(args.rounds):
                order = clients if number % 2 == 0 else list(reversed(clients))
                for name in order:
                    result = _run(name, plan, plan_file, directory, nginx, runner_cpus)
                    rounds[name].append(result)
                    print(f"round {number + 1}: {_summary(name, result)}", flush=True)
            if args.profile:
                _profile(plan_file, directory, runner_cpus, args.profile, args.profile_out)
    document = _document(args, plan, rounds, runner_cpus, server_cpus, nginx.version)
    _print_table(document)
    if args.out != "-":
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pushes", type=int, default=20_000, help="measured pushes per client")
    parser.add_argument("--warmup", type=int, default=2_000, help="pushes before measuring")
    parser.add_argument("--concurrency", type=int, default=100, help="pushes in flight")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every client")
    parser.add_argument(
        "--only", nargs="+", choices=CLIENTS + EXTRA_CLIENTS, help="run only these clients"
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON output ('-': none)")
    parser.add_argument(
        "--profile",
        choices=("sample", "cprofile", "pyinstrument"),
        help="afterwards, profile one more run of our client (not in the table)",
    )
    parser.add_argument("--profile-out", help="write the profile's top entries to this file")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per runner")
    return parser.parse_args()


def _cpu_split() -> tuple[set[int] | None, set[int] | None]:
    """Runners on one core, nginx on another; no pinning on a one-core machine."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[-1]}, {cpus[0]}


def _plan(args: argparse.Namespace, credentials: Credentials, nginx: Nginx) -> dict[str, Any]:
    return {
        "host": HOST,
        "port": nginx.port,
        "ca_file": str(credentials.ca_file),
        "key_file": str(credentials.p8_file),
        "key_id": KEY_ID,
        "team_id": TEAM_ID,
        "topic": TOPIC,
        "device_token": DEVICE_TOKEN,
        "collapse_id": COLLAPSE_ID,
        "payload": PAYLOAD,
        "pushes": args.pushes,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "connections": 1,
        "timeout": args.timeout,
    }


# --- running one client ---------------------------------------------------------------------


def _command(name: str, plan_file: Path) -> list[str]:
    if name == "pushrelay":
        return [sys.executable, str(HERE / "run_ours.py"), str(plan_file)]
    if name == "aioapns":
        return [str(AIOAPNS_PYTHON), str(HERE / "run_aioapns.py"), str(plan_file)]
    if name == "node-apn":
        return ["node", str(NODE_DIR / "runner.js"), str(plan_file)]
    if name == "httpx":
        return [sys.executable, str(HERE / "run_httpx.py"), str(plan_file)]
    raise ValueError(name)


def _run(
    name: str,
    plan: dict[str, Any],
    plan_file: Path,
    directory: Path,
    nginx: Nginx,
    cpus: set[int] | None,
) -> dict[str, Any]:
    # Other work on the machine shows in wall time and latency more than in CPU per push.
    load = os.getloadavg()[0]
    server_before = _cpu_seconds(nginx.worker_pids())
    if name == "h2load":
        result = _run_h2load(plan, directory, cpus)
    else:
        stdout, child = _spawn(_command(name, plan_file), directory, cpus, plan["timeout"])
        result = json.loads(stdout.strip().splitlines()[-1])
        result.update(child)
    server_cpu = _cpu_seconds(nginx.worker_pids()) - server_before
    result["server_cpu_ms_per_push"] = server_cpu * 1000 / max(1, _sent(name, plan))
    result["load_average_1min_before"] = round(load, 2)
    return _derive(result)


def _sent(name: str, plan: dict[str, Any]) -> int:
    return plan["pushes"] if name == "h2load" else plan["pushes"] + plan["warmup"]


def _spawn(
    argv: list[str], directory: Path, cpus: set[int] | None, timeout: float
) -> tuple[str, dict[str, Any]]:
    """Run ``argv`` pinned to ``cpus``; its stdout, and its CPU time and peak RSS from wait4."""
    out_path, err_path = directory / "runner.out", directory / "runner.err"

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=err,
            preexec_fn=pin,  # noqa: PLW1509 (the orchestrator starts no threads)
            cwd=REPO,
        )
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.02)
    process.returncode = os.waitstatus_to_exitcode(status)
    stdout = out_path.read_text(errors="replace")
    if process.returncode != 0 or not stdout.strip():
        stderr = err_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{argv[:2]} exited {process.returncode}:\n{stderr}")
    return stdout, {
        "process_cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def _run_h2load(plan: dict[str, Any], directory: Path, cpus: set[int] | None) -> dict[str, Any]:
    import jwt

    key = Path(plan["key_file"]).read_bytes()
    token = jwt.encode(
        {"iss": plan["team_id"], "iat": int(time.time())},
        key,
        algorithm="ES256",
        headers={"kid": plan["key_id"]},
    )
    body = directory / "payload.json"
    body.write_bytes(json.dumps(plan["payload"], separators=(",", ":")).encode())
    log = directory / "h2load.log"
    log.unlink(missing_ok=True)  # h2load appends
    headers = {
        "authorization": f"bearer {token}",
        "apns-topic": plan["topic"],
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-collapse-id": plan["collapse_id"],
        "apns-id": "3f2a6c1e-8b0d-4e7a-9c5f-1d2e3f4a5b6c",
    }
    argv = ["h2load", "-n", str(plan["pushes"]), "-c", "1", "-t", "1"]
    argv += ["-m", str(plan["concurrency"]), "-d", str(body), f"--log-file={log}"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(f"https://{plan['host']}:{plan['port']}/3/device/{plan['device_token']}")
    stdout, child = _spawn(argv, directory, cpus, plan["timeout"])
    return {**_h2load_result(stdout, log, plan["pushes"]), **child, "client": "h2load"}


def _h2load_result(stdout: str, log: Path, pushes: int) -> dict[str, Any]:
    finished = re.search(r"finished in ([\d.]+)(m?s)", stdout)
    if finished is None:
        raise RuntimeError(f"h2load printed no result:\n{stdout[-2000:]}")
    wall = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    latencies: list[int] = []
    failures = 0
    for line in log.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 3:
            latencies.append(int(fields[2]))
            failures += fields[1] != "200"
    failures += pushes - len(latencies)
    latencies.sort()
    return {
        "pushes": pushes,
        "failures": failures,
        "wall_s": wall,
        "latency_ms": {
            "p50": percentile(latencies, 50) / 1e3,
            "p99": percentile(latencies, 99) / 1e3,
            "max": latencies[-1] / 1e3 if latencies else 0.0,
        },
        "note": "CPU is the whole h2load process (its start and TLS handshake included)",
    }


def _derive(result: dict[str, Any]) -> dict[str, Any]:
    pushes = result["pushes"]
    if "cpu_user_s" in result:
        cpu = result["cpu_user_s"] + result["cpu_sys_s"]
    else:
        cpu = result["process_cpu_s"]
        result["cpu_user_s"] = result["cpu_sys_s"] = None
    result["cpu_s"] = cpu
    result["pushes_per_s"] = pushes / result["wall_s"]
    result["cpu_ms_per_push"] = cpu * 1000 / pushes
    result["pushes_per_cpu_s"] = pushes / cpu if cpu > 0 else None
    return result


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _profile(
    plan_file: Path, directory: Path, cpus: set[int] | None, kind: str, out: str | None
) -> None:
    plan = json.loads(plan_file.read_text())
    plan["profile_out"] = str(Path(out).resolve()) if out else None
    profiled = directory / "plan-profile.json"
    profiled.write_text(json.dumps(plan), encoding="utf-8")
    argv = [*_command("pushrelay", profiled), "--profile", kind]
    stdout, child = _spawn(argv, directory, cpus, plan["timeout"])
    result = _derive({**json.loads(stdout.splitlines()[-1]), **child})
    print(f"profiled ({kind}): {_summary('pushrelay', result)}")
    print((directory / "runner.err").read_text(errors="replace"))


# --- the report -----------------------------------------------------------------------------


def _document(
    args: argparse.Namespace,
    plan: dict[str, Any],
    rounds: dict[str, list[dict[str, Any]]],
    runner_cpus: set[int] | None,
    server_cpus: set[int] | None,
    nginx_version: str,
) -> dict[str, Any]:
    medians = {name: _median_round(runs) for name, runs in rounds.items() if runs}
    goal: dict[str, Any] = {"criterion": "pushrelay pushes/CPU-s >= 2 x aioapns'"}
    if "pushrelay" in medians and "aioapns" in medians:
        ours, theirs = rounds["pushrelay"], rounds["aioapns"]
        ratio = medians["pushrelay"]["pushes_per_cpu_s"] / medians["aioapns"]["pushes_per_cpu_s"]
        worst = min(o["pushes_per_cpu_s"] for o in ours) / max(
            t["pushes_per_cpu_s"] for t in theirs
        )
        goal.update(
            ratio=round(ratio, 2), worst_round_ratio=round(worst, 2), met=ratio >= GOAL_RATIO
        )
    return {
        "benchmark": "APNs push CPU cost, side by side",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["bash bench/apns/run.sh", *sys.argv[1:]]),
        "workload": {
            "pushes_measured": args.pushes,
            "warmup_pushes": args.warmup,
            "in_flight": args.concurrency,
            "connections": plan["connections"],
            "rounds": args.rounds,
            "payload_bytes": len(json.dumps(plan["payload"], separators=(",", ":")).encode()),
            "headers": "apns-topic, apns-push-type, apns-priority, apns-collapse-id, apns-id, "
            "authorization (ES256 JWT)",
            "server": f"nginx {nginx_version}: 1 worker, TLS + HTTP/2, return 200 + apns-id",
            "pinning": {
                "runners": sorted(runner_cpus) if runner_cpus else None,
                "nginx": sorted(server_cpus) if server_cpus else None,
            },
        },
        "machine": _machine(),
        "versions": _versions(nginx_version),
        "goal": goal,
        "results": medians,
        "rounds": rounds,
    }


def _median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["cpu_ms_per_push"])
    return ordered[(len(ordered) - 1) // 2]


def _summary(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name:<10} {r['pushes_per_s']:>9,.0f}/s  {r['cpu_ms_per_push']:.3f} ms CPU/push  "
        f"p50 {r['latency_ms']['p50']:.2f} ms  p99 {r['latency_ms']['p99']:.2f} ms  "
        f"RSS {r['peak_rss_mb']:.0f} MB  failures {r['failures']}"
        + (f" (first: {r['first_failure'][:300]})" if r.get("first_failure") else "")
    )


def _print_table(document: dict[str, Any]) -> None:
    rows = [
        (
            "client",
            "pushes/s",
            "CPU ms/push",
            "pushes/CPU-s",
            "p50 ms",
            "p99 ms",
            "peak RSS MB",
            "nginx ms/push",
            "failed",
        ),
    ]
    for name, r in document["results"].items():
        rows.append(
            (
                name,
                f"{r['pushes_per_s']:,.0f}",
                f"{r['cpu_ms_per_push']:.3f}",
                f"{r['pushes_per_cpu_s']:,.0f}" if r["pushes_per_cpu_s"] else "-",
                f"{r['latency_ms']['p50']:.2f}",
                f"{r['latency_ms']['p99']:.2f}",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['server_cpu_ms_per_push']:.3f}",
                str(r["failures"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for index, row in enumerate(rows):
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            print("  ".join("-" * w for w in widths))
    goal = document["goal"]
    if "ratio" in goal:
        verdict = "met" if goal["met"] else "NOT met"
        print(
            f"\npushrelay / aioapns pushes per CPU-second: {goal['ratio']}x "
            f"(worst round pairing {goal['worst_round_ratio']}x); goal {GOAL_RATIO}x {verdict}"
        )


def _machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory": memory,
        "kernel": platform.release(),
        "os": _os_name(),
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def _versions(nginx_version: str) -> dict[str, str]:
    from importlib import metadata

    def output(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except OSError:
            return "missing"
        if done.returncode != 0:
            return "?"
        lines = (done.stdout or done.stderr).strip().splitlines()
        return lines[0] if lines else ""

    try:
        node_apn = json.loads(
            (NODE_DIR / "node_modules" / "@parse" / "node-apn" / "package.json").read_text()
        )["version"]
    except OSError:
        node_apn = "missing"

    aioapns_code = (
        "import importlib.metadata as m; print(' '.join(m.version(p) for p in "
        "('aioapns', 'h2', 'hpack', 'PyJWT', 'cryptography')))"
    )
    aioapns = output([str(AIOAPNS_PYTHON), "-c", aioapns_code]).split()
    commit = output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = output(["git", "-C", str(REPO), "status", "--porcelain", "--", "shared/apns"])
    return {
        "pushrelay": f"git {commit}"
        + (" (shared/apns modified)" if dirty not in ("", "?") else ""),
        "python": platform.python_version(),
        "h2": metadata.version("h2"),
        "hpack": metadata.version("hpack"),
        "PyJWT": metadata.version("PyJWT"),
        "cryptography": metadata.version("cryptography"),
        "aioapns": aioapns[0] if aioapns else "missing",
        "aioapns_venv": " ".join(
            f"{n}={v}"
            for n, v in zip(("h2", "hpack", "PyJWT", "cryptography"), aioapns[1:], strict=False)
        ),
        "node": output(["node", "--version"]),
        "@parse/node-apn": node_apn,
        "h2load": output(["h2load", "--version"]),
        "nginx": nginx_version,
        "openssl": output(["openssl", "version"]),
    }


if __name__ == "__main__":
    if shutil.which("nginx") is None or shutil.which("h2load") is None:
        sys.exit("nginx and h2load are needed: run bash bench/apns/run.sh")
    sys.exit(main())
