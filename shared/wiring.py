"""The composition root: builds the real adapters from settings, lazily, once per process.

Importing this module is cheap (no SDKs); each getter imports what it needs on first use, so a
cold start pays only for the functions actually invoked. Tests and the local host call
:func:`reset` with their own environment.

Convention: one async getter per collaborator on :class:`Container`, cached in ``self._cache``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar, cast

from shared.settings import Settings, load_settings

if TYPE_CHECKING:
    from shared.acs.identity import AcsIdentityClient
    from shared.apns_apps import AppClients
    from shared.domain.callers import Caller
    from shared.domain.events import EventSource
    from shared.domain.key_wrap import KeyWrapper
    from shared.edges.auth import Authenticator
    from shared.push.outcomes import ConfigAlarm
    from shared.storage.deliveries import TableDeliveryStore
    from shared.storage.devices import DeviceStore
    from shared.storage.identities import TableIdentityStore
    from shared.storage.inbox import TableInboxStore
    from shared.storage.registry_purge import TableDeviceDays
    from shared.storage.renewal_schedule import TableRenewalSchedule
    from shared.storage.renewal_sweeps import TableSweepLog
    from shared.storage.tables import Tables
    from shared.usecases.access_tokens import KnownIdentities, TokenPolicy
    from shared.usecases.read_reports import BadgeUpdates
    from shared.usecases.registration import RegistrationRules
    from shared.usecases.renewal import RenewalRules
    from shared.usecases.token_proof import TokenMoves

log = logging.getLogger(__name__)

T = TypeVar("T")
_ACS_USERS_KEPT = 10_000  # callers' identities rows remembered per process


def utc_now() -> datetime:
    """The wall clock (UTC) the use cases are given in production."""
    return datetime.now(UTC)


class Container:
    """Holds the settings and every adapter built from them."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = dict(env)
        self._settings: Settings | None = None
        self._cache: dict[str, object] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def settings(self) -> Settings:
        """The settings, read on first use. Raises SettingsError naming a bad setting."""
        if self._settings is None:
            self._settings = load_settings(self._env)
        return self._settings

    async def _once(self, name: str, build: Callable[[], Awaitable[T]]) -> T:
        """Build ``name`` once, even when first asked for by concurrent invocations."""
        if name in self._cache:
            return cast(T, self._cache[name])
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if name not in self._cache:
                self._cache[name] = await build()
        return cast(T, self._cache[name])

    async def authenticator(self) -> Authenticator:
        """Caller authentication (JWKS fetched lazily on the first bearer token)."""

        async def build() -> Authenticator:
            from shared.edges.auth import Authenticator, build_jwks

            return Authenticator(self.settings, build_jwks(self.settings))

        return await self._once("authenticator", build)

    async def identities(self) -> TableIdentityStore:
        """App user → ACS identity mapping (identities table)."""

        async def build() -> TableIdentityStore:
            from shared.storage.identities import TABLE, TableIdentityStore

            return TableIdentityStore(await (await self.tables()).table(TABLE))

        return await self._once("identities", build)

    async def acs_identity(self) -> AcsIdentityClient:
        """The ACS Identity API client (HMAC with a connection string, else managed identity)."""

        async def build() -> AcsIdentityClient:
            from shared.acs.identity import build_acs_client

            s = self.settings
            return build_acs_client(s.acs_connection_string, s.acs_endpoint, s.acs_ca_file)

        return await self._once("acs_identity", build)

    async def caller(self, headers: Mapping[str, str]) -> Caller:
        """Authenticate the request's caller. Raises AuthError (401), AuthUnavailableError."""
        return await (await self.authenticator()).authenticate(headers)

    async def caller_acs_user(self, headers: Mapping[str, str]) -> str:
        """Authenticate the request's caller; their ACS rawId (the identity made on first use).

        Raises AuthError (401), AuthUnavailableError and the identity mapping's errors.
        """
        return await self.acs_user(await self.caller(headers))

    async def acs_user(self, caller: Caller) -> str:
        """The ACS rawId of an authenticated caller (the identity made on first use).

        Raises IdentityPendingError and the identity mapping's storage or ACS errors.
        """
        from shared.usecases.access_tokens import acs_user_for

        # A caller's ACS identity never changes once filled in: remembering it saves the
        # device endpoints a storage round trip per request.
        return await acs_user_for(
            caller,
            await self.identities(),
            await self.acs_identity(),
            known=self.known_identities(),
        )

    def known_identities(self) -> KnownIdentities:
        """The identities rows this process remembers (shared by the token and device paths)."""
        from shared.usecases.access_tokens import KnownIdentities

        known = self._cache.get("known_identities")
        if not isinstance(known, KnownIdentities):
            known = KnownIdentities(_ACS_USERS_KEPT)
            self._cache["known_identities"] = known
        return known

    def token_policy(self) -> TokenPolicy:
        """Scopes, lifetime and per-caller rate of issued ACS tokens (from settings)."""
        from shared.usecases.access_tokens import TokenPolicy

        s = self.settings
        return TokenPolicy(
            s.acs_token_scopes, s.acs_token_lifetime_minutes, s.token_rate_limit_per_minute
        )

    async def tables(self) -> Tables:
        """The storage account (one shared transport); each table is created on first use."""

        async def build() -> Tables:
            from shared.storage.tables import Tables

            s = self.settings
            return Tables.connect(s.storage_connection, s.table_prefix, s.storage_client)

        return await self._once("tables", build)

    async def key_wrapper(self) -> KeyWrapper:
        """Encrypts preview keys at rest under ``KEY_ENCRYPTION_KEYS``."""

        async def build() -> KeyWrapper:
            from shared.domain.key_wrap import KeyWrapper

            return KeyWrapper.from_setting(self.settings.key_encryption_keys)

        return await self._once("key_wrapper", build)

    async def device_registry(self) -> DeviceStore:
        """The device registry (devices + tokenowners tables)."""

        async def build() -> DeviceStore:
            from shared.storage.devices import DEVICES_TABLE, OWNERS_TABLE, DeviceStore

            tables = await self.tables()
            return DeviceStore(
                await tables.table(DEVICES_TABLE),
                await tables.table(OWNERS_TABLE),
                await self.key_wrapper(),
            )

        return await self._once("device_registry", build)

    async def token_moves(self) -> TokenMoves:
        """Proof of possession for moving a token another user holds (tokenproofs table)."""

        async def build() -> TokenMoves:
            from shared.storage.token_proofs import PROOFS_TABLE, TableProofStore
            from shared.usecases.token_proof import TokenMoves

            return TokenMoves(
                TableProofStore(await (await self.tables()).table(PROOFS_TABLE)),
                self.pushers,
                timedelta(days=self.settings.device_stale_days),
            )

        return await self._once("token_moves", build)

    async def renewal_schedule(self) -> TableRenewalSchedule:
        """The renewal schedule (renewals table)."""

        async def build() -> TableRenewalSchedule:
            from shared.storage.renewal_schedule import RENEWALS_TABLE, TableRenewalSchedule

            return TableRenewalSchedule(await (await self.tables()).table(RENEWALS_TABLE))

        return await self._once("renewal_schedule", build)

    async def device_days(self) -> TableDeviceDays:
        """The device-day index the stale-registration purge reads (devicedays table)."""

        async def build() -> TableDeviceDays:
            from shared.storage.registry_purge import DAYS_TABLE, TableDeviceDays

            return TableDeviceDays(await (await self.tables()).table(DAYS_TABLE))

        return await self._once("device_days", build)

    async def sweep_log(self) -> TableSweepLog:
        """The renewal sweep's checkpoint, records and renewal credits (renewalsweeps table)."""

        async def build() -> TableSweepLog:
            from shared.storage.renewal_sweeps import SWEEPS_TABLE, TableSweepLog

            return TableSweepLog(await (await self.tables()).table(SWEEPS_TABLE))

        return await self._once("sweep_log", build)

    def renewal_rules(self) -> RenewalRules:
        """Renewal budget, lead, shard size and catch-up (RENEWAL_* settings)."""
        from shared.usecases.renewal import RenewalRules

        return RenewalRules.from_settings(self.settings)

    def registration_rules(self) -> RegistrationRules:
        """What device registration accepts: topics from APNS_APPS, key lifetime, renewal lead."""
        from shared.usecases.registration import RegistrationRules, allowed_topics

        s = self.settings
        return RegistrationRules(
            allowed_topics=allowed_topics(s.apns_apps),
            key_lifetime=timedelta(minutes=s.preview_key_lifetime_minutes),
            renewal_lead=timedelta(minutes=s.renewal_lead_minutes),
            max_devices=s.max_devices_per_user,
        )

    async def deliveries(self) -> TableDeliveryStore:
        """Delivery claims and the delivery log (deliveries table)."""

        async def build() -> TableDeliveryStore:
            from shared.storage.deliveries import DELIVERIES_TABLE, TableDeliveryStore

            return TableDeliveryStore(await (await self.tables()).table(DELIVERIES_TABLE))

        return await self._once("deliveries", build)

    async def inbox(self) -> TableInboxStore:
        """Each user's unread counts and preferences (inbox table)."""

        async def build() -> TableInboxStore:
            from shared.storage.inbox import INBOX_TABLE, TableInboxStore

            table = await (await self.tables()).table(INBOX_TABLE)
            return TableInboxStore(table, write_schema=self.settings.inbox_row_schema)

        return await self._once("inbox", build)

    async def badge_updates(self) -> BadgeUpdates:
        """What badge-only pushes to a user's devices need: the registry and APNs clients."""
        from shared.usecases.read_reports import BadgeUpdates

        return BadgeUpdates(await self.device_registry(), await self.pushers(), self.settings)

    async def pushers(self) -> AppClients:
        """One APNs client per app of ``APNS_APPS`` (token key or certificate), by bundle ID."""

        async def build() -> AppClients:
            from shared.apns_apps import build_clients, parse_apns_apps

            return build_clients(parse_apns_apps(self.settings.apns_apps), self.settings)

        return await self._once("pushers", build)

    def event_source(self) -> EventSource:
        """The ACS resource events must come from (``ACS_RESOURCE_ID``); warns once if unset."""
        from shared.domain.events import EventSource

        source = self._cache.get("event_source")
        if not isinstance(source, EventSource):
            source = EventSource(self.settings.acs_resource_id)
            if not source.resource_id.strip():
                log.warning("ACS_RESOURCE_ID is empty: events are not checked against their source")
            self._cache["event_source"] = source
        return source

    def config_alarm(self) -> ConfigAlarm:
        """Counts token/topic failures per app across this process's fan-outs."""
        from shared.push.outcomes import ConfigAlarm

        alarm = self._cache.get("config_alarm")
        if not isinstance(alarm, ConfigAlarm):
            alarm = ConfigAlarm(self.settings.config_error_threshold, utc_now)
            self._cache["config_alarm"] = alarm
        return alarm

    async def aclose(self) -> None:
        """Close every adapter that has an ``aclose``; the container can be rebuilt after."""
        for value in list(self._cache.values()):
            close = getattr(value, "aclose", None)
            if close is not None:
                await close()
        self._cache.clear()


_container: Container | None = None


def container() -> Container:
    """The process-wide container, built from ``os.environ`` on first use."""
    global _container  # noqa: PLW0603 - one composition root per process, by design
    if _container is None:
        _container = Container(os.environ)
    return _container


def reset(env: Mapping[str, str] | None = None) -> Container:
    """Replace the process-wide container (tests, the local host). Does not close the old one."""
    global _container  # noqa: PLW0603
    _container = Container(os.environ if env is None else env)
    return _container
