"""Print what happened to message M in thread T for user U, read from the deliveries table.

    python -m devtools.delivery_log --thread 19:...@thread.v2 --message 1613694358927 \\
        --user 8:acs:... [--json] [--storage CONNECTION] [--prefix TABLE_PREFIX]

Storage comes from ``--storage``, else the ``STORAGE_CONNECTION`` environment variable, else the
running local run (``.local/run.json``, written by ``run-local.sh``: its Azurite is on whatever
ports were free), else ``local.settings.json``, else Azurite's default ports. The table prefix
likewise. It says on stderr which storage it reads. One partition query; nothing is written.
Exit status: 0 when records were found, 1 when there were none, 2 on a usage or storage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from shared.errors import PushRelayError
from shared.storage.deliveries import DELIVERIES_TABLE, TableDeliveryStore
from shared.storage.tables import Tables
from shared.usecases.delivery_log import LogQuery, read_log

REPO = Path(__file__).resolve().parent.parent
AZURITE_DEFAULT = "UseDevelopmentStorage=true"
RUN_FILE = "run.json"  # written by devtools.run_local while a local run is up


def _local_setting(path: Path, name: str) -> str | None:
    try:
        values = json.loads(path.read_text()).get("Values", {})
    except (OSError, ValueError):
        return None
    value = values.get(name) if isinstance(values, dict) else None
    return value if isinstance(value, str) and value else None


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_local_run(local_dir: Path) -> dict[str, Any] | None:
    """What the local run that is up (its process alive) wrote about itself, else None."""
    try:
        run = json.loads((local_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return run if isinstance(run, dict) and _pid_alive(run.get("pid")) else None


def storage_source(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, str, str]:
    """(storage connection, table prefix, where the connection came from)."""
    run = running_local_run(args.local_dir) or {}
    local = args.settings
    candidates = [
        (args.storage, "--storage"),
        (env.get("STORAGE_CONNECTION"), "STORAGE_CONNECTION"),
        (run.get("STORAGE_CONNECTION"), f"the local run ({args.local_dir / RUN_FILE})"),
        (_local_setting(local, "STORAGE_CONNECTION"), str(local)),
    ]
    storage, where = next(
        ((value, source) for value, source in candidates if isinstance(value, str) and value),
        (AZURITE_DEFAULT, "Azurite's default ports"),
    )
    prefixes = [args.prefix, env.get("TABLE_PREFIX"), run.get("TABLE_PREFIX")]
    prefixes.append(_local_setting(local, "TABLE_PREFIX"))
    prefix = next((p for p in prefixes if isinstance(p, str) and p), "pushrelay")
    return storage, prefix, where


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.delivery_log",
        description="What happened to message M in thread T for user U (the delivery log).",
    )
    parser.add_argument("--thread", required=True, help="ACS threadId (19:...@thread.v2)")
    parser.add_argument("--message", required=True, help="ACS messageId")
    parser.add_argument("--user", required=True, help="recipient's ACS rawId (8:acs:...)")
    parser.add_argument("--storage", help="storage connection string or table endpoint URL")
    parser.add_argument("--prefix", help="TABLE_PREFIX of the deployment")
    parser.add_argument(
        "--local-dir", type=Path, default=REPO / ".local", help="the local run's folder"
    )
    parser.add_argument(
        "--settings", type=Path, default=REPO / "local.settings.json", help="settings file"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON the HTTP API answers")
    return parser.parse_args(argv)


def render(answer: dict[str, Any], out: TextIO) -> None:
    """Print the log as aligned lines: one per device and delivery (event kind and version)."""
    rows = answer["deliveries"]
    out.write(
        f"message {answer['messageId']} in thread {answer['threadId']} "
        f"for user {answer['userId']}: {len(rows)} record(s)\n"
    )
    for r in rows:
        status = "-" if r["status"] is None else str(r["status"])
        out.write(
            f"  {r['kind']:<8} v{r['version']}  device {r['token']} ({r['topic']}, "
            f"{r['environment']})\n"
            f"    {r['state']:<9} status {status:<3} reason {r['reason'] or '-'}  "
            f"apns-id {r['apnsId'] or '-'}  attempts {r['attempts']}  claims {r['claims']}\n"
            f"    claimed {r['claimedAt']}  completed {r['completedAt'] or '-'}"
            + (f"  ({r['detail']})" if r["detail"] else "")
            + "\n"
        )


def describe_storage(connection: str) -> str:
    """The table endpoint of a connection (never its key)."""
    parts = dict(part.split("=", 1) for part in connection.split(";") if "=" in part)
    if "TableEndpoint" in parts:
        return parts["TableEndpoint"]
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        return "http://127.0.0.1:10002/devstoreaccount1"
    if "AccountName" in parts:
        return f"the tables of storage account {parts['AccountName']}"
    return connection if connection.lower().startswith("http") else "storage"


async def fetch(query: LogQuery, storage: str, prefix: str) -> dict[str, Any]:
    """Read the log of one message for one user."""
    tables = Tables.connect(storage, prefix)
    try:
        store = TableDeliveryStore(await tables.table(DELIVERIES_TABLE))
        return await read_log(query, store)
    finally:
        await tables.aclose()


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the command; returns the exit status."""
    args = _arguments(argv)
    storage, prefix, where = storage_source(args, os.environ)
    print(f"reading {describe_storage(storage)} (from {where})", file=sys.stderr)
    query = LogQuery(user_id=args.user, thread_id=args.thread, message_id=args.message)
    try:
        answer = asyncio.run(fetch(query, storage, prefix))
    except (PushRelayError, ValueError) as exc:
        print(f"cannot read the delivery log: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out.write(json.dumps(answer, indent=2) + "\n")
    else:
        render(answer, out)
    return 0 if answer["deliveries"] else 1


if __name__ == "__main__":
    sys.exit(main())
