"""A phone through a day: the reference device (devtools/reference_device) against the real app.

The app is served by the local host with Azurite, the APNs simulator, the local ACS identity
service and the development identity provider. The phone signs in, registers its APNs and
PushKit tokens with its own 64-byte key, and reads what APNs delivered to it from the
simulator; a chat partner posts ACS events to the Event Grid webhook.

Time: the app's use cases read ``shared.wiring.utc_now`` and the phone its ``clock``; both are
one :class:`SimulatedTime` here, so a test moves both through hours in a second. The APNs
simulator's clock is left alone on purpose: it judges the provider token's ``iat``, which the
app signs with the real wall clock, so moving it hours ahead would expire every token. The
identity provider's tokens and the ACS identity service also keep real time.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.acs_identity_service import AcsIdentityService
from devtools.apns_simulator import ApnsSimulator
from devtools.azurite import Azurite
from devtools.dev_identity_provider import DevIdentityProvider
from devtools.reference_device import CallPhase, Endpoints, Happened, ReferenceDevice
from devtools.reference_device.__main__ import main as device_cli
from tests.e2e.conftest import LocalApp
from tests.local_apns import APP, KEY, simulator_settings
from tests.sample_events import sample_event

pytestmark = pytest.mark.e2e

CHAT = "/runtime/webhooks/eventgrid?functionName=on_chat_event"
CALLS = "/runtime/webhooks/eventgrid?functionName=on_call_event"
THREAD = "19:reference-device-thread@thread.v2"
BOB = "8:acs:109f0644-b956-4cd9-87b1-71024f6e2f44_00000008-578d-7caf-07fd-084822001724"
GENERIC = ("New message", "You have a new message")  # the settings' default fallback


class SimulatedTime:
    """One clock for the app's use cases and the phone; moves only when a test says so."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Partner:
    """Bob, as ACS reports him to Event Grid: messages, edits, deletes and calls to one user."""

    def __init__(self, base: str, time: SimulatedTime) -> None:
        self.http = httpx.Client(base_url=base, timeout=30)
        self.time = time
        self.to = ""

    def _post(self, path: str, event: dict[str, Any]) -> None:
        answer = self.http.post(
            path,
            headers={"aeg-event-type": "Notification", "content-type": "application/json"},
            content=json.dumps([event]).encode(),
        )
        assert answer.status_code == 202, answer.text

    def _chat(self, sample: str, message_id: str, **data: Any) -> None:
        event = sample_event(sample, messageId=message_id, threadId=THREAD, **data)
        event["data"]["recipientCommunicationIdentifier"] = {
            "rawId": self.to, "communicationUser": {"id": self.to},
        }  # fmt: skip
        event["id"] = str(uuid.uuid4())
        event["eventTime"] = self.time.now.isoformat().replace("+00:00", "Z")
        self._post(CHAT, event)

    def send(self, text: str) -> str:
        """A new message; returns its id."""
        message_id = str(int(self.time.now.timestamp() * 1000))
        self._chat("chat_message_received.eventgrid.json", message_id, messageBody=text,
                   version=int(message_id))  # fmt: skip
        return message_id

    def edit(self, message_id: str, text: str) -> None:
        self._chat("chat_message_edited.eventgrid.json", message_id, messageBody=text,
                   version=int(message_id) + 1)  # fmt: skip

    def delete(self, message_id: str) -> None:
        self._chat("chat_message_deleted.eventgrid.json", message_id, version=int(message_id) + 2)

    def call(self) -> str:
        """An IncomingCall to the user, stamped now; returns its correlation id (CallKit UUID)."""
        event = sample_event("incoming_call.eventgrid.json")
        correlation = str(uuid.uuid4())
        event["data"].update(correlationId=correlation, serverCallId="call-" + correlation)
        event["data"]["to"] = {"kind": "communicationUser", "rawId": self.to,
                               "communicationUser": {"id": self.to}}  # fmt: skip
        event["id"] = str(uuid.uuid4())
        stamp = self.time.now - timedelta(seconds=1)
        event["eventTime"] = stamp.isoformat().replace("+00:00", "Z")
        self._post(CALLS, event)
        return correlation


