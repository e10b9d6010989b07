"""Benchmark runner: plain ``httpx.AsyncClient(http2=True).post`` per push (not in the default set).

    .venv/bin/python bench/apns/run_httpx.py PLAN.json

The design our client replaced: the same request as the others through httpx's client layer and
httpcore's HTTP/2 connection (one connection, the JWT signed once). Run with ``--only httpx``;
prints one JSON line.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import drive, read_plan, report


async def main(plan: dict[str, Any]) -> None:
    context = ssl.create_default_context(cafile=plan["ca_file"])
    token = jwt.encode(
        {"iss": plan["team_id"], "iat": int(time.time())},
        Path(plan["key_file"]).read_bytes(),
        algorithm="ES256",
        headers={"kid": plan["key_id"]},
    )
    fixed = {
        "authorization": f"bearer {token}",
        "apns-topic": plan["topic"],
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-collapse-id": plan["collapse_id"],
    }
    url = f"https://{plan['host']}:{plan['port']}/3/device/{plan['device_token']}"
    message = plan["payload"]
    limits = httpx.Limits(max_connections=plan["connections"])
    async with httpx.AsyncClient(http2=True, verify=context, limits=limits) as client:

        async def send(_: int) -> bool:
            headers = {**fixed, "apns-id": str(uuid.uuid4())}
            response = await client.post(url, json=message, headers=headers)
            return response.status_code == 200

        await drive(send, plan["warmup"], plan["concurrency"])
        result = await drive(send, plan["pushes"], plan["concurrency"])
    report(result, client="httpx")


if __name__ == "__main__":
    asyncio.run(main(read_plan()))
