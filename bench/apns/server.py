"""The benchmark's APNs stand-in: Debian's nginx on 127.0.0.1 answering every push 200.

nginx is not an APNs simulator: it checks nothing and answers ``200`` with the request's
``apns-id`` echoed (aioapns matches answers to requests by that header). It is fast and written
in C, so it measures the clients, not the server (h2load, the ceiling, shows how far it goes).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Credentials:
    """Files the runners share: the CA nginx's certificate chains to, and the ES256 .p8 key."""

    ca_file: Path
    cert_file: Path
    cert_key_file: Path
    p8_file: Path


def make_credentials(directory: Path) -> Credentials:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost, and an APNs auth key."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pushrelay bench CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    files = Credentials(
        ca_file=directory / "ca.pem",
        cert_file=directory / "server.pem",
        cert_key_file=directory / "server.key",
        p8_file=directory / "AuthKey_BENCH00001.p8",
    )
    files.ca_file.write_bytes(ca.public_bytes(Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(Encoding.PEM))
    files.cert_key_file.write_bytes(
        key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())
    )
    apns_key = ec.generate_private_key(ec.SECP256R1())
    files.p8_file.write_bytes(
        apns_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    return files


def nginx_version(binary: str = "nginx") -> str:
    """``nginx -v``'s version, e.g. ``1.22.1``."""
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=True)
    match = re.search(r"nginx/(\S+)", out.stderr + out.stdout)
    return match.group(1) if match else "unknown"


def nginx_config(directory: Path, port: int, credentials: Credentials, version: str) -> str:
    """The server: HTTP/2 + TLS, 1 worker, no log, every request answered 200 + apns-id."""
    # ``http2 on`` arrived in nginx 1.25.1; older ones (Debian 12 has 1.22) take it on listen.
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:3]) or (0,)
    modern = parts >= (1, 25, 1)
    listen = (
        f"listen {HOST}:{port} ssl;\n        http2 on;"
        if modern
        else (f"listen {HOST}:{port} ssl http2;")
    )
    return f"""
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    # Without this nginx ends every connection with GOAWAY after 1,000 requests.
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    http2_max_concurrent_streams 1000;
    server {{
        {listen}
        ssl_certificate {credentials.cert_file};
        ssl_certificate_key {credentials.cert_key_file};
        location / {{
            add_header apns-id $http_apns_id always;
            return 200;
        }}
    }}
}}
"""


@dataclass
class Nginx:
    """A running nginx: its master process and where it listens."""

    process: subprocess.Popen[bytes]
    port: int
    version: str

    def worker_pids(self) -> list[int]:
        """The worker processes (children of the master)."""
        pid = self.process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return []
        return [int(c) for c in children]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def run_nginx(directory: Path, credentials: Credentials, cpus: set[int] | None) -> Iterator[Nginx]:
    """Start nginx in the foreground (pinned to ``cpus``), wait until it speaks h2, stop it."""
    version = nginx_version()
    port = free_port()
    conf = directory / "nginx.conf"
    conf.write_text(nginx_config(directory, port, credentials, version), encoding="utf-8")

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    process = subprocess.Popen(
        ["nginx", "-p", str(directory), "-c", str(conf), "-g", "daemon off;"],
        preexec_fn=pin,  # noqa: PLW1509 (no threads in the orchestrator yet)
        stdout=subprocess.DEVNULL,
        stderr=open(directory / "nginx.stderr", "wb"),  # noqa: SIM115
    )
    try:
        _wait_for_h2(port, credentials.ca_file, process, directory)
        yield Nginx(process, port, version)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_h2(port: int, ca_file: Path, process: subprocess.Popen[bytes], d: Path) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["h2"])
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            log = (d / "nginx.stderr").read_text(errors="replace")
            raise RuntimeError(f"nginx exited at start ({process.returncode}): {log.strip()}")
        try:
            with (
                socket.create_connection((HOST, port), timeout=1) as raw,
                context.wrap_socket(raw, server_hostname=HOST) as tls,
            ):
                if tls.selected_alpn_protocol() != "h2":
                    raise RuntimeError("nginx did not negotiate h2")
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
