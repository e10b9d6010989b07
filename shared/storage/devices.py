"""The device registry's Table Storage adapter (the model is :mod:`shared.domain.devices`).

A registration (APNs token, topic, environment, kind) lives until it is removed, reported dead by
APNs, or stale. Its preview key lasts ``PREVIEW_KEY_LIFETIME_MINUTES`` (45 by default: the ACS
SDK's notification service extension discards older keys).

Tables (see docs/architecture.md)::

    devices       PK encode_key(rawId)      RK deviceId   the registration (preview key wrapped)
    tokenowners   PK deviceId               RK "owner"    owner = rawId: a token has one user

Ownership: registering a token another user holds moves it, unless the caller asks to protect a
holder renewed since a given time (``held_since``): then nothing is written and the holder is
returned (``HELD``), so the use case can ask for proof of possession
(``shared.usecases.token_proof``).
The ``tokenowners`` row is the
serialization point: every (re)claim writes it under its ETag, and the previous owner's device row
is deleted *before* the claim, so a crash midway never leaves the token reachable from the
previous user's partition. A renewal (the token is already in the caller's partition) is one
ETag-free merge that requires the row to exist, so it never resurrects a device moved away.
One race remains, documented rather than paid for on every registration: two users claiming the
same token within milliseconds may both end up with a row; the token is one phone's, so this
only happens when someone registers a token that is not theirs, which already moves it.

Storage round trips: a renewal 1 (the merge); a token new to the service 3 (failed merge, owner
create, device write); taking a token over from another user 6 (failed merge, failed owner
create, owner read, delete there, owner update, device write), 7 with ``held_since`` (the
holder's row is read first).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from shared.apns.notification import Environment
from shared.domain.devices import Device, DeviceKind
from shared.domain.key_wrap import KeyUnwrapError, KeyWrapper, WrappedKey
from shared.errors import TransientError
from shared.storage.tables import (
    EntityChangedError,
    EntityNotFoundError,
    MatchConditions,
    StorageConflictError,
    TableClient,
    UpdateMode,
    decode_key,
    encode_key,
    int_property,
    read_entity,
    read_int,
    read_text,
    read_time,
    read_times,
    storage_errors,
    times_text,
    write_if_unchanged,
)

log = logging.getLogger(__name__)

DEVICES_TABLE: Final = "devices"
OWNERS_TABLE: Final = "tokenowners"
OWNER_ROW: Final = "owner"
_ATTEMPTS: Final = 4
BACKGROUND_KEEP: Final = 16  # recent background pushes kept per device (the budget needs few)


class RegistrationOutcome(enum.StrEnum):
    """What a registration did."""

    CREATED = "created"  # the token was nobody's
    RENEWED = "renewed"  # the caller already had it: fields and key refreshed
    MOVED = "moved"  # another user had it: removed there, now the caller's
    HELD = "held"  # another user renewed it recently: nothing written (proof needed to move it)


@dataclass(frozen=True, slots=True)
class Registered:
    """The result of :meth:`DeviceStore.register`."""

    outcome: RegistrationOutcome
    previous_owner: str | None = None  # set when MOVED or HELD
    etag: str | None = None  # the device row's ETag after the write (the renewal entry carries it)
    holder: Device | None = None  # when HELD: the other user's registration of the token


@dataclass(frozen=True, slots=True)
class Guarded:
    """The result of an ETag-guarded write: the new ETag, or why there is none."""

    etag: str | None = None
    gone: bool = False  # the device no longer exists (None etag, not gone: it changed)


class RegistrationContendedError(TransientError):
    """The token's ownership kept changing under us; the caller should retry shortly."""


