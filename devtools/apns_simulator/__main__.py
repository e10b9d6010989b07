"""Command line: ``python -m devtools.apns_simulator --state-dir DIR [options]``.

Prints one JSON line (origins, CA file, control URL and the app ``settings`` that point at the
simulator), serves until SIGINT/SIGTERM, then stops cleanly with exit code 0. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import string
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devtools.stop_signals import serve_until, stop_on_signals

if TYPE_CHECKING:
    from devtools.apns_simulator.simulator import ApnsSimulator

# Only the standard library above: the signal handlers go in before the simulator (h2,
# cryptography) is imported, so a SIGTERM during start-up also ends with exit 0.

log = logging.getLogger("devtools.apns_simulator")
_ID_ALPHABET = string.ascii_uppercase + string.digits


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.apns_simulator", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True, help="certificates, dev keys")
    parser.add_argument("--sandbox-port", type=int, default=0)
    parser.add_argument("--production-port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--max-concurrent-streams", type=int, default=1000)
    parser.add_argument("--keys-dir", type=Path, help="<keyId>.json files: {teamId, publicKeyPem}")
    parser.add_argument("--faults", type=Path, help="JSON list of faults (camelCase fields)")
    parser.add_argument("--strict-devices", action="store_true", help="only registered tokens")
    parser.add_argument(
        "--dev-app",
        action="append",
        default=[],
        metavar="BUNDLE_ID",
        help="generate (once) and register an ES256 key for this app; adds APNS_APPS",
    )
    return parser.parse_args(argv)


def _register_keys_dir(sim: ApnsSimulator, keys_dir: Path) -> None:
    for path in sorted(keys_dir.glob("*.json")):
        data = json.loads(path.read_text())
        sim.register_key(path.stem, data["teamId"], data["publicKeyPem"], data.get("topics"))
        log.info("registered key %s of team %s", path.stem, data["teamId"])


def _random_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


def dev_app(sim: ApnsSimulator, state_dir: Path, bundle_id: str) -> dict[str, str]:
    """Create once (kept in ``state_dir``) and register an ES256 key for ``bundle_id``; return
    its APNS_APPS entry."""
    meta_path = state_dir / f"dev-app-{bundle_id}.json"
    if meta_path.exists():
        entry: dict[str, str] = json.loads(meta_path.read_text())
        key_pem = Path(entry["privateKeyFile"]).read_bytes()
    else:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key_id, team_id = _random_id(), _random_id()
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        key_path = state_dir / f"AuthKey_{key_id}.p8"
        key_path.write_bytes(key_pem)
        key_path.chmod(0o600)
        entry = {
            "bundleId": bundle_id,
            "teamId": team_id,
            "keyId": key_id,
            "privateKeyFile": str(key_path.resolve()),
        }
        meta_path.write_text(json.dumps(entry, indent=2))
    sim.register_key(entry["keyId"], entry["teamId"], key_pem, [bundle_id])
    return entry


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGINT/SIGTERM; returns the exit code."""
    stop = stop_on_signals()
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    args = _parse_args(argv)
    from devtools.apns_simulator.faults import Fault
    from devtools.apns_simulator.simulator import ApnsSimulator

    sim = ApnsSimulator.start(
        args.state_dir,
        sandbox_port=args.sandbox_port,
        production_port=args.production_port,
        control_port=args.control_port,
        max_concurrent_streams=args.max_concurrent_streams,
    )
    try:
        sim.strict_devices = args.strict_devices
        if args.keys_dir:
            _register_keys_dir(sim, args.keys_dir)
        if args.faults:
            for item in json.loads(args.faults.read_text()):
                sim.add_fault(Fault.from_json(item))
        settings: dict[str, Any] = {
            "APNS_SANDBOX_ORIGIN": sim.sandbox_origin,
            "APNS_PRODUCTION_ORIGIN": sim.production_origin,
            "APNS_CA_FILE": str(sim.ca_file.resolve()),
        }
        apps = [dev_app(sim, args.state_dir, bundle) for bundle in args.dev_app]
        if apps:
            settings["APNS_APPS"] = json.dumps(apps)
        line = {
            "sandbox_origin": sim.sandbox_origin,
            "production_origin": sim.production_origin,
            "ca_file": str(sim.ca_file.resolve()),
            "control_url": sim.control_url,
            "settings": settings,
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        log.info("ready: sandbox %s, production %s", sim.sandbox_origin, sim.production_origin)
        serve_until(stop)
    finally:
        sim.stop()
    log.info("APNs simulator stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
