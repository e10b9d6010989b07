"""HTTP/2 framing (RFC 9113 §4, §6) for the APNs connection: what a client needs, nothing more.

A frame is a 9-byte header (24-bit length, type, flags, 31-bit stream id) and a payload. The
connection builds and parses them itself: a generic HTTP/2 library spent about half of a push's
CPU on frame objects, event objects and state machines that an APNs client never exercises.
"""

from __future__ import annotations

import struct
from typing import Final

from h2.errors import ErrorCodes

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6).
DATA: Final = 0x0
HEADERS: Final = 0x1
PRIORITY: Final = 0x2
RST_STREAM: Final = 0x3
SETTINGS: Final = 0x4
PUSH_PROMISE: Final = 0x5
PING: Final = 0x6
GOAWAY: Final = 0x7
WINDOW_UPDATE: Final = 0x8
CONTINUATION: Final = 0x9

# Flags.
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

# SETTINGS identifiers (RFC 9113 §6.5.2).
HEADER_TABLE_SIZE: Final = 0x1
ENABLE_PUSH: Final = 0x2
MAX_CONCURRENT_STREAMS: Final = 0x3
INITIAL_WINDOW_SIZE: Final = 0x4
MAX_FRAME_SIZE: Final = 0x5
MAX_HEADER_LIST_SIZE: Final = 0x6

DEFAULT_WINDOW: Final = 65535
DEFAULT_MAX_FRAME: Final = 16384
MAX_WINDOW: Final = 2**31 - 1
MAX_STREAM_ID: Final = 2**31 - 1
UNLIMITED_STREAMS: Final = 2**32 + 1
"""MAX_CONCURRENT_STREAMS until a peer sets it (RFC 9113 §6.5.2: initially unlimited)."""

HEAD: Final = struct.Struct(">IBI")
"""A frame header: (length << 8 | type, flags, stream id)."""
_SETTING: Final = struct.Struct(">HI")
_U32: Final = struct.Struct(">I")
_GOAWAY: Final = struct.Struct(">II")


class FrameError(Exception):
    """The peer broke HTTP/2: the connection must end with GOAWAY carrying ``code``."""

    def __init__(self, message: str, code: ErrorCodes = ErrorCodes.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One whole frame."""
    return HEAD.pack(len(payload) << 8 | kind, flags, stream_id) + payload


def header_frames(stream_id: int, block: bytes, max_frame: int, end_stream: bool) -> list[bytes]:
    """HEADERS, then CONTINUATION frames when the block exceeds the peer's frame size."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return [HEAD.pack(len(block) << 8 | HEADERS, flags | END_HEADERS, stream_id), block]
    chunks = [block[at : at + max_frame] for at in range(0, len(block), max_frame)]
    out = [frame(HEADERS, flags, stream_id, chunks[0])]
    for chunk in chunks[1:-1]:
        out.append(frame(CONTINUATION, 0, stream_id, chunk))
    out.append(frame(CONTINUATION, END_HEADERS, stream_id, chunks[-1]))
    return out


def settings_frame(values: dict[int, int]) -> bytes:
    """A SETTINGS frame carrying ``values``."""
    payload = b"".join(_SETTING.pack(code, value) for code, value in values.items())
    return frame(SETTINGS, 0, 0, payload)


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """The (identifier, value) pairs of a SETTINGS payload, in order. Raises FrameError."""
    if len(payload) % 6:
        raise FrameError("SETTINGS length not a multiple of 6", ErrorCodes.FRAME_SIZE_ERROR)
    return [_SETTING.unpack_from(payload, at) for at in range(0, len(payload), 6)]


def window_update_frame(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame."""
    return frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def rst_stream_frame(stream_id: int, code: int) -> bytes:
    """A RST_STREAM frame."""
    return frame(RST_STREAM, 0, stream_id, _U32.pack(code))


def goaway_frame(last_stream_id: int, code: int, data: bytes = b"") -> bytes:
    """A GOAWAY frame."""
    return frame(GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, code) + data)


def u32(payload: bytes, at: int = 0) -> int:
    """The big-endian 32-bit integer at ``at``."""
    value: int = _U32.unpack_from(payload, at)[0]
    return value


def error_code(value: int) -> ErrorCodes | int:
    """The named error code, or the bare number for codes RFC 9113 does not define."""
    try:
        return ErrorCodes(value)
    except ValueError:
        return value


def unpad(payload: bytes, flags: int) -> bytes:
    """A DATA/HEADERS payload without its padding. Raises FrameError."""
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise FrameError("padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]
