"""Table Storage's REST wire format, without I/O: signing, URLs, entities, batches, errors.

Everything :mod:`shared.storage.table_client` puts on the wire or reads from it, as pure
functions, so the rules can be tested byte by byte. Sources (public): Microsoft's Table service
REST reference
("Authorize with Shared Key", "Payload format for Table service operations", "Query Entities",
"Performing entity group transactions", "Table service error codes") and what the
azure-data-tables SDK (Azure/azure-sdk-for-python, sdk/tables) sends, which works against the
real service:

- **Shared Key (Table service)**: ``StringToSign = VERB \\n Content-MD5 \\n Content-Type \\n Date
  \\n CanonicalizedResource`` where Date is the ``x-ms-date`` value and CanonicalizedResource is
  ``/<account><encoded URI path>`` (plus ``?comp=...``, which no operation here uses); the
  signature is base64(HMAC-SHA256(base64-decoded account key, UTF-8 string)). Shared Key Lite
  signs ``Date \\n CanonicalizedResource`` only.
- **Keys in URLs**: ``/<table>(PartitionKey='<pk>',RowKey='<rk>')`` with ``'`` doubled (OData
  string literals) and the rest percent-encoded the way the SDK's requests reach the wire (its
  aiohttp transport normalises the path with yarl): RFC 3986 unreserved characters and
  ``!$&'()*,;=:@`` stay as they are, everything else (``%``, ``|``, space, ``+``, non-ASCII as
  UTF-8) is ``%XX``. The signature covers exactly that text, so the client sends it unchanged.
- **Values**: JSON; a property whose type JSON cannot carry gets an ``<name>@odata.type``
  annotation: ``Edm.Int64`` (the value as a decimal string), ``Edm.DateTime`` (ISO 8601 UTC,
  ``Z``), ``Edm.Binary`` (base64), ``Edm.Guid``, ``Edm.Double`` (every float, as the SDK does, so
  ``2.0`` stays a double). Reads ask for ``odata=minimalmetadata``: the service then annotates
  exactly those types and adds each entity's ``odata.etag``, so a generic reader needs no schema
  (``nometadata`` drops both: an Int64 would come back as a bare string and a query's rows
  without their ETags, which the delivery claims need).
- **Batches**: one ``multipart/mixed`` batch holding one changeset of at most 100 operations on
  one partition, at most 4 MiB; the answer holds one part per operation, or a single part for
  the operation that failed (its index prefixes the error message, ``"1:The specified ..."``).
- **Errors**: ``{"odata.error": {"code": ..., "message": {"value": ...}}}``.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import hmac
import json
import math
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple
from urllib.parse import quote

API_VERSION: Final = "2019-02-02"
"""x-ms-version: what the SDK sends; the first version with Entra ID (OAuth) for tables."""

MAX_OPERATIONS: Final = 100
"""Operations in one entity-group transaction."""

MAX_BATCH_BYTES: Final = 4 * 1024 * 1024
"""Payload limit of one entity-group transaction (4 MiB)."""

MINIMAL_METADATA: Final = "application/json;odata=minimalmetadata"
JSON_TYPE: Final = "application/json"

# RFC 3986 unreserved characters never get quoted; these sub-delimiters and ':' '@' stay too.
_PATH_SAFE: Final = "!$&'()*,;=:@"
# In a query value '&', '=', '+' and '#' would change its meaning.
_QUERY_SAFE: Final = "!$'()*,;:@"


class Edm(enum.StrEnum):
    """The OData types Table Storage stores (``@odata.type`` annotation values)."""

    BINARY = "Edm.Binary"
    BOOLEAN = "Edm.Boolean"
    DATETIME = "Edm.DateTime"
    DOUBLE = "Edm.Double"
    GUID = "Edm.Guid"
    INT32 = "Edm.Int32"
    INT64 = "Edm.Int64"
    STRING = "Edm.String"


class Typed(NamedTuple):
    """A value with an explicit Table type (the SDK's ``EntityProperty`` has the same shape)."""

    value: Any
    edm_type: str


class Entity(dict[str, Any]):
    """An entity as read: its properties, and ``metadata`` with ``etag`` and ``timestamp``.

    ``metadata["timestamp"]`` is the service's ``Timestamp`` text (not parsed: nothing needs it
    on the hot path).
    """

    __slots__ = ("metadata",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metadata: dict[str, Any] = {}


# --- signing --------------------------------------------------------------------------------------


def shared_key_string(method: str, content_type: str, date: str, resource: str) -> str:
    """The Shared Key (Table service) string to sign; Content-MD5 is never sent, so empty."""
    return f"{method}\n\n{content_type}\n{date}\n{resource}"


def shared_key_lite_string(date: str, resource: str) -> str:
    """The Shared Key Lite (Table service) string to sign."""
    return f"{date}\n{resource}"


def signature(key: bytes, string_to_sign: str) -> str:
    """base64(HMAC-SHA256(key, UTF-8 ``string_to_sign``)); ``key`` is the decoded account key."""
    digest = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def canonical_resource(account: str, raw_path: str) -> str:
    """CanonicalizedResource: ``/<account>`` + the encoded path as sent (no query)."""
    return f"/{account}{raw_path}"


# --- URLs -----------------------------------------------------------------------------------------


_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9\-._~!$&()*,;=:@]*")
_UNRESERVED: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
# What quote_key does to each ASCII character that changes ("'" is doubled, not escaped).
_ASCII_ESCAPES: Final = {
    chr(code): ("''" if chr(code) == "'" else f"%{code:02X}")
    for code in range(128)
    if chr(code) not in _UNRESERVED + _PATH_SAFE or chr(code) == "'"
}
_ASCII_ESCAPED: Final = re.compile("[" + re.escape("".join(_ASCII_ESCAPES)) + "]")


def quote_key(key: str) -> str:
    """A PartitionKey or RowKey as it appears inside ``'...'`` in an encoded URL path."""
    if not isinstance(key, str):
        raise TypeError("PartitionKey and RowKey must be str")
    if _PLAIN_KEY.fullmatch(key):  # hex ids, "owner", ACS ids: nothing to escape
        return key
    if key.isascii():  # "m|user|thread" partitions, "message|kind|version|device" rows
        return _ASCII_ESCAPED.sub(_ascii_escape, key)
    return _quote_key(key)


def _ascii_escape(match: re.Match[str]) -> str:
    return _ASCII_ESCAPES[match.group()]


@functools.lru_cache(maxsize=4096)
def _quote_key(key: str) -> str:
    # urllib's quote costs ~10 us a key; keys recur, so remember the recent ones.
    return quote(key.replace("'", "''"), safe=_PATH_SAFE)


def entity_path(table: str, partition_key: str, row_key: str) -> str:
    """The encoded path of one entity, relative to the account (no leading slash)."""
    return f"{table}(PartitionKey='{quote_key(partition_key)}',RowKey='{quote_key(row_key)}')"


def query_string(
    query_filter: str | None,
    select: Sequence[str] | None = None,
    top: int | None = None,
    continuation: tuple[str | None, str | None] = (None, None),
) -> str:
    """The encoded query of a Query Entities request (empty, or starting with ``?``)."""
    parts = []
    if top is not None:
        parts.append(f"$top={int(top)}")
    if select:
        parts.append("$select=" + quote(",".join(select), safe=_QUERY_SAFE))
    if query_filter:
        parts.append("$filter=" + quote(query_filter, safe=_QUERY_SAFE))
    next_pk, next_rk = continuation
    if next_pk is not None:
        parts.append("NextPartitionKey=" + quote(next_pk, safe=""))
    if next_rk is not None:
        parts.append("NextRowKey=" + quote(next_rk, safe=""))
    return "?" + "&".join(parts) if parts else ""


_PARAMETER: Final = re.compile(r"@([A-Za-z_]\w*)")


def filter_literal(value: object) -> str:
    """An OData literal for a filter parameter (strings quoted with ``'`` doubled)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if -(2**31) <= value < 2**31 else f"{value}L"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return f"datetime'{datetime_text(value)}'"
    if isinstance(value, uuid.UUID):
        return f"guid'{value}'"
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"unsupported filter parameter type: {type(value).__name__}")


def substitute(query_filter: str, parameters: Mapping[str, object] | None) -> str:
    """``query_filter`` with each ``@name`` replaced by its parameter's literal.

    Raises KeyError naming a parameter that ``parameters`` lacks.
    """
    if not parameters:
        return query_filter
    return _PARAMETER.sub(lambda m: filter_literal(parameters[m.group(1)]), query_filter)


# --- values ---------------------------------------------------------------------------------------


def datetime_text(value: datetime) -> str:
    """An aware datetime as Table Storage's UTC text. Raises ValueError on a naive one."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: Table Storage times must be timezone-aware")
    if value.utcoffset():
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _encode_float(value: float) -> object:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _encode_typed(value: Typed) -> tuple[object, str | None]:
    kind = Edm(value.edm_type)
    raw = value.value
    if kind is Edm.INT64:
        number = int(raw)
        if not -(2**63) <= number < 2**63:
            raise ValueError(f"{number} does not fit Edm.Int64")
        return str(number), kind.value
    if kind is Edm.INT32:
        return _encode_int32(int(raw)), kind.value
    if kind is Edm.DOUBLE:
        return _encode_float(float(raw)), kind.value
    if kind is Edm.DATETIME:
        return (raw if isinstance(raw, str) else datetime_text(raw)), kind.value
    if kind is Edm.BINARY:
        return base64.b64encode(raw).decode("ascii"), kind.value
    if kind is Edm.BOOLEAN:
        return bool(raw), kind.value
    return str(raw), kind.value


def _encode_int32(value: int) -> int:
    if not -(2**31) <= value < 2**31:
        raise ValueError(f"{value} does not fit Edm.Int32")
    return value


def encode_value(value: object) -> tuple[object, str | None]:
    """A Python value as (JSON value, ``@odata.type`` or None). Raises TypeError/ValueError.

    int beyond Int32 becomes Edm.Int64 (the SDK raises instead; a counter must not fail at
    2**31); bool, str (StrEnum included) and Int32 need no annotation.
    """
    kind = type(value)
    if kind is str or kind is bool:
        return value, None
    if kind is int:
        number: int = value  # type: ignore[assignment]
        if -(2**31) <= number < 2**31:
            return number, None
        return _encode_typed(Typed(number, Edm.INT64))
    if kind is datetime:
        return datetime_text(value), Edm.DATETIME.value  # type: ignore[arg-type]
    if kind is float:
        return _encode_float(value), Edm.DOUBLE.value  # type: ignore[arg-type]
    return _encode_other(value)


def _encode_other(value: object) -> tuple[object, str | None]:
    """:func:`encode_value` for the types that are not plain str, bool, int, datetime, float."""
    if isinstance(value, tuple) and len(value) == 2:  # Typed, or the SDK's EntityProperty
        return _encode_typed(Typed(value[0], str(getattr(value[1], "value", value[1]))))
    if isinstance(value, str):  # StrEnum and other str subclasses
        return str(value), None
    if isinstance(value, int):  # IntEnum and other int subclasses (bool was handled above)
        return encode_value(int(value))
    if isinstance(value, enum.Enum):
        return encode_value(value.value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii"), Edm.BINARY.value
    if isinstance(value, uuid.UUID):
        return str(value), Edm.GUID.value
    if isinstance(value, datetime):
        return datetime_text(value), Edm.DATETIME.value
    if isinstance(value, float):
        return _encode_float(value), Edm.DOUBLE.value
    raise TypeError(f"unsupported property type: {type(value).__name__}")


_DUMPS: Final = json.JSONEncoder(separators=(",", ":")).encode


def encode_entity(entity: Mapping[str, Any]) -> bytes:
    """The JSON body of an entity (None properties are left out, as the SDK does).

    Raises TypeError/ValueError on a value Table Storage cannot hold.
    """
    body: dict[str, object] = {}
    for name, value in entity.items():
        kind = type(value)
        # The common JSON-native values inline: this loop runs for every property written.
        if kind is str or kind is bool or (kind is int and -(2**31) <= value < 2**31):
            body[name] = value
        elif value is not None:
            wire, edm = encode_value(value)
            body[name] = wire
            if edm is not None:
                body[name + "@odata.type"] = edm
    return _DUMPS(body).encode("utf-8")


def _decode_double(value: object) -> float:
    return float(value)  # type: ignore[arg-type]  # "NaN" and "Infinity" parse too


def _decode_datetime(value: object) -> datetime:
    # fromisoformat takes 'Z' and the service's 7 fractional digits (keeping microseconds).
    return datetime.fromisoformat(str(value))


_DECODERS: Final[dict[str, Any]] = {
    Edm.INT64.value: int,
    Edm.DATETIME.value: _decode_datetime,
    Edm.BINARY.value: base64.b64decode,
    Edm.GUID.value: uuid.UUID,
    Edm.DOUBLE.value: _decode_double,
    Edm.INT32.value: int,
    Edm.STRING.value: str,
    Edm.BOOLEAN.value: bool,
}


def decode_entity(raw: Mapping[str, Any]) -> Entity:
    """An entity from its minimal-metadata JSON object: typed values, ETag and Timestamp apart.

    Int64 values come back as plain ints, datetimes as aware UTC datetimes, Binary as bytes,
    Guid as UUID. Raises ValueError on a value that does not parse as its annotated type.
    """
    entity = Entity()
    types: dict[str, str] | None = None
    for name, value in raw.items():
        if name.endswith("@odata.type"):
            if types is None:
                types = {}
            types[name[:-11]] = value
        elif name.startswith("odata."):
            if name == "odata.etag":
                entity.metadata["etag"] = value
        elif name == "Timestamp":
            entity.metadata["timestamp"] = value
        else:
            entity[name] = value
    if types:
        for name, edm in types.items():
            if name in entity:
                decode = _DECODERS.get(edm)
                if decode is not None:
                    entity[name] = decode(entity[name])
    return entity


# --- errors ---------------------------------------------------------------------------------------


class ServiceError(NamedTuple):
    """What an error answer says: its code (e.g. ``EntityAlreadyExists``) and message."""

    code: str
    message: str


def parse_error(body: bytes, header_code: str | None = None) -> ServiceError:
    """The ``odata.error`` of an error answer (XML or empty bodies give the header's code)."""
    code, message = header_code or "", ""
    try:
        error = json.loads(body)["odata.error"]
        code = str(error.get("code") or code)
        message = str((error.get("message") or {}).get("value") or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    # The message's first line is the description; RequestId and Time lines follow.
    return ServiceError(code, message.split("\n", 1)[0])


_FAILED_INDEX: Final = re.compile(r"^(\d+):")


def failed_index(message: str) -> int | None:
    """The index of the failed operation that prefixes a transaction's error message."""
    match = _FAILED_INDEX.match(message)
    return int(match.group(1)) if match else None


# --- batches --------------------------------------------------------------------------------------


class SubRequest(NamedTuple):
    """One operation of a changeset, ready to encode."""

    method: str
    path: str  # encoded, relative to the account
    headers: tuple[tuple[str, str], ...]
    body: bytes


class SubResponse(NamedTuple):
    """One part of a changeset's answer."""

    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


def encode_batch(
    base_url: str, requests: Sequence[SubRequest], boundary: str | None = None
) -> tuple[str, bytes]:
    """A ``$batch`` body with one changeset: (its Content-Type, its bytes).

    ``base_url`` is the account's URL without a trailing slash; sub-requests carry absolute URLs.
    """
    token = boundary or uuid.uuid4().hex
    batch, changeset = f"batch_{token}", f"changeset_{token}"
    out = [
        f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode(),
    ]
    for index, req in enumerate(requests):
        head = [
            f"--{changeset}",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            f"Content-ID: {index}",
            "",
            f"{req.method} {base_url}/{req.path} HTTP/1.1",
            *(f"{name}: {value}" for name, value in req.headers),
        ]
        if req.body:
            head += [f"Content-Type: {JSON_TYPE}", f"Content-Length: {len(req.body)}"]
        out.append(("\r\n".join(head) + "\r\n\r\n").encode() + req.body + b"\r\n")
    out.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n".encode())
    return f"multipart/mixed; boundary={batch}", b"".join(out)


_BOUNDARY: Final = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


def _boundary(content_type: str) -> str:
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise ValueError("multipart answer without a boundary")
    return match.group(1)


def _parts(body: bytes, boundary: str) -> Iterator[bytes]:
    """The parts of a multipart body (each without its delimiter lines)."""
    delimiter = b"--" + boundary.encode()
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            return
        yield chunk.strip(b"\r\n")


def _header_block(block: bytes) -> tuple[list[str], bytes]:
    """Split ``headers CRLF CRLF rest`` into header lines and the rest."""
    head, _, rest = block.partition(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n"), rest


def decode_batch(content_type: str, body: bytes) -> list[SubResponse]:
    """The changeset's answers from a ``$batch`` answer. Raises ValueError on a malformed one."""
    out: list[SubResponse] = []
    for part in _parts(body, _boundary(content_type)):
        lines, inner = _header_block(part)
        changeset = next(
            (line.split(":", 1)[1].strip() for line in lines if line.lower().startswith(
                "content-type:") and "multipart/mixed" in line.lower()),
            None,
        )  # fmt: skip
        if changeset is None:
            raise ValueError("batch answer without a changeset")
        out.extend(_sub_response(p) for p in _parts(inner, _boundary(changeset)))
    return out


def _sub_response(part: bytes) -> SubResponse:
    start = part.find(b"HTTP/1.")
    if start < 0:
        raise ValueError("changeset answer without a status line")
    end = part.find(b"\r\n\r\n", start)
    head = part[start : end if end >= 0 else len(part)].decode("latin-1")
    body = part[end + 4 :].rstrip(b"\r\n") if end >= 0 else b""
    lines = head.split("\r\n")
    status = lines[0][9:12]  # "HTTP/1.1 204 No Content"
    if not status.isdigit():
        raise ValueError("changeset answer without a status line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    return SubResponse(int(status), headers, body)


def partition_of(entities: Iterable[Mapping[str, Any]]) -> str | None:
    """The one PartitionKey the entities share; None when they span several (or none)."""
    keys = {str(e["PartitionKey"]) for e in entities}
    return keys.pop() if len(keys) == 1 else None
