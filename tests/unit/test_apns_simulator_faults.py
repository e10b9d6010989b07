"""Fault definitions from the control API / faults file, and which requests they hit."""

from __future__ import annotations

import pytest

from devtools.apns_simulator import Fault
from devtools.apns_simulator.faults import FaultBook

pytestmark = pytest.mark.unit


def test_camel_case_fields_map_to_the_fault() -> None:
    fault = Fault.from_json(
        {"noAnswer": True, "closeConnection": True, "refuseStream": True,
         "maxConcurrentStreams": 3, "goaway": "Shutdown", "nth": 2, "delay": 0.5}
    )  # fmt: skip
    assert fault == Fault(
        no_answer=True,
        close_connection=True,
        refuse_stream=True,
        max_concurrent_streams=3,
        goaway="Shutdown",
        nth=2,
        delay=0.5,
    )


def test_unknown_field_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault fields: noanswer"):
        Fault.from_json({"noanswer": True})


@pytest.mark.parametrize("field", ["nth", "every", "times", "max_concurrent_streams"])
def test_counts_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Fault(**{field: 0})


def test_reason_gives_the_status_and_status_gives_a_reason() -> None:
    assert (
        Fault(reason="ExpiredProviderToken").answer_status,
        Fault(status=503).answer_reason,
    ) == (
        403,
        "ServiceUnavailable",
    )


def test_delay_alone_does_not_replace_the_answer() -> None:
    assert not Fault(delay=1.0, max_concurrent_streams=2).replaces_answer


def test_counting_starts_when_the_fault_is_added() -> None:
    book = FaultBook()
    book.add(Fault(nth=2, reason="Shutdown"), processed_so_far=10)
    hits = [book.match(count, None) is not None for count in range(11, 15)]
    assert hits == [False, True, False, False]


def test_first_matching_fault_wins_and_spent_faults_step_aside() -> None:
    book = FaultBook()
    first = book.add(Fault(times=1, reason="Shutdown"), processed_so_far=0)
    second = book.add(Fault(reason="TooManyRequests"), processed_so_far=0)
    matched = [book.match(count, "ab" * 32) for count in (1, 2)]
    assert [m[0] if m else None for m in matched] == [first, second]
