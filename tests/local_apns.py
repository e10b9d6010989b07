"""The app's APNs side, pointed at the APNs simulator: provider keys, settings, devices.

Integration and e2e tests push through the real APNs client to ``devtools.apns_simulator``; this
is what they share to do so: an ES256 provider key the simulator trusts, the settings that name
it and the simulator's origins and CA, and device tokens and registrations to push to.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devtools.apns_simulator import ApnsSimulator
from shared.apns.notification import Environment
from shared.domain.devices import Device, DeviceKind, device_id_for

APP, TEAM, KEY_ID = "com.example.chat", "TEAM123456", "KEY1234567"


@dataclass(frozen=True)
class ProviderKey:
    """An ES256 provider token key (Apple's .p8), made on the fly."""

    key_id: str
    team_id: str
    private: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def private_pem(self) -> str:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    @property
    def public_pem(self) -> str:
        public = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return public.decode()

    def app(self, bundle_id: str) -> dict[str, str]:
        """The ``APNS_APPS`` entry of an app whose pushes this key signs."""
        return {
            "bundleId": bundle_id,
            "teamId": self.team_id,
            "keyId": self.key_id,
            "privateKey": self.private_pem,
        }

    def trust(self, sim: ApnsSimulator, *topics: str) -> None:
        """Make the simulator accept this key's tokens for ``topics`` (and their suffixes)."""
        sim.register_key(self.key_id, self.team_id, self.public_pem, topics=list(topics))


KEY = ProviderKey(KEY_ID, TEAM)


def simulator_settings(sim: ApnsSimulator, apps: Sequence[dict[str, str]]) -> dict[str, str]:
    """``APNS_APPS`` and the origins and CA file that send the app's pushes to ``sim``."""
    return {
        "APNS_APPS": json.dumps(list(apps)),
        "APNS_SANDBOX_ORIGIN": sim.sandbox_origin,
        "APNS_PRODUCTION_ORIGIN": sim.production_origin,
        "APNS_CA_FILE": str(sim.ca_file),
    }


def token(n: int) -> str:
    """Device token number ``n`` (64 hex digits)."""
    return f"{n:02x}" * 32


def sandbox_device(
    user: str,
    device_token: str,
    *,
    at: datetime,
    kind: DeviceKind = DeviceKind.ALERT,
    topic: str = APP,
    **fields: Any,
) -> Device:
    """A device of ``user`` as registration stores it, registered and renewed ``at``."""
    return Device(
        user_id=user,
        device_id=device_id_for(device_token),
        token=device_token,
        kind=kind,
        topic=topic,
        environment=fields.pop("environment", Environment.SANDBOX),
        registered_at=at,
        renewed_at=at,
        **fields,
    )
