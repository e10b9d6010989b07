"""Asking the delivery log, and keeping it small.

"What happened to message M in thread T for user U": every device tried, with its outcome,
APNs status, reason, apns-id, attempts and times (one partition query, see
:mod:`shared.storage.deliveries`). Answered over HTTP to admins (:func:`is_admin`: callers named in
``DELIVERY_LOG_ADMINS`` by issuer and subject or object id) and by
``python -m devtools.delivery_log``. The purge timer removes
records older than ``DELIVERY_RETENTION_DAYS`` through the per-day index (never a full scan).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.domain.callers import Caller
from shared.errors import ForbiddenError, InvalidInputError
from shared.settings import Settings
from shared.storage.deliveries import DeliveryRecord, DeliveryStore, PurgeReport

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 512


@dataclass(frozen=True, slots=True)
class LogQuery:
    """Which message's deliveries to show: thread, message and recipient."""

    user_id: str
    thread_id: str
    message_id: str


def parse_query(params: Mapping[str, str]) -> LogQuery:
    """The query of ``?threadId=&messageId=&userId=``. Raises InvalidInputError naming a field."""
    values: dict[str, str] = {}
    for name in ("userId", "threadId", "messageId"):
        value = (params.get(name) or "").strip()
        if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
            raise InvalidInputError("missing_or_invalid", field=name)
        values[name] = value
    return LogQuery(values["userId"], values["threadId"], values["messageId"])


def admin_names(settings: Settings) -> frozenset[tuple[str, str]]:
    """The (issuer, subject or object id) pairs ``DELIVERY_LOG_ADMINS`` names.

    An entry is ``ISSUER SUBJECT`` (issuers hold no spaces, so the first space splits them), or
    a bare ``SUBJECT``, which means one at ``AUTH_JWT_ISSUER`` (nobody when that is empty).
    """
    names: set[tuple[str, str]] = set()
    for entry in settings.delivery_log_admins:
        issuer, space, subject = entry.partition(" ")
        if not space:
            issuer, subject = settings.auth_jwt_issuer, entry
        if issuer and subject.strip():
            names.add((issuer, subject.strip()))
    return frozenset(names)


def is_admin(caller: Caller, settings: Settings) -> bool:
    """Whether ``DELIVERY_LOG_ADMINS`` names the caller by issuer and subject (or object id).

    The issuer counts: with Easy Auth in front of several providers, the same subject from
    another issuer is another person.
    """
    names = admin_names(settings)
    if (caller.issuer, caller.subject) in names:
        return True
    return bool(caller.object_id) and (caller.issuer, caller.object_id) in names


def require_admin(caller: Caller, settings: Settings) -> None:
    """Let only ``DELIVERY_LOG_ADMINS`` read the log. Raises ForbiddenError."""
    if not is_admin(caller, settings):
        log.warning("delivery log refused to a non-admin caller %s", caller.key[:12])
        raise ForbiddenError("forbidden")


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def record_json(record: DeliveryRecord) -> dict[str, Any]:
    """One record as JSON (the device appears by its id and shortened token only)."""
    return {
        "deviceId": record.device.device_id,
        "token": record.device.short_token,
        "topic": record.device.topic,
        "environment": record.device.environment,
        "kind": record.key.kind.value,
        "version": str(record.key.version),
        "state": record.state.value,
        "status": record.status,
        "reason": record.reason,
        "apnsId": record.apns_id,
        "attempts": record.apns_attempts,
        "claims": record.claims,
        "claimedAt": _time(record.claimed_at),
        "completedAt": _time(record.completed_at),
        "detail": record.detail,
        "eventId": record.event_id,
    }


async def read_log(query: LogQuery, deliveries: DeliveryStore) -> dict[str, Any]:
    """The JSON answer: the query and every record of that message for that user."""
    records = await deliveries.history(query.user_id, query.thread_id, query.message_id)
    return {
        "userId": query.user_id,
        "threadId": query.thread_id,
        "messageId": query.message_id,
        "deliveries": [record_json(r) for r in records],
    }


async def answer_log_request(
    params: Mapping[str, str], caller: Caller, settings: Settings, deliveries: DeliveryStore
) -> dict[str, Any]:
    """Check the caller is an admin, then read the log.

    Raises InvalidInputError or ForbiddenError.
    """
    require_admin(caller, settings)
    return await read_log(parse_query(params), deliveries)


async def purge_deliveries(
    deliveries: DeliveryStore, settings: Settings, clock: Callable[[], datetime]
) -> PurgeReport:
    """Remove delivery records older than ``DELIVERY_RETENTION_DAYS``."""
    report = await deliveries.purge(
        now=clock(), retention=timedelta(days=settings.delivery_retention_days)
    )
    log.info(
        "purge: %d delivery records, %d index rows over %d days",
        report.records,
        report.index_rows,
        report.days,
    )
    return report
