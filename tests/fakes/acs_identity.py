"""The ACS Identity API in memory: the fake of the access-token use case's `AcsIdentities` port
(the real adapter is :class:`shared.acs.identity.AcsIdentityClient`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.acs.identity import AcsToken, AcsUnavailableError


@dataclass
class FakeAcs:
    """Counts identities and tokens, and can fail or stall a creation."""

    endpoint: str = "https://fake.communication.azure.com"
    live: set[str] = field(default_factory=set)
    created: int = 0
    deleted: list[str] = field(default_factory=list)
    issued: list[tuple[str, tuple[str, ...], int]] = field(default_factory=list)
    fail_create: bool = False
    hold: asyncio.Event | None = None  # creation waits for it (a stalled ACS call)

    async def create_identity(self) -> str:
        await asyncio.sleep(0)
        if self.fail_create:
            raise AcsUnavailableError("ACS POST /identities did not succeed: 503")
        self.created += 1
        raw_id = f"8:acs:fake_{self.created:08d}"
        self.live.add(raw_id)
        hold, self.hold = self.hold, None
        if hold is not None:
            await hold.wait()
        await asyncio.sleep(0)
        return raw_id

    async def issue_token(self, user_id: str, scopes: Sequence[str], minutes: int) -> AcsToken:
        await asyncio.sleep(0)
        self.issued.append((user_id, tuple(scopes), minutes))
        return AcsToken(f"token-for-{user_id}", "2026-01-06T12:00:00Z")

    async def delete_identity(self, user_id: str) -> None:
        await asyncio.sleep(0)
        self.live.discard(user_id)
        self.deleted.append(user_id)
