"""The renewal sweeps' log contract, held by the Azurite adapter (with each Table Storage client)
and by the fake the unit tests use: the checkpoint moves only under its ETag, a lost claim cannot
finish, shard reports and renewal credits are idempotent, rates read them back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from devtools.azurite import Azurite
from shared.storage.renewal_sweeps import (
    SWEEPS_TABLE,
    Checkpoint,
    ShardReport,
    SweepRecord,
    TableSweepLog,
)
from shared.storage.tables import Tables
from tests.fakes.renewal_sweeps import FakeSweepLog

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
LEASE = NOW + timedelta(minutes=5)
A, B, C = "202603011200", "202603011205", "202603011210"

Log = TableSweepLog | FakeSweepLog


@pytest.fixture(params=["lean", "sdk", "fake"])
async def sweeps(
    request: pytest.FixtureRequest, azurite: Azurite, table_prefix: str
) -> AsyncIterator[Log]:
    if request.param == "fake":
        yield FakeSweepLog()
        return
    tables = Tables.connect(azurite.connection_string, table_prefix, str(request.param))
    try:
        yield TableSweepLog(await tables.table(SWEEPS_TABLE))
    finally:
        await tables.aclose()


def record(sweep_id: str, from_bucket: str, at: datetime = NOW) -> SweepRecord:
    return SweepRecord(sweep_id, at, from_bucket, sweep_id, devices=7, shards=2)


async def sweep(sweeps: Log, through: str, from_bucket: str) -> None:
    """One whole sweep: claim from the checkpoint read now, then finish."""
    claimed = await sweeps.claim(await sweeps.checkpoint(), through, LEASE)
    assert claimed is not None
    assert await sweeps.finish(claimed, record(through, from_bucket))


async def test_the_checkpoint_is_empty_before_the_first_sweep(sweeps: Log) -> None:
    first = await sweeps.checkpoint()
    assert (first, first.etag) == (Checkpoint(), None)


async def test_a_claim_reads_back_with_its_lease(sweeps: Log) -> None:
    claimed = await sweeps.claim(Checkpoint(), A, LEASE)
    read = await sweeps.checkpoint()
    assert claimed is not None and read == Checkpoint(None, A, LEASE) == claimed
    assert read.etag == claimed.etag and read.in_progress(NOW)


async def test_of_two_first_claims_one_wins(sweeps: Log) -> None:
    assert await sweeps.claim(Checkpoint(), A, LEASE) is not None
    assert await sweeps.claim(Checkpoint(), B, LEASE) is None


async def test_a_claim_under_a_stale_checkpoint_loses(sweeps: Log) -> None:
    seen = await sweeps.claim(Checkpoint(), A, LEASE)
    assert seen is not None
    assert await sweeps.claim(seen, B, LEASE) is not None
    assert await sweeps.claim(seen, C, LEASE) is None
    assert (await sweeps.checkpoint()).claimed == B


async def test_finishing_moves_the_checkpoint_and_ends_the_claim(sweeps: Log) -> None:
    await sweep(sweeps, A, "202603011150")
    done = await sweeps.checkpoint()
    assert done == Checkpoint(A, A, NOW)
    assert not done.in_progress(NOW)


async def test_a_claim_lost_to_a_takeover_cannot_finish(sweeps: Log) -> None:
    mine = await sweeps.claim(Checkpoint(), A, LEASE)
    assert mine is not None
    theirs = await sweeps.claim(mine, A, LEASE + timedelta(minutes=5))  # after my lease ran out
    assert theirs is not None
    assert await sweeps.finish(mine, record(A, "202603011150")) is False
    assert await sweeps.checkpoint() == theirs
    assert await sweeps.rates("2026") == []


async def test_a_checkpoint_read_before_two_sweeps_is_stale_after_them(sweeps: Log) -> None:
    await sweep(sweeps, A, "202603011150")
    old = await sweeps.checkpoint()
    await sweep(sweeps, B, A)
    assert await sweeps.claim(old, C, LEASE) is None


async def test_rates_sum_shards_and_count_each_renewed_device_once(sweeps: Log) -> None:
    await sweep(sweeps, A, "202603011150")
    await sweep(sweeps, B, A)
    first = ShardReport(A, 0, 3, {"woken": 3, "later": 0})
    await sweeps.record_shard(first, {})
    await sweeps.record_shard(first, {})  # redelivered
    await sweeps.record_shard(ShardReport(A, 1, 4, {"woken": 2, "stale": 2}), {})
    await sweeps.record_shard(ShardReport(B, 0, 1, {"woken": 1}), {A: ["d1", "d2", "d1"]})
    await sweeps.record_shard(ShardReport(B, 0, 1, {"woken": 1}), {A: ["d2"], B: ["d3"]})
    rates = await sweeps.rates(A)
    assert [(r.record, r.shards_reported, r.woken, r.renewed_after) for r in rates] == [
        (record(A, "202603011150"), 2, 5, 2),
        (record(B, A), 1, 1, 1),
    ]
    assert (rates[0].counts["stale"], rates[0].counts["failed"], rates[0].rate) == (2, 0, 0.4)


async def test_rates_start_at_the_given_bucket(sweeps: Log) -> None:
    await sweep(sweeps, A, "202603011150")
    await sweep(sweeps, B, A)
    assert [r.record.sweep_id for r in await sweeps.rates(B)] == [B]
    assert await sweeps.rates(C) == []