class DeviceRegistry(Protocol):
    """The registry port used by the use cases (``DeviceStore`` and the test fake)."""

    async def register(
        self, device: Device, *, keep_key: bool = False, held_since: datetime | None = None
    ) -> Registered:
        """Register or renew ``device``, moving its token from any previous owner, except from
        one who renewed it at or after ``held_since`` (then ``HELD``, nothing written); with
        ``keep_key`` a renewal keeps the stored preview key instead of ``device``'s (none)."""
        ...

    async def list_for_user(self, user_id: str) -> list[Device]:
        """Every device of ``user_id``."""
        ...

    async def get(self, user_id: str, device_id: str) -> Device | None:
        """One device of ``user_id``, or None."""
        ...

    async def remove(self, user_id: str, device_id: str) -> Device | None:
        """Remove one device of ``user_id``; the removed device, or None if it had none."""
        ...

    async def remove_if_registered_before(
        self, user_id: str, device_id: str, when: datetime
    ) -> Device | None:
        """Remove the device unless it (re-)registered after ``when`` (APNs 410)."""
        ...

    async def record_result(
        self, user_id: str, device_id: str, result: str, *, bad_token: bool, at: datetime
    ) -> int | None:
        """Record an APNs result; returns the bad-token count, or None if the device is gone."""
        ...

    async def record_background_push(
        self, user_id: str, device_id: str, at: datetime, *, renewal: bool
    ) -> Device | None:
        """Record a background push for the budget; returns the updated device or None."""
        ...

    async def mark_stale(self, user_id: str, device_id: str) -> bool:
        """Mark the device stale (no longer woken); False if it is gone."""
        ...


