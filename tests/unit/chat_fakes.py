"""What the push use cases' unit tests share: sample events, settings and devices. The fakes
(storage ports, the APNs client, the clock) live in :mod:`tests.fakes`, one module each.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from shared.apns.notification import Environment
from shared.domain.devices import Device, DeviceKind, device_id_for
from shared.settings import Settings, load_settings
from tests.fakes.clock import T0

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def sample(name: str) -> dict[str, Any]:
    """One sample event as the host hands it over (the first of an Event Grid array)."""
    body = json.loads((SAMPLES / name).read_text())
    return body[0] if isinstance(body, list) else body


def settings(**overrides: Any) -> Settings:
    """Default settings with a few fields replaced."""
    return replace(load_settings({}, require=False), **overrides)


def device(
    user: str,
    n: int,
    *,
    topic: str = "com.example.chat",
    kind: DeviceKind = DeviceKind.ALERT,
    environment: Environment = Environment.SANDBOX,
    registered_at: datetime = T0 - timedelta(days=1),
    **fields: Any,
) -> Device:
    """A registered device of ``user`` with a token derived from ``n``."""
    token = f"{n:02x}" * 32
    return Device(
        user_id=user,
        device_id=device_id_for(token),
        token=token,
        kind=kind,
        topic=topic,
        environment=environment,
        registered_at=registered_at,
        renewed_at=registered_at,
        **fields,
    )
