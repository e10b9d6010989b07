"""The tokenproofs table: proof-of-possession challenges and proven moves (Table adapter).

Rows (rules in ``shared.usecases.token_proof``)::

    PK deviceId                 RK "challenge"     claimant (SHA-256 of the rawId), codeHash,
                                                   expiresAt, wrong, sent (proof pushes, ISO list)
    PK SHA-256 of the claimant  RK "moved-" + SHA-256(previous owner NUL topic)   at

No code and no rawId is stored in clear. At most one challenge row per device token that was
ever contested, and one moved row per (claimant, previous owner, app); both are small and are
overwritten in place, never accumulated. Every change of a challenge is conditional
(``create_entity`` or ``If-Match``): a conflict comes back as None/False, never as an exception.
Raises ``shared.storage.tables`` errors (StorageUnavailableError, ...) on outages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from shared.storage.tables import (
    EntityChangedError,
    EntityExistsError,
    EntityNotFoundError,
    TableClient,
    UpdateMode,
    int_property,
    read_entity,
    read_int,
    read_time,
    read_times,
    storage_errors,
    times_text,
    write_if_unchanged,
)
from shared.usecases.token_proof import Challenge, user_key

PROOFS_TABLE: Final = "tokenproofs"
CHALLENGE_ROW: Final = "challenge"


def _moved_row(previous: str, topic: str) -> str:
    return "moved-" + hashlib.sha256(f"{previous}\0{topic}".encode()).hexdigest()


def _time_or_none(value: object) -> datetime | None:
    return read_time(value) if isinstance(value, datetime) else None


class TableProofStore:
    """:class:`shared.usecases.token_proof.ProofStore` on Table Storage."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    async def read(self, device_id: str) -> Challenge | None:
        """The token's challenge row, or None (one point read)."""
        entity = await read_entity(self._table, device_id, CHALLENGE_ROW, what="read token proof")
        return None if entity is None else _challenge(device_id, entity)

    async def write(self, challenge: Challenge) -> Challenge | None:
        """Create the row (no ETag) or replace it under its ETag; None on a conflict."""
        entity: dict[str, Any] = {
            "PartitionKey": challenge.device_id,
            "RowKey": CHALLENGE_ROW,
            "claimant": challenge.claimant,
            "codeHash": challenge.code_hash,
            "wrong": int_property(challenge.wrong),
            "sent": times_text(challenge.sent),
        }
        if challenge.expires_at is not None:
            entity["expiresAt"] = challenge.expires_at
        try:
            meta = await write_if_unchanged(
                self._table, entity, challenge.etag, what="write token proof"
            )
        except (EntityExistsError, EntityChangedError, EntityNotFoundError):
            return None
        return Challenge(
            challenge.device_id,
            challenge.claimant,
            challenge.code_hash,
            challenge.expires_at,
            challenge.wrong,
            challenge.sent,
            str(meta["etag"]),
        )

    async def note_move(self, claimant: str, previous: str, topic: str, at: datetime) -> None:
        """Record a proven move of one of ``previous``'s tokens for ``topic`` to ``claimant``."""
        entity = {
            "PartitionKey": user_key(claimant),
            "RowKey": _moved_row(previous, topic),
            "at": at,
        }
        with storage_errors("record proven move"):
            await self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    async def moved_at(self, claimant: str, previous: str, topic: str) -> datetime | None:
        """When ``claimant`` last proved holding a phone of ``previous`` for ``topic``."""
        entity = await read_entity(
            self._table, user_key(claimant), _moved_row(previous, topic), what="read proven move"
        )
        return None if entity is None else _time_or_none(entity.get("at"))


def _challenge(device_id: str, entity: Mapping[str, Any]) -> Challenge:
    metadata = getattr(entity, "metadata", {})
    return Challenge(
        device_id=device_id,
        claimant=str(entity.get("claimant") or ""),
        code_hash=str(entity.get("codeHash") or ""),
        expires_at=_time_or_none(entity.get("expiresAt")),
        wrong=read_int(entity.get("wrong")),
        sent=read_times(entity.get("sent")),
        etag=metadata.get("etag"),
    )