class DeviceStore:
    """The device registry on Table Storage (devices + tokenowners tables)."""

    def __init__(self, devices: TableClient, owners: TableClient, keys: KeyWrapper) -> None:
        self._devices = devices
        self._owners = owners
        self._keys = keys

    # --- mapping ----------------------------------------------------------------------------------

    def _registration_fields(self, device: Device) -> dict[str, Any]:
        """The fields a (re-)registration sets; bookkeeping fields are left alone."""
        wrapped = ""
        if device.preview_key is not None:
            wrapped = self._keys.wrap(
                device.preview_key, user_id=device.user_id, device_id=device.device_id
            ).to_text()
        return {
            "PartitionKey": encode_key(device.user_id),
            "RowKey": encode_key(device.device_id),
            "token": device.token,
            "kind": device.kind.value,
            "topic": device.topic,
            "environment": device.environment.value,
            "previewKey": wrapped,
            # Without a key, "expires" at registration: never live, nothing to keep.
            "keyExpiresAt": device.key_expires_at or device.renewed_at,
            "renewedAt": device.renewed_at,
            "appVersion": device.app_version or "",
            "locale": device.locale or "",
            "stale": False,
            "unansweredWakes": 0,
        }

    def _new_entity(self, device: Device) -> dict[str, Any]:
        return {
            **self._registration_fields(device),
            "registeredAt": device.registered_at,
            "badTokenCount": 0,
            "lastResult": "",
            "backgroundSent": "",
        }

    def _to_device(self, entity: Mapping[str, Any]) -> Device:
        user_id = decode_key(str(entity["PartitionKey"]))
        device_id = decode_key(str(entity["RowKey"]))
        renewed = read_time(entity["renewedAt"])
        key, expires = self._unwrap(entity, user_id, device_id)
        metadata = getattr(entity, "metadata", {})
        last_at = entity.get("lastResultAt")
        return Device(
            user_id=user_id,
            device_id=device_id,
            token=str(entity["token"]),
            kind=DeviceKind(entity["kind"]),
            topic=str(entity["topic"]),
            environment=Environment(entity["environment"]),
            registered_at=read_time(entity.get("registeredAt") or entity["renewedAt"]),
            renewed_at=renewed,
            preview_key=key,
            key_expires_at=expires,
            app_version=read_text(entity, "appVersion"),
            locale=read_text(entity, "locale"),
            stale=bool(entity.get("stale", False)),
            bad_token_count=read_int(entity.get("badTokenCount")),
            last_result=read_text(entity, "lastResult"),
            background_sent=tuple(
                sorted(
                    {
                        *read_times(entity.get("backgroundSent")),
                        *read_times(entity.get("renewalSent")),
                    }
                )
            ),
            unanswered_wakes=read_int(entity.get("unansweredWakes")),
            etag=metadata.get("etag"),
            last_result_at=read_time(last_at) if last_at is not None else None,
            wake_at=next(iter(read_times(entity.get("wakeAt"))), None),
            wake_sweep=read_text(entity, "wakeSweep"),
        )

    def _unwrap(
        self, entity: Mapping[str, Any], user_id: str, device_id: str
    ) -> tuple[bytes | None, datetime | None]:
        text = read_text(entity, "previewKey")
        if text is None:
            return None, None
        try:
            key = self._keys.unwrap(
                WrappedKey.from_text(text), user_id=user_id, device_id=device_id
            )
        except KeyUnwrapError as exc:
            # A retired KEK or a damaged row: push with the generic text until the next renewal.
            log.warning("preview key of device %s unusable: %s", device_id, exc)
            return None, None
        return key, read_time(entity["keyExpiresAt"])

    # --- reads ------------------------------------------------------------------------------------

    async def get(self, user_id: str, device_id: str) -> Device | None:
        """One device of ``user_id``, or None. Raises StorageUnavailableError."""
        entity = await read_entity(
            self._devices, encode_key(user_id), encode_key(device_id), what="read device"
        )
        return None if entity is None else self._to_device(entity)

    async def list_for_user(self, user_id: str) -> list[Device]:
        """Every device of ``user_id`` (one partition query). Raises StorageUnavailableError."""
        with storage_errors("list devices"):
            entities = [
                e
                async for e in self._devices.query_entities(
                    "PartitionKey eq @pk", parameters={"pk": encode_key(user_id)}
                )
            ]
        return [self._to_device(e) for e in entities]

    # --- registration -----------------------------------------------------------------------------

    async def register(
        self, device: Device, *, keep_key: bool = False, held_since: datetime | None = None
    ) -> Registered:
        """Register or renew ``device``; a token held by another user moves to this one.

        ``keep_key``: a renewal leaves the stored preview key and its expiry as they are (the
        request carried no key); a new or moved registration has none either way. With
        ``held_since``, a token whose other user renewed it at or after that time stays
        theirs: ``HELD`` with their registration, nothing written (one more point read).

        Raises RegistrationContendedError when the token's owner keeps changing concurrently,
        StorageUnavailableError on an outage.
        """
        renewed = await self._renew(device, keep_key=keep_key)
        if renewed is not None:
            return Registered(RegistrationOutcome.RENEWED, etag=renewed)
        # Optimistic: a token new to the service has no owner row, so try creating it first.
        owner: str | None = None
        etag: str | None = None
        for _ in range(_ATTEMPTS):
            previous = owner if owner not in (None, device.user_id) else None
            if previous is not None:
                if held_since is not None:
                    holder = await self.get(previous, device.device_id)
                    if holder is not None and holder.renewed_at >= held_since:
                        return Registered(RegistrationOutcome.HELD, previous, holder=holder)
                await self._delete_row(previous, device.device_id)
            try:
                await self._claim(device, etag)
            except StorageConflictError:
                owner, etag = await self._owner(device.device_id)
                continue
            with storage_errors("write device"):
                meta = await self._devices.upsert_entity(
                    self._new_entity(device), mode=UpdateMode.REPLACE
                )
            written = str(meta["etag"]) if meta.get("etag") else None
            if previous is not None:
                log.info("device %s moved to another user", device.device_id)
                return Registered(RegistrationOutcome.MOVED, previous, written)
            return Registered(RegistrationOutcome.CREATED, etag=written)
        raise RegistrationContendedError("device token ownership kept changing; retry")

    async def _renew(self, device: Device, *, keep_key: bool = False) -> str | None:
        """Merge the registration into an existing row of this user: its new ETag, or None if
        there is no such row."""
        fields = self._registration_fields(device)
        if keep_key:
            del fields["previewKey"], fields["keyExpiresAt"]
        try:
            with storage_errors("renew device"):
                # No ETag: If-Match * — updates only an existing row, never creates one.
                meta = await self._devices.update_entity(fields, mode=UpdateMode.MERGE)
        except EntityNotFoundError:
            return None
        return str(meta.get("etag") or "")

    async def _owner(self, device_id: str) -> tuple[str | None, str | None]:
        entity = await read_entity(
            self._owners, encode_key(device_id), OWNER_ROW, what="read token owner"
        )
        if entity is None:
            return None, None
        return str(entity["owner"]), entity.metadata["etag"]

    async def _claim(self, device: Device, etag: str | None) -> None:
        """Write the owner row under its ETag (create if absent). Raises StorageConflictError."""
        entity = {
            "PartitionKey": encode_key(device.device_id),
            "RowKey": OWNER_ROW,
            "owner": device.user_id,
            "since": device.renewed_at,
        }
        await write_if_unchanged(self._owners, entity, etag, what="claim token")

    async def _delete_row(self, user_id: str, device_id: str, etag: str | None = None) -> None:
        """Delete one device row (absent is fine). Raises EntityChangedError on a stale ETag."""
        with storage_errors("delete device"):
            if etag is None:
                await self._devices.delete_entity(encode_key(user_id), encode_key(device_id))
            else:
                await self._devices.delete_entity(
                    encode_key(user_id),
                    encode_key(device_id),
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )

    async def _release_owner(self, user_id: str, device_id: str) -> None:
        """Drop the owner row if it still names ``user_id``."""
        owner, etag = await self._owner(device_id)
        if owner != user_id:
            return
        try:
            with storage_errors("release token"):
                await self._owners.delete_entity(
                    encode_key(device_id),
                    OWNER_ROW,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except EntityChangedError:
            log.info("token of device %s was claimed while being released", device_id)

    # --- removal ----------------------------------------------------------------------------------

    async def remove(self, user_id: str, device_id: str) -> Device | None:
        """Remove a device of ``user_id`` only; returns it, or None if this user has no such one.

        Raises StorageUnavailableError.
        """
        return await self._remove_when(user_id, device_id, lambda _d: True)

    async def remove_if_registered_before(
        self, user_id: str, device_id: str, when: datetime
    ) -> Device | None:
        """Remove the device unless it (re-)registered after ``when`` (APNs 410 timestamp).

        ETag-guarded: a renewal racing with this keeps the device. Returns the removed device.
        """
        return await self._remove_when(user_id, device_id, lambda d: d.renewed_at <= when)

    async def _remove_when(
        self, user_id: str, device_id: str, condition: Callable[[Device], bool]
    ) -> Device | None:
        for _ in range(_ATTEMPTS):
            device = await self.get(user_id, device_id)
            if device is None or not condition(device):
                return None
            try:
                await self._delete_row(user_id, device_id, device.etag)
            except EntityChangedError:
                continue
            await self._release_owner(user_id, device_id)
            return device
        raise RegistrationContendedError("device kept changing while being removed; retry")

    # --- bookkeeping ------------------------------------------------------------------------------

    async def _merge(self, user_id: str, device_id: str, fields: Mapping[str, Any]) -> bool:
        entity = {"PartitionKey": encode_key(user_id), "RowKey": encode_key(device_id), **fields}
        try:
            with storage_errors("update device"):
                await self._devices.update_entity(entity, mode=UpdateMode.MERGE)
        except EntityNotFoundError:
            return False
        return True

    async def _merge_guarded(self, device: Device, fields: Mapping[str, Any]) -> str | None:
        """Merge under the device's ETag: the new ETag, or None when it changed (re-read)."""
        entity = {
            "PartitionKey": encode_key(device.user_id),
            "RowKey": encode_key(device.device_id),
            **fields,
        }
        try:
            with storage_errors("update device"):
                metadata = await self._devices.update_entity(
                    entity,
                    mode=UpdateMode.MERGE,
                    etag=device.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except EntityChangedError:
            return None
        return str(metadata["etag"])

    async def record_result(
        self, user_id: str, device_id: str, result: str, *, bad_token: bool, at: datetime
    ) -> int | None:
        """Record an APNs result text; a bad token increments the count, anything else resets it.

        Returns the new bad-token count, or None when the device is gone. One round trip unless
        ``bad_token`` (read, then an ETag-guarded write).
        """
        fields: dict[str, Any] = {"lastResult": result[:200], "lastResultAt": at}
        if not bad_token:
            ok = await self._merge(user_id, device_id, {**fields, "badTokenCount": 0})
            return 0 if ok else None
        for _ in range(_ATTEMPTS):
            device = await self.get(user_id, device_id)
            if device is None:
                return None
            count = device.bad_token_count + 1
            try:
                written = await self._merge_guarded(
                    device, {**fields, "badTokenCount": int_property(count)}
                )
            except EntityNotFoundError:
                return None
            if written is not None:
                return count
        raise RegistrationContendedError("device kept changing while recording a result")

    async def record_background_push(
        self,
        user_id: str,
        device_id: str,
        at: datetime,
        *,
        renewal: bool,
        window: timedelta = timedelta(hours=24),
    ) -> Device | None:
        """Record a background push sent at ``at`` (the per-device budget), ETag-guarded.

        Keeps the pushes of the last ``window`` (at most 16). A ``renewal`` push counts as
        unanswered until the device renews. Returns the updated device, or None if it is gone.
        """
        for _ in range(_ATTEMPTS):
            device = await self.get(user_id, device_id)
            if device is None:
                return None
            recent = [t for t in device.background_sent if t > at - window] + [at]
            recent = recent[-BACKGROUND_KEEP:]
            wakes = device.unanswered_wakes + (1 if renewal else 0)
            fields = {"backgroundSent": times_text(recent), "unansweredWakes": wakes}
            try:
                written = await self._merge_guarded(device, fields)
            except EntityNotFoundError:
                return None
            if written is not None:
                return replace(
                    device,
                    background_sent=tuple(recent),
                    unanswered_wakes=wakes,
                    etag=written,
                )
        raise RegistrationContendedError("device kept changing while recording a push")

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
        """Record renewal pushes under ``etag``: one round trip, the renewal worker's claim.

        ``sent`` becomes the device's renewal pushes (read back merged into ``background_sent``,
        so withdraw pushes see them). Changed since ``etag`` or gone: nothing is written.
        Raises StorageUnavailableError.
        """
        fields = {
            "PartitionKey": encode_key(user_id),
            "RowKey": encode_key(device_id),
            "renewalSent": times_text(list(sent)[-BACKGROUND_KEEP:]),
            "unansweredWakes": int_property(unanswered_wakes),
            "wakeAt": times_text([wake_at] if wake_at is not None else []),
            "wakeSweep": wake_sweep or "",
        }
        return await self._guarded(fields, etag)

    async def _guarded(self, entity: Mapping[str, Any], etag: str) -> Guarded:
        try:
            with storage_errors("update device"):
                meta = await self._devices.update_entity(
                    entity,
                    mode=UpdateMode.MERGE,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except EntityChangedError:
            return Guarded()
        except EntityNotFoundError:
            return Guarded(gone=True)
        return Guarded(str(meta["etag"]))

    async def mark_stale(self, user_id: str, device_id: str, etag: str | None = None) -> bool:
        """Mark the device stale: renewal stops waking it. False when it is gone, or changed
        since ``etag`` when one is given."""
        if etag is None:
            return await self._merge(user_id, device_id, {"stale": True})
        entity = {"PartitionKey": encode_key(user_id), "RowKey": encode_key(device_id)}
        return (await self._guarded({**entity, "stale": True}, etag)).etag is not None
