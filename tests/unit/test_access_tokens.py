"""The token issuer's use cases on fakes: one identity per caller, tokens, the rate limit."""

from __future__ import annotations

import asyncio

import pytest

from shared.acs.identity import AcsUnavailableError
from shared.domain.callers import AuthSource, Caller
from shared.edges.http_api import error_response
from shared.usecases.access_tokens import (
    IdentityPendingError,
    IdentityRecord,
    KnownIdentities,
    RateLimitedError,
    TokenPolicy,
    acs_user_for,
    issue_token,
)
from tests.fakes.acs_identity import FakeAcs
from tests.fakes.clock import FakeClock, no_sleep
from tests.fakes.identities import FakeIdentityStore

pytestmark = pytest.mark.unit

ALICE = Caller("https://idp.example", "alice", AuthSource.JWT)
BOB = Caller("https://idp.example", "bob", AuthSource.JWT)
POLICY = TokenPolicy(scopes=("chat", "voip"), lifetime_minutes=60, per_minute=3)


@pytest.fixture
def store() -> FakeIdentityStore:
    return FakeIdentityStore()


@pytest.fixture
def acs() -> FakeAcs:
    return FakeAcs()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_first_call_creates_an_identity_and_later_calls_reuse_it(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    first = await acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep)
    second = await acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep)
    assert first == second
    assert acs.live == {first}
    assert store.rows[ALICE.key].acs_user_id == first


async def test_two_concurrent_first_calls_yield_one_identity(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    ids = await asyncio.gather(
        acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep),
        acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep),
    )
    assert ids[0] == ids[1]
    assert acs.created == 1
    assert acs.live == {ids[0]}


async def test_many_concurrent_first_calls_yield_one_identity(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    ids = await asyncio.gather(
        *(acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep) for _ in range(10))
    )
    assert len(set(ids)) == 1
    assert acs.created == 1


async def test_callers_get_distinct_identities(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    alice = await acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep)
    bob = await acs_user_for(BOB, store, acs, clock=clock, sleep=no_sleep)
    assert alice != bob
    assert store.rows[BOB.key].acs_user_id == bob


async def test_failed_creation_releases_the_reservation(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    acs.fail_create = True
    with pytest.raises(AcsUnavailableError):
        await acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep)
    assert store.rows == {}


async def test_call_after_a_failed_creation_succeeds_at_once(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    acs.fail_create = True
    with pytest.raises(AcsUnavailableError):
        await acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep)
    acs.fail_create = False
    user = await acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep)
    assert acs.live == {user}


async def test_fresh_reservation_of_another_call_answers_pending_without_creating(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    await store.reserve(ALICE.key, clock())  # another instance is creating right now
    with pytest.raises(IdentityPendingError) as caught:
        await acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep)
    assert acs.created == 0
    assert error_response(caught.value).status_code == 503


async def test_expired_reservation_of_a_dead_caller_is_taken_over(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    await store.reserve(ALICE.key, clock())
    clock.advance(61)
    user = await acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep)
    assert store.rows[ALICE.key].acs_user_id == user
    assert acs.created == 1


async def test_superseded_holder_deletes_its_identity_and_uses_the_winners(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    stalled = asyncio.Event()
    acs.hold = stalled  # the first holder's ACS call stalls past its lease
    first_task = asyncio.create_task(acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep))
    while acs.created == 0:
        await asyncio.sleep(0)
    clock.advance(61)
    second = await acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep)
    stalled.set()
    first = await first_task
    assert first == second
    assert acs.live == {second}
    assert len(acs.deleted) == 1


async def test_issued_token_has_the_sample_fields(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    issued = await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep)
    user = store.rows[ALICE.key].acs_user_id
    assert issued.as_json() == {
        "acsUserId": user,
        "acsEndpoint": "https://fake.communication.azure.com",
        "userToken": f"token-for-{user}",
        "expiresOn": "2026-01-06T12:00:00Z",
    }


