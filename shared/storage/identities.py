"""The identities table: which ACS identity belongs to which app user (Table adapter).

One row per caller: PartitionKey = SHA-256 hex of issuer, NUL, subject (``Caller.key``), RowKey
``acs``. A row is *reserved* (``state`` = pending, no ``acsUserId``) before the ACS identity is
created and *ready* once it is filled in; the protocol that makes this yield exactly one identity
per caller is described in ``shared.usecases.access_tokens``. Every change is conditional:
``create_entity`` for a reservation (409 means someone else holds it) and ``If-Match`` ETags for
the rest (412 means the row changed); conflicts come back as None, never as exceptions.

The row also carries the caller's token-issuing rate bucket (``rateTokens``, ``rateAt``).
Raises ``shared.storage.tables`` errors (StorageUnavailableError, StorageRejectedError) on outages.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from shared.storage.tables import (
    EntityChangedError,
    EntityExistsError,
    EntityNotFoundError,
    MatchConditions,
    TableClient,
    UpdateMode,
    encode_key,
    read_entity,
    storage_errors,
)
from shared.usecases.access_tokens import IdentityRecord, with_rate

log = logging.getLogger(__name__)

TABLE: Final = "identities"
ROW: Final = "acs"
PENDING: Final = "pending"
READY: Final = "ready"


class TableIdentityStore:
    """:class:`shared.usecases.access_tokens.IdentityStore` on Table Storage."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    async def get(self, caller_key: str) -> IdentityRecord | None:
        """The caller's row, or None (one point read)."""
        entity = await read_entity(self._table, encode_key(caller_key), ROW, what="read identity")
        return None if entity is None else _record(caller_key, entity)

    async def reserve(self, caller_key: str, now: datetime) -> IdentityRecord | None:
        """Create the caller's row as a reservation; None if a row exists (409)."""
        entity = {
            "PartitionKey": encode_key(caller_key),
            "RowKey": ROW,
            "state": PENDING,
            "reservedAt": now,
        }
        try:
            with storage_errors("reserve identity"):
                meta = await self._table.create_entity(entity)
        except EntityExistsError:
            return None
        return IdentityRecord(caller_key, None, now, _etag(meta))

    async def take_over(self, record: IdentityRecord, now: datetime) -> IdentityRecord | None:
        """Renew an expired reservation as ours; None if it changed or vanished."""
        meta = await self._merge(record, {"state": PENDING, "reservedAt": now}, "take over")
        if meta is None:
            return None
        return IdentityRecord(record.caller_key, None, now, _etag(meta))

    async def fill_in(self, record: IdentityRecord, acs_user_id: str) -> IdentityRecord | None:
        """Record the ACS identity on our reservation; None if the row changed meanwhile."""
        meta = await self._merge(record, {"state": READY, "acsUserId": acs_user_id}, "fill in")
        if meta is None:
            return None
        return IdentityRecord(record.caller_key, acs_user_id, record.reserved_at, _etag(meta))

    async def release(self, record: IdentityRecord) -> None:
        """Delete our reservation, unless the row changed meanwhile."""
        try:
            with storage_errors("release identity"):
                await self._table.delete_entity(
                    encode_key(record.caller_key),
                    ROW,
                    etag=record.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (EntityChangedError, EntityNotFoundError):
            log.info("identity reservation of %s… changed before release", record.caller_key[:12])

    async def save_rate(
        self, record: IdentityRecord, tokens: float, at: datetime
    ) -> IdentityRecord | None:
        """Store the rate bucket level; None if the row changed meanwhile."""
        meta = await self._merge(record, {"rateTokens": float(tokens), "rateAt": at}, "rate")
        if meta is None:
            return None
        return with_rate(record, tokens, at, _etag(meta))

    async def _merge(
        self, record: IdentityRecord, fields: dict[str, Any], what: str
    ) -> Mapping[str, Any] | None:
        entity = {"PartitionKey": encode_key(record.caller_key), "RowKey": ROW, **fields}
        try:
            with storage_errors(f"{what} identity"):
                meta = await self._table.update_entity(
                    entity,
                    mode=UpdateMode.MERGE,
                    etag=record.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (EntityChangedError, EntityNotFoundError):
            return None
        return meta


def _etag(meta: Mapping[str, Any]) -> str:
    return str(meta["etag"])


def _record(caller_key: str, entity: Any) -> IdentityRecord:
    acs_user_id = entity.get("acsUserId") if entity.get("state") == READY else None
    tokens = entity.get("rateTokens")
    return IdentityRecord(
        caller_key=caller_key,
        acs_user_id=acs_user_id if isinstance(acs_user_id, str) and acs_user_id else None,
        reserved_at=entity["reservedAt"],
        etag=str(entity.metadata["etag"]),
        rate_tokens=float(tokens) if isinstance(tokens, int | float) else None,
        rate_at=entity.get("rateAt"),
    )
