"""The APNs client: pools of HTTP/2 connections per environment, and the retry policy.

``send`` returns every APNs answer as a :class:`PushResult` value, retrying inside the budget
only what a retry can fix:

- 429 TooManyRequests, 500, 503 and connection loss / timeouts: jittered exponential back-off
  (a timed-out push may have been delivered: APNs does not de-duplicate, so it is resent with
  the same ``apns-id``);
- REFUSED_STREAM and streams above a GOAWAY's ``last_stream_id``: unprocessed by definition,
  resent at once on another connection;
- ExpiredProviderToken: the connection is retired and the push retried once on a new
  connection with a new token; TooManyProviderTokenUpdates, UnrelatedKeyIdInToken, IdleTimeout
  and Shutdown: the connection is retired and the push retried on another.

It raises :class:`NotificationError` (before sending) or :class:`ApnsUnavailable` (no answer
arrived within the budget); never anything else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from random import random as _uniform
from typing import Final
from urllib.parse import urlsplit

from shared.apns.certificate import CertificateCredential, client_tls_context, load_p12
from shared.apns.connection import (
    Connection,
    Opener,
    Request,
    StreamFailed,
    open_connection,
)
from shared.apns.errors import ApnsUnavailable, CredentialError, NotificationError
from shared.apns.notification import Environment, Notification, PushType, new_apns_id
from shared.apns.response import PushResult, Reason, parse_result
from shared.apns.token import TokenCredential

logger = logging.getLogger(__name__)

SANDBOX_ORIGIN: Final = "https://api.sandbox.push.apple.com:443"
PRODUCTION_ORIGIN: Final = "https://api.push.apple.com:443"


@dataclass(frozen=True)
class ApnsConfig:
    """Everything an :class:`ApnsClient` needs; validated when the client is made.

    ``clock`` (monotonic seconds) measures budgets and idleness, ``wall_clock`` (UNIX seconds)
    becomes the provider token's ``iat``, ``sleep`` waits between retries and ``random`` (0..1)
    jitters them; all are injectable for tests. ``opener`` replaces
    ``loop.create_connection`` (tests use an in-memory one).
    """

    credential: TokenCredential | CertificateCredential
    sandbox_origin: str = SANDBOX_ORIGIN
    production_origin: str = PRODUCTION_ORIGIN
    ca_file: str | None = None
    connections: int = 2
    request_timeout: float = 10.0
    idle_timeout: float = 180.0
    max_in_flight: int = 1000
    connect_timeout: float = 10.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    random: Callable[[], float] = _uniform
    wall_clock: Callable[[], float] = time.time
    random_bytes: Callable[[int], bytes] = os.urandom
    default_budget: float = 12.0
    max_attempts: int = 5
    backoff_base: float = 0.25
    backoff_cap: float = 5.0
    max_streams_per_connection: int = 1000
    ping_after: float = 60.0
    opener: Opener | None = None


def _check_config(config: ApnsConfig) -> None:
    positive = {
        "connections": config.connections,
        "request_timeout": config.request_timeout,
        "idle_timeout": config.idle_timeout,
        "max_in_flight": config.max_in_flight,
        "connect_timeout": config.connect_timeout,
        "default_budget": config.default_budget,
        "max_attempts": config.max_attempts,
        "max_streams_per_connection": config.max_streams_per_connection,
        "ping_after": config.ping_after,
    }
    for name, value in positive.items():
        if not value > 0:
            raise CredentialError(f"APNs client setting {name} must be positive")
    if config.idle_timeout >= 240:
        logger.warning(
            "APNs idle timeout %.0f s is not under Azure's 4-minute NAT drop", config.idle_timeout
        )


class ApnsClient:
    """Sends notifications to APNs over HTTP/2; connects lazily, one pool per environment.

    Use from one event loop. Raises :class:`CredentialError` when the config is unusable.
    """

    def __init__(self, config: ApnsConfig) -> None:
        _check_config(config)
        self._config = config
        credential = config.credential
        self.not_after: datetime | None = None
        """The client certificate's expiry (certificate auth only)."""
        if isinstance(credential, CertificateCredential):
            self._ssl, self.not_after = load_p12(
                credential.p12, credential.password, ca_file=config.ca_file
            )
        else:
            self._ssl = client_tls_context(config.ca_file)
        self._pools: dict[Environment, _Pool] = {}
        self._fields: dict[tuple[str, PushType, int | None], tuple[tuple[bytes, bytes], ...]] = {}
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def send(
        self, n: Notification, *, environment: Environment, budget: float | None = None
    ) -> PushResult:
        """Send one notification; APNs' answer is the value, rejections included.

        Raises :class:`NotificationError` before sending anything APNs would reject, and
        :class:`ApnsUnavailable` when no answer arrived within ``budget`` seconds (default
        from the config).
        """
        n.validate()
        return await self._send(n, environment, budget)

    async def send_many(
        self,
        ns: Sequence[Notification],
        *,
        environment: Environment,
        budget: float | None = None,
    ) -> list[PushResult | ApnsUnavailable]:
        """Send concurrently (bounded by ``max_in_flight``); results in the order given.

        Validates all first: raises :class:`NotificationError` before sending any if one is bad.
        """
        for n in ns:
            n.validate()

        async def one(n: Notification) -> PushResult | ApnsUnavailable:
            try:
                return await self._send(n, environment, budget)
            except ApnsUnavailable as exc:
                return exc

        return list(await asyncio.gather(*(one(n) for n in ns)))

    async def aclose(self) -> None:
        """Close every connection (GOAWAY); later sends raise :class:`ApnsUnavailable`."""
        self._closed = True
        pools = list(self._pools.values())
        self._pools.clear()
        if asyncio.get_running_loop() is not self._loop:
            return  # those connections belong to another (stopped) loop: nothing to say to them
        for pool in pools:
            await pool.close()

    # --- internals ------------------------------------------------------------------------

    async def _send(
        self, n: Notification, environment: Environment, budget: float | None
    ) -> PushResult:
        config = self._config
        if self._closed:
            raise ApnsUnavailable("the APNs client is closed")
        if asyncio.get_running_loop() is not self._loop:
            self._bind_loop()
        pool = self._pools.get(environment) or self._pool(environment)
        apns_id = n.apns_id or new_apns_id(config.random_bytes)
        request = self._request(n, apns_id)
        deadline = config.clock() + (config.default_budget if budget is None else budget)
        semaphore = self._semaphore or self._make_semaphore()
        if semaphore.locked():
            await self._wait_for_slot(semaphore, deadline, apns_id)
        else:
            await semaphore.acquire()
        try:
            return await self._deliver(pool, request, apns_id, deadline)
        finally:
            semaphore.release()

    async def _deliver(
        self, pool: _Pool, request: Request, apns_id: str, deadline: float
    ) -> PushResult:
        config = self._config
        clock = config.clock
        attempts = 0
        answer: PushResult | None = None
        failure: StreamFailed | None = None
        min_seq = 0
        token_retried = False
        while attempts < config.max_attempts:
            remaining = deadline - clock()
            if remaining <= 0:
                break
            attempts += 1
            try:
                conn = pool.pick(min_seq) or await pool.acquire(deadline, min_seq)
                status, body, echoed, unique = await conn.submit(
                    request, min(config.request_timeout, remaining)
                )
            except StreamFailed as exc:
                failure = exc
                logger.debug("push %s attempt %d got no answer: %s", apns_id, attempts, exc)
                if exc.unprocessed or await self._back_off(attempts, deadline):
                    continue
                break
            if status == 200:
                return PushResult(200, None, echoed or apns_id, unique, None, attempts)
            answer = parse_result(status, body, echoed or apns_id, unique, attempts)
            failure = None
            if answer.permanent:
                return answer
            logger.debug("push %s attempt %d: %d %s", apns_id, attempts, status, answer.reason)
            if answer.needs_new_connection:
                conn.retire(f"APNs answered {answer.reason}")
                if answer.reason is Reason.EXPIRED_PROVIDER_TOKEN:
                    if token_retried:
                        return answer
                    token_retried = True
                    min_seq = pool.next_seq
                continue
            if not await self._back_off(attempts, deadline):
                return answer
        if answer is not None:
            return replace(answer, attempts=attempts)
        why = str(failure) if failure is not None else "budget exhausted"
        logger.warning("push %s: no APNs answer after %d attempts: %s", apns_id, attempts, why)
        raise ApnsUnavailable(
            f"no APNs answer after {attempts} attempts: {why}", apns_id=apns_id, attempts=attempts
        )

    async def _back_off(self, attempt: int, deadline: float) -> bool:
        """Sleep a jittered exponential delay if it fits in the budget; False if it does not."""
        config = self._config
        ceiling = min(config.backoff_cap, config.backoff_base * 2 ** (attempt - 1))
        delay = ceiling / 2 + config.random() * ceiling / 2
        if config.clock() + delay >= deadline:
            return False
        await config.sleep(delay)
        return True

    async def _wait_for_slot(
        self, semaphore: asyncio.Semaphore, deadline: float, apns_id: str
    ) -> None:
        remaining = deadline - self._config.clock()
        try:
            await asyncio.wait_for(semaphore.acquire(), max(remaining, 0.0))
        except TimeoutError:
            raise ApnsUnavailable(
                "too many pushes in flight for the budget", apns_id=apns_id
            ) from None

    def _bind_loop(self) -> None:
        """Connections belong to one event loop; a client first used elsewhere starts afresh."""
        if self._loop is not None:
            logger.warning("APNs client used from a new event loop: dropping its connections")
        self._loop = asyncio.get_running_loop()
        self._pools = {}
        self._semaphore = None

    def _make_semaphore(self) -> asyncio.Semaphore:
        self._semaphore = asyncio.Semaphore(self._config.max_in_flight)
        return self._semaphore

    def _pool(self, environment: Environment) -> _Pool:
        config = self._config
        origin = (
            config.sandbox_origin
            if environment is Environment.SANDBOX
            else config.production_origin
        )
        pool = _Pool(config, environment, origin, self._ssl)
        self._pools[environment] = pool
        return pool

    def _request(self, n: Notification, apns_id: str) -> Request:
        key = (n.topic, n.push_type, n.priority)
        fields = self._fields.get(key)
        if fields is None:
            fields = self._fields[key] = _fields(n)
        per_push: tuple[tuple[bytes, bytes], ...] = ((b"apns-id", apns_id.encode("ascii")),)
        if n.expiration is not None:
            per_push += ((b"apns-expiration", b"%d" % n.expiration),)
        if n.collapse_id is not None:
            per_push += ((b"apns-collapse-id", n.collapse_id.encode("utf-8")),)
        path = b"/3/device/" + n.device_token.encode("ascii")
        return Request(path, fields, per_push, n.payload)


