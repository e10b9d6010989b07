"""The app's exceptions, one tree; no class below the edge knows an HTTP status.

    PushRelayError                          raised on purpose
    ├── SettingsError                       a setting is missing or malformed (names it)
    ├── InputError                          input no retry can fix (refused, or logged, dropped)
    │   ├── RefusalError                    a refusal with a reason (and the field it is about)
    │   │   ├── InvalidInputError           a body or query field is malformed
    │   │   │   ├── InvalidFieldError       usecases.registration: a PUT /api/devices field
    │   │   │   ├── InvalidQuietHoursError  domain.quiet_hours
    │   │   │   ├── InvalidReadReportError  usecases.read_reports
    │   │   │   └── InvalidPreferenceError  usecases.preferences
    │   │   ├── TooLargeError               a body over its size limit
    │   │   ├── UnauthenticatedError        no acceptable credentials (carries a challenge)
    │   │   │   └── AuthError               edges.auth: the bearer token was refused
    │   │   ├── ForbiddenError              authenticated, but not allowed
    │   │   │   └── TokenProofError         usecases.token_proof: a wrong or expired tokenProof
    │   │   ├── NotFoundError               no such thing for this caller
    │   │   │   └── DeviceNotFoundError     usecases.registration
    │   │   ├── ConflictError               held by someone else
    │   │   │   ├── VoipTokenHeldError      usecases.token_proof
    │   │   │   └── InboxFullError          storage.inbox: too many thread preferences
    │   │   └── RateLimitedError            too often; ``retry_after`` seconds
    │   │       ├── TokenRateLimitedError   usecases.access_tokens
    │   │       ├── TokenProofPendingError  usecases.token_proof
    │   │       └── TokenProofRateLimitedError  usecases.token_proof
    │   ├── MalformedEvent                  domain.events: an Event Grid event we cannot read
    │   ├── PayloadError                    domain.chat_payload: no push can be built from the event
    │   └── MalformedShardError             usecases.renewal: a queue message it did not write
    ├── TransientError                      an outage: a dependency did not answer; retry later
    │   ├── StorageUnavailableError         storage.tables
    │   │   └── TableMissingError           storage.tables: the table was deleted (recreated)
    │   ├── RegistrationContendedError      storage.devices: the row kept changing
    │   ├── AcsUnavailableError             acs.identity
    │   ├── AuthUnavailableError            edges.auth: the identity provider's keys
    │   ├── IdentityPendingError            usecases.access_tokens
    │   ├── ProofPushFailedError            usecases.token_proof
    │   ├── InboxBusyError                  storage.inbox: the row kept changing
    │   └── PushIncompleteError             push.pipeline: redeliver the event
    ├── StorageConflictError                storage.tables: a conditional write lost
    │   ├── EntityExistsError
    │   └── EntityChangedError
    ├── EntityNotFoundError                 storage.tables
    ├── StorageRejectedError                storage.tables: storage refused the request (4xx)
    ├── UnreadableRecordError               storage.deliveries: a stored row we cannot read
    ├── UnreadableInboxError                storage.inbox: a stored inbox row we cannot read
    ├── KeyUnwrapError                      domain.key_wrap: a stored preview key we cannot unwrap
    └── AcsRejectedError                    acs.identity: ACS refused (not an outage)

Use cases raise these; the HTTP edge (``shared.edges.http_api.error_response``) maps each class to a
status in one table, and ``tests/unit/test_errors.py`` walks this tree to check that every
exception class in ``shared/`` appears here and is mapped there.

APNs rejections are values (see ``shared.apns.response``), not exceptions. ``shared.apns`` keeps
its own small tree (``shared.apns.errors``) so that it can be published on its own; the preview
crypto's ``PreviewKeyError``/``PreviewDecryptError`` are ``ValueError``s of a pure module, caught
by their callers.
"""

from __future__ import annotations


class PushRelayError(Exception):
    """Base of every error the app raises on purpose."""


class SettingsError(PushRelayError):
    """A setting is missing or malformed; the message names it."""


class InputError(PushRelayError):
    """Input that no retry can fix: refused, or logged and dropped."""


class TransientError(PushRelayError):
    """A dependency did not answer; the caller should retry (Event Grid redelivers on failure)."""


class RefusalError(InputError):
    """A refusal with a short machine-readable ``reason`` (and the ``field`` it is about)."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason if field is None else f"{field}: {reason}")
        self.reason = reason
        self.field = field


class InvalidInputError(RefusalError):
    """A body or query field is missing or malformed."""


class TooLargeError(RefusalError):
    """A body over its size limit."""


class UnauthenticatedError(RefusalError):
    """No acceptable credentials; ``challenge`` is what the caller should present next."""

    def __init__(self, reason: str, *, challenge: str) -> None:
        super().__init__(reason)
        self.challenge = challenge


class ForbiddenError(RefusalError):
    """The caller is known but not allowed to do this."""


class NotFoundError(RefusalError):
    """No such thing for this caller."""


class ConflictError(RefusalError):
    """What the caller asks for is held by someone else."""


class RateLimitedError(RefusalError):
    """Asked too often; may ask again after ``retry_after`` seconds."""

    def __init__(self, reason: str, *, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
