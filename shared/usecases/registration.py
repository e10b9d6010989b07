"""Use cases: register or renew a device, list the caller's devices, remove one.

The caller is always the ACS user the authenticated app user maps to; every operation works in
that user's partition only, so nobody can read, remove or renew another user's device. The one
cross-user effect is the documented ownership rule: registering a device token that another
user holds moves it to the caller (the token belongs to the phone, and the phone's app is now
signed in as the caller), once the caller proved the phone is theirs when that user still
renews it (202 and a code by push, then the PUT again with ``tokenProof``:
``shared.usecases.token_proof``).

``PUT /api/devices`` body::

    {"token": "<64-200 hex digits>", "kind": "alert" | "voip", "topic": "<bundle id>",
     "environment": "sandbox" | "production" ("development" = sandbox),
     "key": "<standard base64 of 64 bytes>"?, "appVersion": "..."?, "locale": "en_US"?,
     "tokenProof": "<the code from the proof push>"?}

The key (alert devices only) is live for ``PREVIEW_KEY_LIFETIME_MINUTES``; an alert device with
a key is scheduled for a wake-up ``RENEWAL_LEAD_MINUTES`` before it expires. Without a ``key``
field, a re-registration keeps the key already stored (and its expiry); ``"key": null`` removes
it. VoIP devices are never scheduled. Unknown body fields are ignored. A user holds at most
``MAX_DEVICES_PER_USER`` registrations: a new one (not a renewal) removes the least recently
renewed others past the limit (:func:`make_room`).

Raises :class:`InvalidFieldError` (400 naming the field) and :class:`DeviceNotFoundError` (404,
identical for a missing device and another user's); storage errors pass through.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from shared.apns.notification import Environment
from shared.domain.devices import Device, DeviceKind, device_id_for
from shared.errors import InvalidInputError, NotFoundError
from shared.storage.devices import DeviceRegistry, RegistrationOutcome
from shared.storage.renewal_schedule import EntryState, RenewalSchedule, due_at
from shared.usecases.token_proof import ProofRequired, TokenMoves

if TYPE_CHECKING:
    from shared.storage.registry_purge import DeviceDays

log = logging.getLogger(__name__)

PREVIEW_KEY_BYTES: Final = 64
_TOKEN: Final = re.compile(r"(?:[0-9a-fA-F]{2}){32,100}")
_DEVICE_ID: Final = re.compile(r"[0-9a-f]{64}")
_LOCALE: Final = re.compile(r"[A-Za-z0-9_-]{1,35}")
_PRINTABLE: Final = re.compile(r"[\x20-\x7e]{1,64}")
_PROOF: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ENVIRONMENTS: Final = {
    "sandbox": Environment.SANDBOX,
    "development": Environment.SANDBOX,
    "production": Environment.PRODUCTION,
}


class InvalidFieldError(InvalidInputError):
    """A body field is missing or malformed (the edge answers ``{"error": reason, "field"}``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason, field=field)


class DeviceNotFoundError(NotFoundError):
    """No such device for this caller (another user's device answers exactly the same)."""

    def __init__(self) -> None:
        super().__init__("device_not_found")


@dataclass(frozen=True, slots=True)
class RegistrationRules:
    """What registration accepts and how long keys live (from settings)."""

    allowed_topics: frozenset[str]
    key_lifetime: timedelta
    renewal_lead: timedelta
    max_devices: int = 0  # registrations per user (MAX_DEVICES_PER_USER); 0: no limit


def allowed_topics(apns_apps: str) -> frozenset[str]:
    """The bundle ids listed in ``APNS_APPS`` (a JSON list of objects with ``bundleId``)."""
    if not apns_apps.strip():
        return frozenset()
    apps = json.loads(apns_apps)
    return frozenset(
        str(app["bundleId"]) for app in apps if isinstance(app, dict) and app.get("bundleId")
    )


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    """A validated ``PUT /api/devices`` body."""

    token: str
    kind: DeviceKind
    topic: str
    environment: Environment
    key: bytes | None
    app_version: str | None
    locale: str | None
    keep_key: bool = False  # no "key" field: a re-registration keeps the stored key
    token_proof: str | None = None

    def __repr__(self) -> str:
        return f"DeviceRequest(kind={self.kind}, topic={self.topic!r}, env={self.environment})"


@dataclass(frozen=True, slots=True)
class RegisteredDevice:
    """What ``PUT /api/devices`` answers."""

    device_id: str
    outcome: RegistrationOutcome
    key_expires_at: datetime | None

    @property
    def status(self) -> int:
        """The HTTP status of this answer."""
        return 200

    def as_json(self) -> dict[str, str]:
        """The JSON answer: deviceId, and keyExpiresAt when a key was stored."""
        body = {"deviceId": self.device_id}
        if self.key_expires_at is not None:
            body["keyExpiresAt"] = _iso(self.key_expires_at)
        return body


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


