"""The parsed APNs answer: every documented reason, and what a caller may do about it.

Reasons are classified here and nowhere else (as apns2's ``response.go`` does): the client asks
:attr:`PushResult.retryable` and :attr:`PushResult.needs_new_connection`; the outcome rules
(:mod:`shared.push.outcomes`) ask :attr:`~PushResult.unregistered`,
:attr:`~PushResult.bad_token`, :attr:`~PushResult.credentials_refused` and
:attr:`~PushResult.bad_topic`.
"""

# ruff: noqa: S105  (reason names such as "BadDeviceToken" are not passwords)

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final


class Reason(enum.StrEnum):
    """Every ``reason`` APNs documents; the HTTP status each comes with is in the comment."""

    BAD_COLLAPSE_ID = "BadCollapseId"  # 400
    BAD_DEVICE_TOKEN = "BadDeviceToken"  # 400: invalid, or sent to the wrong environment
    BAD_EXPIRATION_DATE = "BadExpirationDate"  # 400
    BAD_MESSAGE_ID = "BadMessageId"  # 400
    BAD_PRIORITY = "BadPriority"  # 400
    BAD_TOPIC = "BadTopic"  # 400
    DEVICE_TOKEN_NOT_FOR_TOPIC = "DeviceTokenNotForTopic"  # 400
    DUPLICATE_HEADERS = "DuplicateHeaders"  # 400
    IDLE_TIMEOUT = "IdleTimeout"  # 400
    INVALID_PUSH_TYPE = "InvalidPushType"  # 400
    MISSING_DEVICE_TOKEN = "MissingDeviceToken"  # 400
    MISSING_TOPIC = "MissingTopic"  # 400
    PAYLOAD_EMPTY = "PayloadEmpty"  # 400
    TOPIC_DISALLOWED = "TopicDisallowed"  # 400
    BAD_CERTIFICATE = "BadCertificate"  # 403
    BAD_CERTIFICATE_ENVIRONMENT = "BadCertificateEnvironment"  # 403
    EXPIRED_PROVIDER_TOKEN = "ExpiredProviderToken"  # 403
    FORBIDDEN = "Forbidden"  # 403
    INVALID_PROVIDER_TOKEN = "InvalidProviderToken"  # 403
    MISSING_PROVIDER_TOKEN = "MissingProviderToken"  # 403
    UNRELATED_KEY_ID_IN_TOKEN = "UnrelatedKeyIdInToken"  # 403
    BAD_ENVIRONMENT_KEY_ID_IN_TOKEN = "BadEnvironmentKeyIdInToken"  # 403
    BAD_PATH = "BadPath"  # 404
    METHOD_NOT_ALLOWED = "MethodNotAllowed"  # 405
    EXPIRED_TOKEN = "ExpiredToken"  # 410
    UNREGISTERED = "Unregistered"  # 410
    PAYLOAD_TOO_LARGE = "PayloadTooLarge"  # 413
    TOO_MANY_PROVIDER_TOKEN_UPDATES = "TooManyProviderTokenUpdates"  # 429
    TOO_MANY_REQUESTS = "TooManyRequests"  # 429: too many pushes to one device token
    INTERNAL_SERVER_ERROR = "InternalServerError"  # 500
    SERVICE_UNAVAILABLE = "ServiceUnavailable"  # 503
    SHUTDOWN = "Shutdown"  # 503
    # Broadcast (Live Activity channel) endpoints only; all 400 except where noted.
    FEATURE_NOT_ENABLED = "FeatureNotEnabled"  # 400
    MISSING_CHANNEL_ID = "MissingChannelId"  # 400
    BAD_CHANNEL_ID = "BadChannelId"  # 400
    CHANNEL_NOT_REGISTERED = "ChannelNotRegistered"  # 400
    BAD_REQUEST_PARAMS = "BadRequestParams"  # 400
    BAD_REQUEST_PAYLOAD = "BadRequestPayload"  # 400
    MISSING_PUSH_TYPE = "MissingPushType"  # 400
    CANNOT_CREATE_CHANNEL_CONFIG = "CannotCreateChannelConfig"  # 400
    TOPIC_MISMATCH = "TopicMismatch"  # 400
    UNKNOWN = "Unknown"  # any reason not listed here (kept as a value, never raised)

    @classmethod
    def parse(cls, text: str | None) -> Reason | None:
        """The reason for ``text``; :attr:`UNKNOWN` for unlisted strings, None for None."""
        if text is None:
            return None
        return _BY_VALUE.get(text, cls.UNKNOWN)


_BY_VALUE: Final[dict[str, Reason]] = {r.value: r for r in Reason}

