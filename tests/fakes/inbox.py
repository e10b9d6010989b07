"""The inbox store (``shared.storage.inbox``) in memory."""

from __future__ import annotations

import asyncio
import itertools

from shared.storage.inbox import EMPTY, Inbox, InboxSnapshot, decode_inbox, encode_inbox


class FakeInbox:
    """The inbox table in a dict: rows stored as the table stores them (the JSON), ETag-guarded.

    Every read and write yields to the event loop first, so concurrent changes interleave as
    they do against storage.
    """

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str]] = {}
        self.reads = 0
        self.writes = 0
        self._etags = itertools.count(1)

    async def read(self, user_id: str) -> InboxSnapshot:
        await asyncio.sleep(0)
        self.reads += 1
        row = self.rows.get(user_id)
        return EMPTY if row is None else InboxSnapshot(decode_inbox(row[0]), row[1])

    async def write(self, user_id: str, prior: InboxSnapshot, inbox: Inbox) -> InboxSnapshot | None:
        await asyncio.sleep(0)
        current = self.rows.get(user_id)
        if (current is None) != (prior.etag is None):
            return None
        if current is not None and current[1] != prior.etag:
            return None
        self.writes += 1
        etag = str(next(self._etags))
        self.rows[user_id] = (encode_inbox(inbox), etag)
        return InboxSnapshot(inbox, etag)

    def of(self, user_id: str) -> Inbox:
        row = self.rows.get(user_id)
        return Inbox() if row is None else decode_inbox(row[0])
