"""Moving a token another user still holds needs proof of possession
(``shared.usecases.token_proof``), on fakes: the code travels only in a background push to the
token, is good once, for one token and one user, for five minutes; the pushes are rate-limited; a
free token never needs it."""

from __future__ import annotations

import asyncio
import base64
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.apns.errors import ApnsUnavailable
from shared.apns.notification import Priority, PushType
from shared.apns.response import Reason
from shared.domain.devices import device_id_for
from shared.edges.http_api import status_of
from shared.storage.devices import RegistrationOutcome
from shared.usecases.registration import (
    RegisteredDevice,
    RegistrationRules,
    register_device,
    remove_device,
)
from shared.usecases.token_proof import (
    MAX_WRONG_PROOFS,
    PROOF_LIFETIME,
    PROOF_PUSHES_PER_HOUR,
    ProofPushFailedError,
    ProofRequired,
    TokenMoves,
    TokenProofError,
    TokenProofPendingError,
    TokenProofRateLimitedError,
    VoipTokenHeldError,
    code_hash,
)
from tests.fakes.apns import FakeApns
from tests.fakes.devices import FakeDeviceStore
from tests.fakes.renewal_schedule import FakeRenewalSchedule
from tests.fakes.token_proofs import FakeProofStore

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
ALICE, BOB, MALLORY = "8:acs:res_alice", "8:acs:res_bob", "8:acs:res_mallory"
TOPIC = "com.example.chat"
PHONE = "a1" * 32  # the phone's alert token
PHONE_VOIP = "b2" * 32  # the same phone's PushKit token
RULES = RegistrationRules(frozenset({TOPIC}), timedelta(minutes=45), timedelta(minutes=10))
STALE_AFTER = timedelta(days=30)


class Bytes:
    """Deterministic "random" bytes: 01 01 ..., then 02 02 ..., one fill per call."""

    def __init__(self) -> None:
        self.calls = itertools.count(1)

    def __call__(self, n: int) -> bytes:
        return bytes([next(self.calls)]) * n


@dataclass
class World:
    """Alice's phone registered with the service; the APNs client the proof pushes go through."""

    registry: FakeDeviceStore = field(default_factory=FakeDeviceStore)
    schedule: FakeRenewalSchedule = field(default_factory=FakeRenewalSchedule)
    proofs: FakeProofStore = field(default_factory=FakeProofStore)
    apns: FakeApns = field(default_factory=FakeApns)
    random: Bytes = field(default_factory=Bytes)

    @property
    def moves(self) -> TokenMoves:
        async def pushers() -> dict[str, FakeApns]:
            return {TOPIC: self.apns}

        return TokenMoves(self.proofs, pushers, STALE_AFTER, self.random)

    async def put(
        self, user: str, token: str = PHONE, at: datetime = NOW, **fields: Any
    ) -> RegisteredDevice | ProofRequired:
        body = {"token": token, "kind": "alert", "topic": TOPIC, "environment": "sandbox"}
        body.update(fields)
        return await register_device(
            user, body, at, registry=self.registry, schedule=self.schedule, rules=RULES,
            moves=self.moves,
        )  # fmt: skip

    def owner(self, token: str = PHONE) -> str | None:
        return self.registry.owners.get(device_id_for(token))

    def codes(self) -> list[str]:
        """The codes the proof pushes carried, in order."""
        return [s.payload["pushrelay"]["tokenProof"] for s in self.apns.sent]


@pytest.fixture
async def world() -> World:
    w = World()
    await w.put(ALICE, at=NOW - timedelta(days=1))
    return w


# --- the challenge --------------------------------------------------------------------------------


async def test_a_token_another_user_renewed_recently_answers_proof_required(world: World) -> None:
    answer = await world.put(BOB)
    assert isinstance(answer, ProofRequired)
    assert answer.as_json() == {
        "status": "proofRequired",
        "deviceId": device_id_for(PHONE),
        "expiresAt": "2026-01-05T12:05:00Z",
    }
    assert (answer.status, world.owner()) == (202, ALICE)


async def test_the_code_goes_to_the_token_in_a_background_push(world: World) -> None:
    await world.put(BOB)
    (sent,) = world.apns.sent
    n = sent.notification
    assert (n.device_token, n.topic, n.push_type, n.priority) == (
        PHONE, TOPIC, PushType.BACKGROUND, Priority.CONSIDERATE,
    )  # fmt: skip
    assert sent.payload == {
        "aps": {"content-available": 1},
        "pushrelay": {"tokenProof": base64.urlsafe_b64encode(b"\x01" * 16).decode().rstrip("=")},
    }
    assert n.expiration == int((NOW + PROOF_LIFETIME).timestamp())  # never delivered stale


