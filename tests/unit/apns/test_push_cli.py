"""The test-push command line refuses bad input before touching the network."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from devtools.push_cli import _parser, build_notification, main, settings_env
from shared.apns.notification import PushType
from tests.unit.apns.keys import new_p8

pytestmark = pytest.mark.unit

TOKEN = "ab" * 32


@pytest.fixture
def key_flags(tmp_path: Path) -> list[str]:
    key = tmp_path / "AuthKey.p8"
    key.write_text(new_p8()[0])
    return ["--key-file", str(key), "--key-id", "KEY1234567", "--team-id", "TEAM123456"]


def test_missing_credentials_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--token", TOKEN, "--topic", "com.example.chat", "--alert", "x"], environ={}) == 2
    assert "--key-file" in capsys.readouterr().err


def test_malformed_token_exits_2_naming_the_field(
    key_flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    code = main(
        ["--token", "nothex", "--topic", "com.example.chat", "--alert", "x", *key_flags],
        environ={},
        out=out,
    )
    assert code == 2 and out.getvalue() == ""
    assert "device_token" in capsys.readouterr().err


def test_missing_payload_kind_exits_2(key_flags: list[str]) -> None:
    assert main(["--token", TOKEN, "--topic", "com.example.chat", *key_flags], environ={}) == 2


def test_from_settings_with_no_apps_exits_2(tmp_path: Path) -> None:
    args = [
        "--token",
        TOKEN,
        "--alert",
        "x",
        "--from-settings",
        "--settings-file",
        str(tmp_path / "none.json"),
    ]
    assert main(args, environ={"APNS_APPS": ""}) == 2


def test_voip_flag_suffixes_the_topic() -> None:
    args = _parser().parse_args(["--token", TOKEN, "--voip"])
    n = build_notification(args, "com.example.chat")
    assert (n.topic, n.push_type) == ("com.example.chat.voip", PushType.VOIP)


def test_settings_file_values_are_overridden_by_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text('{"Values": {"APNS_CA_FILE": "a.pem", "APNS_CONNECTIONS": "3"}}')
    merged = settings_env(str(path), {"APNS_CA_FILE": "b.pem"})
    assert merged["APNS_CA_FILE"] == "b.pem" and merged["APNS_CONNECTIONS"] == "3"
