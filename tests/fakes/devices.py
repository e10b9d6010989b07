"""The device registry (``shared.storage.devices.DeviceStore``) in memory.

``FakeDeviceStore`` follows the adapter's rules: one row per (user, device), one owner per token
(registering moves it, unless a holder renewed since ``held_since``), a renewal keeps the
bookkeeping fields, removal is per user only, the 410 guard keeps a device renewed after the
timestamp, every write gives the row a new ETag. Every call yields to the event loop so
concurrent callers interleave as they do against storage. tests/integration/test_device_store.py
holds it and the adapter to the same contract.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from shared.domain.devices import Device
from shared.storage.devices import BACKGROUND_KEEP, Guarded, Registered, RegistrationOutcome


class FakeDeviceStore:
    """The devices and tokenowners tables in memory, optionally seeded with ``devices`` (each
    stored as registered: its user owns its token)."""

    def __init__(self, *devices: Device) -> None:
        self.rows: dict[tuple[str, str], Device] = {}
        self.owners: dict[str, str] = {}
        self.calls = 0
        self.renewal_sent: dict[tuple[str, str], tuple[datetime, ...]] = {}
        self._etags = itertools.count(1)
        for seeded in devices:
            self.owners[seeded.device_id] = seeded.user_id
            self._put(seeded)

    def of(self, user_id: str) -> list[Device]:
        """Every device of ``user_id``, read without a storage call (for assertions)."""
        return [d for (user, _), d in self.rows.items() if user == user_id]

    async def _tick(self) -> None:
        self.calls += 1
        await asyncio.sleep(0)

    def _put(self, device: Device) -> Device:
        stored = replace(device, etag=f'W/"{next(self._etags)}"')
        self.rows[(device.user_id, device.device_id)] = stored
        return stored

    async def register(
        self, device: Device, *, keep_key: bool = False, held_since: datetime | None = None
    ) -> Registered:
        await self._tick()
        key = (device.user_id, device.device_id)
        old = self.rows.get(key)
        if old is not None:
            if keep_key:
                device = replace(
                    device, preview_key=old.preview_key, key_expires_at=old.key_expires_at
                )
            renewed = self._put(
                replace(
                    device,
                    registered_at=old.registered_at,
                    bad_token_count=old.bad_token_count,
                    last_result=old.last_result,
                    last_result_at=old.last_result_at,
                    background_sent=old.background_sent,
                    wake_at=old.wake_at,
                    wake_sweep=old.wake_sweep,
                )
            )
            return Registered(RegistrationOutcome.RENEWED, etag=renewed.etag)
        previous = self.owners.get(device.device_id)
        holder = self.rows.get((previous, device.device_id)) if previous else None
        fresh = holder is not None and held_since is not None and holder.renewed_at >= held_since
        if previous != device.user_id and fresh:
            return Registered(RegistrationOutcome.HELD, previous, holder=holder)
        if previous is not None and previous != device.user_id:
            self.rows.pop((previous, device.device_id), None)
        self.owners[device.device_id] = device.user_id
        new = self._put(replace(device, stale=False, unanswered_wakes=0, bad_token_count=0))
        if previous is not None and previous != device.user_id:
            return Registered(RegistrationOutcome.MOVED, previous, new.etag)
        return Registered(RegistrationOutcome.CREATED, etag=new.etag)

    async def list_for_user(self, user_id: str) -> list[Device]:
        await self._tick()
        return self.of(user_id)

    async def get(self, user_id: str, device_id: str) -> Device | None:
        await self._tick()
        return self.rows.get((user_id, device_id))

    def _drop(self, device: Device) -> None:
        del self.rows[(device.user_id, device.device_id)]
        if self.owners.get(device.device_id) == device.user_id:
            del self.owners[device.device_id]

    async def remove(self, user_id: str, device_id: str) -> Device | None:
        await self._tick()
        device = self.rows.get((user_id, device_id))
        if device is not None:
            self._drop(device)
        return device

    async def remove_if_registered_before(
        self, user_id: str, device_id: str, when: datetime
    ) -> Device | None:
        await self._tick()
        device = self.rows.get((user_id, device_id))
        if device is None or device.renewed_at > when:
            return None
        self._drop(device)
        return device

    async def record_result(
        self, user_id: str, device_id: str, result: str, *, bad_token: bool, at: datetime
    ) -> int | None:
        await self._tick()
        device = self.rows.get((user_id, device_id))
        if device is None:
            return None
        count = device.bad_token_count + 1 if bad_token else 0
        self._put(
            replace(device, bad_token_count=count, last_result=result[:200], last_result_at=at)
        )
        return count

    async def record_background_push(
        self,
        user_id: str,
        device_id: str,
        at: datetime,
        *,
        renewal: bool,
        window: timedelta = timedelta(hours=24),
    ) -> Device | None:
        await self._tick()
        device = self.rows.get((user_id, device_id))
        if device is None:
            return None
        recent = [t for t in device.background_sent if t > at - window] + [at]
        wakes = device.unanswered_wakes + (1 if renewal else 0)
        return self._put(
            replace(
                device, background_sent=tuple(recent[-BACKGROUND_KEEP:]), unanswered_wakes=wakes
            )
        )

    async def claim_wake(
        self,
        user_id: str,
        device_id: str,
        etag: str,
        *,
        sent: Sequence[datetime],
        unanswered_wakes: int,
        wake_at: datetime | None,
        wake_sweep: str | None,
    ) -> Guarded:
        await self._tick()
        stored = self.rows.get((user_id, device_id))
        if stored is None:
            return Guarded(gone=True)
        if stored.etag != etag:
            return Guarded()
        # As the table keeps them: withdraw pushes and renewal pushes apart, read back together.
        key = (user_id, device_id)
        others = set(stored.background_sent) - set(self.renewal_sent.get(key, ()))
        self.renewal_sent[key] = tuple(sent)[-BACKGROUND_KEEP:]
        written = self._put(
            replace(
                stored,
                background_sent=tuple(sorted(others | set(self.renewal_sent[key]))),
                unanswered_wakes=unanswered_wakes,
                wake_at=wake_at,
                wake_sweep=wake_sweep,
            )
        )
        return Guarded(written.etag)

    async def mark_stale(self, user_id: str, device_id: str, etag: str | None = None) -> bool:
        await self._tick()
        device = self.rows.get((user_id, device_id))
        if device is None or (etag is not None and device.etag != etag):
            return False
        self._put(replace(device, stale=True))
        return True