async def test_nothing_of_the_holders_is_changed_by_a_challenge(world: World) -> None:
    before = dict(world.registry.rows)
    await world.put(MALLORY)
    assert (world.registry.rows, world.owner()) == (before, ALICE)


async def test_the_code_is_stored_only_as_a_hash_bound_to_token_and_claimant(world: World) -> None:
    await world.put(BOB)
    (code,) = world.codes()
    stored = world.proofs.challenges[device_id_for(PHONE)]
    assert code not in repr(stored)
    assert stored.code_hash == code_hash(device_id_for(PHONE), BOB, code)


async def test_putting_again_while_the_code_is_live_sends_nothing_new(world: World) -> None:
    first = await world.put(BOB)
    again = await world.put(BOB, at=NOW + timedelta(minutes=2))
    assert (again, len(world.apns.sent)) == (first, 1)


# --- completing the move --------------------------------------------------------------------------


async def test_the_code_moves_the_token(world: World) -> None:
    await world.put(BOB)
    done = await world.put(BOB, at=NOW + timedelta(minutes=1), tokenProof=world.codes()[0])
    assert isinstance(done, RegisteredDevice)
    assert (done.outcome, done.status, world.owner()) == (RegistrationOutcome.MOVED, 200, BOB)
    assert await world.registry.list_for_user(ALICE) == []


async def test_a_wrong_code_is_403_and_moves_nothing(world: World) -> None:
    await world.put(BOB)
    with pytest.raises(TokenProofError) as caught:
        await world.put(BOB, tokenProof="A" * 22)
    assert (status_of(caught.value), caught.value.reason, world.owner()) == (
        403, "invalid_token_proof", ALICE,
    )  # fmt: skip


async def test_an_expired_code_is_403(world: World) -> None:
    await world.put(BOB)
    with pytest.raises(TokenProofError):
        await world.put(BOB, at=NOW + PROOF_LIFETIME, tokenProof=world.codes()[0])
    assert world.owner() == ALICE


async def test_a_code_is_good_once(world: World) -> None:
    await world.put(BOB)
    (code,) = world.codes()
    await world.put(BOB, tokenProof=code)
    await world.put(ALICE, at=NOW + timedelta(minutes=1))  # Alice's phone? She must prove it too
    with pytest.raises(TokenProofError):
        await world.put(ALICE, at=NOW + timedelta(minutes=1), tokenProof=code)
    assert world.owner() == BOB


async def test_a_code_answers_only_the_user_it_was_sent_for(world: World) -> None:
    await world.put(BOB)
    with pytest.raises(TokenProofError):
        await world.put(MALLORY, tokenProof=world.codes()[0])
    assert world.owner() == ALICE


async def test_a_code_answers_only_the_token_it_was_sent_to(world: World) -> None:
    await world.put(ALICE, token="c3" * 32, at=NOW - timedelta(days=1))
    await world.put(BOB)
    with pytest.raises(TokenProofError):
        await world.put(BOB, token="c3" * 32, tokenProof=world.codes()[0])
    assert world.owner("c3" * 32) == ALICE


async def test_wrong_codes_void_the_challenge(world: World) -> None:
    await world.put(BOB)
    for _ in range(MAX_WRONG_PROOFS):
        with pytest.raises(TokenProofError):
            await world.put(BOB, tokenProof="guess")
    with pytest.raises(TokenProofError):
        await world.put(BOB, tokenProof=world.codes()[0])
    assert world.owner() == ALICE


async def test_a_proof_for_a_token_nobody_else_holds_is_not_needed(world: World) -> None:
    done = await world.put(ALICE, tokenProof="anything")  # a renewal: the code is not looked at
    assert isinstance(done, RegisteredDevice) and done.outcome is RegistrationOutcome.RENEWED


# --- rate limits ----------------------------------------------------------------------------------


async def test_another_users_claim_waits_while_a_code_is_live(world: World) -> None:
    await world.put(BOB)
    with pytest.raises(TokenProofPendingError) as caught:
        await world.put(MALLORY, at=NOW + timedelta(minutes=1))
    assert (status_of(caught.value), caught.value.retry_after, len(world.apns.sent)) == (
        429, 240, 1,
    )  # fmt: skip


async def test_proof_pushes_to_one_token_are_limited_per_hour(world: World) -> None:
    at = NOW
    for _ in range(PROOF_PUSHES_PER_HOUR):
        assert isinstance(await world.put(MALLORY, at=at), ProofRequired)
        at += PROOF_LIFETIME
    with pytest.raises(TokenProofRateLimitedError) as caught:
        await world.put(BOB, at=at)
    assert (status_of(caught.value), caught.value.retry_after) == (429, 2700)
    assert len(world.apns.sent) == PROOF_PUSHES_PER_HOUR
    assert isinstance(await world.put(BOB, at=NOW + timedelta(hours=1)), ProofRequired)


