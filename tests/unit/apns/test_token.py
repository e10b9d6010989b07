"""Provider tokens: ES256, reused, re-signed at ~50 min, never twice within 20 min."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from shared.apns.errors import CredentialError
from shared.apns.token import ProviderToken, TokenCredential
from tests.unit.apns.keys import new_p8

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def p8() -> tuple[str, str]:
    return new_p8()


def _decode(header: str, public_pem: str) -> tuple[dict[str, object], dict[str, object]]:
    assert header.startswith("bearer ")
    token = header.removeprefix("bearer ")
    claims = jwt.decode(token, public_pem, algorithms=["ES256"], options={"verify_iat": False})
    return jwt.get_unverified_header(token), claims


def test_token_is_es256_with_kid_iss_and_iat(p8: tuple[str, str]) -> None:
    token = ProviderToken("KEY1234567", "TEAM123456", p8[0], FakeClock())
    header, claims = _decode(token.authorization(), p8[1])
    assert header["alg"] == "ES256" and header["kid"] == "KEY1234567"
    assert claims == {"iss": "TEAM123456", "iat": int(T0)}


def test_token_is_reused_until_fifty_minutes(p8: tuple[str, str]) -> None:
    clock = FakeClock()
    token = ProviderToken("KEY1234567", "TEAM123456", p8[0], clock)
    first = token.authorization()
    clock.now += 49 * 60
    assert token.authorization() == first
    clock.now += 60
    renewed = token.authorization()
    assert renewed != first
    assert _decode(renewed, p8[1])[1]["iat"] == int(T0 + 50 * 60)


def test_renew_is_refused_within_twenty_minutes(p8: tuple[str, str]) -> None:
    clock = FakeClock()
    token = ProviderToken("KEY1234567", "TEAM123456", p8[0], clock)
    first = token.authorization()
    clock.now += 19 * 60
    assert token.renew() is False
    assert token.authorization() == first
    clock.now += 60
    assert token.renew() is True
    assert token.authorization() != first
    assert token.signed_at == T0 + 20 * 60


def test_each_connection_gets_its_own_token(p8: tuple[str, str]) -> None:
    clock = FakeClock()
    credential = TokenCredential("KEY1234567", "TEAM123456", p8[0])
    a = credential.provider_token(clock)
    first = a.authorization()
    clock.now += 30 * 60
    b = credential.provider_token(clock)
    assert b.authorization() != first
    # The older connection keeps its token: a shared refresh must not reach it early.
    assert a.authorization() == first


def test_signed_at_is_none_before_first_use(p8: tuple[str, str]) -> None:
    assert ProviderToken("KEY1234567", "TEAM123456", p8[0], FakeClock()).signed_at is None


def test_token_loads_from_a_p8_file(p8: tuple[str, str], tmp_path: Path) -> None:
    path = tmp_path / "AuthKey_KEY1234567.p8"
    path.write_text(p8[0])
    token = ProviderToken.from_file(path, "KEY1234567", "TEAM123456", FakeClock())
    assert _decode(token.authorization(), p8[1])[1]["iss"] == "TEAM123456"


def test_missing_key_file_is_a_credential_error(tmp_path: Path) -> None:
    with pytest.raises(CredentialError):
        TokenCredential.from_file(tmp_path / "nope.p8", key_id="K", team_id="T")


def test_garbage_key_is_a_credential_error() -> None:
    with pytest.raises(CredentialError):
        TokenCredential("KEY1234567", "TEAM123456", "-----BEGIN PRIVATE KEY-----\nxx\n")


def test_rsa_key_is_a_credential_error() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    with pytest.raises(CredentialError):
        TokenCredential("KEY1234567", "TEAM123456", pem)


def test_refresh_outside_apple_window_is_rejected(p8: tuple[str, str]) -> None:
    with pytest.raises(CredentialError):
        ProviderToken("KEY1234567", "TEAM123456", p8[0], FakeClock(), refresh_after=61 * 60)
    with pytest.raises(CredentialError):
        ProviderToken("KEY1234567", "TEAM123456", p8[0], FakeClock(), refresh_after=10 * 60)


def test_key_never_appears_in_repr(p8: tuple[str, str]) -> None:
    credential = TokenCredential("KEY1234567", "TEAM123456", p8[0])
    assert "PRIVATE" not in repr(credential)
