"""A local stand-in for the ACS Identity REST API over HTTPS, checking HMAC signatures like ACS.

Every request must carry ``x-ms-date`` (or ``Date``), ``x-ms-content-sha256`` and
``Authorization: HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=…``.
The service recomputes, over what actually arrived (method, raw path and query, the signed
header values in the listed order, the body's SHA-256), the HMAC with its access key. A wrong
signature, a body that does not match its hash, or a date more than 15 minutes away answers 401.

Routes (``?api-version=`` required):

    POST   /identities                            201 {"identity": {"id"}, "accessToken"?}
    POST   /identities/{id}/:issueAccessToken     200 {"token", "expiresOn"}
    POST   /identities/{id}/:revokeAccessTokens   204
    DELETE /identities/{id}                       204
    GET    /identities/{id}                       200 {"id", "lastTokenIssuedAt"?}

Development-only control routes (no authentication; loopback only):

    GET  /_dev/identities          {"identities": [ids]}
    GET  /_dev/stats               {"apiCalls": N}: API calls answered so far (benchmarks)
    POST /_dev/faults              {"status": 503, "times": 2}: the next N API calls answer that

Tokens are JWT-shaped (header, claims with ``exp`` and ``skypeid``, random signature) and
opaque: nothing verifies them. Identities are kept in the state directory across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import socket
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from devtools.acs_identity_service.pki import ensure_server_files

log = logging.getLogger("devtools.acs_identity_service")

API_VERSIONS = frozenset(
    {"2021-03-07", "2022-06-01", "2022-10-01", "2023-08-01", "2023-10-01", "2025-06-30"}
)
SCOPES = frozenset({"chat", "voip", "chat.join", "chat.join.limited", "voip.join"})
MAX_CLOCK_SKEW = timedelta(minutes=15)
MAX_BODY = 64 * 1024
REQUIRED_SIGNED = ("host", "x-ms-content-sha256")

Clock = Callable[[], datetime]


class ApiError(Exception):
    """An error answer: status and ACS-style ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class _Identity:
    id: str
    created_at: str
    last_token_at: str | None = None
    revoked_at: str | None = None


@dataclass
class _State:
    resource_id: str
    access_key: str  # base64
    identities: dict[str, _Identity] = field(default_factory=dict)


def _load_state(path: Path) -> _State:
    if path.exists():
        data = json.loads(path.read_text())
        state = _State(data["resourceId"], data["accessKey"])
        for item in data.get("identities", []):
            state.identities[item["id"]] = _Identity(**item)
        return state
    key = base64.b64encode(secrets.token_bytes(64)).decode()
    return _State(str(uuid.uuid4()), key)


