"""The app's exceptions, one tree.

    PushRelayError
    ├── SettingsError          a setting is missing or malformed (names it)
    ├── InputError             a request or event that a retry cannot fix (4xx / logged and dropped)
    │   └── ...                subclasses per use case (validation, authentication, ...)
    └── TransientError         an outage: storage, APNs or ACS did not answer; retry later
        └── ...

APNs rejections are values (see ``shared.apns.response``), not exceptions. ``shared.apns`` keeps
its own small tree (``shared.apns.errors``) so that it can be published on its own.
"""

from __future__ import annotations


class PushRelayError(Exception):
    """Base of every error the app raises on purpose."""


class SettingsError(PushRelayError):
    """A setting is missing or malformed; the message names it."""


class InputError(PushRelayError):
    """Input that no retry can fix: answered with a 4xx or logged and dropped."""


class TransientError(PushRelayError):
    """A dependency did not answer; the caller should retry (Event Grid redelivers on 500)."""
