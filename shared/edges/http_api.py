"""HTTP translation shared by every HTTP trigger: JSON answers, JSON errors, bounded JSON bodies.

Errors become answers here and nowhere else: :data:`STATUS` is the one table from our error
classes (``shared.errors``, where the whole tree is drawn) to HTTP statuses; the most specific
class listed wins:

    InvalidInputError     400 its reason and field
    UnauthenticatedError  401 its reason, with ``WWW-Authenticate: <its challenge>``
    ForbiddenError        403 its reason (and field)
    NotFoundError         404 its reason
    ConflictError         409 its reason and field
    TooLargeError         413 its reason
    RateLimitedError      429 its reason, with ``Retry-After: <retry_after>``
    InputError (other)    400 invalid_request
    TransientError        503 with Retry-After (storage or ACS did not answer)
    SettingsError         500 server_misconfigured (logged; the answer names no setting)
    PushRelayError (other) 502 bad_gateway (a dependency answered with a refusal)

Bodies are JSON objects ``{"error": reason, "field"?: field}``; never a stack trace, never a secret.
The full exception text is only logged; an error class may set ``public_reason`` (a short text safe
to show callers, such as "acs_unavailable") to replace the generic reason of its row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final

import azure.functions as func

from shared.errors import (
    ConflictError,
    ForbiddenError,
    InputError,
    InvalidInputError,
    NotFoundError,
    PushRelayError,
    RateLimitedError,
    SettingsError,
    TooLargeError,
    TransientError,
    UnauthenticatedError,
)

log = logging.getLogger(__name__)

MAX_JSON_DEPTH: Final = 16
TRANSIENT_RETRY_AFTER_SECONDS: Final = 5
_JSON: Final = "application/json"


STATUS: Final[tuple[tuple[type[PushRelayError], int], ...]] = (
    (InvalidInputError, 400),
    (UnauthenticatedError, 401),
    (ForbiddenError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (TooLargeError, 413),
    (RateLimitedError, 429),
    (InputError, 400),
    (TransientError, 503),
    (SettingsError, 500),
    (PushRelayError, 502),
)
"""Our error classes and their HTTP status, most specific first (see the module docstring)."""


def status_of(exc: PushRelayError) -> int:
    """The HTTP status one of our errors is answered with."""
    return next(status for cls, status in STATUS if isinstance(exc, cls))


def json_response(
    status: int, body: object, headers: Mapping[str, str] | None = None
) -> func.HttpResponse:
    """A JSON answer with ``Cache-Control: no-store`` (answers may carry tokens)."""
    all_headers = {"Cache-Control": "no-store", **(headers or {})}
    return func.HttpResponse(
        body=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status_code=status,
        headers=all_headers,
        mimetype=_JSON,
        charset="utf-8",
    )


def json_error(
    status: int,
    reason: str,
    *,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> func.HttpResponse:
    """A JSON error answer ``{"error": reason, "field"?: field}``."""
    body: dict[str, str] = {"error": reason}
    if field is not None:
        body["field"] = field
    return json_response(status, body, headers)


def error_response(exc: PushRelayError) -> func.HttpResponse:
    """Translate one of our errors into its HTTP answer (see the module docstring)."""
    status = status_of(exc)
    reason, field = getattr(exc, "reason", None), getattr(exc, "field", None)
    if isinstance(exc, InputError):
        headers: dict[str, str] = {}
        if isinstance(exc, UnauthenticatedError):
            headers["WWW-Authenticate"] = exc.challenge
        if isinstance(exc, RateLimitedError):
            headers["Retry-After"] = str(exc.retry_after)
        text = reason if isinstance(reason, str) else "invalid_request"
        return json_error(status, text, field=field, headers=headers)
    if isinstance(exc, TransientError):
        log.warning("dependency unavailable: %s", exc)
        retry = {"Retry-After": str(TRANSIENT_RETRY_AFTER_SECONDS)}
        return json_error(status, _public(exc, "service_unavailable"), headers=retry)
    if isinstance(exc, SettingsError):
        log.error("server misconfigured: %s", exc)
        return json_error(status, "server_misconfigured")
    log.warning("dependency refused: %s", exc)
    return json_error(status, _public(exc, "bad_gateway"))


def _public(exc: PushRelayError, default: str) -> str:
    reason = getattr(exc, "public_reason", None)
    return reason if isinstance(reason, str) and reason else default


def read_json_body(req: func.HttpRequest, limit: int) -> dict[str, Any]:
    """The request body as a JSON object of at most ``limit`` bytes.

    Raises TooLargeError over the limit; InvalidInputError for invalid UTF-8, invalid JSON
    (including NaN/Infinity and duplicate keys), lone surrogates, a non-object, or nesting
    deeper than :data:`MAX_JSON_DEPTH`.
    """
    declared = req.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise TooLargeError(f"body larger than {limit} bytes")
    raw = req.get_body() or b""
    if len(raw) > limit:
        raise TooLargeError(f"body larger than {limit} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError("body is not valid UTF-8") from None
    if nested_deeper_than(text, MAX_JSON_DEPTH):
        raise InvalidInputError("body is nested too deeply")
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
    except ValueError as exc:
        raise InvalidInputError(f"body is not valid JSON: {_short(exc)}") from None
    if not isinstance(value, dict):
        raise InvalidInputError("body must be a JSON object")
    _check_tree(value)
    return value


def nested_deeper_than(text: str, limit: int) -> bool:
    """Whether JSON ``text`` opens more than ``limit`` arrays or objects inside each other.

    Checked before parsing: the json module recurses once per level, and a 16 KiB body can nest
    thousands deep. Parsing it to the interpreter's recursion limit is refused anyway, but a
    garbage collection that runs finalizers at that depth fails inside them (seen as "Exception
    ignored ... RecursionError" from an unrelated object), so such a body is never parsed.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which duplicate wins; refusing them closes that gap.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key[:40]!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _short(exc: ValueError) -> str:
    return str(exc).split(":", 1)[0][:80]


def _check_tree(root: object) -> None:
    """Reject strings that are not Unicode scalar values (lone surrogates).

    Depth needs no check here: :func:`nested_deeper_than` refused deep bodies before parsing.
    """
    stack: list[object] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            _check_text(node)
        elif isinstance(node, dict):
            for key, child in node.items():
                _check_text(key)
                stack.append(child)
        elif isinstance(node, list):
            stack.extend(node)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError("body contains a lone surrogate") from None
