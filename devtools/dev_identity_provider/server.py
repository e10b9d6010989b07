"""A DEVELOPMENT-ONLY identity provider: a JWKS over HTTP and RS256 tokens for anyone who asks.

It exists so the local run and the end-to-end tests exercise the real bearer-JWT path (JWKS
fetched over HTTP, key chosen by ``kid``, ``iss``/``aud``/``exp``/``nbf`` checked). It
authenticates nobody: ``GET /token?sub=alice`` returns a token for "alice". Never point a
deployed app at it.

    GET  /.well-known/jwks.json               the public key set (503 during a simulated outage)
    GET  /.well-known/openid-configuration    issuer and jwks_uri
    GET  /token?sub=S[&aud=A][&ttl=SECONDS]   {"access_token", "token_type", "expires_in", …}
    POST /control/outage?on=true|false        simulate a JWKS outage (tests)

The signing key, the issuer and the port are kept in the state directory, so a restart on the
same folder (every ``run-local.sh``) keeps its users: the same issuer means the same callers,
hence the same ACS identities and devices. The port is reused when it is free; when it is not,
the provider takes another one and keeps its issuer (an identifier, not an address: the app
reaches the keys at ``AUTH_JWKS_URL``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

log = logging.getLogger("devtools.dev_identity_provider")

DEFAULT_AUDIENCE = "api://pushrelay-dev"
MAX_TTL = 24 * 3600
WARNING = "development identity provider: issues tokens to anyone; never use in production"


STATE_FILE = "dev-idp.json"


def _load_state(state_dir: Path) -> dict[str, Any]:
    """The issuer and port of the last run on this folder ({} on the first run)."""
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_state(state_dir: Path, issuer: str, port: int) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / STATE_FILE).write_text(json.dumps({"issuer": issuer, "port": port}) + "\n")


def _load_key(state_dir: Path) -> rsa.RSAPrivateKey:
    path = state_dir / "dev-idp-key.pem"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise RuntimeError(f"{path} is not an RSA key")
        return key
    state_dir.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return key


class DevIdentityProvider:
    """The running provider: issuer URL, JWKS URL, token URL and the outage switch."""

    def __init__(
        self,
        state_dir: Path,
        host: str,
        port: int,
        audience: str,
        clock: Callable[[], float],
    ) -> None:
        self._key = _load_key(state_dir)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        thumb = hashlib.sha256(json.dumps(public, sort_keys=True).encode()).digest()
        self.kid = base64.urlsafe_b64encode(thumb[:12]).decode().rstrip("=")
        self._jwks = {"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]}
        self.audience = audience
        self._clock = clock
        self.outage = False
        self.jwks_requests = 0
        saved = _load_state(state_dir)
        self._server = self._bind(host, port, saved.get("port"))
        self.port = int(self._server.server_address[1])
        self.base_url = f"http://{host}:{self.port}"
        issuer = saved.get("issuer")
        self.issuer = issuer if isinstance(issuer, str) and issuer else self.base_url
        _save_state(state_dir, self.issuer, self.port)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="dev-identity-provider",
            daemon=True,
        )

    def _bind(self, host: str, port: int, saved: object) -> _Server:
        """Serve on ``port``; when that is 0, on the last run's port if it is free, else any."""
        if port == 0 and isinstance(saved, int) and 0 < saved < 65536:
            try:
                return _Server((host, saved), _Handler, self)
            except OSError:
                log.warning("port %d of the last run is busy; the issuer stays the same", saved)
        return _Server((host, port), _Handler, self)

    @classmethod
    def start(
        cls,
        state_dir: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        audience: str = DEFAULT_AUDIENCE,
        clock: Callable[[], float] = time.time,
    ) -> DevIdentityProvider:
        """Load or create the signing key and serve in a background thread."""
        idp = cls(state_dir, host, port, audience, clock)
        idp._thread.start()
        log.warning(
            "DEVELOPMENT identity provider on %s (issuer %s): %s", idp.base_url, idp.issuer, WARNING
        )
        return idp

    @property
    def jwks_url(self) -> str:
        """Where the app fetches the keys (AUTH_JWKS_URL)."""
        return f"{self.base_url}/.well-known/jwks.json"

    @property
    def token_url(self) -> str:
        """Where developers and tests get tokens: ``GET token_url?sub=alice``."""
        return f"{self.base_url}/token"

    @property
    def settings(self) -> dict[str, str]:
        """The app settings that make the app trust this provider."""
        return {
            "AUTH_JWT_ISSUER": self.issuer,
            "AUTH_JWT_AUDIENCE": self.audience,
            "AUTH_JWKS_URL": self.jwks_url,
        }

    def token(self, subject: str, *, audience: str | None = None, ttl: int = 3600) -> str:
        """An RS256 token for ``subject`` (what ``GET /token`` returns)."""
        now = int(self._clock())
        claims = {
            "iss": self.issuer,
            "aud": audience or self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})

    def jwks(self) -> dict[str, Any]:
        """The public key set."""
        return self._jwks

    def stop(self) -> None:
        """Stop serving; idempotent."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def __enter__(self) -> DevIdentityProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        idp: DevIdentityProvider,
    ) -> None:
        self.idp = idp
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        idp = self.server.idp
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/.well-known/jwks.json":
            idp.jwks_requests += 1
            if idp.outage:
                self._answer(503, {"error": "simulated outage"})
            else:
                self._answer(200, idp.jwks())
        elif url.path == "/.well-known/openid-configuration":
            self._answer(200, {"issuer": idp.issuer, "jwks_uri": idp.jwks_url})
        elif url.path == "/token":
            self._token(idp, query)
        else:
            self._answer(404, {"error": "not found"})

    def _token(self, idp: DevIdentityProvider, query: dict[str, list[str]]) -> None:
        subject = query.get("sub", [""])[0]
        ttl_text = query.get("ttl", ["3600"])[0]
        if not subject or not ttl_text.isdigit() or not 1 <= int(ttl_text) <= MAX_TTL:
            self._answer(400, {"error": "give ?sub=SUBJECT (and optionally ttl=1..86400)"})
            return
        token = idp.token(subject, audience=query.get("aud", [None])[0], ttl=int(ttl_text))
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(ttl_text),
            "warning": WARNING,
        }
        self._answer(200, body)

    def do_POST(self) -> None:
        idp = self.server.idp
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if url.path == "/control/outage":
            idp.outage = parse_qs(url.query).get("on", ["true"])[0].lower() in {"1", "true"}
            log.warning("JWKS outage simulation %s", "on" if idp.outage else "off")
            self._answer(200, {"outage": idp.outage})
        else:
            self._answer(404, {"error": "not found"})

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)
