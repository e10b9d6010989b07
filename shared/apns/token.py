"""The provider authentication token (JWT, ES256) and its rotation rules.

Apple: the token's ``iat`` must be under an hour old (else 403 ExpiredProviderToken), and a
connection that sees a *new* token more than once per 20 minutes answers 429
TooManyProviderTokenUpdates. Sharing one token across connections made late-joining connections
see two tokens in quick succession (Pushy #931, reverted in PR #946), so every connection gets its
own :class:`ProviderToken`, signed when the connection opens and re-signed at ~50 minutes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from shared.apns.errors import CredentialError

logger = logging.getLogger(__name__)

REFRESH_AFTER_SECONDS: Final = 50 * 60
MIN_RESIGN_SECONDS: Final = 20 * 60
MAX_TOKEN_AGE_SECONDS: Final = 60 * 60


def load_signing_key(private_key_pem: str | bytes) -> ec.EllipticCurvePrivateKey:
    """Parse a .p8 (PKCS#8 PEM) APNs auth key; raises :class:`CredentialError` if unusable."""
    data = private_key_pem.encode("ascii") if isinstance(private_key_pem, str) else private_key_pem
    try:
        key = load_pem_private_key(data.strip(), password=None)
    except (ValueError, TypeError) as exc:
        raise CredentialError("the APNs auth key is not a PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise CredentialError("the APNs auth key must be an EC P-256 key (ES256)")
    return key


def _check_id(kind: str, value: str) -> None:
    if not value or not value.isascii() or not value.isalnum():
        raise CredentialError(f"APNs {kind} must be letters and digits (Apple issues 10)")


@dataclass(frozen=True)
class TokenCredential:
    """Token-based APNs auth: the key ID, team ID and .p8 private key (never logged).

    The key is parsed when the credential is made, so a bad key fails at start-up with
    :class:`CredentialError`, not on the first push.
    """

    key_id: str
    team_id: str
    private_key_pem: str = field(repr=False)
    _key: ec.EllipticCurvePrivateKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_id("key ID", self.key_id)
        _check_id("team ID", self.team_id)
        object.__setattr__(self, "_key", load_signing_key(self.private_key_pem))

    @classmethod
    def from_file(cls, path: str | Path, *, key_id: str, team_id: str) -> TokenCredential:
        """Read the .p8 file at ``path``; raises :class:`CredentialError` if unreadable."""
        try:
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialError(f"cannot read the APNs auth key file {path}") from exc
        return cls(key_id=key_id, team_id=team_id, private_key_pem=text)

    def provider_token(self, clock: Callable[[], float] = time.time) -> ProviderToken:
        """A fresh, unsigned :class:`ProviderToken` for one connection (key parsed once)."""
        return ProviderToken(self.key_id, self.team_id, self._key, clock)


class ProviderToken:
    """The JWT one connection sends: signed on first use, reused, re-signed at ~50 minutes.

    ``clock`` returns UNIX seconds (NTP-synced wall clock: it becomes ``iat``); ages are measured
    with the same clock, so tests drive both with one fake. Not thread-safe (one event loop).
    """

    __slots__ = (
        "_clock",
        "_header",
        "_key",
        "_min_resign",
        "_refresh_after",
        "_signed_at",
        "key_id",
        "team_id",
    )

    def __init__(
        self,
        key_id: str,
        team_id: str,
        private_key_pem: str | bytes | ec.EllipticCurvePrivateKey,
        clock: Callable[[], float] = time.time,
        *,
        refresh_after: float = REFRESH_AFTER_SECONDS,
        min_resign_interval: float = MIN_RESIGN_SECONDS,
    ) -> None:
        if not min_resign_interval <= refresh_after < MAX_TOKEN_AGE_SECONDS:
            raise CredentialError("token refresh must fall between 20 and 60 minutes")
        _check_id("key ID", key_id)
        _check_id("team ID", team_id)
        self.key_id = key_id
        self.team_id = team_id
        self._key = (
            private_key_pem
            if isinstance(private_key_pem, ec.EllipticCurvePrivateKey)
            else load_signing_key(private_key_pem)
        )
        self._clock = clock
        self._refresh_after = refresh_after
        self._min_resign = min_resign_interval
        self._header = ""
        self._signed_at = 0.0

    @classmethod
    def from_file(
        cls, path: str | Path, key_id: str, team_id: str, clock: Callable[[], float] = time.time
    ) -> ProviderToken:
        """A token signer for the .p8 file at ``path``; raises :class:`CredentialError`."""
        credential = TokenCredential.from_file(path, key_id=key_id, team_id=team_id)
        return credential.provider_token(clock)

    @property
    def signed_at(self) -> float | None:
        """When the current JWT was signed (its ``iat``), or None before the first use."""
        return self._signed_at if self._header else None

    def authorization(self) -> str:
        """The ``authorization`` value (``bearer <JWT>``); re-signs once it is ~50 min old."""
        if not self._header or self._clock() - self._signed_at >= self._refresh_after:
            self._sign()
        return self._header

    def renew(self) -> bool:
        """Re-sign now unless the current JWT is under 20 minutes old; True if it re-signed."""
        if self._header and self._clock() - self._signed_at < self._min_resign:
            return False
        self._sign()
        return True

    def _sign(self) -> None:
        now = self._clock()
        claims = {"iss": self.team_id, "iat": int(now)}
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.key_id})
        self._header = "bearer " + token
        self._signed_at = float(int(now))
        logger.debug("signed a provider token for key %s", self.key_id)