# --- validation -----------------------------------------------------------------------------------


def _string(body: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidFieldError(name, "is required")
        return None
    if not isinstance(value, str):
        raise InvalidFieldError(name, "must be a string")
    return value


def _token(body: Mapping[str, Any]) -> str:
    token = _string(body, "token", required=True) or ""
    if not _TOKEN.fullmatch(token):
        raise InvalidFieldError("token", "must be an even number of hex digits, 64 to 200")
    return token.lower()


def _choice(body: Mapping[str, Any], name: str, choices: Mapping[str, Any]) -> Any:
    value = _string(body, name, required=True) or ""
    if value not in choices:
        raise InvalidFieldError(name, "must be one of " + ", ".join(sorted(choices)))
    return choices[value]


def _key(body: Mapping[str, Any], kind: DeviceKind) -> bytes | None:
    text = _string(body, "key", required=False)
    if text is None:
        return None
    if kind is DeviceKind.VOIP:
        raise InvalidFieldError("key", "is only accepted for alert devices")
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise InvalidFieldError("key", "must be standard base64") from None
    if len(key) != PREVIEW_KEY_BYTES:
        raise InvalidFieldError("key", f"must be {PREVIEW_KEY_BYTES} bytes")
    return key


def _optional(
    body: Mapping[str, Any], name: str, pattern: re.Pattern[str], what: str
) -> str | None:
    value = _string(body, name, required=False)
    if value is not None and not pattern.fullmatch(value):
        raise InvalidFieldError(name, what)
    return value


def parse_device_request(body: Mapping[str, Any], topics: frozenset[str]) -> DeviceRequest:
    """Validate a ``PUT /api/devices`` body. Raises InvalidFieldError naming the first bad field."""
    token = _token(body)
    kind: DeviceKind = _choice(body, "kind", {k.value: k for k in DeviceKind})
    topic = _string(body, "topic", required=True) or ""
    if topic not in topics:
        raise InvalidFieldError("topic", "is not an app this service pushes to")
    environment: Environment = _choice(body, "environment", _ENVIRONMENTS)
    return DeviceRequest(
        token=token,
        kind=kind,
        topic=topic,
        environment=environment,
        key=_key(body, kind),
        keep_key="key" not in body,
        app_version=_optional(body, "appVersion", _PRINTABLE, "must be 1-64 printable characters"),
        locale=_optional(body, "locale", _LOCALE, "must be a locale identifier such as en_US"),
        token_proof=_optional(body, "tokenProof", _PROOF, "must be the code from the proof push"),
    )


# --- use cases ------------------------------------------------------------------------------------


async def register_device(
    caller_user_id: str,
    body: Mapping[str, Any] | DeviceRequest,
    now: datetime,
    *,
    registry: DeviceRegistry,
    schedule: RenewalSchedule,
    rules: RegistrationRules,
    days: DeviceDays | None = None,
    moves: TokenMoves | None = None,
) -> RegisteredDevice | ProofRequired:
    """Register or renew the caller's device; a token held by another user moves to the caller.

    ``body`` is the raw JSON body or one already checked by :func:`parse_device_request` (the
    HTTP trigger validates before mapping the caller to an ACS identity, so a bad body creates
    nothing). ``days``: the day index the stale-registration purge reads
    (``shared.storage.registry_purge``), written alongside the renewal schedule. ``moves``: a token
    another user still holds moves only with proof of possession (:class:`ProofRequired` is
    answered until then); without it, such a token moves at once.

    Raises InvalidFieldError (400), the proof's errors (``shared.usecases.token_proof``: 403, 409,
    429, 503) and the registry's, schedule's or index's storage errors.
    """
    if isinstance(body, DeviceRequest):
        req = body
    else:
        req = parse_device_request(body, rules.allowed_topics)
    expires = now + rules.key_lifetime if req.key is not None else None
    device = Device(
        user_id=caller_user_id,
        device_id=device_id_for(req.token),
        token=req.token,
        kind=req.kind,
        topic=req.topic,
        environment=req.environment,
        registered_at=now,
        renewed_at=now,
        preview_key=req.key,
        key_expires_at=expires,
        app_version=req.app_version,
        locale=req.locale,
    )
    if moves is None:
        result = await registry.register(device, keep_key=req.keep_key)
    else:
        claimed = await moves.register(
            registry, device, req.token_proof, now, keep_key=req.keep_key
        )
        if isinstance(claimed, ProofRequired):
            return claimed
        result = claimed
    writes: list[Awaitable[None]] = []
    if device.kind is DeviceKind.ALERT and expires is not None:
        due = due_at(expires, rules.renewal_lead)
        # The entry carries what the renewal worker needs, true while the row keeps this ETag.
        state = EntryState.of(device, result.etag, now) if result.etag else None
        writes.append(schedule.schedule(caller_user_id, device.device_id, due, state))
    if days is not None:
        writes.append(days.note(caller_user_id, device.device_id, now))
    await _all(writes)
    if result.outcome is not RegistrationOutcome.RENEWED:
        await make_room(caller_user_id, registry=registry, schedule=schedule, rules=rules)
    log.info(
        "device %s %s (%s, %s)", device.device_id, result.outcome, device.kind, device.environment
    )
    return RegisteredDevice(device.device_id, result.outcome, expires)


async def _all(writes: Sequence[Awaitable[None]]) -> None:
    """Run independent writes concurrently; the first failure is raised after all finished."""
    results = await asyncio.gather(*writes, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def make_room(
    user_id: str,
    *,
    registry: DeviceRegistry,
    schedule: RenewalSchedule,
    rules: RegistrationRules,
) -> int:
    """Remove ``user_id``'s least recently renewed registrations past ``rules.max_devices``;
    how many were removed.

    One partition read per new registration. Every caller ranks by the same order (renewal
    time, then id) and exempts nobody, so concurrent registrations agree on which to remove
    (exempting each caller's own device would let a flood remove fresh ones). A device renewed
    meanwhile is kept (the 410 guard), leaving the user one over until the next registration.
    """
    if rules.max_devices <= 0:
        return 0
    devices = await registry.list_for_user(user_id)
    excess = len(devices) - rules.max_devices
    if excess <= 0:
        return 0
    removed = 0
    for stale in sorted(devices, key=_staleness)[:excess]:
        gone = await registry.remove_if_registered_before(
            user_id, stale.device_id, stale.renewed_at
        )
        if gone is None:
            continue
        removed += 1
        if gone.kind is DeviceKind.ALERT and gone.key_expires_at is not None:
            await schedule.unschedule(
                user_id, gone.device_id, due_at(gone.key_expires_at, rules.renewal_lead)
            )
        log.info("device %s removed to make room (limit %d)", gone.device_id, rules.max_devices)
    return removed


def _staleness(device: Device) -> tuple[datetime, str]:
    return device.renewed_at, device.device_id


def device_summary(device: Device, now: datetime) -> dict[str, Any]:
    """What a listing shows of one device: no key, the token shortened."""
    summary: dict[str, Any] = {
        "deviceId": device.device_id,
        "token": device.short_token,
        "kind": device.kind.value,
        "topic": device.topic,
        "environment": device.environment.value,
        "registeredAt": _iso(device.registered_at),
        "renewedAt": _iso(device.renewed_at),
        "hasLiveKey": device.live_key(now) is not None,
        "stale": device.stale,
    }
    if device.key_expires_at is not None:
        summary["keyExpiresAt"] = _iso(device.key_expires_at)
    for name, value in (
        ("appVersion", device.app_version),
        ("locale", device.locale),
        ("lastResult", device.last_result),
    ):
        if value is not None:
            summary[name] = value
    return summary


async def list_devices(
    caller_user_id: str, now: datetime, *, registry: DeviceRegistry
) -> list[dict[str, Any]]:
    """The caller's devices as JSON-ready summaries (:func:`device_summary`), oldest first."""
    devices = await registry.list_for_user(caller_user_id)
    devices.sort(key=lambda d: (d.registered_at, d.device_id))
    return [device_summary(d, now) for d in devices]


async def remove_device(
    caller_user_id: str,
    device_id: str,
    *,
    registry: DeviceRegistry,
    schedule: RenewalSchedule,
    rules: RegistrationRules,
) -> None:
    """Remove one of the caller's devices and its renewal entry.

    Raises DeviceNotFoundError (404) when the caller has no such device, whoever else has it;
    a malformed id is answered the same way without touching storage.
    """
    if not _DEVICE_ID.fullmatch(device_id):
        raise DeviceNotFoundError()
    removed = await registry.remove(caller_user_id, device_id)
    if removed is None:
        raise DeviceNotFoundError()
    if removed.kind is DeviceKind.ALERT and removed.key_expires_at is not None:
        await schedule.unschedule(
            caller_user_id, device_id, due_at(removed.key_expires_at, rules.renewal_lead)
        )
    log.info("device %s removed by its owner", device_id)