def verify_hmac(
    method: str, target: str, headers: dict[str, str], body: bytes, *, key: bytes, now: datetime
) -> None:
    """Check an ACS HMAC-SHA256 signature over what arrived; raises ApiError(401) if wrong."""
    scheme, _, params = headers.get("authorization", "").partition(" ")
    if scheme != "HMAC-SHA256":
        raise ApiError(401, "InvalidAuthentication", "HMAC-SHA256 authorization required")
    fields = dict(part.partition("=")[::2] for part in params.split("&"))
    signed = [h.strip().lower() for h in fields.get("SignedHeaders", "").split(";") if h.strip()]
    date_header = "x-ms-date" if "x-ms-date" in signed else "date"
    if date_header not in signed or any(h not in signed for h in REQUIRED_SIGNED):
        raise ApiError(401, "InvalidAuthentication", "date, host and content hash must be signed")
    if any(h not in headers for h in signed):
        raise ApiError(401, "InvalidAuthentication", "a signed header is missing")
    try:
        sent_at = parsedate_to_datetime(headers[date_header])
    except (TypeError, ValueError):
        raise ApiError(401, "InvalidAuthentication", "unreadable request date") from None
    if sent_at.tzinfo is None or abs(now - sent_at) > MAX_CLOCK_SKEW:
        raise ApiError(401, "InvalidAuthentication", "request date is more than 15 minutes away")
    body_hash = base64.b64encode(hashlib.sha256(body).digest()).decode()
    if not hmac.compare_digest(headers["x-ms-content-sha256"], body_hash):
        raise ApiError(401, "InvalidAuthentication", "content hash does not match the body")
    sts = f"{method}\n{target}\n" + ";".join(headers[h] for h in signed)
    expected = base64.b64encode(hmac.new(key, sts.encode(), hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(fields.get("Signature", ""), expected):
        raise ApiError(401, "InvalidAuthentication", "signature does not match")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class AcsIdentityService:
    """The running service: endpoint, connection string, CA file, and test controls."""

    def __init__(
        self, state_dir: Path, host: str, port: int, clock: Clock, context: ssl.SSLContext
    ) -> None:
        self.state_dir = state_dir
        self._state_file = state_dir / "acs-identities.json"
        self._state = _load_state(self._state_file)
        self._save()
        self._clock = clock
        self._lock = threading.Lock()
        self._faults: list[int] = []
        self.requests = 0
        self._server = _Server((host, port), _Handler, self, context)
        self.port = int(self._server.server_address[1])
        self.endpoint = f"https://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="acs-identity-service",
            daemon=True,
        )

    @classmethod
    def start(
        cls,
        state_dir: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        clock: Clock = lambda: datetime.now(UTC),
    ) -> AcsIdentityService:
        """Create certificates if needed and serve in a background thread."""
        files = ensure_server_files(state_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(files.cert_file, files.key_file)
        service = cls(state_dir, host, port, clock, context)
        service.ca_file = files.ca_file
        service._thread.start()
        log.info("local ACS identity service on %s", service.endpoint)
        return service

    ca_file: Path

    @property
    def access_key(self) -> str:
        """The base64 access key of the connection string."""
        return self._state.access_key

    @property
    def connection_string(self) -> str:
        """``endpoint=https://127.0.0.1:PORT/;accesskey=<base64>``."""
        return f"endpoint={self.endpoint}/;accesskey={self._state.access_key}"

    def identities(self) -> list[str]:
        """Every identity that exists (not deleted)."""
        with self._lock:
            return sorted(self._state.identities)

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` API calls with ``status`` (a simulated ACS failure)."""
        with self._lock:
            self._faults.extend([status] * times)

    def stop(self) -> None:
        """Stop serving and wait for the thread; idempotent."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def __enter__(self) -> AcsIdentityService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- request handling (called from handler threads) ------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, object | None]:
        """Answer one request: (status, JSON body or None)."""
        path = urlsplit(target).path
        if path.startswith("/_dev/"):
            return self._control(method, path, body)
        with self._lock:
            self.requests += 1
            fault = self._faults.pop(0) if self._faults else None
        verify_hmac(
            method, target, headers, body, key=base64.b64decode(self.access_key), now=self._clock()
        )
        version = parse_qs(urlsplit(target).query).get("api-version", [""])[0]
        if version not in API_VERSIONS:
            raise ApiError(400, "InvalidApiVersion", "unsupported or missing api-version")
        if fault is not None:
            raise ApiError(fault, "SimulatedFailure", "a failure injected for testing")
        return self._route(method, path, _json_body(body))

    def _route(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, object | None]:
        parts = path.split("/")
        if method == "POST" and path == "/identities":
            return self._create(body)
        if len(parts) == 3 and parts[1] == "identities":
            ident = unquote(parts[2])
            if method == "DELETE":
                return self._delete(ident)
            if method == "GET":
                return 200, self._describe(ident)
        if len(parts) == 4 and parts[1] == "identities" and method == "POST":
            ident = unquote(parts[2])
            if parts[3] == ":issueAccessToken":
                return 200, self._issue(ident, body.get("scopes"), body.get("expiresInMinutes"))
            if parts[3] == ":revokeAccessTokens":
                return self._revoke(ident)
        raise ApiError(404, "NotFound", "no such route")

    def _create(self, body: dict[str, Any]) -> tuple[int, object]:
        raw_id = f"8:acs:{self._state.resource_id}_{uuid.uuid4()}"
        with self._lock:
            self._state.identities[raw_id] = _Identity(raw_id, self._clock().isoformat())
            self._save()
        log.info("created identity %s…", raw_id[:24])
        answer: dict[str, Any] = {"identity": {"id": raw_id}}
        scopes = body.get("createTokenWithScopes")
        if scopes:
            answer["accessToken"] = self._issue(raw_id, scopes, body.get("expiresInMinutes"))
        return 201, answer

    def _issue(self, raw_id: str, scopes: object, minutes: object) -> dict[str, str]:
        if not isinstance(scopes, list) or not scopes or not set(scopes) <= SCOPES:
            raise ApiError(
                400, "ValidationError", f"scopes must be a non-empty subset of {sorted(SCOPES)}"
            )
        if minutes is None:
            minutes = 1440
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 60 <= minutes <= 1440:
            raise ApiError(400, "ValidationError", "expiresInMinutes must be within [60,1440]")
        now = self._clock()
        with self._lock:
            identity = self._state.identities.get(raw_id)
            if identity is None:
                raise ApiError(404, "IdentityNotFound", "identity does not exist")
            identity.last_token_at = now.isoformat()
            self._save()
        expires = now + timedelta(minutes=minutes)
        return {
            "token": self._token(raw_id, scopes, now, expires),
            "expiresOn": expires.isoformat(),
        }

    def _token(self, raw_id: str, scopes: list[str], now: datetime, expires: datetime) -> str:
        header = {"alg": "RS256", "kid": "local-acs", "x5t": "local-acs", "typ": "JWT"}
        claims = {
            "skypeid": raw_id.removeprefix("8:"),
            "scp": 1792,
            "csi": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "rgn": "local",
            "acsScope": ",".join(scopes),
            "resourceId": self._state.resource_id,
            "resourceLocation": "local",
            "iat": int(now.timestamp()),
        }
        return ".".join(
            [
                _b64url(json.dumps(header, separators=(",", ":")).encode()),
                _b64url(json.dumps(claims, separators=(",", ":")).encode()),
                _b64url(secrets.token_bytes(32)),  # opaque: nothing verifies it
            ]
        )

    def _revoke(self, raw_id: str) -> tuple[int, None]:
        with self._lock:
            identity = self._state.identities.get(raw_id)
            if identity is None:
                raise ApiError(404, "IdentityNotFound", "identity does not exist")
            identity.revoked_at = self._clock().isoformat()
            self._save()
        return 204, None

    def _delete(self, raw_id: str) -> tuple[int, None]:
        with self._lock:
            if self._state.identities.pop(raw_id, None) is None:
                raise ApiError(404, "IdentityNotFound", "identity does not exist")
            self._save()
        return 204, None

    def _describe(self, raw_id: str) -> dict[str, str]:
        with self._lock:
            identity = self._state.identities.get(raw_id)
        if identity is None:
            raise ApiError(404, "IdentityNotFound", "identity does not exist")
        answer = {"id": identity.id}
        if identity.last_token_at:
            answer["lastTokenIssuedAt"] = identity.last_token_at
        return answer

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, object | None]:
        if method == "GET" and path == "/_dev/identities":
            return 200, {"identities": self.identities()}
        if method == "GET" and path == "/_dev/stats":
            with self._lock:
                return 200, {"apiCalls": self.requests}
        if method == "POST" and path == "/_dev/faults":
            data = _json_body(body)
            self.fail_next(int(data.get("status", 503)), int(data.get("times", 1)))
            return 204, None
        raise ApiError(404, "NotFound", "no such control route")

    def _save(self) -> None:
        data = {
            "resourceId": self._state.resource_id,
            "accessKey": self._state.access_key,
            "identities": [vars(i) for i in self._state.identities.values()],
        }
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.chmod(0o600)
        tmp.replace(self._state_file)


def _json_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        raise ApiError(400, "InvalidJson", "body is not JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "InvalidJson", "body must be a JSON object")
    return data


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        service: AcsIdentityService,
        context: ssl.SSLContext,
    ) -> None:
        self.service = service
        self.context = context
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        # The TLS handshake runs in the handler thread, so a slow client cannot stall accept().
        return self.context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), address


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30

    def setup(self) -> None:
        super().setup()
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):
            self.close_connection = True
            raise

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._answer(413, {"error": {"code": "TooLarge", "message": "body too large"}})
            return
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, answer = self.server.service.handle(self.command, self.path, headers, body)
        except ApiError as exc:
            if exc.status == 401:
                log.warning("rejected %s %s: %s", self.command, self.path.split("?")[0], exc)
            status, answer = exc.status, {"error": {"code": exc.code, "message": exc.message}}
        self._answer(status, answer)

    def _answer(self, status: int, answer: object | None) -> None:
        data = b"" if answer is None else json.dumps(answer).encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("MS-CV", uuid.uuid4().hex)
        self.end_headers()
        self.wfile.write(data)

    do_GET = _serve  # noqa: N815 - BaseHTTPRequestHandler dispatches on do_<METHOD>
    do_POST = _serve  # noqa: N815
    do_DELETE = _serve  # noqa: N815
    do_PUT = _serve  # noqa: N815
