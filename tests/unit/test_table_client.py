"""shared.storage.table_client without sockets: requests, retries, errors over a scripted session.

The transport fake answers each request with the next scripted answer (a status, headers and
body, or no answer caused by an exception) and records what was sent. What each request looks
like byte for byte is pinned in ``test_table_wire.py``; the same client against Azurite in
``tests/integration/test_table_client.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from shared.storage import tables
from shared.storage.table_client import (
    DEVELOPMENT_KEY,
    AppServiceIdentity,
    ClientOptions,
    SharedKey,
    TableClient,
    TableService,
    TokenAuth,
)
from shared.storage.table_http import HttpAnswer, NoAnswerError

pytestmark = pytest.mark.unit

ENDPOINT = "http://127.0.0.1:10002/devstoreaccount1"
ETAG = "W/\"datetime'2026-01-01T00%3A00%3A00.0000001Z'\""
ERROR_404 = b'{"odata.error":{"code":"ResourceNotFound","message":{"value":"gone\\nRequestId:x"}}}'


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Sent:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes | None

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


class ScriptedHttp:
    """Answers requests from a script, in order, and records them (``HttpTransport``)."""

    def __init__(self, *answers: Answer | BaseException) -> None:
        self.answers = list(answers)
        self.sent: list[Sent] = []
        self.closed = False

    async def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None = None
    ) -> HttpAnswer:
        self.sent.append(Sent(method, target, dict(headers), body))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise NoAnswerError(str(answer)) from answer
        lower = {k.lower(): v for k, v in answer.headers.items()}
        return HttpAnswer(answer.status, lower, answer.body)

    async def aclose(self) -> None:
        self.closed = True


class Slept(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client(session: ScriptedHttp, slept: Slept | None = None, **options: Any) -> TableClient:
    opts = ClientOptions(
        http_factory=lambda _origin, _o: session,
        sleep=slept if slept is not None else Slept(),
        random=lambda: 0.5,
        wall_clock=lambda: 1_700_000_000.0,
        **options,
    )
    return TableService(ENDPOINT, SharedKey("devstoreaccount1", DEVELOPMENT_KEY), opts).table("t")


T = TypeVar("T")


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def go() -> T:
        return await make()

    return asyncio.run(go())


ENTITY = {"PartitionKey": "p", "RowKey": "r", "n": 1}


# --- requests -------------------------------------------------------------------------------------


def test_a_point_read_is_one_signed_get_and_returns_the_typed_entity() -> None:
    body = json.dumps(
        {
            "odata.etag": ETAG,
            "PartitionKey": "p",
            "RowKey": "r",
            "n@odata.type": "Edm.Int64",
            "n": "5",
        }
    ).encode()
    session = ScriptedHttp(Answer(200, {"ETag": ETAG}, body))
    entity = run(lambda: client(session).get_entity("p", "r"))
    assert dict(entity) == {"PartitionKey": "p", "RowKey": "r", "n": 5}
    assert entity.metadata["etag"] == ETAG
    (sent,) = session.sent
    assert sent.method == "GET"
    assert sent.path == "/devstoreaccount1/t(PartitionKey='p',RowKey='r')"
    assert sent.headers["x-ms-date"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert sent.headers["x-ms-version"] == "2019-02-02"
    assert sent.headers["Accept"] == "application/json;odata=minimalmetadata"
    assert sent.headers["Authorization"].startswith("SharedKey devstoreaccount1:")
    assert "Content-Type" not in sent.headers and sent.body is None


@pytest.mark.parametrize(
    ("call", "method", "if_match"),
    [
        (lambda t: t.upsert_entity(ENTITY), "PATCH", None),
        (lambda t: t.upsert_entity(ENTITY, mode=tables.UpdateMode.REPLACE), "PUT", None),
        (lambda t: t.update_entity(ENTITY), "PATCH", "*"),
        (
            lambda t: t.update_entity(
                ENTITY,
                mode=tables.UpdateMode.REPLACE,
                etag=ETAG,
                match_condition=tables.MatchConditions.IfNotModified,
            ),
            "PUT",
            ETAG,
        ),
    ],
)
def test_writes_use_the_documented_verb_and_if_match(
    call: Callable[[TableClient], Awaitable[dict[str, Any]]], method: str, if_match: str | None
) -> None:
    session = ScriptedHttp(Answer(204, {"ETag": ETAG}))
    meta = run(lambda: call(client(session)))
    (sent,) = session.sent
    assert (sent.method, sent.headers.get("If-Match"), meta["etag"]) == (method, if_match, ETAG)
    assert sent.headers["Content-Type"] == "application/json"
    assert json.loads(sent.body or b"") == ENTITY


def test_a_create_asks_for_no_content_back() -> None:
    session = ScriptedHttp(Answer(204, {"ETag": ETAG}))
    assert run(lambda: client(session).create_entity(ENTITY))["etag"] == ETAG
    (sent,) = session.sent
    assert (sent.method, sent.path) == ("POST", "/devstoreaccount1/t")
    assert sent.headers["Prefer"] == "return-no-content"


def test_azure_cores_match_conditions_mean_the_same() -> None:
    from azure.core import MatchConditions as SdkMatch

    session = ScriptedHttp(Answer(204, {"ETag": ETAG}))
    run(lambda: client(session).update_entity(ENTITY, etag=ETAG,
                                              match_condition=SdkMatch.IfNotModified))  # fmt: skip
    assert session.sent[0].headers["If-Match"] == ETAG


def test_an_etag_without_if_not_modified_is_refused_as_the_sdk_does() -> None:
    with pytest.raises(ValueError, match="IfNotModified"):
        run(lambda: client(ScriptedHttp()).update_entity(ENTITY, etag=ETAG))


def test_a_query_follows_continuations_to_the_end() -> None:
    def page(rows: list[str], **headers: str) -> Answer:
        value = [{"PartitionKey": "p", "RowKey": r, "odata.etag": ETAG} for r in rows]
        return Answer(200, headers, json.dumps({"value": value}).encode())

    session = ScriptedHttp(
        page(
            ["1", "2"],
            **{
                "x-ms-continuation-NextPartitionKey": "1!4!cA--",
                "x-ms-continuation-NextRowKey": "1!4!Mw--",
            },
        ),
        page([], **{"x-ms-continuation-NextPartitionKey": "1!4!cA--"}),
        page(["3"]),
    )

    async def rows() -> list[str]:
        found = client(session).query_entities("PartitionKey eq @pk", parameters={"pk": "p"})
        return [e["RowKey"] async for e in found]

    assert run(rows) == ["1", "2", "3"]
    queries = [s.query for s in session.sent]
    assert queries[0] == "$filter=PartitionKey%20eq%20'p'"
    assert queries[1].endswith("&NextPartitionKey=1%214%21cA--&NextRowKey=1%214%21Mw--")
    assert queries[2].endswith("&NextPartitionKey=1%214%21cA--")


# --- retries --------------------------------------------------------------------------------------


def test_a_busy_server_is_retried_at_once_then_after_a_back_off() -> None:
    slept = Slept()
    session = ScriptedHttp(Answer(503), Answer(500), Answer(204, {"ETag": ETAG}))
    assert run(lambda: client(session, slept).upsert_entity(ENTITY))["etag"] == ETAG
    assert len(session.sent) == 3
    assert slept == [0.0, 0.4]  # random() = 0.5: the back-off's middle


def test_retries_are_bounded_and_end_as_storage_unavailable() -> None:
    session = ScriptedHttp(Answer(503), Answer(503), Answer(503))
    with pytest.raises(tables.StorageUnavailableError, match="503"):
        run(lambda: client(session).upsert_entity(ENTITY))
    assert len(session.sent) == 3


@pytest.mark.parametrize(
    "failure", [ConnectionResetError(), ConnectionRefusedError("refused"), TimeoutError()]
)
def test_no_answer_is_retried(failure: BaseException) -> None:
    session = ScriptedHttp(failure, Answer(204, {"ETag": ETAG}))
    assert run(lambda: client(session).upsert_entity(ENTITY))["etag"] == ETAG
    assert len(session.sent) == 2


def test_no_answer_at_all_is_storage_unavailable_from_the_last_error() -> None:
    session = ScriptedHttp(*(ConnectionRefusedError("refused") for _ in range(3)))
    with pytest.raises(tables.StorageUnavailableError) as caught:
        run(lambda: client(session).get_entity("p", "r"))
    assert isinstance(caught.value.__cause__, NoAnswerError)


def test_every_attempt_is_counted_as_a_round_trip() -> None:
    counted: list[int] = []
    session = ScriptedHttp(Answer(503), Answer(204))
    run(lambda: client(session, on_request=lambda: counted.append(1)).upsert_entity(ENTITY))
    assert len(counted) == 2


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (404, "ResourceNotFound", tables.EntityNotFoundError),
        (409, "EntityAlreadyExists", tables.EntityExistsError),
        (412, "UpdateConditionNotSatisfied", tables.EntityChangedError),
        (400, "InvalidInput", tables.StorageRejectedError),
        (413, "RequestBodyTooLarge", tables.StorageRejectedError),
        (403, "AuthorizationFailure", tables.StorageUnavailableError),
    ],
)
def test_error_answers_become_our_storage_errors_without_a_retry(
    status: int, code: str, error: type[Exception]
) -> None:
    body = json.dumps({"odata.error": {"code": code, "message": {"value": "no\nRequestId:x"}}})
    session = ScriptedHttp(Answer(status, {}, body.encode()))
    with pytest.raises(error, match=code):
        run(lambda: client(session).update_entity(ENTITY))
    assert len(session.sent) == 1


def test_error_messages_never_carry_the_keys() -> None:
    session = ScriptedHttp(Answer(404, {}, ERROR_404))
    with pytest.raises(tables.EntityNotFoundError) as caught:
        run(lambda: client(session).get_entity("8:acs:secret-user", "device-hash"))
    assert "secret-user" not in str(caught.value) and "device-hash" not in str(caught.value)


def test_deleting_a_missing_entity_succeeds_as_with_the_sdk() -> None:
    session = ScriptedHttp(Answer(404, {}, ERROR_404))
    run(lambda: client(session).delete_entity("p", "r"))
    assert session.sent[0].headers["If-Match"] == "*"


def test_deleting_under_a_stale_etag_is_entity_changed() -> None:
    session = ScriptedHttp(Answer(412))
    with pytest.raises(tables.EntityChangedError):
        run(
            lambda: client(session).delete_entity(
                "p", "r", etag=ETAG, match_condition=tables.MatchConditions.IfNotModified
            )
        )
    assert session.sent[0].headers["If-Match"] == ETAG


# --- transactions ---------------------------------------------------------------------------------


def _batch_answer(*parts: str) -> Answer:
    body = (
        "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_1\r\n\r\n"
    )
    for part in parts:
        body += (
            "--changesetresponse_1\r\nContent-Type: application/http\r\n"
            "Content-Transfer-Encoding: binary\r\n\r\n" + part + "\r\n"
        )
    body += "--changesetresponse_1--\r\n--batchresponse_1--\r\n"
    return Answer(202, {"Content-Type": "multipart/mixed; boundary=batchresponse_1"}, body.encode())


def test_a_transaction_is_one_request_and_returns_each_etag() -> None:
    session = ScriptedHttp(
        _batch_answer(
            f"HTTP/1.1 204 No Content\r\nETag: {ETAG}\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
        )
    )
    ops = [("create", ENTITY), ("delete", {"PartitionKey": "p", "RowKey": "2"})]
    answers = run(lambda: client(session).submit_transaction(ops))
    assert answers == [{"etag": ETAG}, {"etag": None}]
    (sent,) = session.sent
    assert sent.path == "/devstoreaccount1/$batch"
    assert sent.headers["Content-Type"].startswith("multipart/mixed; boundary=batch_")
    body = sent.body or b""
    assert b"POST http://127.0.0.1:10002/devstoreaccount1/t HTTP/1.1" in body
    assert b"DELETE http://127.0.0.1:10002/devstoreaccount1/t(PartitionKey='p',RowKey='2')" in body


def test_a_failed_transaction_raises_the_failed_operations_error() -> None:
    error = (
        '{"odata.error":{"code":"EntityAlreadyExists",'
        '"message":{"value":"1:exists\\nRequestId:x"}}}'
    )
    session = ScriptedHttp(
        _batch_answer(f"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n\r\n{error}")
    )
    ops = [("upsert", ENTITY), ("create", {**ENTITY, "RowKey": "s"})]
    with pytest.raises(tables.EntityExistsError, match="operation 1"):
        run(lambda: client(session).submit_transaction(ops))


@pytest.mark.parametrize(
    "ops",
    [
        [("upsert", {"PartitionKey": "p", "RowKey": str(i)}) for i in range(101)],
        [("upsert", {"PartitionKey": "p", "RowKey": "1"}), ("upsert", {"PartitionKey": "q",
                                                                      "RowKey": "1"})],
        [("upsert", {"PartitionKey": "p", "RowKey": str(i), "x": "y" * 60_000})
         for i in range(80)],
    ],
    ids=["101 operations", "two partitions", "over 4 MiB"],
)  # fmt: skip
def test_transactions_beyond_the_service_limits_are_refused_unsent(
    ops: list[tuple[Any, ...]],
) -> None:
    session = ScriptedHttp()
    with pytest.raises(tables.StorageRejectedError):
        run(lambda: client(session).submit_transaction(ops))
    assert session.sent == []


# --- Entra ID -------------------------------------------------------------------------------------


class Credential:
    def __init__(self, lifetime: float) -> None:
        self.issued = 0
        self.lifetime = lifetime
        self.now = 1_000.0

    async def get_token(self, *scopes: str) -> SimpleNamespace:
        assert scopes == ("https://storage.azure.com/.default",)
        self.issued += 1
        return SimpleNamespace(token=f"t{self.issued}", expires_on=self.now + self.lifetime)

    async def close(self) -> None:
        return None


def test_a_token_is_reused_until_five_minutes_before_it_expires() -> None:
    credential = Credential(lifetime=3600)
    auth = TokenAuth(credential, clock=lambda: credential.now)

    async def header_at(now: float) -> str:
        credential.now = now
        return await auth.authorization("GET", "", "d", "/t")

    assert run(lambda: header_at(1_000)) == "Bearer t1"
    assert run(lambda: header_at(1_000 + 3600 - 301)) == "Bearer t1"
    assert run(lambda: header_at(1_000 + 3600 - 300)) == "Bearer t2"


def test_a_401_drops_the_token() -> None:
    credential = Credential(lifetime=3600)
    auth = TokenAuth(credential, clock=lambda: credential.now)
    session = ScriptedHttp(Answer(401), Answer(204, {"ETag": ETAG}))
    opts = ClientOptions(http_factory=lambda _origin, _o: session)
    table = TableService("https://acct.table.core.windows.net", auth, opts).table("t")

    async def twice() -> None:
        with pytest.raises(tables.StorageUnavailableError, match="credentials"):
            await table.upsert_entity(ENTITY)
        await table.upsert_entity(ENTITY)

    run(twice)
    assert [s.headers["Authorization"] for s in session.sent] == ["Bearer t1", "Bearer t2"]


# --- connection strings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "base_url"),
    [
        ("UseDevelopmentStorage=true", "http://127.0.0.1:10002/devstoreaccount1"),
        ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=" + DEVELOPMENT_KEY
         + ";EndpointSuffix=core.windows.net", "https://acct.table.core.windows.net"),
        ("AccountName=acct;AccountKey=" + DEVELOPMENT_KEY
         + ";TableEndpoint=http://127.0.0.1:7/acct/", "http://127.0.0.1:7/acct"),
        ("accountname=acct;ACCOUNTKEY=" + DEVELOPMENT_KEY + ";tableendpoint=http://h:1/a",
         "http://h:1/a"),
    ],
)  # fmt: skip
def test_connection_strings_give_the_table_endpoint(text: str, base_url: str) -> None:
    assert TableService.from_connection_string(text).base_url == base_url


@pytest.mark.parametrize(
    "text",
    ["AccountName=acct", "TableEndpoint=https://x;SharedAccessSignature=sv=1", "no-equals-sign"],
)
def test_connection_strings_without_an_account_key_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        TableService.from_connection_string(text)


# --- the App Service / Functions managed identity ---------------------------------------------

IDENTITY_ENV = {"IDENTITY_ENDPOINT": "http://localhost:8081/msi/token", "IDENTITY_HEADER": "s3cr3t"}


def test_the_managed_identity_is_asked_as_app_service_documents() -> None:
    http = ScriptedHttp(Answer(200, {}, b'{"access_token": "tok", "expires_on": "1700003600",'
                                        b' "resource": "https://storage.azure.com"}'))  # fmt: skip
    identity = AppServiceIdentity(IDENTITY_ENV["IDENTITY_ENDPOINT"], "s3cr3t", "client-1",
                                  http=http)  # fmt: skip
    token = run(lambda: identity.get_token("https://storage.azure.com/.default"))
    assert (token.token, token.expires_on) == ("tok", 1_700_003_600)
    (sent,) = http.sent
    assert sent.method == "GET" and sent.path == "/msi/token"
    assert sent.query == (
        "api-version=2019-08-01&resource=https%3A%2F%2Fstorage.azure.com&client_id=client-1"
    )
    assert sent.headers == {"X-IDENTITY-HEADER": "s3cr3t"}


def test_a_relative_expiry_counts_from_the_request() -> None:
    http = ScriptedHttp(Answer(200, {}, b'{"access_token": "tok", "expires_in": "3600"}'))
    identity = AppServiceIdentity("http://localhost:8081/msi/token", "s", http=http,
                                  clock=lambda: 1_000.0)  # fmt: skip
    assert run(lambda: identity.get_token("https://storage.azure.com/.default")).expires_on == 4600


@pytest.mark.parametrize(
    "answer",
    [Answer(400, {}, b'{"error": "s3cr3t"}'), Answer(200, {}, b"not json"),
     Answer(200, {}, b'{"expires_on": "1"}'), ConnectionRefusedError()],
)  # fmt: skip
def test_no_token_from_the_identity_endpoint_is_storage_unavailable(
    answer: Answer | BaseException,
) -> None:
    identity = AppServiceIdentity("http://localhost:8081/msi/token", "s3cr3t",
                                  http=ScriptedHttp(answer))  # fmt: skip
    auth = TokenAuth(identity)
    with pytest.raises(tables.StorageUnavailableError, match="no access token") as caught:
        run(lambda: auth.authorization("GET", "", "d", "/t"))
    assert "s3cr3t" not in str(caught.value) and "s3cr3t" not in str(caught.value.__cause__)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (IDENTITY_ENV, "AppServiceIdentity"),
        ({}, "DefaultAzureCredential"),
        ({**IDENTITY_ENV, "AZURE_CLIENT_SECRET": "x"}, "DefaultAzureCredential"),
        ({**IDENTITY_ENV, "AZURE_FEDERATED_TOKEN_FILE": "/f"}, "DefaultAzureCredential"),
    ],
)
def test_an_endpoint_url_uses_the_managed_identity_directly_only_where_it_would_be_chosen(
    env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "AZURE_CLIENT_SECRET",
                 "AZURE_FEDERATED_TOKEN_FILE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    async def source() -> str:
        t = tables.Tables.connect("https://acct.table.core.windows.net", "pr")
        try:
            return type(t._backend._auth._credential).__name__  # type: ignore[attr-defined]
        finally:
            await t.aclose()

    assert run(source) == expected
