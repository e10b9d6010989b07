"""The in-process API: :class:`ApnsSimulator` runs the sandbox and production HTTP/2 listeners and
the control endpoint on an event loop in a background thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devtools.apns_simulator.control import ControlServer
from devtools.apns_simulator.faults import Fault
from devtools.apns_simulator.pki import Pki
from devtools.apns_simulator.records import ConnectionRecord, RequestRecord
from devtools.apns_simulator.server import ApnsProtocol
from devtools.apns_simulator.state import (
    ENVIRONMENTS,
    Device,
    Environment,
    SimClock,
    SimulatorState,
)
from devtools.apns_simulator.tokens import ProviderKey

log = logging.getLogger(__name__)

# OpenSSL X509_V_FLAG_NO_CHECK_TIME: the handshake accepts an expired client certificate so the
# simulator can answer 403 BadCertificate (by its own clock) the way APNs does.
_NO_CHECK_TIME = 0x200000


def _server_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(pki.server_cert_file, pki.server_key_file)
    ctx.set_alpn_protocols(["h2"])
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cafile=str(pki.client_ca_file))
    ctx.verify_flags |= _NO_CHECK_TIME
    return ctx


class ApnsSimulator:
    """A validating APNs double: real HTTP/2 over TLS on 127.0.0.1, scriptable per request.

    Start with :meth:`start`; stop with :meth:`stop` or use it as a context manager.
    """

    def __init__(self, state_dir: Path, state: SimulatorState, pki: Pki) -> None:
        self.state_dir = state_dir
        self._state = state
        self._pki = pki
        self._ssl = _server_context(pki)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="apns-simulator", daemon=True)
        self._servers: list[asyncio.AbstractServer] = []
        self._live: set[ApnsProtocol] = set()
        self._ports: dict[str, int] = {}
        self._stopped = False

    # --- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        state_dir: Path,
        *,
        sandbox_port: int = 0,
        production_port: int = 0,
        control_port: int = 0,
        max_concurrent_streams: int = 1000,
        clock: Callable[[], float] | None = None,
        log_limit: int | None = 200_000,
    ) -> ApnsSimulator:
        """Create (or reuse) the certificates in ``state_dir`` and start listening.

        Ports 0 pick free ports. ``clock`` is the time source (default ``time.time``) that
        :meth:`set_time`/:meth:`advance` shift. Raises OSError when a port is taken.
        """
        state_dir = Path(state_dir)
        pki = Pki.load_or_create(state_dir)
        state = SimulatorState(SimClock(clock), max_concurrent_streams, log_limit)
        sim = cls(state_dir, state, pki)
        sim._thread.start()
        ports = {"sandbox": sandbox_port, "production": production_port, "control": control_port}
        future = asyncio.run_coroutine_threadsafe(sim._listen(ports), sim._loop)
        try:
            future.result(timeout=10)
        except BaseException:
            sim.stop()
            raise
        return sim

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _listen(self, ports: dict[str, int]) -> None:
        loop = asyncio.get_running_loop()
        for env in ENVIRONMENTS:
            server = await loop.create_server(
                lambda env=env: ApnsProtocol(self._state, env, self._live),  # type: ignore[misc]
                "127.0.0.1",
                ports[env],
                ssl=self._ssl,
                backlog=512,
            )
            self._servers.append(server)
            self._ports[env] = server.sockets[0].getsockname()[1]
        control = ControlServer(self._control)
        server = await asyncio.start_server(control.handle, "127.0.0.1", ports["control"])
        self._servers.append(server)
        self._ports["control"] = server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for proto in list(self._live):
            proto.shutdown()
        for server in self._servers:
            await server.wait_closed()

    def stop(self) -> None:
        """Close the listeners and every connection, stop the loop thread; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            try:
                future.result(timeout=5)
            except (concurrent.futures.TimeoutError, OSError) as exc:
                log.warning("APNs simulator shutdown incomplete: %s", exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> ApnsSimulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- addresses ----------------------------------------------------------------------------
    @property
    def sandbox_origin(self) -> str:
        """``https://127.0.0.1:PORT`` of the development (sandbox) environment."""
        return f"https://127.0.0.1:{self._ports['sandbox']}"

    @property
    def production_origin(self) -> str:
        """``https://127.0.0.1:PORT`` of the production environment."""
        return f"https://127.0.0.1:{self._ports['production']}"

    @property
    def control_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the JSON control endpoint."""
        return f"http://127.0.0.1:{self._ports['control']}"

    @property
    def ca_file(self) -> Path:
        """PEM of the CA that signed the server certificate (SAN 127.0.0.1, localhost)."""
        return self._pki.ca_file

    @property
    def client_ca_file(self) -> Path:
        """PEM of the CA that signs :meth:`make_client_certificate` certificates."""
        return self._pki.client_ca_file

    @property
    def max_concurrent_streams(self) -> int:
        """The stream limit advertised once a connection may use more than one stream."""
        return self._state.max_concurrent_streams

    # --- registries ---------------------------------------------------------------------------
    def register_key(
        self,
        key_id: str,
        team_id: str,
        public_key_pem: str | bytes,
        topics: Iterable[str] | None = None,
    ) -> None:
        """Trust provider tokens signed by this P-256 key (``topics`` None: any topic).
        Raises ValueError for a key that is not P-256."""
        self._state.register_key(ProviderKey.from_pem(key_id, team_id, public_key_pem, topics))

    def register_certificate_ca(self, ca_pem: str | bytes) -> None:
        """Also trust client certificates signed by this CA (PEM) on new connections."""
        text = ca_pem.decode() if isinstance(ca_pem, bytes) else ca_pem
        self._ssl.load_verify_locations(cadata=text)

    def make_client_certificate(
        self,
        topic: str,
        *,
        not_after: dt.datetime | None = None,
        password: bytes | None = None,
    ) -> bytes:
        """A .p12 (certificate with UID = ``topic`` + key) signed by the simulator's client CA;
        ``not_after`` in the past makes an expired certificate (403 BadCertificate)."""
        now = dt.datetime.fromtimestamp(self.now(), dt.UTC)
        return self._pki.client_p12(topic, now=now, not_after=not_after, password=password)

    def register_device(
        self,
        token: str,
        *,
        environment: Environment = "sandbox",
        topics: Iterable[str] | None = None,
    ) -> None:
        """Register a device token (clears an earlier unregistration). ``topics`` None: any."""
        if environment not in ENVIRONMENTS:
            raise ValueError(f"environment must be sandbox or production, got {environment!r}")
        self._state.register_device(
            token, Device(environment, None if topics is None else frozenset(topics))
        )

    def unregister_device(self, token: str, at_ms: int | None = None) -> None:
        """Later pushes to ``token`` get 410 Unregistered with ``timestamp`` = ``at_ms``
        (default: now by the simulator clock)."""
        self._state.unregister_device(token, int(self.now() * 1000) if at_ms is None else at_ms)

    @property
    def strict_devices(self) -> bool:
        """True: only registered tokens are valid and their environment is enforced."""
        return self._state.strict_devices

    @strict_devices.setter
    def strict_devices(self, value: bool) -> None:
        self._state.strict_devices = bool(value)

    # --- faults and clock ---------------------------------------------------------------------
    def add_fault(self, fault: Fault) -> str:
        """Arm ``fault``; returns its id. Counting for ``nth``/``every`` starts now."""
        return self._state.add_fault(fault)

    def clear_faults(self) -> None:
        """Disarm every fault."""
        self._state.faults.clear()

    def now(self) -> float:
        """The simulator clock, epoch seconds."""
        return self._state.clock.now()

    def set_time(self, epoch_seconds: float) -> None:
        """Set the simulator clock (it keeps running from there)."""
        self._state.clock.set_time(epoch_seconds)

    def advance(self, seconds: float) -> None:
        """Move the simulator clock forward."""
        self._state.clock.advance(seconds)

    # --- inspection ---------------------------------------------------------------------------
    def requests(self, *, token: str | None = None, since: int = 0) -> list[RequestRecord]:
        """Every finished request (answered, reset, closed or left unanswered), by ``seq``.

        ``token``: only the requests to this device token (case-insensitive), which is what that
        phone saw; ``since``: only those after this ``seq``.
        """
        wanted = token.lower() if token is not None else None
        with self._state.cond:
            records = [
                r
                for r in self._state.log
                if r.seq > since and (wanted is None or (r.token or "").lower() == wanted)
            ]
        return sorted(records, key=lambda r: r.seq)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RequestRecord]:
        """Block until at least ``n`` requests are logged; raises TimeoutError if they are not
        within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._state.cond:
            while self._state.logged < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"APNs simulator saw {self._state.logged} requests, expected {n}"
                    )
                self._state.cond.wait(left)
            return sorted(self._state.log, key=lambda r: r.seq)

    def connections(self) -> list[ConnectionRecord]:
        """Every connection (open ones and those closed since the last :meth:`reset`)."""
        with self._state.cond:
            return [c.snapshot() for c in sorted(self._state.connections.values(), key=_id)]

    def reset(self) -> None:
        """Forget the log, faults, devices, keys and closed connections; strict mode off."""
        self._state.reset()

    # --- control endpoint ---------------------------------------------------------------------
    def _control(self, method: str, target: str, body: Any) -> tuple[int, Any]:
        url = urlsplit(target)
        route = (method, url.path.rstrip("/") or "/")
        data: dict[str, Any] = body if isinstance(body, dict) else {}
        if route == ("GET", "/health"):
            return 200, {"status": "ok", "now": self.now(), "requests": self._state.logged}
        if route == ("GET", "/requests"):
            query = parse_qs(url.query)
            since = int(query.get("since", ["0"])[0])
            token = query.get("token", [None])[0]
            return 200, [r.to_json() for r in self.requests(token=token, since=since)]
        if route == ("GET", "/connections"):
            return 200, [c.to_json() for c in self.connections()]
        if route == ("POST", "/keys"):
            self.register_key(
                data["keyId"], data["teamId"], data["publicKeyPem"], data.get("topics")
            )
            return 200, {"keyId": data["keyId"]}
        if route == ("POST", "/devices"):
            self.register_device(
                data["token"],
                environment=data.get("environment", "sandbox"),
                topics=data.get("topics"),
            )
            return 200, {"token": data["token"]}
        if route == ("POST", "/devices/unregister"):
            self.unregister_device(data["token"], data.get("atMs"))
            return 200, {"token": data["token"]}
        if route == ("POST", "/devices/strict"):
            self.strict_devices = bool(data["enabled"])
            return 200, {"strictDevices": self.strict_devices}
        if route == ("POST", "/faults"):
            return 200, {"id": self.add_fault(Fault.from_json(data))}
        if route == ("DELETE", "/faults"):
            self.clear_faults()
            return 200, {"cleared": True}
        if route == ("POST", "/clock"):
            if "epochSeconds" in data:
                self.set_time(float(data["epochSeconds"]))
            elif "advanceSeconds" in data:
                self.advance(float(data["advanceSeconds"]))
            else:
                raise KeyError("epochSeconds or advanceSeconds")
            return 200, {"now": self.now()}
        if route == ("POST", "/reset"):
            self.reset()
            return 200, {"reset": True}
        return 404, {"error": f"no route {method} {url.path}"}


def _id(conn: Any) -> int:
    return int(conn.id)
