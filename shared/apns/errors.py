"""The APNs package's exceptions.

An APNs *rejection* is never an exception: it is a :class:`shared.apns.response.PushResult`
value the caller inspects. Exceptions say that a notification could not be sent at all::

    ApnsError
     ├── NotificationError   invalid before sending (names the offending field)
     ├── CredentialError     bad key, certificate or credential configuration
     └── ApnsUnavailable     no answer arrived within the budget: connection loss, timeouts,
                             connect failures, retries exhausted (the only error raised by a send)
"""

from __future__ import annotations


class ApnsError(Exception):
    """Base of every error raised by :mod:`shared.apns`."""


class NotificationError(ApnsError):
    """The notification would be rejected by APNs; nothing was sent."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class CredentialError(ApnsError):
    """A provider key, certificate or credential setting is unusable."""


class ApnsUnavailable(ApnsError):  # noqa: N818 (the contract's name: it is an outcome, not a bug)
    """No APNs answer arrived within the budget (connection loss, timeouts, retries exhausted).

    ``apns_id`` is the id the notification was sent with; ``attempts`` how many times it was put
    on the wire (a timed-out attempt may still have been delivered: APNs does not de-duplicate).
    """

    def __init__(self, message: str, *, apns_id: str = "", attempts: int = 0) -> None:
        super().__init__(message)
        self.apns_id = apns_id
        self.attempts = attempts
