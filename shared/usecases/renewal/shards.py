"""The renewal queue's message: one shard of a sweep's due devices, or a bucket to purge."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from shared.apns.notification import Environment
from shared.errors import InputError
from shared.storage.renewal_schedule import EntryState, ScheduleEntry, bucket_start

log = logging.getLogger(__name__)

SHARD_VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 45_000  # a queue message is 64 KiB once base64-encoded


class MalformedShardError(InputError):
    """A queue message that is not a shard this module wrote (acknowledged, never retried)."""


@dataclass(frozen=True, slots=True)
class ShardItem:
    """One device of a shard: the buckets it was found in and what its latest entry carries."""

    user_id: str
    device_id: str
    buckets: tuple[str, ...]
    state: EntryState | None = None

    @property
    def key(self) -> tuple[str, str]:
        """The device's identity within a shard: (user, device)."""
        return (self.user_id, self.device_id)

    @property
    def due_bucket(self) -> str:
        """The latest bucket the device was due in (the one that decides)."""
        return max(self.buckets)


def _state_json(s: EntryState | None) -> list[object] | None:
    if s is None:
        return None
    wake_at = s.wake_at.isoformat() if s.wake_at else None
    sent = [t.isoformat() for t in s.sent]
    result_at = s.last_result_at.isoformat() if s.last_result_at else None
    return [s.token, s.topic, s.environment, s.etag, s.at.isoformat(), sent, s.wakes, wake_at,
            s.wake_sweep, s.bad_tokens, s.last_result, result_at]  # fmt: skip


def _state_from(v: object) -> EntryState | None:
    if v is None:
        return None
    # 9 fields: a shard queued before entries carried the settling state (still in flight).
    if not isinstance(v, list) or len(v) not in (9, 12):
        raise TypeError("not an entry state")
    token, topic, env, etag, at, sent, wakes, wake_at, sweep = v[:9]
    bad_tokens, last_result, result_at = v[9:] if len(v) == 12 else (0, None, None)
    return EntryState(
        token=str(token),
        topic=str(topic),
        environment=Environment(env).value,
        etag=str(etag),
        at=datetime.fromisoformat(at),
        sent=tuple(datetime.fromisoformat(t) for t in sent),
        wakes=int(wakes),
        wake_at=datetime.fromisoformat(wake_at) if wake_at else None,
        wake_sweep=str(sweep) if sweep else None,
        bad_tokens=int(bad_tokens),
        last_result=str(last_result) if last_result else None,
        last_result_at=datetime.fromisoformat(result_at) if result_at else None,
    )


@dataclass(frozen=True, slots=True)
class Shard:
    """One queue message: devices of one sweep for one worker invocation, or a bucket to purge."""

    sweep_id: str
    index: int
    items: tuple[ShardItem, ...] = ()
    purge: str | None = None

    def to_json(self) -> str:
        """The message body (compact JSON)."""
        body: dict[str, object] = {"v": SHARD_VERSION, "sweep": self.sweep_id, "shard": self.index}
        if self.purge is not None:
            body["purge"] = self.purge
        else:
            body["devices"] = [
                [i.user_id, i.device_id, list(i.buckets), _state_json(i.state)] for i in self.items
            ]
        return json.dumps(body, separators=(",", ":"))


def parse_shard(body: bytes | str) -> Shard:
    """Read a queue message. Raises MalformedShardError for anything :meth:`Shard.to_json` did
    not write."""
    try:
        data = json.loads(body)
        if data["v"] != SHARD_VERSION:
            raise MalformedShardError(f"unknown shard version {data['v']!r}")
        if "purge" in data:
            bucket_start(str(data["purge"]))
            return Shard(str(data["sweep"]), int(data["shard"]), purge=str(data["purge"]))
        items = tuple(
            ShardItem(str(u), str(d), tuple(str(b) for b in buckets), _state_from(state))
            for u, d, buckets, state in data["devices"]
        )
        for item in items:
            bucket_start(item.due_bucket)
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedShardError(f"not a renewal shard: {type(exc).__name__}") from exc
    return Shard(str(data["sweep"]), int(data["shard"]), items)


def group_entries(entries: Iterable[ScheduleEntry]) -> list[ShardItem]:
    """One item per device (a device due in several buckets is woken once), in entry order.

    The item carries the state of its latest entry: an older one was superseded by it.
    """
    latest: dict[tuple[str, str], ScheduleEntry] = {}
    buckets: dict[tuple[str, str], set[str]] = {}
    for e in entries:
        key = (e.user_id, e.device_id)
        buckets.setdefault(key, set()).add(e.bucket)
        if key not in latest or e.bucket >= latest[key].bucket:
            latest[key] = e
    return [
        ShardItem(u, d, tuple(sorted(buckets[(u, d)])), e.state) for (u, d), e in latest.items()
    ]


def split_shards(sweep_id: str, items: Sequence[ShardItem], size: int) -> list[Shard]:
    """Shards of at most ``size`` devices, halved further while a message would be too big."""
    chunks = [list(items[i : i + size]) for i in range(0, len(items), size)]
    shards: list[Shard] = []
    while chunks:
        chunk = chunks.pop(0)
        shard = Shard(sweep_id, len(shards), tuple(chunk))
        if len(chunk) > 1 and len(shard.to_json().encode()) > MAX_MESSAGE_BYTES:
            half = len(chunk) // 2
            chunks[:0] = [chunk[:half], chunk[half:]]
            continue
        shards.append(shard)
    return shards


def shard_from_message(body: bytes | str) -> Shard | None:
    """The shard in a queue message, or None (logged) when it is not one: acknowledge it."""
    try:
        return parse_shard(body)
    except MalformedShardError as exc:
        log.error("renewal queue message dropped: %s", exc)
        return None
