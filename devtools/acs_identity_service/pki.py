"""The local ACS identity service's certificates: its own CA and a server certificate for
127.0.0.1 and localhost, kept in the state directory (a client trusting ``ca.pem`` keeps trusting
the service across restarts). P-256 keys: fast to generate."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = dt.timedelta(days=1)
_ORG = "pushrelay local ACS identity service (development only)"


@dataclass(frozen=True)
class ServerFiles:
    """Paths of the CA certificate (give it to clients) and the server's certificate and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ca(now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("pushrelay local ACS CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 3650 * _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _server(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 365 * _DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(san, critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


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
        ca, ca_key = _ca(now)
        ca_key_file.write_bytes(_pem_key(ca_key))
        ca_key_file.chmod(0o600)
        files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    if files.cert_file.exists() and files.key_file.exists():
        cert = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
        if cert.not_valid_after_utc > now + 7 * _DAY:
            return files
    cert, key = _server(ca, ca_key, now)
    files.key_file.write_bytes(_pem_key(key))
    files.key_file.chmod(0o600)
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files
