"""The ``APNS_APPS`` setting: which iOS apps we push to, and with which credentials.

A JSON list; each entry names one app (bundle ID) and either a token key or a certificate::

    [{"bundleId": "com.example.chat", "teamId": "ABCDE12345", "keyId": "KEY1234567",
      "privateKey": "-----BEGIN PRIVATE KEY-----\\n..."}            # or "privateKeyFile": path
     {"bundleId": "com.example.other", "p12": "<base64>",            # or "p12File": path
      "p12Password": "..."}]

Several bundle IDs, teams, keys and certificates may share one deployment; each app gets its own
APNs client (Apple binds a connection to one team and its topics at the first push).

Raises :class:`~shared.errors.SettingsError` naming the entry for anything unusable (secrets are
never echoed), and :class:`~shared.apns.errors.CredentialError` from a key or .p12 that cannot
be read.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.apns.certificate import CertificateCredential
from shared.apns.token import TokenCredential
from shared.errors import SettingsError
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.apns.client import ApnsClient

Credential = TokenCredential | CertificateCredential


@dataclass(frozen=True)
class ApnsApp:
    """One app of ``APNS_APPS``: its topic and credential."""

    bundle_id: str
    credential: Credential


def parse_apns_apps(text: str) -> list[ApnsApp]:
    """Every app of the setting, in order. Raises SettingsError (or CredentialError)."""
    if not text.strip():
        return []
    try:
        entries = json.loads(text)
    except ValueError:
        raise SettingsError("setting APNS_APPS must be a JSON list") from None
    if not isinstance(entries, list):
        raise SettingsError("setting APNS_APPS must be a JSON list")
    apps = [_app(n, entry) for n, entry in enumerate(entries)]
    seen: set[str] = set()
    for app in apps:
        if app.bundle_id in seen:
            raise SettingsError(f"setting APNS_APPS lists {app.bundle_id} twice")
        seen.add(app.bundle_id)
    return apps


def _app(n: int, entry: Any) -> ApnsApp:
    if not isinstance(entry, dict) or not isinstance(entry.get("bundleId"), str):
        raise SettingsError(f"setting APNS_APPS entry {n} needs a bundleId")
    bundle = entry["bundleId"]
    if any(k in entry for k in ("privateKey", "privateKeyFile", "keyId")):
        return ApnsApp(bundle, _token(bundle, entry))
    if any(k in entry for k in ("p12", "p12File")):
        return ApnsApp(bundle, _certificate(bundle, entry))
    raise SettingsError(
        f"setting APNS_APPS entry {bundle} needs privateKey/privateKeyFile or p12/p12File"
    )


def _text(bundle: str, entry: dict[str, Any], name: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not value:
        raise SettingsError(f"setting APNS_APPS entry {bundle} needs {name}")
    return value


def _token(bundle: str, entry: dict[str, Any]) -> TokenCredential:
    key_id, team_id = _text(bundle, entry, "keyId"), _text(bundle, entry, "teamId")
    if "privateKeyFile" in entry:
        path = _text(bundle, entry, "privateKeyFile")
        return TokenCredential.from_file(path, key_id=key_id, team_id=team_id)
    pem = _text(bundle, entry, "privateKey").replace("\\n", "\n")
    return TokenCredential(key_id=key_id, team_id=team_id, private_key_pem=pem)


def _certificate(bundle: str, entry: dict[str, Any]) -> CertificateCredential:
    password_text = entry.get("p12Password")
    if password_text is not None and not isinstance(password_text, str):
        raise SettingsError(f"setting APNS_APPS entry {bundle}: p12Password must be text")
    password = password_text.encode("utf-8") if password_text else None
    if "p12File" in entry:
        return CertificateCredential.from_file(_text(bundle, entry, "p12File"), password)
    try:
        data = base64.b64decode(_text(bundle, entry, "p12"), validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError(f"setting APNS_APPS entry {bundle}: p12 is not base64") from None
    return CertificateCredential(data, password)


class AppClients(Mapping[str, "ApnsClient"]):
    """One APNs client per app, by topic (bundle ID); closes them all with :meth:`aclose`."""

    def __init__(self, clients: Mapping[str, ApnsClient]) -> None:
        self._clients = dict(clients)

    def __getitem__(self, topic: str) -> ApnsClient:
        return self._clients[topic]

    def __iter__(self) -> Iterator[str]:
        return iter(self._clients)

    def __len__(self) -> int:
        return len(self._clients)

    async def aclose(self) -> None:
        """Close every client's connections."""
        for client in self._clients.values():
            await client.aclose()


def build_clients(apps: Sequence[ApnsApp], settings: Settings) -> AppClients:
    """An APNs client per app, with the origins, CA, connections and timeouts of ``settings``.

    Raises :class:`~shared.apns.errors.CredentialError` for an unusable certificate.
    """
    from shared.apns.client import ApnsClient, ApnsConfig

    return AppClients(
        {
            app.bundle_id: ApnsClient(
                ApnsConfig(
                    credential=app.credential,
                    sandbox_origin=settings.apns_sandbox_origin,
                    production_origin=settings.apns_production_origin,
                    ca_file=settings.apns_ca_file or None,
                    connections=settings.apns_connections,
                    request_timeout=settings.apns_request_timeout_seconds,
                    idle_timeout=settings.apns_idle_timeout_seconds,
                    default_budget=settings.apns_retry_budget_seconds,
                )
            )
            for app in apps
        }
    )