async def test_token_uses_the_configured_scopes_and_lifetime(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep)
    assert acs.issued == [(store.rows[ALICE.key].acs_user_id, ("chat", "voip"), 60)]


async def test_token_is_always_for_the_callers_own_identity(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    bob = await acs_user_for(BOB, store, acs, clock=clock, sleep=no_sleep)
    issued = await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep)
    assert issued.acs_user_id != bob
    assert [user for user, _, _ in acs.issued] == [issued.acs_user_id]


async def test_requests_over_the_rate_are_refused_with_retry_after(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    for _ in range(3):
        await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep)
    with pytest.raises(RateLimitedError) as caught:
        await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep)
    response = error_response(caught.value)
    assert (response.status_code, response.headers["Retry-After"]) == (429, "20")
    assert len(acs.issued) == 3


async def test_rate_recovers_after_retry_after_seconds(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    for _ in range(3):
        await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep)
    clock.advance(20)
    await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep)
    assert len(acs.issued) == 4


async def test_rate_limit_is_per_caller(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    for _ in range(3):
        await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep)
    await issue_token(BOB, store, acs, POLICY, clock=clock, sleep=no_sleep)
    assert len(acs.issued) == 4


async def test_concurrent_requests_never_exceed_the_rate(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    await acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep)
    results = await asyncio.gather(
        *(issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep) for _ in range(8)),
        return_exceptions=True,
    )
    assert 1 <= len(acs.issued) <= 3
    assert all(isinstance(r, RateLimitedError) for r in results if not hasattr(r, "as_json"))


async def test_concurrent_requests_within_the_rate_all_succeed(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    policy = TokenPolicy(scopes=("chat",), lifetime_minutes=60, per_minute=10)
    await acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep)
    await asyncio.gather(
        *(issue_token(ALICE, store, acs, policy, clock=clock, sleep=no_sleep) for _ in range(6))
    )
    assert len(acs.issued) == 6


async def test_token_request_costs_two_storage_calls_once_the_identity_exists(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep)
    before = store.calls
    await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep)
    assert store.calls - before == 2


async def test_a_caller_this_process_has_seen_costs_one_storage_call(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    known = KnownIdentities()
    await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep, known=known)
    before = store.calls
    await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep, known=known)
    assert store.calls - before == 1


async def test_two_instances_remembering_a_caller_never_exceed_the_rate(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    first, second = KnownIdentities(), KnownIdentities()
    await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep, known=first)
    await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep, known=second)
    await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep, known=first)
    with pytest.raises(RateLimitedError):
        await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep, known=second)
    with pytest.raises(RateLimitedError):
        await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep, known=first)
    assert len(acs.issued) == 3


async def test_a_vanished_row_is_503_then_the_caller_starts_over(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    known = KnownIdentities()
    first = await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep, known=known)
    store.rows.clear()
    with pytest.raises(IdentityPendingError):
        await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep, known=known)
    again = await issue_token(ALICE, store, acs, POLICY, clock=clock, sleep=no_sleep, known=known)
    assert again.acs_user_id != first.acs_user_id
    assert [user for user, _, _ in acs.issued] == [first.acs_user_id, again.acs_user_id]


async def test_a_remembered_caller_maps_to_its_acs_user_without_storage(
    store: FakeIdentityStore, acs: FakeAcs, clock: FakeClock
) -> None:
    known = KnownIdentities()
    user = await acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep, known=known)
    before = store.calls
    assert await acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep, known=known) == user
    assert store.calls == before


def test_known_identities_keep_at_most_their_limit_and_only_ready_rows() -> None:
    known = KnownIdentities(limit=2)
    now = FakeClock()()
    for name in ("a", "b", "c"):
        known.remember(IdentityRecord(name, f"8:acs:{name}", now, "e"))
    known.remember(IdentityRecord("pending", None, now, "e"))
    assert [known.get(k) is not None for k in ("a", "b", "c", "pending")] == [
        False,
        True,
        True,
        False,
    ]
