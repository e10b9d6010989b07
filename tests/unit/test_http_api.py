"""HTTP translation: bounded JSON bodies and the error-to-answer mapping."""

from __future__ import annotations

import json

import azure.functions as func
import pytest

from shared.edges import http_api
from shared.edges.http_api import (
    error_response,
    json_error,
    nested_deeper_than,
    read_json_body,
    status_of,
)
from shared.errors import (
    InputError,
    InvalidInputError,
    NotFoundError,
    PushRelayError,
    RefusalError,
    SettingsError,
    TransientError,
)

pytestmark = pytest.mark.unit


def _req(body: bytes, headers: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest(
        "PUT", "http://x/api/devices", headers=headers or {}, params={}, route_params={}, body=body
    )


def _status_of(body: bytes, limit: int = 1024) -> tuple[int, str]:
    with pytest.raises(RefusalError) as caught:
        read_json_body(_req(body), limit)
    return status_of(caught.value), caught.value.reason


def test_object_body_is_returned() -> None:
    assert read_json_body(_req(b'{"kind": "alert", "n": [1, {"a": null}]}'), 1024) == {
        "kind": "alert",
        "n": [1, {"a": None}],
    }


def test_body_over_the_limit_is_413() -> None:
    assert _status_of(b'{"a": "' + b"x" * 2000 + b'"}')[0] == 413


def test_declared_length_over_the_limit_is_413() -> None:
    with pytest.raises(RefusalError) as caught:
        read_json_body(_req(b"{}", {"Content-Length": "999999"}), 1024)
    assert status_of(caught.value) == 413


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"a": "\xff"}', "body is not valid UTF-8"),
        (b'{"a": "\\ud800"}', "body contains a lone surrogate"),
        (b'{"\\udfff": 1}', "body contains a lone surrogate"),
        (b"[1, 2]", "body must be a JSON object"),
        (b'"text"', "body must be a JSON object"),
        (b"", "body is not valid JSON: Expecting value"),
        (b'{"a": NaN}', "body is not valid JSON: NaN is not JSON"),
        (b'{"a": 1, "a": 2}', "body is not valid JSON: duplicate key 'a'"),
        (b'{"a": ' + b"[" * 20 + b"]" * 20 + b"}", "body is nested too deeply"),
        (b"[" * 5000 + b"]" * 5000, "body is nested too deeply"),
    ],
)
def test_malformed_bodies_are_400(body: bytes, reason: str) -> None:
    assert _status_of(body, limit=20000) == (400, reason)


def test_json_error_names_the_field() -> None:
    response = json_error(400, "must be alert or voip", field="kind")
    assert json.loads(response.get_body()) == {"error": "must be alert or voip", "field": "kind"}
    assert response.mimetype == "application/json"


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (NotFoundError("not_found"), 404, {"error": "not_found"}),
        (InputError("secret detail"), 400, {"error": "invalid_request"}),
        (TransientError("storage said x"), 503, {"error": "service_unavailable"}),
        (SettingsError("setting X is bad"), 500, {"error": "server_misconfigured"}),
        (PushRelayError("dependency refused"), 502, {"error": "bad_gateway"}),
    ],
)
def test_errors_map_to_answers_without_internal_detail(
    error: PushRelayError, status: int, body: dict[str, str]
) -> None:
    response = error_response(error)
    assert (response.status_code, json.loads(response.get_body())) == (status, body)


def test_answers_are_not_cached() -> None:
    assert error_response(InvalidInputError("x")).headers["Cache-Control"] == "no-store"


def test_a_body_nested_past_the_limit_is_refused_before_it_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Parsing 5,000 levels runs the json module to the recursion limit, where a garbage
    # collection's finalizers fail ("Exception ignored ... RecursionError"); it is never parsed.
    parsed: list[str] = []
    monkeypatch.setattr(http_api.json, "loads", lambda text, **kw: parsed.append(text))
    body = ("[" * 5000 + "]" * 5000).encode()
    req = func.HttpRequest("PUT", "http://x/api/devices", headers={}, body=body)

    with pytest.raises(RefusalError, match="nested too deeply"):
        read_json_body(req, 16384)
    assert parsed == []


@pytest.mark.parametrize(
    ("text", "deep"),
    [('{"a": "[[[[[[[[[[[[[[[[[[[["}', False), ("[" * 17 + "]" * 17, True),
     ("[" * 16 + "]" * 16, False), ('["\\"[[[[[[[[[[[[[[[[[["]', False),
     ("[]" * 40, False)],
)  # fmt: skip
def test_nesting_is_counted_outside_strings_only(text: str, deep: bool) -> None:
    assert nested_deeper_than(text, 16) is deep
