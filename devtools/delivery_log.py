"""Print what happened to message M in thread T for user U, read from the deliveries table.

    python -m devtools.delivery_log --thread 19:...@thread.v2 --message 1613694358927 \\
        --user 8:acs:... [--json] [--storage CONNECTION] [--prefix TABLE_PREFIX]

Storage comes from ``--storage``, else the ``STORAGE_CONNECTION`` environment variable, else
``local.settings.json`` (the local run's Azurite). One partition query; nothing is written.
Exit status: 0 when records were found, 1 when there were none, 2 on a usage or storage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from shared.deliveries import DELIVERIES_TABLE, TableDeliveryStore
from shared.delivery_log import LogQuery, read_log
from shared.errors import PushRelayError
from shared.tables import Tables

REPO = Path(__file__).resolve().parent.parent
AZURITE_DEFAULT = "UseDevelopmentStorage=true"


def _local_setting(name: str) -> str | None:
    path = REPO / "local.settings.json"
    if not path.exists():
        return None
    values = json.loads(path.read_text()).get("Values", {})
    value = values.get(name)
    return value if isinstance(value, str) and value else None


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
    storage = (
        args.storage
        or os.environ.get("STORAGE_CONNECTION")
        or _local_setting("STORAGE_CONNECTION")
        or AZURITE_DEFAULT
    )
    prefix = args.prefix or os.environ.get("TABLE_PREFIX") or _local_setting("TABLE_PREFIX")
    query = LogQuery(user_id=args.user, thread_id=args.thread, message_id=args.message)
    try:
        answer = asyncio.run(fetch(query, storage, prefix or "pushrelay"))
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
