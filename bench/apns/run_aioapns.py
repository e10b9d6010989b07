"""Benchmark runner: aioapns (PyPI), in its own virtualenv (``bench/.venv-aioapns``).

    bench/.venv-aioapns/bin/python bench/apns/run_aioapns.py PLAN.json

Run by ``bench.py``; prints one JSON line. aioapns has no host or port option, so the runner
points its protocol class constants at the benchmark server, and passes an SSL context that
trusts the benchmark CA and offers ALPN ``h2`` (aioapns' default context offers no ALPN, which
APNs tolerates and nginx does not). Nothing else of aioapns is changed.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aioapns import APNs, NotificationRequest, PushType
from aioapns.connection import APNsDevelopmentClientProtocol, APNsTLSClientProtocol
from workload import drive, read_plan, report


async def main(plan: dict[str, Any]) -> None:
    APNsDevelopmentClientProtocol.APNS_SERVER = plan["host"]
    APNsTLSClientProtocol.APNS_PORT = plan["port"]
    context = ssl.create_default_context(cafile=plan["ca_file"])
    context.set_alpn_protocols(["h2"])
    client = APNs(
        key=Path(plan["key_file"]).read_text(encoding="ascii"),
        key_id=plan["key_id"],
        team_id=plan["team_id"],
        topic=plan["topic"],
        use_sandbox=True,
        ssl_context=context,
        max_connections=plan["connections"],
    )
    token, message, collapse_id = plan["device_token"], plan["payload"], plan["collapse_id"]

    async def send(_: int) -> bool:
        request = NotificationRequest(
            device_token=token,
            message=message,
            priority=10,
            collapse_key=collapse_id,
            push_type=PushType.ALERT,
        )
        result = await client.send_notification(request)
        return result.is_successful

    await drive(send, plan["warmup"], plan["concurrency"])
    result = await drive(send, plan["pushes"], plan["concurrency"])
    report(result, client="aioapns")


if __name__ == "__main__":
    asyncio.run(main(read_plan()))
