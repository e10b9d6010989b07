"""Who is calling the HTTP API: an app user, as authentication established them.

:class:`Caller` is a plain value. ``shared.edges.auth`` makes one from a request's credentials;
the use cases (access tokens, the delivery log) and the composition root take it from there.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field


class AuthSource(enum.StrEnum):
    """How the caller proved who they are."""

    JWT = "jwt"
    EASY_AUTH = "easyauth"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated app user: the identity provider's issuer and subject."""

    issuer: str
    subject: str
    source: AuthSource
    # Entra ID's ``oid`` when the token or principal carries one: extra, not part of who the
    # caller is (that is issuer and subject), so equality ignores it.
    object_id: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        """The caller's stable key: SHA-256 hex of issuer, NUL, subject."""
        return caller_key(self.issuer, self.subject)


def caller_key(issuer: str, subject: str) -> str:
    """SHA-256 hex of ``issuer + "\\0" + subject`` (NUL cannot occur in either)."""
    return hashlib.sha256(f"{issuer}\0{subject}".encode()).hexdigest()
