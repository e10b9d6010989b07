"""HPACK encoding of APNs request headers: cheap, and following Apple's indexing advice.

hpack's own encoder Huffman-codes every literal in pure Python, which costs ~150 µs per APNs
request (the JWT alone is ~200 characters): more than the whole CPU budget of a push. This
encoder, installed as the h2 connection's ``encoder``, emits the same wire format without
Huffman coding (the H bit is optional in RFC 7541) and with these rules:

- ``NeverIndexedHeaderTuple`` fields (``:path``, ``authorization``, and the per-push ``apns-id``,
  ``apns-expiration``, ``apns-collapse-id``) are "literal never indexed": Apple asks that
  ``:path`` and ``authorization`` never enter the table, and per-push values would only churn it.
- Every other field (``:authority``, ``apns-topic``, ``apns-push-type``, ``apns-priority``) is
  added to the dynamic table on first use and sent as a one-byte index afterwards.
- Entries are never evicted: once the table is full, further new fields go out as literals
  without indexing, so our view of the table never diverges from the server's.
- When the server lowers SETTINGS_HEADER_TABLE_SIZE, the next block starts with size updates to
  0 and to the new size, clearing both tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from hpack import HeaderTuple
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


class RequestHeaderEncoder:
    """A drop-in for ``hpack.Encoder`` inside ``h2`` (it calls ``encode(headers)``)."""

    __slots__ = (
        "_count",
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
        self._refs = {k: v for k, v in self._refs.items() if k in _STATIC_PAIRS}
        for other, position in self._positions.items():
            if other != key:
                self._refs[other] = encode_integer(_STATIC_LEN + self._count - position, 7, 0x80)
        self._refs[key] = encode_integer(_STATIC_LEN + 1, 7, 0x80)
        return _name_part(name, 6, 0x40) + _string(value)