def _fields(n: Notification) -> tuple[tuple[bytes, bytes], ...]:
    priority: int | None = n.priority
    if priority is None and n.push_type is PushType.BACKGROUND:
        priority = 5  # Apple: background pushes must say 5; APNs' default of 10 is rejected
    fields = [
        (b"apns-topic", n.topic.encode("ascii")),
        (b"apns-push-type", n.push_type.value.encode("ascii")),
    ]
    if priority is not None:
        fields.append((b"apns-priority", b"%d" % priority))
    return tuple(fields)


class _Pool:
    """The connections to one APNs origin: lazy, round-robin, bounded, self-healing."""

    def __init__(
        self,
        config: ApnsConfig,
        environment: Environment,
        origin: str,
        ssl_context: ssl.SSLContext,
    ) -> None:
        parts = urlsplit(origin)
        if parts.scheme != "https" or not parts.hostname:
            raise CredentialError(f"APNs origin must be https://host[:port], got {origin!r}")
        self._config = config
        self._environment = environment
        self._host = parts.hostname
        self._port = parts.port or 443
        self._authority = parts.netloc
        self._ssl = ssl_context
        self._conns: list[Connection] = []
        self._connecting: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._seq = 0
        self._next = 0
        self._failures = 0
        self._housekeeper: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    @property
    def next_seq(self) -> int:
        """The sequence number the next connection opened will carry."""
        return self._seq + 1

    def pick(self, min_seq: int = 0) -> Connection | None:
        """A connection with a free stream now (round-robin), or None."""
        conns = self._conns
        count = len(conns)
        for step in range(count):
            index = (self._next + step) % count
            conn = conns[index]
            if conn.available > 0 and conn.seq >= min_seq:
                if conn.idle_since is not None and self._stale(conn):
                    continue
                self._next = index + 1
                return conn
        return None

    def _stale(self, conn: Connection) -> bool:
        # Azure's NAT forgets idle flows after 4 minutes without a word: never reuse one that
        # has been idle past the limit, whatever the housekeeping timer managed to do.
        if self._config.clock() - (conn.idle_since or 0.0) < self._config.idle_timeout:
            return False
        conn.retire("idle too long")
        return True

    async def acquire(self, deadline: float, min_seq: int = 0) -> Connection:
        """Wait for a connection with a free stream; :class:`StreamFailed` at the deadline."""
        loop = asyncio.get_running_loop()
        while True:
            conn = self.pick(min_seq)
            if conn is not None:
                return conn
            if self._closed:
                raise StreamFailed("the APNs client is closed", unprocessed=True)
            self._maybe_connect(min_seq)
            remaining = deadline - self._config.clock()
            if remaining <= 0:
                raise StreamFailed("no APNs connection was free in time", unprocessed=True)
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                raise StreamFailed(
                    "no APNs connection was free in time", unprocessed=True
                ) from None

    def _maybe_connect(self, min_seq: int) -> None:
        total = len(self._conns) + len(self._connecting)
        if min_seq > 0 and not any(c.seq >= min_seq for c in self._conns):
            # A connection opened after ``min_seq`` is required (ExpiredProviderToken): one is
            # opened even above the configured count, unless one is already on its way.
            if any(seq >= min_seq for seq in self._connecting):
                return
        elif total >= self._config.connections:
            return
        self._seq += 1
        self._connecting.add(self._seq)
        task = asyncio.get_running_loop().create_task(self._connect(self._seq))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, seq: int) -> None:
        config = self._config
        try:
            if self._failures:
                # Apple treats rapid reconnects as abuse: back off 0.5 s doubling to 60 s.
                delay = min(60.0, 0.5 * 2 ** (self._failures - 1)) * (0.5 + config.random() / 2)
                await config.sleep(delay)
            if self._closed:
                return
            token = None
            if isinstance(config.credential, TokenCredential):
                token = config.credential.provider_token(config.wall_clock)
            conn = Connection(
                authority=self._authority,
                token=token,
                max_streams=config.max_streams_per_connection,
                clock=config.clock,
                on_change=self._on_change,
                seq=seq,
                label=f"{self._environment}#{seq}",
            )
            opener = config.opener or asyncio.get_running_loop().create_connection
            await open_connection(
                conn,
                host=self._host,
                port=self._port,
                ssl_context=self._ssl,
                opener=opener,
                connect_timeout=config.connect_timeout,
            )
        except StreamFailed as exc:
            self._failures += 1
            logger.warning("APNs %s: %s", self._environment, exc)
            self._fail_waiters(exc)
            return
        finally:
            self._connecting.discard(seq)
        if self.closed:  # aclose() ran while we were connecting
            conn.close()
            return
        self._failures = 0
        self._conns.append(conn)
        logger.info("APNs %s: connection %s open", self._environment, conn.label)
        self._ensure_housekeeper()
        self._wake()

    def _on_change(self, conn: Connection) -> None:
        if conn.retired and conn in self._conns:
            self._conns.remove(conn)
            if self._waiters:
                self._maybe_connect(0)
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        free = sum(c.available for c in self._conns)
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def _fail_waiters(self, exc: StreamFailed) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)

    def _ensure_housekeeper(self) -> None:
        if self._housekeeper is None and not self._closed:
            config = self._config
            tick = max(0.05, min(config.idle_timeout, config.ping_after) / 4)
            self._housekeeper = asyncio.get_running_loop().call_later(tick, self._housekeep)

    def _housekeep(self) -> None:
        self._housekeeper = None
        self.housekeep()
        if self._conns:
            self._ensure_housekeeper()

    def housekeep(self) -> None:
        """Close idle connections and PING quiet ones (also run by a timer)."""
        config = self._config
        now = config.clock()
        for conn in list(self._conns):
            conn.housekeep(
                now,
                idle_timeout=config.idle_timeout,
                ping_after=config.ping_after,
                ping_timeout=config.connect_timeout,
            )

    async def close(self) -> None:
        """Close every connection and stop connecting; idempotent."""
        self._closed = True
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            self._housekeeper = None
        for task in list(self._tasks):
            task.cancel()
        conns = list(self._conns)
        for conn in conns:
            conn.close()
        self._fail_waiters(StreamFailed("the APNs client is closed", unprocessed=False))
        pending = [c.lost for c in conns if not c.lost.done()]
        if pending:
            await asyncio.wait(pending, timeout=1.0)


__all__ = [
    "ApnsClient",
    "ApnsConfig",
    "ApnsUnavailable",
    "CertificateCredential",
    "NotificationError",
    "TokenCredential",
]
