"""HPACK for APNs requests and responses: cheap, and following Apple's indexing advice.

hpack's own codec works nibble by nibble in pure Python: Huffman-coding a request's JWT and path
costs ~150 µs and decoding a response's ``apns-id`` (and sandbox ``apns-unique-id``) ~50-90 µs,
together more than the whole CPU budget of a push. The two classes here are the APNs
connection's (``shared.apns.connection``) encoder and decoder and speak the same wire format
(RFC 7541).

:class:`RequestHeaderEncoder` sends no Huffman coding (the H bit is optional) and:

- ``NeverIndexedHeaderTuple`` fields (``:path``, ``authorization``, and the per-push ``apns-id``,
  ``apns-expiration``, ``apns-collapse-id``) are "literal never indexed": Apple asks that
  ``:path`` and ``authorization`` never enter the table, and per-push values would only churn it.
- Every other field (``:authority``, ``apns-topic``, ``apns-push-type``, ``apns-priority``) is
  added to the dynamic table on first use and sent as a one-byte index afterwards.
- Entries are never evicted: once the table is full, further new fields go out as literals
  without indexing, so our view of the table never diverges from the server's.
- When the server lowers SETTINGS_HEADER_TABLE_SIZE, the next block starts with size updates to
  0 and to the new size, clearing both tables.

:class:`ResponseHeaderDecoder` is a full HPACK decoder (dynamic table, eviction, size updates,
header-list limit) whose Huffman decoding takes a byte per step through a memoized table built
from hpack's nibble state machine.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from hpack import HeaderTuple, NeverIndexedHeaderTuple
from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndexError,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hpack.huffman_table import (
    HUFFMAN_COMPLETE,
    HUFFMAN_EMIT_SYMBOL,
    HUFFMAN_FAIL,
    HUFFMAN_TABLE,
)
from hpack.table import HeaderTable

_DEFAULT_TABLE_SIZE: Final = 4096
_STATIC: Final = HeaderTable.STATIC_TABLE
_STATIC_LEN: Final = len(_STATIC)
_STATIC_PAIRS: Final[dict[tuple[bytes, bytes], int]] = {}
_STATIC_NAMES: Final[dict[bytes, int]] = {}
for _index, (_name, _value) in enumerate(_STATIC, start=1):
    _STATIC_PAIRS.setdefault((_name, _value), _index)
    _STATIC_NAMES.setdefault(_name, _index)


def encode_integer(value: int, prefix_bits: int, first_byte: int) -> bytes:
    """RFC 7541 §5.1 integer with an N-bit prefix, OR-ed into ``first_byte``'s high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first_byte | value,))
    out = bytearray((first_byte | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    return encode_integer(len(data), 7, 0x00) + data


def _name_part(name: bytes, prefix_bits: int, pattern: int) -> bytes:
    index = _STATIC_NAMES.get(name)
    if index is not None:
        return encode_integer(index, prefix_bits, pattern)
    return bytes((pattern,)) + _string(name)


_PATH_PREFIX: Final = _name_part(b":path", 4, 0x10)
_MAX_GROUPS: Final = 64


class RequestHeaderEncoder:
    """The request encoder of ``shared.apns.connection``, with ``hpack.Encoder``'s interface."""

    __slots__ = (
        "_count",
        "_groups",
        "_limit",
        "_never_cache",
        "_never_prefix",
        "_pending_resize",
        "_positions",
        "_refs",
        "_size",
    )

    def __init__(self) -> None:
        self._limit = _DEFAULT_TABLE_SIZE
        self._size = 0
        self._count = 0
        self._positions: dict[tuple[bytes, bytes], int] = {}
        self._refs: dict[tuple[bytes, bytes], bytes] = {}
        self._never_prefix: dict[bytes, bytes] = {}
        self._never_cache: dict[bytes, bytes] = {}
        self._groups: dict[tuple[tuple[bytes, bytes], ...], bytes] = {}
        self._pending_resize: int | None = None

    @property
    def header_table_size(self) -> int:
        """The dynamic table size this encoder keeps within."""
        return self._limit

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        if value >= self._limit:
            return  # we never need more than we use; no signal required
        self._limit = value
        self._pending_resize = value
        self._size = 0
        self._count = 0
        self._positions.clear()
        self._refs.clear()
        self._groups.clear()

    def encode_request(
        self,
        pseudo: tuple[tuple[bytes, bytes], ...],
        path: bytes,
        authorization: bytes | None,
        fields: tuple[tuple[bytes, bytes], ...],
        per_push: tuple[tuple[bytes, bytes], ...],
    ) -> bytes:
        """One request's block: ``pseudo`` and ``fields`` indexed (tuples the caller reuses),
        ``:path``, ``authorization`` and ``per_push`` never indexed."""
        parts: list[bytes] = []
        if self._pending_resize is not None:
            parts.append(encode_integer(0, 5, 0x20))
            parts.append(encode_integer(self._pending_resize, 5, 0x20))
            self._pending_resize = None
        parts.append(self._groups.get(pseudo) or self._group(pseudo))
        parts.append(_PATH_PREFIX + _string(path))
        if authorization is not None:
            parts.append(self._never_indexed(b"authorization", authorization))
        parts.append(self._groups.get(fields) or self._group(fields))
        for name, value in per_push:
            parts.append(self._never_indexed(name, value))
        return b"".join(parts)

    def _group(self, group: tuple[tuple[bytes, bytes], ...]) -> bytes:
        count = self._count
        # Look references up afresh for each field: an insertion (``_first_use``) shifts every
        # dynamic index and replaces ``self._refs``, so a reference held from before it would
        # point at the wrong entry (a duplicated or missing header).
        encoded = b"".join(self._refs.get(key) or self._first_use(key) for key in group)
        if self._count == count:  # nothing entered the table: this encoding is stable
            if len(self._groups) >= _MAX_GROUPS:
                self._groups.clear()
            self._groups[group] = encoded
        return encoded

    def encode(self, headers: Iterable[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
        """One header block; ``huffman`` is accepted for compatibility and ignored."""
        parts: list[bytes] = []
        if self._pending_resize is not None:
            parts.append(encode_integer(0, 5, 0x20))
            parts.append(encode_integer(self._pending_resize, 5, 0x20))
            self._pending_resize = None
        for header in headers:
            if isinstance(header, HeaderTuple) and not header.indexable:
                parts.append(self._never_indexed(header[0], header[1]))
            else:
                key = (header[0], header[1])
                ref = self._refs.get(key)
                parts.append(ref if ref is not None else self._first_use(key))
        return b"".join(parts)

    def _never_indexed(self, name: bytes, value: bytes) -> bytes:
        if name == b"authorization":
            cached = self._never_cache.get(value)
            if cached is not None:
                return cached
        prefix = self._never_prefix.get(name)
        if prefix is None:
            prefix = self._never_prefix[name] = _name_part(name, 4, 0x10)
        encoded = prefix + _string(value)
        if name == b"authorization":
            if len(self._never_cache) >= 4:
                self._never_cache.clear()
            self._never_cache[value] = encoded
        return encoded

    def _first_use(self, key: tuple[bytes, bytes]) -> bytes:
        static = _STATIC_PAIRS.get(key)
        if static is not None:
            ref = encode_integer(static, 7, 0x80)
            self._refs[key] = ref
            return ref
        name, value = key
        entry = len(name) + len(value) + 32
        if self._size + entry > self._limit:
            return _name_part(name, 4, 0x00) + _string(value)
        self._positions[key] = self._count
        self._count += 1
        self._size += entry
        # Every dynamic index shifts by one on insertion: rebuild the references.
        self._groups.clear()
        self._refs = {k: v for k, v in self._refs.items() if k in _STATIC_PAIRS}
        for other, position in self._positions.items():
            if other != key:
                self._refs[other] = encode_integer(_STATIC_LEN + self._count - position, 7, 0x80)
        self._refs[key] = encode_integer(_STATIC_LEN + 1, 7, 0x80)
        return _name_part(name, 6, 0x40) + _string(value)


# --- decoding -----------------------------------------------------------------------------

# Entry ``state << 8 | byte``: (next state << 8, bytes emitted, whether a string may end here).
_HuffmanStep = tuple[int, bytes, bool]
_HUFFMAN_STEPS: list[_HuffmanStep | None] = [None] * 65536


def _huffman_step(base: int, byte: int) -> _HuffmanStep:
    """Two nibble steps of hpack's state machine, composed (and memoized) into one byte step."""
    state = base >> 8
    emitted = bytearray()
    flags = 0
    for nibble in (byte >> 4, byte & 0x0F):
        state, flags, symbol = HUFFMAN_TABLE[(state << 4) + nibble]
        if flags & HUFFMAN_FAIL:
            raise HPACKDecodingError("Invalid Huffman string")
        if flags & HUFFMAN_EMIT_SYMBOL:
            emitted.append(symbol)
    step = (state << 8, bytes(emitted), bool(flags & HUFFMAN_COMPLETE))
    _HUFFMAN_STEPS[base | byte] = step
    return step


def decode_huffman(data: bytes) -> bytes:
    """RFC 7541 Huffman decoding, one byte per step. Raises ``HPACKDecodingError``."""
    steps = _HUFFMAN_STEPS
    base = 0
    complete = True
    parts: list[bytes] = []
    for byte in data:
        base, emitted, complete = steps[base | byte] or _huffman_step(base, byte)
        parts.append(emitted)
    if not complete:
        raise HPACKDecodingError("Incomplete Huffman string")
    return b"".join(parts)


_HUFFMAN_CACHE_SIZE: Final = 256
_HUFFMAN_CACHE: dict[bytes, bytes] = {}


def _read_integer(data: bytes, at: int, prefix_bits: int) -> tuple[int, int]:
    mask = (1 << prefix_bits) - 1
    value = data[at] & mask
    at += 1
    if value < mask:
        return value, at
    shift = 0
    while True:
        if at >= len(data) or shift > 28:
            raise HPACKDecodingError("Malformed integer")
        byte = data[at]
        at += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def _read_string(data: bytes, at: int) -> tuple[bytes, int]:
    if at >= len(data):
        raise HPACKDecodingError("Truncated header block")
    huffman = data[at] & 0x80
    length, at = _read_integer(data, at, 7)
    end = at + length
    if end > len(data):
        raise HPACKDecodingError("Truncated header block")
    raw = data[at:end]
    if not huffman:
        return bytes(raw), end
    # Servers repeat most values (server, date, content-type) block after block without
    # indexing them; per-push values (apns-id) only pass through this small cache.
    decoded = _HUFFMAN_CACHE.get(raw)
    if decoded is None:
        decoded = decode_huffman(raw)
        if len(_HUFFMAN_CACHE) >= _HUFFMAN_CACHE_SIZE:
            _HUFFMAN_CACHE.clear()
        _HUFFMAN_CACHE[bytes(raw)] = decoded
    return decoded, end


class ResponseHeaderDecoder:
    """The response decoder of ``shared.apns.connection``, with ``hpack.Decoder``'s interface."""

    __slots__ = ("_entries", "_size", "header_table_size", "max_allowed_table_size",
                 "max_header_list_size")  # fmt: skip

    def __init__(self) -> None:
        self._entries: list[tuple[bytes, bytes]] = []  # newest last
        self._size = 0
        self.header_table_size = _DEFAULT_TABLE_SIZE
        self.max_allowed_table_size = _DEFAULT_TABLE_SIZE
        self.max_header_list_size = 2**16

    def decode(self, data: bytes, raw: bool = True) -> list[tuple[bytes, bytes]]:
        """The header list of one block, as bytes pairs; raises ``HPACKDecodingError``."""
        headers: list[tuple[bytes, bytes]] = []
        total = 0
        at = 0
        end = len(data)
        while at < end:
            first = data[at]
            if first & 0x80:
                index, at = _read_integer(data, at, 7)
                header = self._lookup(index)
            elif first & 0x40:
                header, at = self._literal(data, at, 6)
                self._add(header)
            elif first & 0x20:
                size, at = _read_integer(data, at, 5)
                self._resize(size)
                continue
            else:
                header, at = self._literal(data, at, 4)
                if first & 0x10:
                    header = NeverIndexedHeaderTuple(header[0], header[1])
            total += len(header[0]) + len(header[1]) + 32
            if total > self.max_header_list_size:
                raise OversizedHeaderListError("header list over the advertised limit")
            headers.append(header)
        if self.header_table_size > self.max_allowed_table_size:
            raise InvalidTableSizeError("encoder did not shrink the table as required")
        return headers

    def _lookup(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_LEN:
            return _STATIC[index - 1]
        offset = index - _STATIC_LEN
        if index == 0 or offset > len(self._entries):
            raise InvalidTableIndexError(f"invalid table index {index}")
        return self._entries[-offset]

    def _literal(self, data: bytes, at: int, prefix_bits: int) -> tuple[tuple[bytes, bytes], int]:
        index, at = _read_integer(data, at, prefix_bits)
        if index:
            name = self._lookup(index)[0]
        else:
            name, at = _read_string(data, at)
        value, at = _read_string(data, at)
        return (name, value), at

    def _add(self, header: tuple[bytes, bytes]) -> None:
        self._entries.append(header)
        self._size += len(header[0]) + len(header[1]) + 32
        self._evict()

    def _resize(self, size: int) -> None:
        if size > self.max_allowed_table_size:
            raise InvalidTableSizeError(f"table size {size} over the allowed maximum")
        self.header_table_size = size
        self._evict()

    def _evict(self) -> None:
        while self._size > self.header_table_size and self._entries:
            name, value = self._entries.pop(0)
            self._size -= len(name) + len(value) + 32
