"""The simulator's certificates: a CA that signs the TLS server certificate (SAN 127.0.0.1,
localhost) and a client CA that signs certificate-auth client certificates (.p12, UID = topic).

Everything is P-256 (fast to generate) and kept in the state directory, so a client that trusts
``ca.pem`` keeps trusting the simulator across restarts."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from devtools.pki import DAY, issue_ca, issue_leaf, pem_key, subject_name

_ORG = "pushrelay APNs simulator"


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
            if server.not_valid_after_utc > now + 30 * DAY:
                client_ca = x509.load_pem_x509_certificate(paths["client-ca"].read_bytes())
                client_key = serialization.load_pem_private_key(
                    paths["client-ca-key"].read_bytes(), password=None
                )
                assert isinstance(client_key, ec.EllipticCurvePrivateKey)
                return cls(
                    paths["ca"], paths["server"], paths["server-key"], paths["client-ca"],
                    client_ca, client_key,
                )  # fmt: skip
        ca, ca_key = issue_ca(subject_name("pushrelay APNs simulator CA", _ORG), now)
        server, server_key = issue_leaf(
            (ca, ca_key), subject_name("localhost", _ORG), now - DAY, now + 825 * DAY, server=True
        )
        client_ca, client_key = issue_ca(
            subject_name("pushrelay APNs simulator client CA", _ORG), now
        )
        for name, data in (
            ("ca", ca.public_bytes(serialization.Encoding.PEM)),
            ("ca-key", pem_key(ca_key)),
            ("server", server.public_bytes(serialization.Encoding.PEM)),
            ("server-key", pem_key(server_key)),
            ("client-ca", client_ca.public_bytes(serialization.Encoding.PEM)),
            ("client-ca-key", pem_key(client_key)),
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
            not_after = now + 365 * DAY
        not_before = min(now, not_after) - 30 * DAY
        cert, key = issue_leaf(
            (self.client_ca, self.client_ca_key),
            subject_name(f"Apple Push Services: {topic}", _ORG, uid=topic),
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
