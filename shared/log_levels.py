"""The levels of the libraries' loggers, set by the app itself when it is imported.

In Azure the Python worker forwards every record at INFO and above to the host, and so to
Application Insights. The Azure SDKs log each HTTP request and answer at INFO
(``azure.core.pipeline.policies.http_logging_policy``), with the storage URL, and our Table keys
carry ACS user ids: in one measured run they made 508 forwarded records against the app's own 39.
httpx, httpcore, aiohttp and h2 add their own per-request lines. The host's ``host.json`` log
levels filter only after the worker has sent them, so the app lowers these loggers at import,
before any of them logs; ``LIBRARY_LOG_LEVEL`` raises them again for a debugging session.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from shared.settings import LOG_LEVELS, SETTINGS_TABLE

LIBRARY_LOGGERS = ("azure", "httpx", "httpcore", "aiohttp", "h2", "hpack", "urllib3")
SETTING = "LIBRARY_LOG_LEVEL"

log = logging.getLogger(__name__)


def _default() -> str:
    return next(str(s.default) for s in SETTINGS_TABLE if s.name == SETTING)


def library_log_level(env: Mapping[str, str]) -> int:
    """The level ``LIBRARY_LOG_LEVEL`` names; the default (WARNING) when unset or not a level."""
    raw = (env.get(SETTING) or "").strip().upper() or _default()
    if raw not in LOG_LEVELS:
        # Never fail the import over this: a worker that cannot import the app serves nothing.
        log.warning(
            "%s=%r is not one of %s; using %s", SETTING, raw, ",".join(LOG_LEVELS), _default()
        )
        raw = _default()
    return logging.getLevelNamesMapping()[raw]


def quiet_library_loggers(env: Mapping[str, str]) -> None:
    """Set every library logger in LIBRARY_LOGGERS to the level ``env`` asks for."""
    level = library_log_level(env)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)