class World:
    """The served app, the simulated time, the partner, and phones."""

    def __init__(
        self, base: str, sim: ApnsSimulator, idp: DevIdentityProvider, time: SimulatedTime
    ) -> None:
        self.base, self.sim, self.idp, self.time = base, sim, idp, time
        self.partner = Partner(base, time)
        self.endpoints = Endpoints(app=base, idp=idp.token_url, apns=sim.control_url)
        self.phones: list[ReferenceDevice] = []

    def phone(self, subject: str, **options: Any) -> ReferenceDevice:
        """A phone signed in as ``subject`` with the app launched."""
        device = ReferenceDevice.connect(self.endpoints, topic=APP, clock=self.time, **options)
        self.phones.append(device)
        self.partner.to = device.sign_in(subject)
        device.launch()
        return device

    def sweep(self, phone: ReferenceDevice) -> None:
        """Run the renewal sweep now and wait until the phone got the push it sends."""
        answer = self.partner.http.post("/admin/functions/renewal_sweep", json={"input": ""})
        assert answer.status_code == 202
        phone.wait_for_push(timeout=30.0)

    def pushes_to(self, token: str) -> int:
        return len(self.sim.requests(token=token))

    def devices_of(self, subject: str) -> list[dict[str, Any]]:
        answer = httpx.get(
            self.base + "/api/devices",
            headers={"Authorization": "Bearer " + self.idp.token(subject)},
            timeout=30,
        )
        assert answer.status_code == 200
        devices: list[dict[str, Any]] = answer.json()["devices"]
        return devices


