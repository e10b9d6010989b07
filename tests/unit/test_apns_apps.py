"""The APNS_APPS setting: apps, token keys and certificates, and the errors that name the entry."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.apns.certificate import CertificateCredential
from shared.apns.errors import CredentialError
from shared.apns.token import TokenCredential
from shared.apns_apps import parse_apns_apps
from shared.errors import SettingsError

pytestmark = pytest.mark.unit

PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)
TOKEN_APP = {"bundleId": "com.a", "teamId": "TEAM123456", "keyId": "KEY1234567", "privateKey": PEM}


def apps(*entries: object) -> str:
    return json.dumps(list(entries))


def test_empty_setting_has_no_apps() -> None:
    assert parse_apns_apps(" ") == []


def test_token_app_gets_a_token_credential() -> None:
    (app,) = parse_apns_apps(apps(TOKEN_APP))
    assert (app.bundle_id, type(app.credential), app.credential.key_id) == (
        "com.a",
        TokenCredential,
        "KEY1234567",
    )


def test_private_key_with_escaped_newlines_is_read() -> None:
    escaped = dict(TOKEN_APP, privateKey=PEM.replace("\n", "\\n"))
    assert parse_apns_apps(apps(escaped))[0].bundle_id == "com.a"


def test_private_key_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "AuthKey.p8"
    path.write_text(PEM)
    entry = {"bundleId": "com.f", "teamId": "TEAM123456", "keyId": "KEY1234567"}
    (app,) = parse_apns_apps(apps(dict(entry, privateKeyFile=str(path))))
    assert isinstance(app.credential, TokenCredential)


def test_certificate_app_gets_the_p12_and_password() -> None:
    entry = {"bundleId": "com.c", "p12": base64.b64encode(b"p12").decode(), "p12Password": "pw"}
    (app,) = parse_apns_apps(apps(entry))
    assert app.credential == CertificateCredential(b"p12", b"pw")


def test_several_apps_keep_their_order() -> None:
    other = dict(TOKEN_APP, bundleId="com.b")
    assert [a.bundle_id for a in parse_apns_apps(apps(TOKEN_APP, other))] == ["com.a", "com.b"]


def test_same_bundle_twice_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"com\.a twice"):
        parse_apns_apps(apps(TOKEN_APP, TOKEN_APP))


def test_entry_without_a_credential_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"com\.x needs"):
        parse_apns_apps(apps({"bundleId": "com.x"}))


def test_entry_without_a_bundle_id_is_refused() -> None:
    with pytest.raises(SettingsError, match="entry 0 needs a bundleId"):
        parse_apns_apps(apps({"p12": "AA=="}))


def test_token_app_without_team_is_refused() -> None:
    entry = {k: v for k, v in TOKEN_APP.items() if k != "teamId"}
    with pytest.raises(SettingsError, match="teamId"):
        parse_apns_apps(apps(entry))


def test_p12_that_is_not_base64_is_refused() -> None:
    with pytest.raises(SettingsError, match="not base64"):
        parse_apns_apps(apps({"bundleId": "com.c", "p12": "%%%"}))


def test_unreadable_private_key_is_a_credential_error() -> None:
    with pytest.raises(CredentialError):
        parse_apns_apps(apps(dict(TOKEN_APP, privateKey="not a key")))


def test_error_never_echoes_the_key() -> None:
    entry = {k: v for k, v in TOKEN_APP.items() if k != "keyId"}
    with pytest.raises(SettingsError) as caught:
        parse_apns_apps(apps(entry))
    assert "PRIVATE KEY" not in str(caught.value)


def test_setting_that_is_not_a_list_is_refused() -> None:
    with pytest.raises(SettingsError, match="JSON list"):
        parse_apns_apps(json.dumps(TOKEN_APP))
