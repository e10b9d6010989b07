"""The local ACS identity service's certificates: its own CA and a server certificate for
127.0.0.1 and localhost, kept in the state directory (a client trusting ``ca.pem`` keeps trusting
the service across restarts). P-256 keys: fast to generate."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devtools.pki import DAY, issue_ca, issue_leaf, pem_key, subject_name

_ORG = "pushrelay local ACS identity service (development only)"


@dataclass(frozen=True)
class ServerFiles:
    """Paths of the CA certificate (give it to clients) and the server's certificate and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def ensure_server_files(state_dir: Path) -> ServerFiles:
    """The CA and server certificate in ``state_dir``, created once (renewed when expired)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    files = ServerFiles(
        state_dir / "acs-ca.pem", state_dir / "acs-server.pem", state_dir / "acs-server-key.pem"
    )
    now = dt.datetime.now(dt.UTC)
    ca_key_file = state_dir / "acs-ca-key.pem"
    if files.ca_file.exists() and ca_key_file.exists():
        ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_file.read_bytes(), None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise RuntimeError(f"{ca_key_file} is not a P-256 key")
        ca_key = loaded
    else:
        ca, ca_key = issue_ca(subject_name("pushrelay local ACS CA", _ORG), now)
        ca_key_file.write_bytes(pem_key(ca_key))
        ca_key_file.chmod(0o600)
        files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    if files.cert_file.exists() and files.key_file.exists():
        cert = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
        if cert.not_valid_after_utc > now + 7 * DAY:
            return files
    subject = subject_name("127.0.0.1", _ORG)
    cert, key = issue_leaf((ca, ca_key), subject, now - DAY, now + 365 * DAY, server=True)
    files.key_file.write_bytes(pem_key(key))
    files.key_file.chmod(0o600)
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files