# Reasons a retry can fix, because they are about the connection or load rather than the push.
# (ExpiredProviderToken / TooManyProviderTokenUpdates / UnrelatedKeyIdInToken: a new connection;
# IdleTimeout / Shutdown: reconnect; TooManyRequests, 500, 503: back off.)
RETRYABLE_REASONS: Final = frozenset(
    {
        Reason.EXPIRED_PROVIDER_TOKEN,
        Reason.TOO_MANY_PROVIDER_TOKEN_UPDATES,
        Reason.UNRELATED_KEY_ID_IN_TOKEN,
        Reason.IDLE_TIMEOUT,
        Reason.SHUTDOWN,
        Reason.TOO_MANY_REQUESTS,
        Reason.INTERNAL_SERVER_ERROR,
        Reason.SERVICE_UNAVAILABLE,
    }
)
RETRYABLE_STATUSES: Final = frozenset({429, 500, 502, 503, 504})

# Answers about the connection rather than the push: retire it and try another.
NEW_CONNECTION_REASONS: Final = frozenset(
    {
        Reason.EXPIRED_PROVIDER_TOKEN,
        Reason.TOO_MANY_PROVIDER_TOKEN_UPDATES,
        Reason.UNRELATED_KEY_ID_IN_TOKEN,
        Reason.IDLE_TIMEOUT,
        Reason.SHUTDOWN,
    }
)
# The token itself is wrong (or for another app): evidence against the device, counted.
TOKEN_REASONS: Final = frozenset({Reason.BAD_DEVICE_TOKEN, Reason.DEVICE_TOKEN_NOT_FOR_TOPIC})
# Our provider token or certificate is refused: no push of that app can succeed until it is fixed.
CREDENTIAL_REASONS: Final = frozenset(
    {
        Reason.BAD_CERTIFICATE,
        Reason.BAD_CERTIFICATE_ENVIRONMENT,
        Reason.EXPIRED_PROVIDER_TOKEN,  # still expired after the client's new-token retry
        Reason.FORBIDDEN,
        Reason.INVALID_PROVIDER_TOKEN,
        Reason.MISSING_PROVIDER_TOKEN,
        Reason.UNRELATED_KEY_ID_IN_TOKEN,
        Reason.BAD_ENVIRONMENT_KEY_ID_IN_TOKEN,
        Reason.TOO_MANY_PROVIDER_TOKEN_UPDATES,
        Reason.TOPIC_DISALLOWED,
    }
)


@dataclass(frozen=True, slots=True)
class PushResult:
    """What APNs answered for one notification (after the client's own retries).

    ``unregistered_at`` is the 410 ``timestamp`` (UTC): drop the token only if the device did
    not register again after it. ``attempts`` counts the times the push was put on the wire.
    """

    status: int
    reason: Reason | None
    apns_id: str
    apns_unique_id: str | None = None
    unregistered_at: datetime | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        """APNs accepted the notification (HTTP 200)."""
        return self.status == 200

    @property
    def retryable(self) -> bool:
        """Sending the same push later may succeed (429, 5xx, connection-level reasons)."""
        if self.status == 200:
            return False
        if self.reason is not None and self.reason is not Reason.UNKNOWN:
            return self.reason in RETRYABLE_REASONS
        return self.status in RETRYABLE_STATUSES

    @property
    def permanent(self) -> bool:
        """A rejection that will never succeed as sent: do not retry this push."""
        return self.status != 200 and not self.retryable

    @property
    def unregistered(self) -> bool:
        """The device token is no longer valid for the topic (HTTP 410)."""
        return self.status == 410

    @property
    def bad_token(self) -> bool:
        """BadDeviceToken / DeviceTokenNotForTopic (400): the token is wrong for this push."""
        return self.reason in TOKEN_REASONS

    @property
    def credentials_refused(self) -> bool:
        """Our provider token or certificate was refused (the reasons above, or any 403)."""
        return self.reason in CREDENTIAL_REASONS or self.status == 403

    @property
    def bad_topic(self) -> bool:
        """BadTopic (400): the app's bundle ID is wrong (configuration, not the device)."""
        return self.reason is Reason.BAD_TOPIC

    @property
    def needs_new_connection(self) -> bool:
        """The answer is about the connection (token age, idle, shutdown): retire it."""
        return self.reason in NEW_CONNECTION_REASONS


def parse_result(
    status: int,
    body: bytes,
    apns_id: str,
    apns_unique_id: str | None,
    attempts: int,
) -> PushResult:
    """Build a :class:`PushResult` from a response's status, JSON body and headers."""
    if status == 200:
        return PushResult(200, None, apns_id, apns_unique_id, None, attempts)
    reason_text: object = None
    timestamp: object = None
    if body:
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if isinstance(document, dict):
            reason_text = document.get("reason")
            timestamp = document.get("timestamp")
    reason = Reason.parse(reason_text) if isinstance(reason_text, str) else Reason.UNKNOWN
    unregistered_at = None
    if status == 410 and isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        unregistered_at = datetime.fromtimestamp(timestamp / 1000, tz=UTC)
    return PushResult(status, reason, apns_id, apns_unique_id, unregistered_at, attempts)
