"""The request model: one notification for one device."""

from __future__ import annotations

import enum


class Environment(enum.StrEnum):
    """APNs environment a device token belongs to."""

    SANDBOX = "sandbox"
    PRODUCTION = "production"
