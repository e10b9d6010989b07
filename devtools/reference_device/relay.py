"""The phone's HTTP side: the development identity provider and pushrelay's API.

The same calls as ``PushRelayAPI.swift`` in docs/ios.md:

- ``POST /api/token`` -> ``{acsUserId, acsEndpoint, userToken, expiresOn}``;
- ``PUT /api/devices`` -> 200 ``{deviceId, keyExpiresAt?}``, or 202 ``{"status": "proofRequired",
  deviceId, expiresAt}`` when another user still holds the token (the token-move proof: the
  same PUT again with ``"tokenProof": <code from the background push>`` gets 200; a wrong or
  expired code is 403);
- ``DELETE /api/devices/{deviceId}`` -> 204 (404 when it is not the caller's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx


class RelayError(Exception):
    """pushrelay or the identity provider answered something the app cannot go on with."""

    def __init__(self, status: int, body: Any, what: str) -> None:
        super().__init__(f"{what}: HTTP {status} {body!r}")
        self.status = status
        self.body = body


@dataclass(frozen=True, slots=True)
class AcsToken:
    """``POST /api/token``'s answer (the user token is not kept anywhere else)."""

    acs_user_id: str
    acs_endpoint: str
    user_token: str
    expires_on: str


@dataclass(frozen=True, slots=True)
class Registered:
    """200 from ``PUT /api/devices``."""

    device_id: str
    key_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class ProofRequired:
    """202 from ``PUT /api/devices``: another user holds the token; a proof push is on its way."""

    device_id: str
    expires_at: datetime | None


def parse_time(text: Any) -> datetime | None:
    """An ISO 8601 time from an answer (``Z`` accepted), or None."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class DevIdentityProvider:
    """Sign-in through the development identity provider: ``GET {token_url}?sub=S``.

    ``token_url`` is the provider's ``token_url`` (the local run's summary prints it). Not its
    issuer: the issuer stays the same across runs of one folder while the port may move.
    """

    def __init__(
        self, token_url: str, http: httpx.Client, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._url = token_url
        self._http = http
        self._monotonic = monotonic
        self._cached: dict[str, tuple[str, float]] = {}

    def access_token(self, subject: str) -> str:
        """A bearer token for ``subject``, fetched again when it is close to expiring."""
        cached = self._cached.get(subject)
        if cached is not None and cached[1] > self._monotonic():
            return cached[0]
        answer = self._http.get(self._url, params={"sub": subject})
        if answer.status_code != 200:
            raise RelayError(answer.status_code, answer.text, "identity provider")
        body = answer.json()
        # Fetch again a minute before the provider's expiry (its clock is the real one).
        lifetime = max(float(body.get("expires_in", 3600)) - 60.0, 0.0)
        self._cached[subject] = (body["access_token"], self._monotonic() + lifetime)
        return str(body["access_token"])


class RelayClient:
    """pushrelay's HTTP API as the app calls it."""

    def __init__(self, base_url: str, http: httpx.Client) -> None:
        self._base = base_url.rstrip("/") + "/api"
        self._http = http

    def issue_token(self, bearer: str) -> AcsToken:
        """``POST /api/token``. Raises RelayError for anything but 200."""
        answer = self._http.post(self._base + "/token", headers=_auth(bearer))
        body = _json(answer)
        if answer.status_code != 200 or not isinstance(body, dict):
            raise RelayError(answer.status_code, body, "POST /api/token")
        return AcsToken(
            str(body["acsUserId"]),
            str(body["acsEndpoint"]),
            str(body["userToken"]),
            str(body["expiresOn"]),
        )

    def put_device(self, bearer: str, body: Mapping[str, Any]) -> Registered | ProofRequired:
        """``PUT /api/devices``. Raises RelayError for 4xx/5xx (403: a refused proof)."""
        answer = self._http.put(self._base + "/devices", headers=_auth(bearer), json=dict(body))
        data = _json(answer)
        if answer.status_code == 200 and isinstance(data, dict):
            return Registered(str(data["deviceId"]), parse_time(data.get("keyExpiresAt")))
        if (
            answer.status_code == 202
            and isinstance(data, dict)
            and data.get("status") == "proofRequired"
        ):
            return ProofRequired(str(data["deviceId"]), parse_time(data.get("expiresAt")))
        raise RelayError(answer.status_code, data, "PUT /api/devices")

    def delete_device(self, bearer: str, device_id: str) -> bool:
        """``DELETE /api/devices/{id}``: True when removed, False when it was not there (404)."""
        answer = self._http.delete(self._base + "/devices/" + device_id, headers=_auth(bearer))
        if answer.status_code in (204, 404):
            return answer.status_code == 204
        raise RelayError(answer.status_code, _json(answer), "DELETE /api/devices")

    def list_devices(self, bearer: str) -> list[dict[str, Any]]:
        """``GET /api/devices``: the caller's devices (no keys, tokens shortened)."""
        answer = self._http.get(self._base + "/devices", headers=_auth(bearer))
        data = _json(answer)
        if answer.status_code != 200 or not isinstance(data, dict):
            raise RelayError(answer.status_code, data, "GET /api/devices")
        devices: list[dict[str, Any]] = data["devices"]
        return devices


def _auth(bearer: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + bearer}


def _json(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return answer.text
