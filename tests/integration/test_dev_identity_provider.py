"""The development identity provider over HTTP, and our JWKS cache (PyJWKClient) against it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from devtools.dev_identity_provider import DevIdentityProvider
from shared.domain.callers import AuthSource, Caller
from shared.edges.auth import Authenticator, AuthUnavailableError, HttpJwks
from shared.settings import load_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevIdentityProvider]:
    with DevIdentityProvider.start(tmp_path_factory.mktemp("idp")) as provider:
        yield provider


@pytest.fixture(autouse=True)
def _no_outage(idp: DevIdentityProvider) -> Iterator[None]:
    idp.outage = False
    yield
    idp.outage = False


def _authenticator(idp: DevIdentityProvider, jwks: HttpJwks) -> Authenticator:
    return Authenticator(load_settings(idp.settings, require=False), jwks)


async def test_token_from_the_token_url_authenticates(idp: DevIdentityProvider) -> None:
    async with httpx.AsyncClient() as client:
        answer = (await client.get(idp.token_url, params={"sub": "alice"})).json()
    auth = _authenticator(idp, HttpJwks(idp.jwks_url))
    caller = await auth.authenticate({"Authorization": f"Bearer {answer['access_token']}"})
    assert caller == Caller(idp.issuer, "alice", AuthSource.JWT)


async def test_token_url_without_subject_is_400(idp: DevIdentityProvider) -> None:
    async with httpx.AsyncClient() as client:
        assert (await client.get(idp.token_url)).status_code == 400


async def test_jwks_outage_before_any_fetch_is_unavailable(idp: DevIdentityProvider) -> None:
    idp.outage = True
    jwks = HttpJwks(idp.jwks_url)
    with pytest.raises(AuthUnavailableError):
        await jwks.key_for(idp.kid)


async def test_cached_keys_outlive_a_jwks_outage(idp: DevIdentityProvider) -> None:
    ticks = [0.0]
    jwks = HttpJwks(idp.jwks_url, lifespan=60, monotonic=lambda: ticks[0])
    await jwks.key_for(idp.kid)
    idp.outage = True
    ticks[0] = 120.0
    assert await jwks.key_for(idp.kid) is not None


async def test_keys_are_fetched_once_for_many_tokens(idp: DevIdentityProvider) -> None:
    before = idp.jwks_requests
    auth = _authenticator(idp, HttpJwks(idp.jwks_url))
    for sub in ("a", "b", "c"):
        await auth.authenticate({"Authorization": f"Bearer {idp.token(sub)}"})
    assert idp.jwks_requests - before == 1


async def test_outage_switch_is_reachable_over_http(idp: DevIdentityProvider) -> None:
    async with httpx.AsyncClient() as client:
        await client.post(f"{idp.base_url}/control/outage", params={"on": "true"})
        assert (await client.get(idp.jwks_url)).status_code == 503


def test_cli_prints_settings_and_token_url_and_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.dev_identity_provider", "--state-dir", str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        assert set(line["settings"]) == {"AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE", "AUTH_JWKS_URL"}
        token = httpx.get(line["token_url"], params={"sub": "alice"}).json()["access_token"]
        assert token.count(".") == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    assert code == 0


# --- restarts on one folder keep the issuer, the keys and (when free) the port ------------------


def test_a_restart_on_the_same_folder_keeps_issuer_keys_and_port(tmp_path: Path) -> None:
    """Before: every start took a new port and so a new issuer: the same user became a new
    caller, with a new ACS identity and none of their devices."""
    with DevIdentityProvider.start(tmp_path) as first:
        issuer, kid, port, jwks = first.issuer, first.kid, first.port, first.jwks()
        token = first.token("alice")
    with DevIdentityProvider.start(tmp_path) as second:
        assert (second.issuer, second.kid, second.port) == (issuer, kid, port)
        assert second.jwks() == jwks
        assert second.settings["AUTH_JWT_ISSUER"] == issuer
        assert jwt.decode(token, options={"verify_signature": False})["iss"] == second.issuer


async def test_a_restart_whose_port_is_taken_keeps_the_issuer(tmp_path: Path) -> None:
    with DevIdentityProvider.start(tmp_path) as first:
        issuer, port = first.issuer, first.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with DevIdentityProvider.start(tmp_path) as second:
            assert second.port != port and second.issuer == issuer
            jwks = HttpJwks(second.jwks_url)
            caller = await _authenticator(second, jwks).authenticate(
                {"Authorization": "Bearer " + second.token("alice")}
            )
    assert caller == Caller(issuer, "alice", AuthSource.JWT)


def test_different_folders_are_different_issuers(tmp_path: Path) -> None:
    with (
        DevIdentityProvider.start(tmp_path / "a") as a,
        DevIdentityProvider.start(tmp_path / "b") as b,
    ):
        assert a.issuer != b.issuer and a.kid != b.kid
