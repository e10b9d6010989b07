"""Provider-token (JWT) checks: ES256 signature by a registered key, ``iss`` = the key's team.

Accepts JOSE r||s signatures (PyJWT) and DER signatures (Java's SHA256withECDSA, used by Pushy).
Time checks are separate (:func:`iat_reason`) because the decoded token is cached per connection.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

EXPIRED_AFTER_SECONDS = 3600
FUTURE_LEEWAY_SECONDS = 60


@dataclass(frozen=True)
class ProviderKey:
    """A registered signing key: its public half, team and (optionally) the topics it may push."""

    key_id: str
    team_id: str
    public_key: ec.EllipticCurvePublicKey
    topics: frozenset[str] | None

    @classmethod
    def from_pem(
        cls, key_id: str, team_id: str, pem: str | bytes, topics: Iterable[str] | None
    ) -> ProviderKey:
        """Load a P-256 public key (PEM; a private key PEM is accepted and reduced to its public
        half). Raises ValueError for anything else."""
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            loaded: Any = serialization.load_pem_public_key(data)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, password=None).public_key()
        if not isinstance(loaded, ec.EllipticCurvePublicKey) or loaded.curve.name != "secp256r1":
            raise ValueError("APNs keys are ES256: a P-256 EC key is required")
        return cls(key_id, team_id, loaded, None if topics is None else frozenset(topics))


@dataclass(frozen=True)
class DecodedToken:
    """A JWT after signature checks; ``reason`` is set when it is not acceptable."""

    header: dict[str, Any] | None
    claims: dict[str, Any] | None
    key: ProviderKey | None
    reason: str | None

    @property
    def iat(self) -> int | None:
        """The ``iat`` claim when it is a whole number."""
        value = (self.claims or {}).get("iat")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def decode_unverified(jwt: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Header and claims without any check (for the request log)."""
    try:
        head, body, _ = jwt.split(".")
        header, claims = json.loads(_b64(head)), json.loads(_b64(body))
    except (ValueError, binascii.Error):
        return None, None
    return (header if isinstance(header, dict) else None), (
        claims if isinstance(claims, dict) else None
    )


def decode_token(jwt: str, keys: Mapping[str, ProviderKey]) -> DecodedToken:
    """Check structure, algorithm, key id, signature and issuer of a provider token."""
    header, claims = decode_unverified(jwt)
    if header is None or claims is None:
        return DecodedToken(header, claims, None, "InvalidProviderToken")
    key = keys.get(str(header.get("kid")))
    if header.get("alg") != "ES256" or key is None:
        return DecodedToken(header, claims, key, "InvalidProviderToken")
    head, body, sig = jwt.split(".")
    try:
        signature = _b64(sig)
    except (ValueError, binascii.Error):
        return DecodedToken(header, claims, key, "InvalidProviderToken")
    if len(signature) == 64:
        signature = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
    try:
        key.public_key.verify(signature, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return DecodedToken(header, claims, key, "InvalidProviderToken")
    decoded = DecodedToken(header, claims, key, None)
    if claims.get("iss") != key.team_id or decoded.iat is None:
        return DecodedToken(header, claims, key, "InvalidProviderToken")
    return decoded


def iat_reason(iat: int, now: float) -> str | None:
    """ExpiredProviderToken for an iat over an hour old, InvalidProviderToken for one from the
    future (beyond a minute of skew), else None."""
    if now - iat > EXPIRED_AFTER_SECONDS:
        return "ExpiredProviderToken"
    if iat - now > FUTURE_LEEWAY_SECONDS:
        return "InvalidProviderToken"
    return None


def topic_allowed(key: ProviderKey, topic: str, base: str) -> bool:
    """A key without topics may push any topic; a topic-specific key its bundle IDs and their
    push-type topics."""
    return key.topics is None or topic in key.topics or base in key.topics
