"""Delivery claims: key design, claim verdicts, entity mapping and purge days (no storage)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.storage.deliveries import (
    MAX_PART_UNITS,
    ClaimVerdict,
    DeliveryKey,
    DeliveryKind,
    DeliveryRecord,
    DeliveryState,
    DeviceTarget,
    Outcome,
    claim_prefix,
    days_to_purge,
    from_entity,
    index_partition,
    index_row,
    message_prefix,
    new_claim,
    partition_key,
    prefix_range,
    row_key,
    to_entity,
    tombstone_row,
    verdict,
)
from shared.storage.tables import key_fits

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
USER = "8:acs:109f0644-b956-4cd9-87b1-71024f6e2f44_00000008-578d-7d05-83fe-084822000f6d"
THREAD = "19:6e5d6ca1d75044a49a36a7965ec4a906@thread.v2"
KEY = DeliveryKey(USER, THREAD, "1613694358927", DeliveryKind.RECEIVED, 1613694358927)
DEVICE = DeviceTarget("ab" * 32, "a1b2c3…d4e5", "com.example.chat", "sandbox")
FORBIDDEN = set("/\\#?") | {chr(c) for c in range(0x20)} | {chr(c) for c in range(0x7F, 0xA0)}

texts = st.text(min_size=1, max_size=40)


def record(state: DeliveryState, lease_until: datetime = NOW + LEASE) -> DeliveryRecord:
    return DeliveryRecord(KEY, DEVICE, state, claimed_at=NOW, lease_until=lease_until)


def test_unclaimed_device_may_be_claimed() -> None:
    assert verdict(None, NOW) is ClaimVerdict.CLAIM


def test_delivered_device_is_never_claimed_again() -> None:
    assert verdict(record(DeliveryState.DELIVERED), NOW + timedelta(days=1)) is ClaimVerdict.DONE


def test_permanently_failed_device_is_never_claimed_again() -> None:
    assert verdict(record(DeliveryState.FAILED), NOW + timedelta(days=1)) is ClaimVerdict.DONE


def test_skipped_device_is_never_claimed_again() -> None:
    assert verdict(record(DeliveryState.SKIPPED), NOW) is ClaimVerdict.DONE


def test_released_claim_is_claimed_again_at_once() -> None:
    assert verdict(record(DeliveryState.RELEASED), NOW) is ClaimVerdict.RECLAIM


def test_pending_claim_with_a_live_lease_is_in_flight() -> None:
    assert verdict(record(DeliveryState.PENDING), NOW + LEASE / 2) is ClaimVerdict.IN_FLIGHT


def test_pending_claim_whose_lease_expired_is_claimed_again() -> None:
    assert verdict(record(DeliveryState.PENDING), NOW + LEASE) is ClaimVerdict.RECLAIM


def test_reclaim_counts_the_claims_and_keeps_the_etag() -> None:
    prior = DeliveryRecord(KEY, DEVICE, DeliveryState.RELEASED, NOW, NOW, claims=2, etag='W/"x"')
    again = new_claim(KEY, DEVICE, now=NOW, lease=LEASE, event_id="e2", previous=prior)
    assert (again.state, again.claims, again.etag, again.lease_until) == (
        DeliveryState.PENDING,
        3,
        'W/"x"',
        NOW + LEASE,
    )


@given(user=texts, thread=texts, message=texts, device=texts)
def test_keys_hold_only_characters_table_storage_allows(
    user: str, thread: str, message: str, device: str
) -> None:
    key = DeliveryKey(user, thread, message, DeliveryKind.EDITED, 2**40)
    for k in (partition_key(user, thread), row_key(key, device), index_row(key)):
        assert not FORBIDDEN & set(k)


@given(a=st.tuples(texts, texts), b=st.tuples(texts, texts))
def test_partitions_of_different_user_thread_pairs_differ(
    a: tuple[str, str], b: tuple[str, str]
) -> None:
    if a != b:
        assert partition_key(*a) != partition_key(*b)


@given(message=texts, other=texts, device=texts)
def test_message_range_holds_exactly_that_messages_rows(
    message: str, other: str, device: str
) -> None:
    lo, hi = prefix_range(message_prefix(message))
    mine = row_key(DeliveryKey(USER, THREAD, message, DeliveryKind.DELETED, 7), device)
    theirs = row_key(DeliveryKey(USER, THREAD, other, DeliveryKind.RECEIVED, 7), device)
    assert lo <= mine < hi
    assert (lo <= theirs < hi) == (message == other)


def test_claim_range_separates_versions_of_one_message() -> None:
    lo, hi = prefix_range(claim_prefix(KEY))
    later = DeliveryKey(USER, THREAD, KEY.message_id, DeliveryKind.RECEIVED, KEY.version + 1)
    assert lo <= row_key(KEY, "d") < hi
    assert not lo <= row_key(later, "d") < hi


def test_mute_row_lies_outside_every_message_range() -> None:
    lo, hi = prefix_range(message_prefix("!thread"))
    assert not lo <= "!thread" < hi


@given(user=texts, thread=texts, message=texts)
def test_index_row_names_the_partition(user: str, thread: str, message: str) -> None:
    key = DeliveryKey(user, thread, message, DeliveryKind.RECEIVED, 1)
    assert index_row(key) == partition_key(user, thread)


def test_index_partition_is_the_utc_day() -> None:
    assert index_partition(date(2026, 3, 1)) == "i|20260301"


def test_record_survives_the_entity_round_trip() -> None:
    done = record(DeliveryState.PENDING).with_outcome(
        Outcome(DeliveryState.FAILED, 410, "Unregistered", "0a-1", 1, "removed"), NOW
    )
    assert from_entity(to_entity(done)) == done


def test_int64_version_is_stored_as_text() -> None:
    assert to_entity(record(DeliveryState.PENDING))["version"] == "1613694358927"


def test_first_purge_walks_the_lookback_up_to_the_retention_day() -> None:
    days = days_to_purge(None, NOW, timedelta(days=7))
    assert (days[0], days[-1], len(days)) == (date(2025, 12, 23), date(2026, 2, 21), 61)


def test_purge_resumes_after_its_cursor() -> None:
    assert days_to_purge(date(2026, 2, 18), NOW, timedelta(days=7)) == [
        date(2026, 2, 19),
        date(2026, 2, 20),
        date(2026, 2, 21),
    ]


def test_purge_has_nothing_to_do_when_the_cursor_is_current() -> None:
    assert days_to_purge(date(2026, 2, 21), NOW, timedelta(days=7)) == []


# --- ids of any length --------------------------------------------------------------------------

ANY_ID = st.text(min_size=1, max_size=40) | st.builds(
    lambda unit, n: unit * n, st.text(min_size=1, max_size=3), st.integers(100, 1500)
)


@given(user=ANY_ID, thread=ANY_ID, message=ANY_ID, version=st.integers(0, 2**63 - 1))
def test_every_key_fits_table_storage_whatever_the_ids(
    user: str, thread: str, message: str, version: int
) -> None:
    key = DeliveryKey(user, thread, message, DeliveryKind.EDITED, version)
    keys = [partition_key(user, thread), row_key(key, "f" * 64), tombstone_row(message)]
    assert all(key_fits(k) and not set(k) & FORBIDDEN for k in keys)


def test_ids_within_the_part_limit_keep_their_keys() -> None:
    """Keys written before long ids were hashed stay where they were."""
    assert partition_key(USER, THREAD) == f"m|{USER}|{THREAD}"
    assert message_prefix("1613694358927") == "1613694358927|"


def test_a_long_id_is_hashed_and_cannot_collide_with_a_short_one() -> None:
    long_id = "m" * (MAX_PART_UNITS + 1)
    hashed = message_prefix(long_id)
    assert hashed.startswith("%h") and len(hashed) == 2 + 64 + 1
    assert message_prefix("%h" + hashed[2:-1]) != hashed  # a real id is escaped: "%25h..."
