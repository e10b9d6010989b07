"""The token-proof store (``shared.storage.token_proofs``) in memory."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from datetime import datetime

from shared.usecases.token_proof import Challenge


class FakeProofStore:
    """The tokenproofs table in memory, with its conditional writes (``storage.token_proofs``)."""

    def __init__(self) -> None:
        self.challenges: dict[str, Challenge] = {}
        self.moves: dict[tuple[str, str, str], datetime] = {}
        self._etags = itertools.count(1)

    async def read(self, device_id: str) -> Challenge | None:
        await asyncio.sleep(0)
        return self.challenges.get(device_id)

    async def write(self, challenge: Challenge) -> Challenge | None:
        await asyncio.sleep(0)
        stored = self.challenges.get(challenge.device_id)
        if (stored.etag if stored else None) != challenge.etag:
            return None
        written = replace(challenge, etag=f'W/"p{next(self._etags)}"')
        self.challenges[challenge.device_id] = written
        return written

    async def note_move(self, claimant: str, previous: str, topic: str, at: datetime) -> None:
        await asyncio.sleep(0)
        self.moves[(claimant, previous, topic)] = at

    async def moved_at(self, claimant: str, previous: str, topic: str) -> datetime | None:
        await asyncio.sleep(0)
        return self.moves.get((claimant, previous, topic))
