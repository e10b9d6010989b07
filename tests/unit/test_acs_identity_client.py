"""The ACS Identity client against an in-process transport: calls, retries, error mapping."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from shared.acs.identity import (
    AcsIdentityClient,
    AcsRejectedError,
    AcsToken,
    AcsUnavailableError,
    HmacAuth,
)
from shared.edges.http_api import error_response

pytestmark = pytest.mark.unit

ENDPOINT = "https://res.communication.azure.com"
USER = "8:acs:res_0000-1111"

Handler = Callable[[httpx.Request], httpx.Response]


class Script:
    """Answers requests from a list, recording each request and each back-off."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def client(self) -> AcsIdentityClient:
        return AcsIdentityClient(
            ENDPOINT,
            HmacAuth(b"k" * 32),
            transport=httpx.MockTransport(self),
            sleep=self.sleep,
        )


def _created(raw_id: str = USER) -> httpx.Response:
    return httpx.Response(201, json={"identity": {"id": raw_id}})


def _token() -> httpx.Response:
    return httpx.Response(200, json={"token": "tok", "expiresOn": "2026-01-06T12:00:00+00:00"})


def _error(status: int, code: str = "Whatever") -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": "m"}})


async def test_create_identity_returns_the_raw_id() -> None:
    script = Script(_created())
    assert await script.client().create_identity() == USER
    request = script.requests[0]
    assert (request.method, request.url.path) == ("POST", "/identities")
    assert request.url.params["api-version"] == "2023-10-01"


async def test_issue_token_sends_scopes_and_lifetime_for_the_escaped_id() -> None:
    script = Script(_token())
    token = await script.client().issue_token(USER, ["chat", "voip"], 90)
    assert token == AcsToken("tok", "2026-01-06T12:00:00+00:00")
    request = script.requests[0]
    assert request.url.raw_path.startswith(b"/identities/8%3Aacs%3Ares_0000-1111/:issueAccessToken")
    assert json.loads(request.content) == {"scopes": ["chat", "voip"], "expiresInMinutes": 90}


async def test_issue_token_retries_429_honouring_retry_after() -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "1"}), _token())
    await script.client().issue_token(USER, ["chat"], 60)
    assert script.sleeps == [1.0]


async def test_issue_token_retries_a_read_timeout() -> None:
    script = Script(httpx.ReadTimeout("slow"), _token())
    await script.client().issue_token(USER, ["chat"], 60)
    assert len(script.requests) == 2


async def test_retry_budget_ends_in_unavailable() -> None:
    script = Script(_error(503), _error(503), _error(503))
    with pytest.raises(AcsUnavailableError):
        await script.client().issue_token(USER, ["chat"], 60)
    assert len(script.requests) == 3


async def test_create_is_not_retried_after_a_500_that_may_have_created() -> None:
    script = Script(_error(500), _created())
    with pytest.raises(AcsUnavailableError):
        await script.client().create_identity()
    assert len(script.requests) == 1


async def test_create_is_not_retried_after_a_read_timeout() -> None:
    script = Script(httpx.ReadTimeout("slow"), _created())
    with pytest.raises(AcsUnavailableError):
        await script.client().create_identity()
    assert len(script.requests) == 1


async def test_create_is_retried_after_a_503_or_a_refused_connection() -> None:
    script = Script(_error(503), httpx.ConnectError("refused"), _created())
    assert await script.client().create_identity() == USER


async def test_acs_refusal_is_a_502_naming_the_status_and_code() -> None:
    script = Script(_error(401, "InvalidAuthentication"))
    with pytest.raises(AcsRejectedError) as caught:
        await script.client().issue_token(USER, ["chat"], 60)
    assert len(script.requests) == 1
    assert "401 InvalidAuthentication" in str(caught.value)
    response = error_response(caught.value)
    assert (response.status_code, json.loads(response.get_body())) == (
        502,
        {"error": "acs_rejected"},
    )


async def test_unavailable_acs_is_a_503_with_retry_after() -> None:
    script = Script(httpx.ConnectError("down"), httpx.ConnectError("down"), httpx.ConnectError("x"))
    with pytest.raises(AcsUnavailableError) as caught:
        await script.client().issue_token(USER, ["chat"], 60)
    response = error_response(caught.value)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert json.loads(response.get_body()) == {"error": "acs_unavailable"}


async def test_answer_without_identity_is_a_refusal() -> None:
    script = Script(httpx.Response(201, json={"unexpected": True}))
    with pytest.raises(AcsRejectedError):
        await script.client().create_identity()


async def test_delete_and_revoke_accept_204() -> None:
    script = Script(httpx.Response(204), httpx.Response(204))
    client = script.client()
    await client.revoke_tokens(USER)
    await client.delete_identity(USER)
    assert [r.method for r in script.requests] == ["POST", "DELETE"]
