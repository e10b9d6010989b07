"""The app lowers the SDKs' loggers itself: in Azure the worker forwards every INFO record."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.log_levels import LIBRARY_LOGGERS, library_log_level

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

# A fresh interpreter whose root logger is at DEBUG, as under the worker, then the app's import.
PROBE = """
import json, logging
logging.basicConfig(level=logging.DEBUG)
import function_app
names = ["azure.core.pipeline.policies.http_logging_policy", "azure.data.tables", "httpx",
         "httpcore.http2", "aiohttp.client", "h2.connection", "shared.usecases.chat"]
level = {n: logging.getLevelName(logging.getLogger(n).getEffectiveLevel()) for n in names}
print(json.dumps(level))
"""


def _levels(**env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    levels: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return levels


def test_importing_the_app_under_a_debug_root_leaves_the_sdk_loggers_at_warning() -> None:
    levels = _levels()
    del levels["shared.usecases.chat"]

    assert set(levels.values()) == {"WARNING"}


def test_the_apps_own_loggers_keep_the_root_level() -> None:
    assert _levels()["shared.usecases.chat"] == "DEBUG"


def test_library_log_level_raises_them_for_a_debugging_session() -> None:
    assert _levels(LIBRARY_LOG_LEVEL="info")["httpx"] == "INFO"


def test_a_bad_library_log_level_falls_back_to_warning_without_failing_the_import() -> None:
    assert library_log_level({"LIBRARY_LOG_LEVEL": "LOUD"}) == logging.WARNING


def test_every_library_the_app_talks_through_is_covered() -> None:
    assert {"azure", "httpx", "httpcore", "aiohttp"} <= set(LIBRARY_LOGGERS)
