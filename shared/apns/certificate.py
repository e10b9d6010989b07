"""TLS for APNs: the client context, and certificate-based auth from a .p12 file.

Python's ``ssl`` loads certificates only from files, so the .p12's key and chain are written to a
private temporary directory for the moment of loading, the key encrypted under a one-time
password, and removed at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
    pkcs12,
)
from cryptography.x509.oid import NameOID

from shared.apns.errors import CredentialError

logger = logging.getLogger(__name__)

EXPIRY_WARNING: Final = timedelta(days=30)


def client_tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A TLS 1.2+ client context offering ALPN ``h2``; ``ca_file`` is trusted besides system CAs.

    Raises :class:`CredentialError` when ``ca_file`` cannot be loaded.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise CredentialError(f"cannot load the APNs CA file {ca_file}") from exc
    return context


def load_p12(
    data: bytes,
    password: bytes | None,
    *,
    ca_file: str | None = None,
    now: Callable[[], datetime] | None = None,
) -> tuple[ssl.SSLContext, datetime]:
    """A client TLS context presenting the .p12's certificate, and the certificate's expiry.

    Logs a warning when the certificate expires within 30 days, an error when it already has.
    Raises :class:`CredentialError` for a wrong password or a file without key and certificate.
    """
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except (ValueError, TypeError) as exc:
        raise CredentialError("cannot open the APNs .p12 (wrong password or not PKCS#12)") from exc
    if key is None or cert is None:
        raise CredentialError("the APNs .p12 must hold a private key and its certificate")
    not_after = cert.not_valid_after_utc
    _warn_if_expiring(cert, not_after, (now or _utcnow)())
    context = client_tls_context(ca_file)
    one_time = secrets.token_bytes(32)
    with tempfile.TemporaryDirectory(prefix="apns-p12-") as folder:
        cert_path = Path(folder) / "cert.pem"
        key_path = Path(folder) / "key.pem"
        chain = cert.public_bytes(Encoding.PEM) + b"".join(
            c.public_bytes(Encoding.PEM) for c in extra
        )
        _write_private(cert_path, chain)
        _write_private(
            key_path,
            key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(one_time)),
        )
        try:
            context.load_cert_chain(cert_path, key_path, password=one_time)
        except ssl.SSLError as exc:
            raise CredentialError("the APNs .p12 key does not match its certificate") from exc
    return context, not_after


def certificate_topic(data: bytes, password: bytes | None) -> str | None:
    """The bundle ID an APNs certificate is for (its subject UID), if it names one."""
    try:
        _key, cert, _extra = pkcs12.load_key_and_certificates(data, password)
    except (ValueError, TypeError) as exc:
        raise CredentialError("cannot open the APNs .p12 (wrong password or not PKCS#12)") from exc
    if cert is None:
        return None
    return _uid(cert)


@dataclass(frozen=True)
class CertificateCredential:
    """Certificate-based APNs auth: a .p12 (bytes) and its password (neither is ever logged)."""

    p12: bytes = field(repr=False)
    password: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_file(cls, path: str | Path, password: bytes | None) -> CertificateCredential:
        """Read the .p12 at ``path``; raises :class:`CredentialError` if unreadable."""
        try:
            return cls(Path(path).read_bytes(), password)
        except OSError as exc:
            raise CredentialError(f"cannot read the APNs certificate file {path}") from exc


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _uid(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    if not values:
        return None
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _warn_if_expiring(cert: x509.Certificate, not_after: datetime, now: datetime) -> None:
    topic = _uid(cert) or "(no UID)"
    if not_after <= now:
        logger.error("APNs certificate for %s expired on %s", topic, not_after.isoformat())
    elif not_after - now <= EXPIRY_WARNING:
        logger.warning(
            "APNs certificate for %s expires on %s: renew it", topic, not_after.isoformat()
        )


def _utcnow() -> datetime:
    return datetime.now(UTC)
