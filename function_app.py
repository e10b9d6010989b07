"""Azure Functions entry points: triggers only.

Each trigger parses its input, calls one function in ``shared/``, and translates the outcome
(HTTP status, raise-to-retry, log). Importing this module needs no settings and no network, and
loads neither the Tables SDK, httpx nor cryptography: they are imported lazily on first use.
"""

from __future__ import annotations

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
