"""The test-push command line against the APNs simulator."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from devtools.apns_simulator import ApnsSimulator, Fault
from devtools.push_cli import main
from tests.integration.apns.conftest import KEY_ID, TEAM_ID, TOPIC

pytestmark = pytest.mark.integration

TOKEN = "fedcba9876543210" * 4


@pytest.fixture
def key_file(tmp_path: Path, p8: tuple[str, str]) -> Path:
    path = tmp_path / f"AuthKey_{KEY_ID}.p8"
    path.write_text(p8[0])
    return path


def run(args: list[str], environ: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = main(args, environ=environ or {}, out=out)
    return code, json.loads(out.getvalue())


def key_flags(sim: ApnsSimulator, key_file: Path) -> list[str]:
    return [
        "--key-file", str(key_file), "--key-id", KEY_ID, "--team-id", TEAM_ID,
        "--origin", sim.sandbox_origin, "--ca-file", str(sim.ca_file),
    ]  # fmt: skip


def test_alert_from_flags_is_accepted(sim: ApnsSimulator, key_file: Path) -> None:
    code, result = run(
        ["--token", TOKEN, "--topic", TOPIC, "--alert", "Hello", *key_flags(sim, key_file)]
    )
    assert code == 0 and result["ok"] and result["status"] == 200
    (record,) = sim.requests()
    assert record.payload == {"aps": {"alert": {"body": "Hello"}, "sound": "default"}}
    assert record.apns_id == result["apns_id"]


def test_rejection_exits_non_zero_with_the_reason(sim: ApnsSimulator, key_file: Path) -> None:
    sim.add_fault(Fault(reason="BadDeviceToken"))
    code, result = run(
        ["--token", TOKEN, "--topic", TOPIC, "--alert", "x", *key_flags(sim, key_file)]
    )
    assert code == 1
    assert (result["status"], result["reason"], result["permanent"]) == (
        400,
        "BadDeviceToken",
        True,
    )


def test_background_push(sim: ApnsSimulator, key_file: Path) -> None:
    code, _ = run(["--token", TOKEN, "--topic", TOPIC, "--background", *key_flags(sim, key_file)])
    assert code == 0
    record = sim.requests()[0]
    assert record.headers["apns-push-type"] == "background"
    assert record.headers["apns-priority"] == "5"
    assert record.payload == {"aps": {"content-available": 1}}


def test_payload_file_is_sent_compact(sim: ApnsSimulator, key_file: Path, tmp_path: Path) -> None:
    payload = tmp_path / "p.json"
    payload.write_text('{\n  "aps": {"alert": "hi"},\n  "threadId": "t1"\n}')
    code, _ = run(
        ["--token", TOKEN, "--topic", TOPIC, "--payload", str(payload), *key_flags(sim, key_file)]
    )
    assert code == 0
    assert sim.requests()[0].raw_size == len(b'{"aps":{"alert":"hi"},"threadId":"t1"}')


def test_production_environment_uses_the_origin_given(sim: ApnsSimulator, key_file: Path) -> None:
    flags = key_flags(sim, key_file)
    flags[flags.index("--origin") + 1] = sim.production_origin
    code, result = run(
        ["--token", TOKEN, "--topic", TOPIC, "--alert", "x", "--environment", "production", *flags]
    )
    assert code == 0 and result["environment"] == "production"
    assert sim.requests()[0].environment == "production"


def test_voip_from_settings(sim: ApnsSimulator, tmp_path: Path, p8: tuple[str, str]) -> None:
    app = {"bundleId": TOPIC, "teamId": TEAM_ID, "keyId": KEY_ID, "privateKey": p8[0]}
    settings = tmp_path / "local.settings.json"
    settings.write_text(
        json.dumps(
            {
                "Values": {
                    "APNS_APPS": json.dumps([app]),
                    "APNS_SANDBOX_ORIGIN": "https://wrong.invalid:1",
                    "APNS_CA_FILE": str(sim.ca_file),
                }
            }
        )
    )
    environ = {"APNS_SANDBOX_ORIGIN": sim.sandbox_origin}  # the environment wins over the file
    code, result = run(
        [
            "--token",
            TOKEN,
            "--voip",
            "--alert",
            "Call",
            "--from-settings",
            "--settings-file",
            str(settings),
        ],
        environ,
    )
    assert code == 0, result
    record = sim.requests()[0]
    assert record.headers["apns-topic"] == TOPIC + ".voip"
    assert record.headers["apns-push-type"] == "voip"


def test_certificate_with_password(sim: ApnsSimulator, tmp_path: Path) -> None:
    p12 = tmp_path / "push.p12"
    p12.write_bytes(sim.make_client_certificate(TOPIC, password=b"s3cret"))
    code, _ = run(
        ["--token", TOKEN, "--topic", TOPIC, "--alert", "x", "--p12", str(p12),
         "--password", "s3cret", "--origin", sim.sandbox_origin, "--ca-file", str(sim.ca_file)]
    )  # fmt: skip
    assert code == 0
    assert "authorization" not in sim.requests()[0].headers


def test_no_answer_exits_3(sim: ApnsSimulator, key_file: Path) -> None:
    sim.add_fault(Fault(no_answer=True))
    code, result = run(
        ["--token", TOKEN, "--topic", TOPIC, "--alert", "x", "--timeout", "0.2", "--budget", "0.6",
         *key_flags(sim, key_file)]
    )  # fmt: skip
    assert code == 3 and result["error"] == "unavailable"
