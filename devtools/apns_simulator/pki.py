"""The simulator's certificates: a CA that signs the TLS server certificate (SAN 127.0.0.1,
localhost) and a client CA that signs certificate-auth client certificates (.p12, UID = topic).

Everything is P-256 (fast to generate) and kept in the state directory, so a client that trusts
``ca.pem`` keeps trusting the simulator across restarts."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = dt.timedelta(days=1)


def _name(common_name: str, uid: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if uid is not None:
        attrs.insert(0, x509.NameAttribute(NameOID.USER_ID, uid))
    attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pushrelay APNs simulator"))
    return x509.Name(attrs)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue_ca(
    common_name: str, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
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


def _issue_leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    not_before: dt.datetime,
    not_after: dt.datetime,
    *,
    server: bool,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files in the state directory plus the client CA in memory."""

    ca_file: Path
    server_cert_file: Path
    server_key_file: Path
    client_ca_file: Path
    client_ca: x509.Certificate
    client_ca_key: ec.EllipticCurvePrivateKey

    @classmethod
    def load_or_create(cls, state_dir: Path) -> Pki:
        """Reuse the certificates in ``state_dir`` when present and valid, else create them."""
        state_dir.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        paths = {
            name: state_dir / f"{name}.pem"
            for name in ("ca", "ca-key", "server", "server-key", "client-ca", "client-ca-key")
        }
        if all(p.exists() for p in paths.values()):
            server = x509.load_pem_x509_certificate(paths["server"].read_bytes())
            if server.not_valid_after_utc > now + 30 * _DAY:
                client_ca = x509.load_pem_x509_certificate(paths["client-ca"].read_bytes())
                client_key = serialization.load_pem_private_key(
                    paths["client-ca-key"].read_bytes(), password=None
                )
                assert isinstance(client_key, ec.EllipticCurvePrivateKey)
                return cls(
                    paths["ca"], paths["server"], paths["server-key"], paths["client-ca"],
                    client_ca, client_key,
                )  # fmt: skip
        ca, ca_key = _issue_ca("pushrelay APNs simulator CA", now)
        server, server_key = _issue_leaf(
            ca, ca_key, _name("localhost"), now - _DAY, now + 825 * _DAY, server=True
        )
        client_ca, client_key = _issue_ca("pushrelay APNs simulator client CA", now)
        for name, data in (
            ("ca", ca.public_bytes(serialization.Encoding.PEM)),
            ("ca-key", _pem_key(ca_key)),
            ("server", server.public_bytes(serialization.Encoding.PEM)),
            ("server-key", _pem_key(server_key)),
            ("client-ca", client_ca.public_bytes(serialization.Encoding.PEM)),
            ("client-ca-key", _pem_key(client_key)),
        ):
            paths[name].write_bytes(data)
            if name.endswith("key"):
                paths[name].chmod(0o600)
        return cls(
            paths["ca"], paths["server"], paths["server-key"], paths["client-ca"],
            client_ca, client_key,
        )  # fmt: skip

    def client_p12(
        self,
        topic: str,
        *,
        now: dt.datetime,
        not_after: dt.datetime | None,
        password: bytes | None,
    ) -> bytes:
        """A .p12 with a client certificate (UID = topic) and its key, signed by the client CA."""
        if not_after is None:
            not_after = now + 365 * _DAY
        not_before = min(now, not_after) - 30 * _DAY
        cert, key = _issue_leaf(
            self.client_ca,
            self.client_ca_key,
            _name(f"Apple Push Services: {topic}", uid=topic),
            not_before,
            not_after,
            server=False,
        )
        encryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return pkcs12.serialize_key_and_certificates(topic.encode(), key, cert, None, encryption)


def certificate_identity(der: bytes) -> tuple[str | None, dt.datetime]:
    """The UID (topic) and expiry of a client certificate presented on a connection."""
    cert = x509.load_der_x509_certificate(der)
    uids = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    uid = uids[0].value if uids else None
    return (uid if isinstance(uid, str) else None), cert.not_valid_after_utc