# --- when no proof is needed ----------------------------------------------------------------------


async def test_a_token_signed_out_of_moves_without_proof(world: World) -> None:
    await remove_device(
        ALICE, device_id_for(PHONE), registry=world.registry, schedule=world.schedule, rules=RULES
    )
    done = await world.put(BOB)
    assert isinstance(done, RegisteredDevice) and done.outcome is RegistrationOutcome.CREATED
    assert world.apns.sent == []


async def test_a_token_its_holder_stopped_renewing_moves_without_proof(world: World) -> None:
    done = await world.put(BOB, at=NOW - timedelta(days=1) + STALE_AFTER + timedelta(seconds=1))
    assert isinstance(done, RegisteredDevice) and done.outcome is RegistrationOutcome.MOVED
    assert world.apns.sent == []


async def test_a_dead_token_moves_once_apns_says_so(world: World) -> None:
    world.apns.answer(PHONE, 410, Reason.UNREGISTERED, unregistered_at=NOW)
    done = await world.put(BOB)
    assert isinstance(done, RegisteredDevice)
    assert (done.outcome, world.owner()) == (RegistrationOutcome.CREATED, BOB)


async def test_a_push_apns_did_not_take_is_503_and_voids_the_code(world: World) -> None:
    world.apns.fail(PHONE, ApnsUnavailable("connection refused"))
    with pytest.raises(ProofPushFailedError):
        await world.put(BOB)
    with pytest.raises(TokenProofError):
        await world.put(BOB, tokenProof=world.codes()[0])
    assert world.owner() == ALICE


# --- VoIP tokens ----------------------------------------------------------------------------------


async def put_voip(world: World, user: str, at: datetime = NOW) -> Any:
    return await world.put(user, token=PHONE_VOIP, at=at, kind="voip")


async def test_a_voip_token_held_by_another_user_is_409_without_a_proven_alert_move(
    world: World,
) -> None:
    await put_voip(world, ALICE, NOW - timedelta(days=1))
    with pytest.raises(VoipTokenHeldError) as caught:
        await put_voip(world, BOB)
    assert (status_of(caught.value), world.owner(PHONE_VOIP), world.apns.sent) == (409, ALICE, [])


async def test_the_phones_proven_alert_token_moves_its_voip_token(world: World) -> None:
    await put_voip(world, ALICE, NOW - timedelta(days=1))
    await world.put(BOB)
    await world.put(BOB, tokenProof=world.codes()[0])
    done = await put_voip(world, BOB, NOW + timedelta(minutes=1))
    assert done.outcome is RegistrationOutcome.MOVED
    assert await world.registry.list_for_user(ALICE) == []


async def test_a_proven_move_from_another_user_moves_no_voip_token(world: World) -> None:
    await put_voip(world, "8:acs:res_carol", NOW - timedelta(days=1))
    await world.put(BOB)
    await world.put(BOB, tokenProof=world.codes()[0])
    with pytest.raises(VoipTokenHeldError):
        await put_voip(world, BOB)


async def test_a_proven_move_counts_for_voip_for_a_day(world: World) -> None:
    await put_voip(world, ALICE, NOW - timedelta(days=1))
    await world.put(BOB)
    await world.put(BOB, tokenProof=world.codes()[0])
    with pytest.raises(VoipTokenHeldError):
        await put_voip(world, BOB, NOW + timedelta(hours=24, seconds=1))


async def test_calling_an_alert_token_voip_does_not_get_around_the_proof(world: World) -> None:
    with pytest.raises(VoipTokenHeldError):
        await world.put(MALLORY, kind="voip")
    assert (world.owner(), world.apns.sent) == (ALICE, [])


async def test_calling_a_voip_token_alert_does_not_get_a_code_pushed(world: World) -> None:
    await put_voip(world, ALICE, NOW - timedelta(days=1))
    with pytest.raises(VoipTokenHeldError):
        await world.put(MALLORY, token=PHONE_VOIP)
    assert (world.owner(PHONE_VOIP), world.apns.sent) == (ALICE, [])


async def test_two_puts_racing_with_the_code_move_the_token_once(world: World) -> None:
    await world.put(BOB)
    code = world.codes()[0]
    answers = await asyncio.gather(
        world.put(BOB, tokenProof=code), world.put(BOB, tokenProof=code), return_exceptions=True
    )
    assert sorted(type(a).__name__ for a in answers) == ["RegisteredDevice", "TokenProofError"]
    assert world.owner() == BOB
