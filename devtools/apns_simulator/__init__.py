"""A validating APNs simulator: real HTTP/2 over TLS on 127.0.0.1, built on ``h2``.

It checks requests the way Apple documents (and Pushy's MockApnsServer implements), keeps a
request log, and scripts faults (rejections, delays, no answer, REFUSED_STREAM, SETTINGS changes,
GOAWAY, dropped connections). It never imports ``shared/`` so it checks our client independently.

    from devtools.apns_simulator import ApnsSimulator, Fault
    with ApnsSimulator.start(tmp_path) as sim:
        sim.register_key(key_id, team_id, public_pem)
        ...  # push to sim.sandbox_origin trusting sim.ca_file
        assert sim.requests()[0].status == 200

See docs/apns-simulator.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devtools.apns_simulator.faults import Fault
    from devtools.apns_simulator.records import ConnectionRecord, RequestRecord
    from devtools.apns_simulator.simulator import ApnsSimulator

__all__ = ["ApnsSimulator", "ConnectionRecord", "Fault", "RequestRecord"]

# Imported on first use, so ``python -m devtools.apns_simulator`` installs its signal handlers
# before h2 and cryptography load (see devtools/stop_signals.py).
_HOMES = {
    "ApnsSimulator": "devtools.apns_simulator.simulator",
    "ConnectionRecord": "devtools.apns_simulator.records",
    "Fault": "devtools.apns_simulator.faults",
    "RequestRecord": "devtools.apns_simulator.records",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
