"""Send one test push and print APNs' answer as JSON.

Credentials come from flags (``--key-file/--key-id/--team-id`` or ``--p12/--password``) or from
the app's own settings (``--from-settings``: ``local.settings.json`` values, overridden by
``APNS_*`` environment variables, read through ``shared.settings``)::

    python -m devtools.push_cli --token 0123...ef --topic com.example.chat \\
        --alert "Hello" --key-file AuthKey_ABC123DEFG.p8 --key-id ABC123DEFG --team-id TEAM123456
    python -m devtools.push_cli --from-settings --token 0123...ef --background
    python -m devtools.push_cli --from-settings --token 0123...ef --voip --payload call.json

Exit status: 0 accepted, 1 rejected by APNs, 2 bad input or credentials, 3 no answer.
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

from shared.apns.certificate import CertificateCredential
from shared.apns.client import ApnsClient, ApnsConfig
from shared.apns.errors import ApnsError, ApnsUnavailable, CredentialError, NotificationError
from shared.apns.notification import Environment, Notification, Priority, PushType
from shared.apns.payload import alert_payload, background_payload, encode_payload
from shared.apns.response import PushResult
from shared.apns.token import TokenCredential
from shared.errors import SettingsError

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m devtools.push_cli",
        description="Send one push to APNs (or the simulator) and print the result as JSON.",
    )
    p.add_argument("--token", required=True, help="device token (hex)")
    p.add_argument("--topic", help="bundle ID (default with --from-settings: the only app)")
    p.add_argument("--environment", choices=[e.value for e in Environment], default="sandbox")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--alert", metavar="TEXT", help="an alert with this body")
    kind.add_argument("--background", action="store_true", help="a background (silent) push")
    kind.add_argument("--payload", metavar="FILE", help="JSON payload file ('-': stdin)")
    p.add_argument("--voip", action="store_true", help="a VoIP push (topic gets .voip)")
    p.add_argument("--title", help="alert title (with --alert)")
    p.add_argument("--priority", type=int, choices=[10, 5, 1])
    p.add_argument("--collapse-id")
    p.add_argument("--expiration", type=int, help="UNIX seconds; 0: one delivery attempt")
    p.add_argument("--apns-id", help="lowercase UUID (default: a new one)")
    auth = p.add_argument_group("credentials (or --from-settings)")
    auth.add_argument("--key-file", help=".p8 auth key")
    auth.add_argument("--key-id")
    auth.add_argument("--team-id")
    auth.add_argument("--p12", help="client certificate (.p12)")
    auth.add_argument("--password", help="the .p12 password")
    auth.add_argument(
        "--from-settings",
        action="store_true",
        help="use APNS_APPS, origins and CA from local.settings.json / environment",
    )
    auth.add_argument("--settings-file", default="local.settings.json")
    p.add_argument("--origin", help="APNs origin for the chosen environment (e.g. simulator)")
    p.add_argument("--ca-file", help="extra CA bundle to trust (e.g. the simulator's CA)")
    p.add_argument("--budget", type=float, default=12.0, help="seconds for retries (default 12)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    return p


def build_notification(args: argparse.Namespace, topic: str) -> Notification:
    """The notification the flags describe. Raises :class:`NotificationError`."""
    push_type = PushType.ALERT
    if args.voip:
        push_type = PushType.VOIP
        topic = topic if topic.endswith(".voip") else topic + ".voip"
    elif args.background:
        push_type = PushType.BACKGROUND
    if args.payload:
        payload = _read_payload(args.payload)
    elif args.background:
        payload = encode_payload(background_payload())
    elif args.alert is not None:
        payload = encode_payload(alert_payload(title=args.title, body=args.alert, sound="default"))
    elif args.voip:
        payload = encode_payload({"aps": {}})
    else:
        raise NotificationError("payload", "give --alert TEXT, --background or --payload FILE")
    priority = Priority(args.priority) if args.priority is not None else None
    return Notification(
        device_token=args.token,
        topic=topic,
        push_type=push_type,
        payload=payload,
        priority=priority,
        expiration=args.expiration,
        collapse_id=args.collapse_id,
        apns_id=args.apns_id,
    )


def _read_payload(name: str) -> bytes:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        document = json.loads(text)
    except OSError as exc:
        raise NotificationError("payload", f"cannot read {name}: {exc}") from exc
    except ValueError as exc:
        raise NotificationError("payload", f"{name} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise NotificationError("payload", "must be a JSON object")
    return encode_payload(document)


def settings_env(settings_file: str, environ: Mapping[str, str]) -> dict[str, str]:
    """``local.settings.json`` Values overlaid with the process environment (which wins)."""
    merged: dict[str, str] = {}
    path = Path(settings_file)
    if path.is_file():
        try:
            values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
        except (OSError, ValueError, AttributeError) as exc:
            raise SettingsError(f"cannot read {settings_file}: {exc}") from exc
        merged.update({str(k): str(v) for k, v in values.items()})
    merged.update(environ)
    return merged


def build_config(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[ApnsConfig, str | None]:
    """The client config and default topic the flags (or settings) give.

    Raises :class:`CredentialError` or :class:`SettingsError`.
    """
    topic: str | None = args.topic
    sandbox = production = None
    ca_file: str | None = args.ca_file
    credential: TokenCredential | CertificateCredential
    if args.from_settings:
        from shared.apns_apps import parse_apns_apps
        from shared.settings import load_settings

        settings = load_settings(settings_env(args.settings_file, environ), require=False)
        apps = parse_apns_apps(settings.apns_apps)
        if not apps:
            raise SettingsError("APNS_APPS is empty: nothing to send with")
        base = topic.removesuffix(".voip") if topic else None
        matching = [a for a in apps if base is None or a.bundle_id == base]
        if base is None and len(apps) > 1:
            raise SettingsError("APNS_APPS lists several apps: choose one with --topic")
        if not matching:
            raise SettingsError(f"APNS_APPS has no app {base}")
        credential = matching[0].credential
        topic = topic or matching[0].bundle_id
        sandbox, production = settings.apns_sandbox_origin, settings.apns_production_origin
        ca_file = ca_file or settings.apns_ca_file or None
    elif args.p12:
        password = args.password.encode("utf-8") if args.password else None
        credential = CertificateCredential.from_file(args.p12, password)
    elif args.key_file and args.key_id and args.team_id:
        credential = TokenCredential.from_file(
            args.key_file, key_id=args.key_id, team_id=args.team_id
        )
    else:
        raise CredentialError(
            "give --key-file, --key-id and --team-id, or --p12 [--password], or --from-settings"
        )
    defaults = ApnsConfig(credential=credential)
    sandbox = sandbox or defaults.sandbox_origin
    production = production or defaults.production_origin
    if args.origin:
        if args.environment == Environment.SANDBOX:
            sandbox = args.origin
        else:
            production = args.origin
    config = ApnsConfig(
        credential=credential,
        sandbox_origin=sandbox,
        production_origin=production,
        ca_file=ca_file,
        connections=1,
        request_timeout=args.timeout,
        default_budget=args.budget,
    )
    return config, topic


def result_json(result: PushResult, environment: Environment) -> dict[str, Any]:
    """The result as printed (snake_case keys, times ISO 8601)."""
    return {
        "ok": result.ok,
        "status": result.status,
        "reason": result.reason.value if result.reason is not None else None,
        "apns_id": result.apns_id,
        "apns_unique_id": result.apns_unique_id,
        "unregistered_at": (
            result.unregistered_at.isoformat() if result.unregistered_at is not None else None
        ),
        "attempts": result.attempts,
        "permanent": result.permanent,
        "retryable": result.retryable,
        "environment": environment.value,
    }


async def _send(config: ApnsConfig, n: Notification, environment: Environment) -> PushResult:
    client = ApnsClient(config)
    try:
        return await client.send(n, environment=environment)
    finally:
        await client.aclose()


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> int:
    """Run the command line; returns the exit status."""
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    environment = Environment(args.environment)
    try:
        config, topic = build_config(args, os.environ if environ is None else environ)
        if not topic:
            raise NotificationError("topic", "give --topic (the app's bundle ID)")
        notification = build_notification(args, topic)
        notification.validate()
        result = asyncio.run(_send(config, notification, environment))
    except ApnsUnavailable as exc:
        print(json.dumps({"ok": False, "error": "unavailable", "message": str(exc)}), file=out)
        return EXIT_UNAVAILABLE
    except (ApnsError, SettingsError) as exc:
        print(f"push_cli: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(result_json(result, environment)), file=out)
    return EXIT_OK if result.ok else EXIT_REJECTED


if __name__ == "__main__":
    sys.exit(main())
