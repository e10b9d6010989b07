"""The local ACS identity service, proven against the official azure-communication-identity client,
and our own client proven against it; tampered signatures and stale dates are rejected."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from azure.communication.identity import (
    CommunicationIdentityClient,
    CommunicationTokenScope,
    CommunicationUserIdentifier,
)
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from devtools.acs_identity_service import AcsIdentityService
from shared.acs.identity import (
    AcsIdentityClient,
    AcsRejectedError,
    HmacAuth,
    parse_connection_string,
    tls_context,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[AcsIdentityService]:
    with AcsIdentityService.start(tmp_path) as svc:
        yield svc


def _official(
    svc: AcsIdentityService, connection: str | None = None
) -> CommunicationIdentityClient:
    return CommunicationIdentityClient.from_connection_string(
        connection or svc.connection_string, connection_verify=str(svc.ca_file)
    )


def test_official_client_creates_an_identity(service: AcsIdentityService) -> None:
    user = _official(service).create_user()
    assert user.properties["id"].startswith("8:acs:")
    assert service.identities() == [user.properties["id"]]


def test_official_client_gets_a_token_with_the_requested_lifetime(
    service: AcsIdentityService,
) -> None:
    client = _official(service)
    user = client.create_user()
    token = client.get_token(
        user, [CommunicationTokenScope.CHAT], token_expires_in=timedelta(hours=2)
    )
    # azure-communication-identity 1.5 hands expiresOn through as the service's ISO 8601 text.
    remaining = datetime.fromisoformat(str(token.expires_on)) - datetime.now(UTC)
    assert timedelta(minutes=119) < remaining <= timedelta(hours=2)
    claims = json.loads(base64.urlsafe_b64decode(token.token.split(".")[1] + "=="))
    assert claims["skypeid"] == user.properties["id"].removeprefix("8:")


def test_official_client_creates_user_and_token_at_once(service: AcsIdentityService) -> None:
    user, token = _official(service).create_user_and_token([CommunicationTokenScope.VOIP])
    assert service.identities() == [user.properties["id"]]
    assert token.token.count(".") == 2


def test_official_client_revokes_and_deletes(service: AcsIdentityService) -> None:
    client = _official(service)
    user = client.create_user()
    client.revoke_tokens(user)
    client.delete_user(user)
    assert service.identities() == []


def test_token_for_a_deleted_identity_is_404(service: AcsIdentityService) -> None:
    client = _official(service)
    user = client.create_user()
    client.delete_user(user)
    with pytest.raises(HttpResponseError) as caught:
        client.get_token(user, [CommunicationTokenScope.CHAT])
    assert caught.value.status_code == 404


def test_wrong_access_key_is_rejected(service: AcsIdentityService) -> None:
    other_key = base64.b64encode(b"x" * 64).decode()
    wrong = f"endpoint={service.endpoint}/;accesskey={other_key}"
    with pytest.raises((ClientAuthenticationError, HttpResponseError)) as caught:
        _official(service, wrong).create_user()
    assert caught.value.status_code == 401
    assert service.identities() == []


def _signed_request(
    svc: AcsIdentityService, *, sent_at: datetime, body: bytes = b"{}"
) -> httpx.Request:
    key = base64.b64decode(svc.access_key)
    request = httpx.Request(
        "POST",
        f"{svc.endpoint}/identities?api-version=2023-10-01",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    flow = HmacAuth(key, clock=lambda: sent_at).auth_flow(request)
    return next(flow)


def _send(svc: AcsIdentityService, request: httpx.Request) -> httpx.Response:
    with httpx.Client(verify=tls_context(str(svc.ca_file))) as client:
        return client.send(request)


def test_correctly_signed_request_is_accepted(service: AcsIdentityService) -> None:
    response = _send(service, _signed_request(service, sent_at=datetime.now(UTC)))
    assert response.status_code == 201


def test_tampered_signature_is_rejected(service: AcsIdentityService) -> None:
    request = _signed_request(service, sent_at=datetime.now(UTC))
    auth = request.headers["Authorization"]
    flipped = "A" if auth[-2] != "A" else "B"
    request.headers["Authorization"] = auth[:-2] + flipped + auth[-1]
    response = _send(service, request)
    assert response.status_code == 401
    assert service.identities() == []


def test_body_changed_after_signing_is_rejected(service: AcsIdentityService) -> None:
    signed = _signed_request(service, sent_at=datetime.now(UTC), body=b'{"a":1}')
    tampered = httpx.Request("POST", signed.url, headers=signed.headers, content=b'{"a":2}')
    assert _send(service, tampered).status_code == 401


def test_date_older_than_15_minutes_is_rejected(service: AcsIdentityService) -> None:
    stale = datetime.now(UTC) - timedelta(minutes=16)
    response = _send(service, _signed_request(service, sent_at=stale))
    assert response.status_code == 401
    assert "15 minutes" in response.json()["error"]["message"]


def test_date_14_minutes_old_is_still_accepted(service: AcsIdentityService) -> None:
    recent = datetime.now(UTC) - timedelta(minutes=14)
    assert _send(service, _signed_request(service, sent_at=recent)).status_code == 201


async def test_our_client_creates_issues_and_deletes(service: AcsIdentityService) -> None:
    conn = parse_connection_string(service.connection_string)
    client = AcsIdentityClient(
        conn.endpoint, HmacAuth(conn.access_key), verify=tls_context(str(service.ca_file))
    )
    try:
        raw_id = await client.create_identity()
        token = await client.issue_token(raw_id, ["chat", "voip"], 60)
        await client.delete_identity(raw_id)
    finally:
        await client.aclose()
    assert raw_id.startswith("8:acs:")
    assert datetime.fromisoformat(token.expires_on) > datetime.now(UTC) + timedelta(minutes=59)
    assert service.identities() == []


async def test_our_client_reports_a_refusal_for_an_unknown_identity(
    service: AcsIdentityService,
) -> None:
    conn = parse_connection_string(service.connection_string)
    client = AcsIdentityClient(
        conn.endpoint, HmacAuth(conn.access_key), verify=tls_context(str(service.ca_file))
    )
    try:
        with pytest.raises(AcsRejectedError) as caught:
            await client.issue_token("8:acs:nobody", ["chat"], 60)
    finally:
        await client.aclose()
    assert caught.value.status == 404


def test_cli_prints_settings_serves_and_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.acs_identity_service", "--state-dir", str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        settings = line["settings"]
        client = CommunicationIdentityClient.from_connection_string(
            settings["ACS_CONNECTION_STRING"], connection_verify=settings["ACS_CA_FILE"]
        )
        user = client.create_user()
        assert isinstance(user, CommunicationUserIdentifier)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    assert code == 0


def test_stats_count_api_calls_refused_ones_included_and_not_control_calls(
    service: AcsIdentityService,
) -> None:
    _send(service, _signed_request(service, sent_at=datetime.now(UTC)))
    _send(service, _signed_request(service, sent_at=datetime.now(UTC) - timedelta(hours=1)))
    with httpx.Client(verify=tls_context(str(service.ca_file))) as client:
        client.get(f"{service.endpoint}/_dev/identities")
        stats = client.get(f"{service.endpoint}/_dev/stats")
    assert (stats.status_code, stats.json()) == (200, {"apiCalls": 2})
