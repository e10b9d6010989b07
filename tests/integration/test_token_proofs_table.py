"""The token-proof store's contract, held by the Azurite adapter (with each Table Storage client)
and by the fake the unit tests use: conditional writes (one challenge wins, a stale ETag loses),
single use, proven moves; and nothing stored in clear (the adapter)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from devtools.azurite import Azurite
from shared.storage.tables import Tables
from shared.storage.token_proofs import PROOFS_TABLE, TableProofStore
from shared.usecases.token_proof import Challenge, ProofStore, code_hash
from tests.fakes.token_proofs import FakeProofStore

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
DEVICE = "d" * 64
BOB = "8:acs:res_00000009-1111-2222-3333-444455556666"
CODE = "AQEBAQEBAQEBAQEBAQEBAQ"


@pytest.fixture
async def tables(azurite: Azurite, table_prefix: str, storage_client: str) -> AsyncIterator[Tables]:
    tables = Tables.connect(azurite.connection_string, table_prefix, storage_client)
    try:
        yield tables
    finally:
        await tables.aclose()


@pytest.fixture(params=["lean", "sdk", "fake"])
async def store(
    request: pytest.FixtureRequest, azurite: Azurite, table_prefix: str
) -> AsyncIterator[ProofStore]:
    if request.param == "fake":
        yield FakeProofStore()
        return
    tables = Tables.connect(azurite.connection_string, table_prefix, str(request.param))
    try:
        yield TableProofStore(await tables.table(PROOFS_TABLE))
    finally:
        await tables.aclose()


def challenge() -> Challenge:
    return Challenge(DEVICE, "c" * 64, code_hash(DEVICE, BOB, CODE), NOW, 1, (NOW,))


async def test_a_device_without_a_challenge_reads_none(store: ProofStore) -> None:
    await store.write(challenge())
    assert await store.read("e" * 64) is None


async def test_a_challenge_reads_back_whole(store: ProofStore) -> None:
    written = await store.write(challenge())
    read = await store.read(DEVICE)
    assert written is not None and read is not None
    assert read == written and replace(read, etag=None) == challenge()


async def test_only_one_of_two_new_challenges_is_written(store: ProofStore) -> None:
    assert await store.write(challenge()) is not None
    assert await store.write(replace(challenge(), claimant="e" * 64)) is None


async def test_a_write_under_a_stale_etag_is_refused(store: ProofStore) -> None:
    first = await store.write(challenge())
    assert first is not None
    assert await store.write(replace(first, wrong=2)) is not None
    assert await store.write(replace(first, wrong=3)) is None


async def test_of_two_writes_from_one_read_only_the_first_lands(store: ProofStore) -> None:
    """How a code is used once: voided under the ETag it was read with."""
    written = await store.write(challenge())
    assert written is not None
    used = replace(written, code_hash="", expires_at=NOW)
    assert (await store.write(used) is not None, await store.write(used)) == (True, None)


async def test_a_proven_move_is_found_for_its_claimant_previous_owner_and_app_only(
    store: ProofStore,
) -> None:
    await store.note_move(BOB, "8:acs:alice", "com.example.chat", NOW)
    assert await store.moved_at(BOB, "8:acs:alice", "com.example.chat") == NOW
    later = NOW + timedelta(hours=1)
    await store.note_move(BOB, "8:acs:alice", "com.example.chat", later)
    assert await store.moved_at(BOB, "8:acs:alice", "com.example.chat") == later
    assert await store.moved_at(BOB, "8:acs:carol", "com.example.chat") is None
    assert await store.moved_at(BOB, "8:acs:alice", "com.example.other") is None


async def test_no_code_and_no_user_id_is_stored_in_clear(tables: Tables) -> None:
    table = await tables.table(PROOFS_TABLE)
    store = TableProofStore(table)
    await store.write(challenge())
    await store.note_move(BOB, "8:acs:alice", "com.example.chat", NOW)
    stored = repr([dict(e) async for e in table.list_entities()])
    assert CODE not in stored and BOB not in stored and "8:acs:alice" not in stored
