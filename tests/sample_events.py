"""The ACS sample events in ``tests/samples``, as Event Grid or CloudEvents deliver them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parent / "samples"


def sample_event(name: str, **data: Any) -> dict[str, Any]:
    """The (first) event of sample ``name``, freshly read, with ``data`` fields replaced."""
    body = json.loads((SAMPLES / name).read_text())
    event: dict[str, Any] = body[0] if isinstance(body, list) else body
    event["data"].update(data)
    return event