@pytest.fixture
def world(
    local_app: LocalApp,
    apns: ApnsSimulator,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
    azurite: Azurite,
    table_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[World]:
    time = SimulatedTime()
    monkeypatch.setattr("shared.wiring.utc_now", time)
    base = local_app(
        {
            "STORAGE_CONNECTION": azurite.connection_string,
            "AzureWebJobsStorage": azurite.connection_string,
            "TABLE_PREFIX": table_prefix,
            "RENEWAL_QUEUE": table_prefix + "-renewal",
            **simulator_settings(apns, [KEY.app(APP)]),
            "APNS_RETRY_BUDGET_SECONDS": "0.6",
            "KEY_ENCRYPTION_KEYS": "k1=" + base64.b64encode(b"\x0b" * 32).decode(),
            "ACS_CONNECTION_STRING": acs.connection_string,
            "ACS_CA_FILE": str(acs.ca_file),
            **idp.settings,
        }
    )
    world = World(base, apns, idp, time)
    yield world
    for phone in world.phones:
        phone.close()
    world.partner.http.close()


def last_banner(phone: ReferenceDevice) -> tuple[str, str, bool]:
    banner = phone.banners[-1]
    return banner.title, banner.body, banner.decrypted


# --- messages -------------------------------------------------------------------------------------


def test_a_message_reaches_the_phone_decrypted_by_its_own_key(world: World) -> None:
    alice = world.phone("alice")
    world.partner.send("Lunch at noon?")
    alice.sync()
    assert last_banner(alice) == ("Bob(Admin)", "Lunch at noon?", True)


def test_the_push_itself_carries_only_the_fallback_text(world: World) -> None:
    alice = world.phone("alice")
    world.partner.send("Lunch at noon?")
    (push,) = world.sim.requests(token=alice.alert_token)
    assert push.payload["aps"]["alert"] == {"title": GENERIC[0], "body": GENERIC[1]}
    assert "Lunch" not in json.dumps(push.payload)


def test_an_edit_replaces_the_banner(world: World) -> None:
    alice = world.phone("alice")
    message = world.partner.send("Lunch at noon?")
    world.partner.edit(message, "Lunch at one?")
    alice.sync()
    assert [(b.body, b.kind, b.decrypted) for b in alice.banners] == [
        ("Lunch at one?", "edited", True)
    ]


def test_a_deleted_message_is_withdrawn(world: World) -> None:
    alice = world.phone("alice")
    kept = world.partner.send("first")
    world.time.advance(seconds=1)
    gone = world.partner.send("second")
    world.partner.delete(gone)
    done = alice.sync()
    assert [b.message_id for b in alice.banners] == [kept]
    assert [e.detail["removed"] for e in done if e.what is Happened.WITHDRAWN] == [1]


def test_a_delete_the_budget_sent_no_withdraw_for_is_cleared_at_the_next_wake(
    world: World,
) -> None:
    deleted: set[str] = set()  # what ACS would answer the app's chat layer
    alice = world.phone("alice", deleted_messages=lambda _, ids: [m for m in ids if m in deleted])
    first = world.partner.send("one")
    world.time.advance(seconds=1)
    second = world.partner.send("two")
    for message in (first, second):
        world.partner.delete(message)
        deleted.add(message)
        alice.sync()  # a withdraw push for the first; none for the second: it came within
        world.time.advance(minutes=1)  # RENEWAL_MIN_SPACING_MINUTES of the first
    left = [b.message_id for b in alice.banners]
    world.time.advance(minutes=35)
    world.sweep(alice)  # the renewal wake: the app renews and clears what was deleted since
    # 2 alerts, 1 withdraw, 2 badge-only updates (each delete lowered the unread count), 1 wake.
    assert (left, alice.banners, world.pushes_to(alice.alert_token)) == ([second], [], 6)


def test_the_icon_counts_unread_messages_and_falls_without_a_banner(world: World) -> None:
    alice = world.phone("alice")
    kept = world.partner.send("first")
    world.time.advance(seconds=1)
    gone = world.partner.send("second")
    alice.sync()
    counted = alice.badge
    world.partner.delete(gone)  # unread: the count falls, a badge-only push follows
    done = alice.sync()
    assert (counted, alice.badge, [b.message_id for b in alice.banners]) == (2, 1, [kept])
    assert [e.detail["badge"] for e in done if e.what is Happened.BADGE] == [1]


# --- calls ----------------------------------------------------------------------------------------


def test_a_call_rings_in_callkit_and_is_answered(world: World) -> None:
    alice = world.phone("alice")
    call_id = world.partner.call()
    alice.sync()
    (call,) = alice.calls
    assert (str(call.uuid), call.caller_name, call.handle, call.placeholder) == (
        call_id,
        "Bob(Admin)",
        BOB,
        False,
    )
    assert alice.answer(call.uuid) is True
    assert alice.calls[0].phase is CallPhase.ACTIVE


def test_every_voip_push_is_reported_to_callkit(world: World) -> None:
    alice = world.phone("alice")
    for _ in range(3):
        world.partner.call()
    alice.sync()
    assert (alice.callkit.reports, world.pushes_to(alice.voip_token)) == (3, 3)


# --- keys over time -------------------------------------------------------------------------------


def renew_through(world: World, phone: ReferenceDevice, wakes: int) -> list[tuple[str, bool]]:
    """Wake after wake, a message 5 minutes after each; what the phone showed for each."""
    start, shown = world.time.now, []
    for wake in range(1, wakes + 1):
        # Each renewal's key lives 45 minutes; its wake is due 10 minutes before that.
        world.time.now = start + timedelta(minutes=35 * wake)
        world.sweep(phone)
        world.time.advance(minutes=5)  # from the second message on, only a renewed key decrypts
        world.partner.send(f"message {wake}")
        phone.sync()
        shown.append(last_banner(phone)[1:])
    return shown


def test_renewal_wakes_keep_previews_over_four_simulated_hours(world: World) -> None:
    alice = world.phone("alice")
    shown = renew_through(world, alice, 7)  # 4 hours 5 minutes
    renewals = [e for e in alice.events if e.what is Happened.RENEWAL_WAKE]
    assert (len(renewals), world.pushes_to(alice.alert_token)) == (7, 14)
    assert shown == [(f"message {n}", True) for n in range(1, 8)]


def test_renewal_wakes_stay_within_two_an_hour(world: World) -> None:
    alice = world.phone("alice")
    renew_through(world, alice, 7)
    wakes = [e.at for e in alice.events if e.what is Happened.RENEWAL_WAKE]
    busiest = max(sum(1 for t in wakes if w <= t < w + timedelta(hours=1)) for w in wakes)
    assert busiest == 2  # RENEWAL_MAX_PER_HOUR; Apple asks for no more than two or three


def test_each_renewal_uploads_a_key_that_outlives_the_last(world: World) -> None:
    alice = world.phone("alice")
    for _ in range(3):
        world.time.advance(minutes=35)
        world.sweep(alice)
    uploads = [e.detail["keyExpiresAt"] for e in alice.events if e.what is Happened.KEY_UPLOADED]
    expiries = [datetime.fromisoformat(t) for t in uploads]
    assert len(expiries) == 4 and expiries == sorted(expiries)
    assert [b - a for a, b in itertools.pairwise(expiries)] == [timedelta(minutes=35)] * 3


def test_a_force_quit_phone_shows_the_fallback_once_its_key_expired(world: World) -> None:
    alice = world.phone("alice")
    alice.force_quit()
    world.time.advance(minutes=35)
    world.sweep(alice)  # the wake arrives, but iOS does not launch a force-quit app
    world.time.advance(minutes=11)  # 46 minutes: the key expired on both sides
    world.partner.send("are you there?")
    alice.sync()
    assert last_banner(alice) == (*GENERIC, False)
    assert [e.what for e in alice.events].count(Happened.NOT_DELIVERED) == 1


def test_the_phone_discards_its_expired_key_even_before_the_server(world: World) -> None:
    alice = world.phone("alice")
    world.time.advance(minutes=46)
    assert alice.keys.expiries() and alice.keys.live_until() is None


# --- registration changes -------------------------------------------------------------------------


def test_a_new_apns_token_moves_the_registration_and_keeps_previews(world: World) -> None:
    alice = world.phone("alice")
    old = alice.alert_token
    new = alice.rotate_apns_token()
    world.partner.send("still here")
    alice.sync()
    listed = {d["token"][:6] for d in world.devices_of("alice") if d["kind"] == "alert"}
    assert listed == {new[:6]}
    assert (world.pushes_to(old), world.pushes_to(new)) == (0, 1)
    assert last_banner(alice) == ("Bob(Admin)", "still here", True)


def test_a_relaunch_registers_again_without_its_key_and_keeps_previews(world: World) -> None:
    alice = world.phone("alice")
    world.time.advance(minutes=5)
    alice.launch()  # the same token and a live key: PUT without "key"
    world.partner.send("after the relaunch")
    alice.sync()
    assert last_banner(alice) == ("Bob(Admin)", "after the relaunch", True)


def test_turning_previews_off_removes_the_key_with_an_explicit_null(world: World) -> None:
    alice = world.phone("alice")
    alice.disable_previews()
    world.partner.send("secret")
    alice.sync()
    (device,) = [d for d in world.devices_of("alice") if d["kind"] == "alert"]
    assert (device["hasLiveKey"], last_banner(alice)) == (False, (*GENERIC, False))


def test_sign_out_deletes_both_registrations_and_nothing_more_arrives(world: World) -> None:
    alice = world.phone("alice")
    world.partner.send("before")
    alice.sync()
    alice.sign_out()
    world.partner.send("after")
    world.partner.call()
    assert world.devices_of("alice") == []
    assert (world.pushes_to(alice.alert_token), world.pushes_to(alice.voip_token)) == (1, 0)
    assert (alice.banners, alice.keys.exists) == ([], False)


def test_a_phone_changing_hands_proves_its_token_and_moves(world: World) -> None:
    phone = world.phone("alice")  # alice never signs out
    bob_id = phone.sign_in("bob")  # the phone is given to bob, who signs in on it
    phone.launch()
    asked = [e.detail["kind"] for e in phone.events if e.what is Happened.PROOF_REQUIRED]
    phone.sync()  # the proof push arrives; the app repeats its PUT with the code
    world.partner.to = bob_id
    world.partner.send("hi bob")
    phone.sync()
    alerts = [d["kind"] for d in world.devices_of("alice") if d["kind"] == "alert"]
    assert ("alert" in asked, alerts) == (True, [])
    assert last_banner(phone) == ("Bob(Admin)", "hi bob", True)


def test_a_token_cannot_be_taken_without_the_phone(world: World) -> None:
    alice = world.phone("alice")
    thief = ReferenceDevice.connect(
        world.endpoints, topic=APP, clock=world.time, alert_token=alice.alert_token
    )
    world.phones.append(thief)
    thief.sign_in("mallory")
    thief.apns_token_received(alice.alert_token)  # mallory never sees the phone's pushes
    world.partner.to = alice.acs_user_id or ""
    world.partner.send("for alice")
    alice.sync()  # the stray proof code is ignored: alice's phone has no registration pending
    assert [e.what for e in thief.events][-1] is Happened.PROOF_REQUIRED
    assert last_banner(alice) == ("Bob(Admin)", "for alice", True)


# --- the command line -----------------------------------------------------------------------------


def test_the_command_line_keeps_a_phone_between_commands(world: World, tmp_path: Path) -> None:
    where = ["--state", str(tmp_path / "phone.json"), "--app", world.base]
    where += ["--idp", world.idp.token_url, "--apns", world.sim.control_url, "--topic", APP]

    def run(*args: str) -> str:
        out = io.StringIO()
        assert device_cli([*where, *args], out) == 0, out.getvalue()
        return out.getvalue()

    signed_in = run("--json", "sign-in", "alice")
    world.partner.to = json.loads(signed_in.splitlines()[0])["acsUserId"]
    world.partner.send("from the shell")
    synced = run("sync")
    shown = json.loads(run("show"))
    run("sign-out")
    assert "banner" in synced and "from the shell" in synced
    assert [b["body"] for b in shown["banners"]] == ["from the shell"]
    assert world.devices_of("alice") == []
