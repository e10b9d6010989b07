"""The reference device from the command line: one phone kept in a state file between commands.

    python -m devtools.reference_device --idp $IDP --apns $SIM sign-in alice
    python -m devtools.reference_device sync          # handle what arrived, print it
    python -m devtools.reference_device watch         # keep syncing (Ctrl-C stops)
    python -m devtools.reference_device show          # user, registrations, keys, banners, calls
    python -m devtools.reference_device answer UUID   # answer a ringing call
    python -m devtools.reference_device new-token     # APNs hands out a new device token
    python -m devtools.reference_device sign-out

``$IDP`` is the development identity provider's ``token_url`` and ``$SIM`` the APNs simulator's
``control_url``, both printed by ``bash scripts/run-local.sh``; pushrelay is at
``http://127.0.0.1:7071`` unless ``--app`` says otherwise. The addresses are remembered in the
state file (default ``.local/reference-device.json``, git-ignored), and so are the phone's keys:
development state only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from devtools.reference_device.device import (
    DEFAULT_TOPIC,
    DeviceEvent,
    Endpoints,
    ReferenceDevice,
    SignedOutError,
)
from devtools.reference_device.relay import RelayError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_STATE = REPO / ".local" / "reference-device.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.reference_device",
        description="A phone running docs/ios.md's app against the local run.",
    )
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="the phone's file")
    parser.add_argument("--app", default=os.environ.get("PUSHRELAY_APP"), help="pushrelay URL")
    parser.add_argument("--idp", default=os.environ.get("PUSHRELAY_IDP"), help="IdP token URL")
    parser.add_argument("--apns", default=os.environ.get("PUSHRELAY_APNS"), help="simulator URL")
    parser.add_argument("--topic", default=None, help=f"bundle id (default {DEFAULT_TOPIC})")
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    commands = parser.add_subparsers(dest="command", required=True)
    sign_in = commands.add_parser("sign-in", help="sign in, register both tokens, upload a key")
    sign_in.add_argument("subject")
    commands.add_parser("sync", help="handle the pushes that arrived")
    watch = commands.add_parser("watch", help="sync every half second")
    watch.add_argument("--seconds", type=float, default=None, help="stop after this long")
    commands.add_parser("show", help="the phone's state (keys shown by expiry only)")
    commands.add_parser("renew", help="upload a fresh key now")
    commands.add_parser("new-token", help="APNs hands out a new device token")
    commands.add_parser("open", help="open the app (launch: registers again)")
    commands.add_parser("force-quit", help="swipe the app away (no background pushes)")
    for name in ("answer", "end"):
        command = commands.add_parser(name, help=f"{name} a call (its UUID from sync or show)")
        command.add_argument("uuid")
    commands.add_parser("sign-out", help="delete the registrations, the keys and the banners")
    return parser


def _load(args: argparse.Namespace) -> tuple[ReferenceDevice, dict[str, Any]]:
    saved: dict[str, Any] = {}
    if args.state.exists():
        saved = json.loads(args.state.read_text(encoding="utf-8"))
    where = saved.get("endpoints", {})
    app = args.app or where.get("app") or "http://127.0.0.1:7071"
    idp, apns = args.idp or where.get("idp"), args.apns or where.get("apns")
    if not idp or not apns:
        raise SystemExit(
            "error: --idp and --apns are needed once (the identity provider's token_url and the "
            "APNs simulator's control_url from the run's summary)"
        )
    endpoints = {"app": app, "idp": idp, "apns": apns}
    options: dict[str, Any] = {"topic": args.topic or saved.get("phone", {}).get("topic")}
    phone = ReferenceDevice.connect(
        Endpoints(**endpoints), **{k: v for k, v in options.items() if v}
    )
    if "phone" in saved:
        phone.restore(saved["phone"])
    return phone, endpoints


def _save(path: Path, phone: ReferenceDevice, endpoints: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"endpoints": endpoints, "phone": phone.to_state()}, indent=2))
    path.chmod(0o600)  # it holds the phone's preview keys


def _printer(out: TextIO, as_json: bool) -> Callable[[DeviceEvent], None]:
    def show(event: DeviceEvent) -> None:
        data = event.as_json()
        if as_json:
            out.write(json.dumps(data) + "\n")
            return
        what, at = data.pop("what"), data.pop("at")
        details = " ".join(f"{k}={v}" for k, v in data.items() if v not in (None, ""))
        out.write(f"{at[11:19]} {what:<15} {details}\n")

    return show


def _summary(phone: ReferenceDevice) -> dict[str, Any]:
    state = phone.to_state()
    keys = state.pop("keys") or {}
    state["keys"] = sorted(keys.values())  # expiries only: the keys stay in the file
    state["pendingProofs"] = sorted(state["pendingProofs"])
    return state


def _run(phone: ReferenceDevice, args: argparse.Namespace, out: TextIO) -> None:
    show = _printer(out, args.json)
    start = len(phone.events)
    command = args.command
    if command == "sign-in":
        phone.sign_in(args.subject)
        phone.launch()
    elif command == "sync":
        phone.sync()
    elif command == "watch":
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        try:
            while deadline is None or time.monotonic() < deadline:
                for event in phone.sync():
                    show(event)
                out.flush()
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        return
    elif command == "show":
        out.write(json.dumps(_summary(phone), indent=2) + "\n")
        return
    elif command == "renew":
        phone.renew_key()
    elif command == "new-token":
        phone.rotate_apns_token()
    elif command == "open":
        phone.launch()
    elif command == "force-quit":
        phone.force_quit()
    elif command == "answer":
        phone.answer(args.uuid)
    elif command == "end":
        phone.end_call(args.uuid)
    elif command == "sign-out":
        phone.sign_out()
    for event in phone.events[start:]:
        show(event)


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run one command on the phone in ``--state``; 0 on success, 1 when pushrelay refused."""
    args = _parser().parse_args(argv)
    phone, endpoints = _load(args)
    try:
        _run(phone, args, out)
    except (RelayError, SignedOutError) as exc:
        out.write(f"error: {exc}\n")
        return 1
    finally:
        _save(args.state, phone, endpoints)
        phone.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
