"""Key encoding, batching and the property readers of shared.storage.tables (no storage)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from azure.data.tables import EdmType, EntityProperty
from hypothesis import example, given
from hypothesis import strategies as st

from shared.storage import tables
from shared.storage.registry_purge import DayEntry, index_row
from shared.storage.renewal_schedule import ScheduleEntry, row_key

pytestmark = pytest.mark.unit

# What Table Storage forbids in PartitionKey/RowKey.
FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
# (user, device) pairs whose ids hold the "~" that joins them in the renewals and devicedays rows.
SEPARATED = [("8:acs:a", "b~c"), ("8:acs:a~b", "c"), ("~", "~"), ("a|b", "c|d")]
ACS_USER = "8:acs:1b5cc06b-f352-4571-b1e6-d9b259b7c776_00000019-3f1e-4c1b-bf8c-0e9d6ee1b9f6"
HEX_DEVICE = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@given(st.text())
def test_any_text_round_trips_through_the_key_encoding(text: str) -> None:
    assert tables.decode_key(tables.encode_key(text)) == text


@given(st.text())
def test_encoded_keys_hold_no_forbidden_character(text: str) -> None:
    assert FORBIDDEN.search(tables.encode_key(text)) is None


@given(st.text(), st.text())
def test_distinct_texts_get_distinct_keys(a: str, b: str) -> None:
    if a != b:
        assert tables.encode_key(a) != tables.encode_key(b)


def test_acs_raw_ids_are_kept_readable() -> None:
    raw = "8:acs:1b5cc06b-f352-4571-b1e6-d9b259b7c776_00000019-3f1e-4c1b-bf8c-0e9d6ee1b9f6"
    assert tables.encode_key(raw) == raw


def test_escapes_are_percent_style() -> None:
    assert tables.encode_key("a/b\\c#d?e%f\ng") == "a%2Fb%5Cc%23d%3Fe%25f%0Ag"


def test_the_composite_key_separators_are_escaped() -> None:
    assert tables.encode_key("a~b|c") == "a%7Eb%7Cc"


@given(st.text(alphabet="0123456789abcdef"))
def test_hex_ids_encode_as_themselves(hex_id: str) -> None:
    # Device ids (SHA-256 hex) and caller keys: every key stored for them stays byte-identical.
    assert tables.encode_key(hex_id) == hex_id


@given(st.text(), st.text())
def test_any_two_texts_round_trip_through_a_pair_key(first: str, second: str) -> None:
    assert tables.split_pair_key(tables.pair_key(first, second)) == (first, second)


@given(st.text(), st.text(), st.text(), st.text())
@example("a", "b~c", "a~b", "c")
def test_distinct_pairs_get_distinct_pair_keys(a: str, b: str, c: str, d: str) -> None:
    if (a, b) != (c, d):
        assert tables.pair_key(a, b) != tables.pair_key(c, d)


def test_a_separator_inside_an_id_cannot_make_two_pairs_collide() -> None:
    assert tables.pair_key("8:acs:a", "b~c") != tables.pair_key("8:acs:a~b", "c")
    assert tables.split_pair_key(tables.pair_key("8:acs:a", "b~c")) == ("8:acs:a", "b~c")


def test_the_pair_key_of_an_acs_user_and_a_hex_device_is_unchanged() -> None:
    assert tables.pair_key(ACS_USER, HEX_DEVICE) == ACS_USER + "~" + HEX_DEVICE


@pytest.mark.parametrize("bad", ["no separator", "a~b~c", "a/b~c", "a~%zz"])
def test_splitting_a_key_pair_key_cannot_produce_raises(bad: str) -> None:
    with pytest.raises(ValueError, match="not a"):
        tables.split_pair_key(bad)


@pytest.mark.parametrize(("user", "device"), SEPARATED)
def test_a_device_day_row_reads_back_as_its_user_and_device(user: str, device: str) -> None:
    entry = DayEntry("20260301", user, device)
    assert DayEntry.from_keys(entry.day, index_row(user, device)) == entry


@pytest.mark.parametrize(("user", "device"), SEPARATED)
def test_a_schedule_row_reads_back_as_its_user_and_device(user: str, device: str) -> None:
    entry = ScheduleEntry("202603011200", user, device)
    assert ScheduleEntry.from_keys(entry.partition, entry.row) == entry


def test_rows_of_acs_users_and_hex_devices_keep_the_keys_stored_so_far() -> None:
    assert index_row(ACS_USER, HEX_DEVICE) == row_key(ACS_USER, HEX_DEVICE)
    assert row_key(ACS_USER, HEX_DEVICE) == ACS_USER + "~" + HEX_DEVICE


@pytest.mark.parametrize("bad", ["a/b", "100%", "%zz", "%2f", "%41", "tab\there", "a~b", "a|b"])
def test_decoding_text_that_encode_cannot_produce_raises(bad: str) -> None:
    with pytest.raises(ValueError, match="not an encoded key"):
        tables.decode_key(bad)


def _upsert(pk: str, rk: str) -> tables.Operation:
    return ("upsert", {"PartitionKey": pk, "RowKey": rk})


def test_batches_hold_at_most_100_operations_of_one_partition() -> None:
    ops = [_upsert("a", str(i)) for i in range(250)] + [_upsert("b", str(i)) for i in range(3)]
    chunks = tables.batches(ops)
    assert [len(c) for c in chunks] == [100, 100, 50, 3]
    assert all(len({op[1]["PartitionKey"] for op in c}) == 1 for c in chunks)


def test_batches_keep_every_operation_in_order() -> None:
    ops = [_upsert("ab"[i % 2], str(i)) for i in range(301)]
    flat = [op for chunk in tables.batches(ops) for op in chunk]
    assert sorted(flat, key=lambda op: int(op[1]["RowKey"])) == ops
    assert [op for op in flat if op[1]["PartitionKey"] == "a"] == ops[::2]


@pytest.mark.parametrize("limit", [0, 101])
def test_a_batch_limit_beyond_the_service_limit_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="1 to 100"):
        tables.batches([_upsert("a", "1")], limit)


def test_large_integers_are_typed_int64() -> None:
    prop = tables.int_property(2**31)
    assert isinstance(prop, tuple)
    assert prop == (2**31, "Edm.Int64")
    assert tables.int_property(2**31 - 1) == 2**31 - 1


def test_the_int64_value_has_the_shape_the_sdk_serializes() -> None:
    # The SDK client takes any (value, edm_type) pair whose type EdmType accepts.
    prop = tables.int64(2**40)
    assert EdmType(prop[1]) is EdmType.INT64
    assert EntityProperty(*prop) == (2**40, EdmType.INT64)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (7, 7),
        (EntityProperty(2**40, EdmType.INT64), 2**40),
        (tables.int64(2**40), 2**40),
        (None, 0),
        ("12", 12),
    ],
)
def test_integers_read_back_whatever_their_wire_type(stored: object, expected: int) -> None:
    assert tables.read_int(stored) == expected


class _SdkDatetime(datetime):
    """The SDK reads times back as a datetime subclass (TablesEntityDatetime)."""


def test_a_time_property_reads_back_as_a_plain_utc_datetime() -> None:
    stored = _SdkDatetime(2026, 3, 1, 13, 0, 0, 5, tzinfo=timezone(timedelta(hours=1)))
    got = tables.read_time(stored)
    assert (type(got), got) == (datetime, datetime(2026, 3, 1, 12, 0, 0, 5, tzinfo=UTC))


def test_a_time_property_that_is_not_a_time_is_refused() -> None:
    with pytest.raises(TypeError, match="datetime"):
        tables.read_time("2026-03-01T12:00:00+00:00")


@given(st.lists(st.datetimes(timezones=st.just(UTC)), max_size=5))
def test_times_round_trip_through_one_text_property(times: list[datetime]) -> None:
    assert tables.read_times(tables.times_text(times)) == tuple(times)


@pytest.mark.parametrize("absent", [None, ""])
def test_absent_or_empty_text_properties_read_as_nothing(absent: object) -> None:
    assert (tables.read_times(absent), tables.read_text({"p": absent}, "p")) == ((), None)
