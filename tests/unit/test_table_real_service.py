"""The lean Table client against the real Azure Table service's answers, replayed.

Azurite is not Azure: it differs in the error bodies, the batch framing, the continuation tokens,
what a table being deleted answers. The fixtures in ``tests/fixtures/table_service`` are requests
and answers recorded against live storage accounts by the Azure SDK teams' own test suites
(azure-data-tables for Python, Azure.Data.Tables for .NET; each file names its source and
commit, and ``README.md`` there says what was distilled). Each test replays the recorded answer,
bytes and headers as the service sent them, through our whole stack (``table_http``'s HTTP/1.1
parser with the chunked framing the service uses, ``table_client``, ``table_wire``), and checks
what the client makes of it; and it compares the request our client sends for the same call
with the request the SDK sent, which the service accepted.

What a recording cannot show is said where it matters: the signature (recordings sanitize the
``Authorization`` header; the signer is checked against openssl and the SDK in
``test_table_wire.py``), throttling (no recording holds a 503 ServerBusy), a table being
deleted, and a table missing outside a transaction (no recording either: those fixtures take the
code and message from the published "Table Storage error codes" and "Delete Table" references,
in the error shape the recordings show).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import pytest

from shared.settings import StorageClient
from shared.storage import tables
from shared.storage.table_client import (
    API_VERSION,
    DEVELOPMENT_KEY,
    ClientOptions,
    SharedKey,
    TableService,
)
from shared.storage.table_http import HttpClient, _Connection
from shared.storage.table_wire import Edm, Typed, decode_entity

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "table_service"
T = TypeVar("T")


# --- replaying the recordings ---------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One recorded exchange: the SDK's request and the service's answer."""

    method: str
    url: str
    headers: dict[str, str]
    body: str | None
    status: int
    answer_headers: dict[str, str]
    answer_body: str | None

    @property
    def target(self) -> str:
        """The request's path and query, as sent."""
        parts = urlsplit(self.url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def answer_bytes(self) -> bytes:
        """The answer as the service put it on the wire: a chunked body where it said so."""
        body = (self.answer_body or "").encode("utf-8")
        lines = [f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}"]
        lines += [f"{name}: {value}" for name, value in self.answer_headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.answer_headers.get("Transfer-Encoding") == "chunked":
            # Two chunks, split mid-body: the parser must not care where the service split it.
            half = len(body) // 2
            chunks = [body[:half], body[half:]]
            framed = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c)
            return head + framed + b"0\r\n\r\n"
        assert int(self.answer_headers.get("Content-Length", "0")) == len(body)
        return head + body


def recording(name: str) -> list[Recorded]:
    """The exchanges of one fixture file."""
    doc = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return [
        Recorded(
            method=ex["request"]["method"],
            url=ex["request"]["url"],
            headers=ex["request"]["headers"],
            body=ex["request"]["body"],
            status=ex["response"]["status"],
            answer_headers=ex["response"]["headers"],
            answer_body=ex["response"]["body"],
        )
        for ex in doc["exchanges"]
    ]


@dataclass(frozen=True)
class Sent:
    """A request as our client wrote it to the connection."""

    method: str
    target: str
    headers: dict[str, str]  # names as written
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


def _parse_request(data: bytes) -> Sent:
    head, _, body = data.partition(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, version = request_line.split(" ")
    assert version == "HTTP/1.1"
    headers = dict(line.split(": ", 1) for line in header_lines)
    assert int(headers.get("Content-Length", "0")) == len(body)
    return Sent(method, target, headers, body)


class _ReplayTransport(asyncio.Transport):
    """Answers each request written to it with the next recorded answer."""

    def __init__(self, replay: ReplayHttp, protocol: _Connection) -> None:
        super().__init__()
        self.replay = replay
        self.protocol = protocol
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.replay.sent.append(_parse_request(bytes(data)))
        answer = self.replay.answers.pop(0).answer_bytes()
        asyncio.get_running_loop().call_soon(self.protocol.data_received, answer)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.connection_lost(None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self.closed


class ReplayHttp(HttpClient):
    """Our HTTP/1.1 client, its connections answered from a recording instead of a socket."""

    def __init__(self, origin: str, exchanges: list[Recorded]) -> None:
        super().__init__(origin)
        self.answers = list(exchanges)
        self.sent: list[Sent] = []

    async def _open(self) -> _Connection:
        connection = _Connection()
        connection.connection_made(_ReplayTransport(self, connection))
        return connection


async def _no_sleep(_seconds: float) -> None:
    return None


def service_for(exchanges: list[Recorded]) -> tuple[TableService, ReplayHttp]:
    """A TableService whose endpoint is the recording's, answered by the recording."""
    parts = urlsplit(exchanges[0].url)
    origin = f"{parts.scheme}://{parts.netloc}"
    http = ReplayHttp(origin, exchanges)
    options = ClientOptions(
        http_factory=lambda _origin, _options: http,
        sleep=_no_sleep,
        random=lambda: 0.5,
        wall_clock=lambda: 1_700_000_000.0,
    )
    account = parts.netloc.split(".")[0]
    return TableService(origin, SharedKey(account, DEVELOPMENT_KEY), options), http


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def go() -> T:
        return await make()

    return asyncio.run(go())


def table_of(exchange: Recorded) -> str:
    """The table a recorded entity request addresses."""
    return urlsplit(exchange.url).path.lstrip("/").split("(")[0]


# --- comparing requests ---------------------------------------------------------------------------

# Headers whose value must be what the SDK sent wherever the recording has them. Accept is
# compared for reads and batches, where it decides the answer's format; on writes answered 204 the
# SDKs differ among themselves (application/json or minimal metadata) and nothing comes back.
_SAME_VALUE = ("DataServiceVersion", "MaxDataServiceVersion", "If-Match", "Prefer")


def _media_type(value: str | None) -> str | None:
    return None if value is None else value.split(";")[0].strip().lower()


def _query(target: str) -> list[tuple[str, str]]:
    # .NET adds $format (the same as Accept); the service reads both.
    query = urlsplit(target).query
    return sorted((k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "$format")


def _entity_json(text: str | bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """An entity body as the service reads it: typed values, and the annotations sent."""
    raw = {k: v for k, v in json.loads(text).items() if v is not None}
    # What the service ignores in a write: OData metadata and the Timestamp it sets itself.
    raw = {k: v for k, v in raw.items() if not k.startswith("odata.") and k != "Timestamp"}
    annotations = {k: v for k, v in raw.items() if k.endswith("@odata.type")}
    # An Int32 annotation changes nothing: JSON integers that fit are Int32 either way.
    annotations = {k: v for k, v in annotations.items() if v != Edm.INT32.value}
    values = dict(decode_entity(raw))
    return values, annotations


def assert_same_request(sent: Sent, recorded: Recorded, *, compare_accept: bool = False) -> None:
    """Our request does what the SDK's did: same verb, same (signed) path, same query, the same
    values in the headers that carry meaning, an equivalent body."""
    assert sent.method == recorded.method
    assert urlsplit(sent.target).path == urlsplit(recorded.target).path
    assert _query(sent.target) == _query(recorded.target)
    for name in _SAME_VALUE:
        if name in recorded.headers:
            assert sent.header(name) == recorded.headers[name], name
    if compare_accept:
        assert sent.header("Accept") == recorded.headers["Accept"]
    if recorded.headers.get("x-ms-version") == API_VERSION:
        assert sent.header("x-ms-version") == API_VERSION
    assert _media_type(sent.header("Content-Type")) == _media_type(
        recorded.headers.get("Content-Type")
    )
    if recorded.body is not None and not recorded.body.startswith("--"):
        assert _entity_json(sent.body) == _entity_json(recorded.body)


@dataclass(frozen=True)
class Part:
    """One operation of a changeset."""

    method: str
    path: str
    headers: dict[str, str]
    body: str


def changeset(body: str) -> list[Part]:
    """The operations of a $batch body (what the service parses out of it)."""
    batch_boundary = body.split("\r\n", 1)[0]
    outer = body.split(batch_boundary)[1]
    assert outer.startswith("\r\nContent-Type: multipart/mixed; boundary=changeset_")
    inner_boundary = "--" + outer.split("boundary=", 1)[1].split("\r\n", 1)[0]
    parts = []
    for chunk in outer.split(inner_boundary)[1:]:
        if chunk.startswith("--"):
            break
        mime, _, http = chunk.strip("\r\n").partition("\r\n\r\n")
        assert "Content-Type: application/http" in mime
        assert "Content-Transfer-Encoding: binary" in mime
        head, _, sub_body = http.partition("\r\n\r\n")
        request_line, *lines = head.split("\r\n")
        method, url, version = request_line.split(" ")
        assert version == "HTTP/1.1" and url.startswith("https://")
        headers = dict(line.split(": ", 1) for line in lines)
        parts.append(Part(method, urlsplit(url).path, headers, sub_body.rstrip("\r\n")))
    return parts


def assert_same_changeset(sent: Sent, recorded: Recorded) -> None:
    """Our $batch holds the same operations, each as the service needs it."""
    assert sent.method == "POST" and urlsplit(sent.target).path.endswith("/$batch")
    for name in ("DataServiceVersion", "MaxDataServiceVersion"):
        if name in recorded.headers:
            assert sent.header(name) == recorded.headers[name]
    assert (sent.header("Content-Type") or "").startswith("multipart/mixed; boundary=batch_")
    ours, theirs = changeset(sent.body.decode("utf-8")), changeset(recorded.body or "")
    assert len(ours) == len(theirs)
    for mine, sdk in zip(ours, theirs, strict=True):
        assert (mine.method, mine.path) == (sdk.method, sdk.path)
        assert mine.headers.get("If-Match") == sdk.headers.get("If-Match")
        if "Prefer" in sdk.headers:
            assert mine.headers.get("Prefer") == sdk.headers["Prefer"]
        assert mine.headers.get("DataServiceVersion") == sdk.headers["DataServiceVersion"]
        assert _media_type(mine.headers.get("Content-Type")) == _media_type(
            sdk.headers.get("Content-Type")
        )
        if sdk.body:
            assert _entity_json(mine.body) == _entity_json(sdk.body)
        else:
            assert mine.body == ""


def entity_from(recorded_body: str) -> dict[str, Any]:
    """The entity an SDK test wrote, as our callers would pass it (typed where it was typed)."""
    raw = {k: v for k, v in json.loads(recorded_body).items() if v is not None}
    raw = {k: v for k, v in raw.items() if not k.startswith("odata.") and k != "Timestamp"}
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name.endswith("@odata.type"):
            continue
        edm = raw.get(f"{name}@odata.type")
        if edm == Edm.DATETIME.value:
            out[name] = datetime.fromisoformat(value)
        elif edm == Edm.BINARY.value:
            out[name] = base64.b64decode(value)
        elif edm == Edm.GUID.value:
            out[name] = uuid.UUID(value)
        elif edm in (Edm.INT32.value, Edm.INT64.value, Edm.BOOLEAN.value):
            out[name] = Typed(value if edm != Edm.INT64.value else int(value), edm)
        elif edm == Edm.DOUBLE.value:
            out[name] = float(value)
        else:
            out[name] = value
    return out


# --- point reads ----------------------------------------------------------------------------------


def test_a_point_read_gets_every_type_the_service_returns() -> None:
    (exchange,) = recording("point_read.json")
    service, http = service_for([exchange])
    entity = run(lambda: service.table("uttable47124d2").get_entity("pk47124d2", "rk47124d2"))
    assert_same_request(http.sent[0], exchange, compare_accept=True)
    # Minimal metadata: doubles come back unannotated (3.0, 5.0 still JSON floats), Int32 and
    # booleans plain, DateTime/Binary/Guid annotated, DateTimes without fractional zeros.
    assert entity == {
        "PartitionKey": "pk47124d2",
        "RowKey": "rk47124d2",
        "age": 39,
        "sex": "male",
        "married": True,
        "deceased": False,
        "ratio": 3.1,
        "evenratio": 3.0,
        "double": 5.0,
        "large": 933311100,
        "Birthday": datetime(1973, 10, 4, tzinfo=UTC),
        "birthday": datetime(1970, 10, 4, tzinfo=UTC),
        "binary": b"binary",
        "other": 20,
        "clsid": uuid.UUID("c9da6455-213d-42c9-9a79-3e9149a57833"),
    }
    assert type(entity["evenratio"]) is float and type(entity["double"]) is float
    assert type(entity["age"]) is int and type(entity["married"]) is bool
    assert entity.metadata["etag"] == exchange.answer_headers["ETag"]
    assert entity.metadata["timestamp"] == "2024-05-04T00:38:03.5127016Z"


def test_int64_extremes_non_finite_doubles_and_non_ascii_keys_read_back() -> None:
    exchanges = recording("typed_values.json")
    service, http = service_for(exchanges)
    table = service.table("uttable05532d2aa6")

    async def read_all() -> list[Any]:
        return [await table.get_entity("PK", rk) for rk in ("你好", "RK2", "RK4")]

    chinese, int64, doubles = run(read_all)
    for sent, recorded in zip(http.sent, exchanges, strict=True):
        # The path is signed: it must be byte for byte what the service decodes (UTF-8, %XX).
        assert sent.target == recorded.target
        assert_same_request(sent, recorded, compare_accept=True)
    assert chinese["RowKey"] == "你好" and chinese["Data"] == "你好"
    assert int64["Data"] == 2**63 - 1 and type(int64["Data"]) is int
    assert math.isnan(doubles["Data1"])
    assert (doubles["Data2"], doubles["Data3"]) == (math.inf, -math.inf)


def test_a_missing_entity_is_entity_not_found_with_the_services_code() -> None:
    (exchange,) = recording("point_read_not_found.json")
    service, http = service_for([exchange])
    with pytest.raises(tables.EntityNotFoundError, match="404 ResourceNotFound"):
        run(lambda: service.table(table_of(exchange)).get_entity("pk14f82a4c", "rk14f82a4c"))
    assert_same_request(http.sent[0], exchange, compare_accept=True)


# --- writes ---------------------------------------------------------------------------------------


def test_an_insert_of_an_existing_entity_is_entity_exists() -> None:
    (exchange,) = recording("insert_conflict.json")
    assert exchange.body is not None
    service, http = service_for([exchange])
    entity = entity_from(exchange.body)
    with pytest.raises(tables.EntityExistsError, match="409 EntityAlreadyExists"):
        run(lambda: service.table(table_of(exchange)).create_entity(entity))
    assert_same_request(http.sent[0], exchange)


def test_an_insert_answered_without_content_returns_the_etag() -> None:
    insert, _batch = recording("batch_insert_conflict.json")
    assert insert.body is not None
    service, http = service_for([insert])
    meta = run(lambda: service.table(table_of(insert)).create_entity(entity_from(insert.body)))
    # Prefer: return-no-content is honoured: 204, no body, the ETag in a header.
    assert insert.status == 204 and insert.answer_headers["Preference-Applied"]
    assert meta["etag"] == insert.answer_headers["ETag"]
    assert_same_request(http.sent[0], insert)


def test_a_merge_under_if_match_wins_once_then_a_stale_etag_is_entity_changed() -> None:
    exchanges = recording("merge_if_match.json")
    service, http = service_for(exchanges)
    table = service.table(table_of(exchanges[0]))
    stale, fresh = exchanges[1].headers["If-Match"], exchanges[2].headers["If-Match"]

    async def three_merges() -> tuple[dict[str, Any], str, dict[str, Any]]:
        first = await table.update_entity(entity_from(exchanges[0].body or ""))
        with pytest.raises(tables.EntityChangedError) as changed:
            await table.update_entity(
                entity_from(exchanges[1].body or ""),
                etag=stale,
                match_condition=tables.MatchConditions.IfNotModified,
            )
        third = await table.update_entity(
            entity_from(exchanges[2].body or ""),
            etag=fresh,
            match_condition=tables.MatchConditions.IfNotModified,
        )
        return first, str(changed.value), third

    first, changed, third = run(three_merges)
    for sent, recorded in zip(http.sent, exchanges, strict=True):
        assert_same_request(sent, recorded)
    assert first["etag"] == exchanges[0].answer_headers["ETag"] == fresh
    assert "412 UpdateConditionNotSatisfied" in changed
    # The real service names the error in the body only: no x-ms-error-code header.
    assert "x-ms-error-code" not in {k.lower() for k in exchanges[1].answer_headers}
    assert third["etag"] == exchanges[2].answer_headers["ETag"]


# --- queries --------------------------------------------------------------------------------------


def test_a_query_follows_the_services_continuation_tokens_page_by_page() -> None:
    exchanges = recording("query_continuation.json")
    service, http = service_for(exchanges)

    async def read() -> list[Any]:
        table = service.table("querytableadca2e0d")
        return [entity async for entity in table.list_entities(results_per_page=2)]

    rows = run(read)
    for sent, recorded in zip(http.sent, exchanges, strict=True):
        # The tokens go back exactly as the SDK sent them ('!' as %21).
        assert sent.target == recorded.target
        assert_same_request(sent, recorded, compare_accept=True)
    assert len(http.sent) == 3
    assert [row["RowKey"] for row in rows] == [
        "rkadca2e0d1",
        "rkadca2e0d12",
        "rkadca2e0d123",
        "rkadca2e0d1234",
        "rkadca2e0d12345",
    ]
    bodies = [json.loads(e.answer_body or "")["value"] for e in exchanges]
    assert [row.metadata["etag"] for row in rows] == [r["odata.etag"] for b in bodies for r in b]
    assert rows[0]["Birthday"] == datetime(1973, 10, 4, tzinfo=UTC)


# --- entity-group transactions --------------------------------------------------------------------


def _operations_of(recorded: Recorded) -> list[tuple[Any, ...]]:
    """The operations a recorded changeset carries, as our callers would submit them."""
    ops: list[tuple[Any, ...]] = []
    for part in changeset(recorded.body or ""):
        keys = part.path.rsplit("(", 1)[-1] if "(" in part.path else ""
        entity = entity_from(part.body) if part.body else _keys(keys)
        if_match = part.headers.get("If-Match")
        mode = tables.UpdateMode.REPLACE if part.method == "PUT" else tables.UpdateMode.MERGE
        if part.method == "POST":
            ops.append(("create", entity))
        elif part.method == "DELETE":
            ops.append(("delete", entity))
        elif if_match is None:
            ops.append(("upsert", entity, {"mode": mode}))
        elif if_match == "*":
            ops.append(("update", entity, {"mode": mode}))
        else:
            condition = tables.MatchConditions.IfNotModified
            ops.append(("update", entity, {"mode": mode, "etag": if_match,
                                           "match_condition": condition}))  # fmt: skip
    return ops


def _keys(text: str) -> dict[str, str]:
    """PartitionKey and RowKey from ``PartitionKey='a',RowKey='b')``."""
    pairs = dict(p.split("=", 1) for p in text.rstrip(")").split(","))
    return {k: v.strip("'") for k, v in pairs.items()}


def _batch_table(recorded: Recorded) -> str:
    return changeset(recorded.body or "")[0].path.lstrip("/").split("(")[0]


def test_a_transaction_of_every_operation_returns_each_etag_in_order() -> None:
    (exchange,) = recording("batch_all_operations.json")
    service, http = service_for([exchange])
    ops = _operations_of(exchange)
    assert [op[0] for op in ops] == ["create", "delete", "update", "update", "upsert", "upsert"]
    answers = run(lambda: service.table(_batch_table(exchange)).submit_transaction(ops))
    assert_same_changeset(http.sent[0], exchange)
    assert http.sent[0].header("Accept") == exchange.headers["Accept"]
    created = "W/\"datetime'2026-04-14T04%3A19%3A54.9677867Z'\""
    merged = "W/\"datetime'2026-04-14T04%3A19%3A54.9690791Z'\""
    # A create answered 201 with the entity, a delete 204 without an ETag, the rest 204 + ETag.
    assert answers == [{"etag": created}, {"etag": None}] + [{"etag": merged}] * 4


def test_a_failed_insert_in_a_transaction_names_the_operation_and_is_entity_exists() -> None:
    _insert, exchange = recording("batch_insert_conflict.json")
    service, http = service_for([exchange])
    ops = _operations_of(exchange)
    assert [op[0] for op in ops] == ["create"] * 4
    with pytest.raises(tables.EntityExistsError) as raised:
        run(lambda: service.table(_batch_table(exchange)).submit_transaction(ops))
    # One changeset answer for the whole transaction, naming the failed operation by index.
    assert "(operation 3)" in str(raised.value)
    assert "409 EntityAlreadyExists" in str(raised.value)
    assert_same_changeset(http.sent[0], exchange)


def test_the_same_row_twice_in_a_transaction_is_refused_naming_the_second() -> None:
    (exchange,) = recording("batch_duplicate_row.json")
    service, http = service_for([exchange])
    ops = _operations_of(exchange)
    with pytest.raises(tables.StorageRejectedError) as raised:
        run(lambda: service.table(_batch_table(exchange)).submit_transaction(ops))
    assert "(operation 1)" in str(raised.value)
    assert "400 InvalidDuplicateRow" in str(raised.value)
    assert_same_changeset(http.sent[0], exchange)


def test_a_stale_etag_in_a_transaction_is_entity_changed_though_no_operation_is_named() -> None:
    (exchange,) = recording("batch_stale_etag.json")
    service, http = service_for([exchange])
    ops = _operations_of(exchange)
    with pytest.raises(tables.EntityChangedError) as raised:
        run(lambda: service.table(_batch_table(exchange)).submit_transaction(ops))
    # The service prefixes no index to this message ("The update condition ..."): name none.
    assert "412 UpdateConditionNotSatisfied" in str(raised.value)
    assert "operation" not in str(raised.value).split(":", 1)[0]
    assert_same_changeset(http.sent[0], exchange)


def test_a_transaction_on_a_missing_table_is_a_missing_table_not_an_absent_entity() -> None:
    (exchange,) = recording("batch_table_not_found.json")
    service, http = service_for([exchange])
    ops = _operations_of(exchange)
    with pytest.raises(tables.TableMissingError) as raised:
        run(lambda: service.table(_batch_table(exchange)).submit_transaction(ops))
    # Adapters read EntityNotFoundError as "the row is absent" (a claim lost, a device gone);
    # a missing table is an outage of that table instead.
    assert not isinstance(raised.value, tables.EntityNotFoundError)
    assert isinstance(raised.value, tables.StorageUnavailableError)
    assert "(operation 0)" in str(raised.value)
    assert "404 TableNotFound" in str(raised.value)
    assert_same_changeset(http.sent[0], exchange)


# --- tables ---------------------------------------------------------------------------------------


def test_creating_a_table_that_exists_says_so() -> None:
    (exchange,) = recording("create_table_exists.json")
    service, http = service_for([exchange])
    assert run(lambda: service.create_table("pytablesync659525bb")) is False
    assert_same_request(http.sent[0], exchange)
    assert json.loads(http.sent[0].body) == json.loads(exchange.body or "")


def _with_answer(exchange: Recorded, answer: Mapping[str, Any]) -> Recorded:
    return Recorded(
        exchange.method,
        exchange.url,
        exchange.headers,
        exchange.body,
        answer["status"],
        answer["headers"],
        answer["body"],
    )


def _being_deleted() -> Mapping[str, Any]:
    doc = json.loads((FIXTURES / "table_being_deleted.json").read_text(encoding="utf-8"))
    answer: Mapping[str, Any] = doc["answer"]
    return answer


def test_creating_a_table_still_being_deleted_is_unavailable_not_a_conflict() -> None:
    # Azurite deletes a table at once; Azure takes 40 s or more and meanwhile answers 409
    # TableBeingDeleted. That is an outage of that table (retry later), not an existing one.
    (exchange,) = recording("create_table_exists.json")
    service, _http = service_for([_with_answer(exchange, _being_deleted())])
    with pytest.raises(tables.StorageUnavailableError, match="TableBeingDeleted"):
        run(lambda: service.create_table("pytablesync659525bb"))


def test_writing_to_a_table_being_deleted_is_unavailable_not_entity_exists() -> None:
    (exchange,) = recording("insert_conflict.json")
    service, _http = service_for([_with_answer(exchange, _being_deleted())])
    entity = entity_from(exchange.body or "")
    with pytest.raises(tables.StorageUnavailableError, match="TableBeingDeleted"):
        run(lambda: service.table(table_of(exchange)).create_entity(entity))


def _table_not_found() -> Mapping[str, Any]:
    doc = json.loads((FIXTURES / "table_not_found.json").read_text(encoding="utf-8"))
    answer: Mapping[str, Any] = doc["answer"]
    return answer


def test_a_point_read_on_a_missing_table_is_a_missing_table_not_an_absent_entity() -> None:
    (exchange,) = recording("point_read_not_found.json")
    service, _http = service_for([_with_answer(exchange, _table_not_found())])
    with pytest.raises(tables.TableMissingError, match="404 TableNotFound") as raised:
        run(lambda: service.table(table_of(exchange)).get_entity("pk14f82a4c", "rk14f82a4c"))
    assert not isinstance(raised.value, tables.EntityNotFoundError)


def test_a_query_on_a_missing_table_is_a_missing_table() -> None:
    first, *_rest = recording("query_continuation.json")
    service, _http = service_for([_with_answer(first, _table_not_found())])

    async def read() -> list[Any]:
        table = service.table("querytableadca2e0d")
        return [entity async for entity in table.list_entities(results_per_page=2)]

    with pytest.raises(tables.TableMissingError, match="404 TableNotFound"):
        run(read)


def test_the_table_is_created_again_on_the_next_call_after_it_went_missing() -> None:
    # Through Tables, as the adapters get their clients: the recorded TableNotFound answer to a
    # transaction, then the next call on the same client creates the table before its request.
    (created,) = recording("create_table_exists.json")
    (missing,) = recording("batch_table_not_found.json")
    (read,) = recording("point_read.json")
    service, http = service_for([created, missing, created, read])
    ops = _operations_of(missing)
    name = _batch_table(missing)

    async def go() -> None:
        store = tables.Tables(service, "", StorageClient.LEAN)
        table = await store.table(name)
        with pytest.raises(tables.TableMissingError):
            await table.submit_transaction(ops)
        await table.get_entity("pk", "rk")

    run(go)
    sent = [(s.method, urlsplit(s.target).path) for s in http.sent]
    assert sent == [
        ("POST", "/Tables"),
        ("POST", "/$batch"),
        ("POST", "/Tables"),
        ("GET", f"/{name}(PartitionKey='pk',RowKey='rk')"),
    ]
    assert json.loads(http.sent[2].body) == {"TableName": name}


def test_a_missing_entity_leaves_the_table_alone() -> None:
    (created,) = recording("create_table_exists.json")
    (absent,) = recording("point_read_not_found.json")
    service, http = service_for([created, absent, absent])

    async def go() -> None:
        table = await tables.Tables(service, "", StorageClient.LEAN).table("t")
        for _ in range(2):
            with pytest.raises(tables.EntityNotFoundError):
                await table.get_entity("pk", "rk")

    run(go)
    assert [s.method for s in http.sent] == ["POST", "GET", "GET"]


def test_every_fixture_names_its_source_in_the_readme() -> None:
    names = sorted(p.name for p in FIXTURES.glob("*.json"))
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    for name in names:
        doc = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
        assert doc["source"] and name in readme
