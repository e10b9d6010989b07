"""The console's phones are reference devices (devtools/console/reference_phone.py).

A reference device, talking to pushrelay's device API as the contract fixes it
(:class:`~tests.unit.relay_contract.ContractServer`), is put on a console whose simulator log is
held in memory; each test delivers pushes through the console's refresh and checks what the
page shows against what the phone itself did.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from devtools.console.actions import Actions, ConsoleConfig
from devtools.console.lockscreen import Preview
from devtools.console.reference_phone import ConsoleFeed, ReferencePhone
from devtools.console.state import ConsoleState, Phone, Rules
from devtools.reference_device import (
    CallPhase,
)
from shared.domain.preview_crypto import PreviewFields, data_part, encrypt_fields
from tests.unit.console.test_state import FakeTables
from tests.unit.relay_contract import Clock, ContractServer, contract_phone

pytestmark = pytest.mark.unit

THREAD = "19:thread@thread.v2"
CALL_ID = "5c1e9ab3-8b21-4d4e-9c1a-2f0b8f7d6e11"


class SimulatorLog:
    """The APNs simulator's request log, in memory: every push here was answered 200."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def deliver(
        self, token: str, payload: dict[str, Any], push_type: str, collapse_id: str | None = None
    ) -> None:
        seq = len(self.records) + 1
        headers = {"apns-push-type": push_type}
        if collapse_id:
            headers["apns-collapse-id"] = collapse_id
        self.records.append(
            {"seq": seq, "token": token, "headers": headers, "payload": payload, "status": 200,
             "outcome": "answered", "apnsId": f"00000000-0000-4000-8000-{seq:012d}",
             "receivedAt": 1_772_355_600.0 + seq}
        )  # fmt: skip

    async def requests(self, since: int) -> list[dict[str, Any]]:
        return [r for r in self.records if r["seq"] > since]

    async def now(self) -> float:
        return 1_772_355_600.0


@dataclass
class Console:
    state: ConsoleState
    sim: SimulatorLog
    server: ContractServer
    phone: ReferencePhone
    shown: Phone
    deleted: set[str]  # what "ACS" deleted: the console answers the phone's chat layer with it

    def alert(self, message_id: str, text: str) -> None:
        """bob's message, encrypted with the key the phone uploaded."""
        key = base64.b64decode(str(self.server.keys[self.phone.device.alert_token]))
        fields = PreviewFields(
            senderId="8:acs:bob", recipientId=self.phone.user_id, transactionId="t",
            groupId=THREAD, messageId=message_id, messageType="text", messageBody=text,
            senderDisplayName="Bob", clientMessageId="", originalArrivalTime="2026-03-01T09:00:00Z",
            priority="Normal", version=message_id, acsChatMessageMetadata="null",
        )  # fmt: skip
        payload = {
            "aps": {"alert": {"title": "New message", "body": "You have a new message"},
                    "thread-id": THREAD, "mutable-content": 1},
            "threadId": THREAD, "messageId": message_id, "kind": "received",
            "data": data_part(encrypt_fields(key, fields)),
        }  # fmt: skip
        self.sim.deliver(self.phone.device.alert_token, payload, "alert", message_id)

    def wake(self) -> None:
        self.sim.deliver(self.phone.device.alert_token, {"aps": {"content-available": 1}},
                         "background")  # fmt: skip


@pytest.fixture
async def console() -> AsyncIterator[Console]:
    clock, sim, deleted = Clock(), SimulatorLog(), set[str]()
    server = ContractServer(clock)
    feed = ConsoleFeed()
    device, http = contract_phone(
        server,
        clock,
        pushes=feed,
        deleted_messages=lambda thread, ids: [m for m in ids if m in deleted],
    )
    phone = ReferencePhone("alice", device, feed, http)
    await phone.start()
    state = ConsoleState(FakeTables([]), sim, Rules(), clock=clock)  # type: ignore[arg-type]
    shown = state.add_agent(phone)
    try:
        yield Console(state, sim, server, phone, shown, deleted)
    finally:
        phone.close()


async def test_the_lock_screen_shows_what_the_phone_decrypted_with_its_own_key(
    console: Console,
) -> None:
    console.alert("m1", "Lunch at noon?")
    await console.state.refresh()
    (shown,) = console.shown.screen.notifications
    (banner,) = console.phone.device.banners
    assert (shown.title, shown.body, shown.preview) == ("Bob", "Lunch at noon?", Preview.DECRYPTED)
    assert (banner.title, banner.body, banner.decrypted) == ("Bob", "Lunch at noon?", True)


async def test_a_renewal_wake_makes_the_phone_upload_a_fresh_key_and_the_page_says_so(
    console: Console,
) -> None:
    first = console.server.keys[console.phone.device.alert_token]
    console.wake()
    await console.state.refresh()
    renewed = console.server.keys[console.phone.device.alert_token]
    lines = [a["text"] for a in console.state.activity]
    assert (renewed not in (None, first), any("renewed its preview key" in t for t in lines)) == (
        True,
        True,
    )


async def test_a_message_after_the_renewal_opens_with_the_new_key(console: Console) -> None:
    console.wake()
    await console.state.refresh()
    console.alert("m2", "after the renewal")  # encrypted with the key the wake uploaded
    await console.state.refresh()
    assert [(n.body, n.preview) for n in console.shown.screen.notifications] == [
        ("after the renewal", Preview.DECRYPTED)
    ]


async def test_a_banner_the_phone_cleared_at_a_wake_leaves_the_lock_screen(
    console: Console,
) -> None:
    console.alert("m1", "keep")
    console.alert("m2", "deleted, its withdraw push skipped by the budget")
    await console.state.refresh()
    console.deleted.add("m2")
    console.wake()
    await console.state.refresh()
    assert [n.message_id for n in console.shown.screen.notifications] == ["m1"]
    assert any("cleared the banner of deleted message m2" in a["text"]
               for a in console.state.activity)  # fmt: skip


async def test_answering_on_the_page_answers_in_the_phones_callkit(console: Console) -> None:
    voip = {
        "aps": {},
        "data": {"eventId": 107, "cp": "ctx", "callId": CALL_ID, "recipientId": "8:acs:alice",
                 "callerId": "8:acs:bob", "displayName": "Bob", "videoCall": "false"},
    }  # fmt: skip
    console.sim.deliver(console.phone.device.voip_token, voip, "voip")
    await console.state.refresh()
    ringing = console.shown.screen.call
    async with httpx.AsyncClient() as http:
        actions = Actions(console.state, http, ConsoleConfig("http://relay", None, "app"))
        await actions.end_call(console.shown.id, "accept")
    (call,) = console.phone.device.calls
    assert (ringing is not None and ringing.caller, call.phase) == ("Bob", CallPhase.ACTIVE)


async def test_the_page_names_the_phone_a_reference_device_and_shows_its_apps_log(
    console: Console,
) -> None:
    (phone,) = console.state.snapshot()["phones"]
    assert (phone["source"], phone["appLog"][0]["what"]) == ("reference", "registered")
    assert (phone["key"]["expiresAt"], phone["key"]["phoneHolds"]) == ("2026-03-01T09:45:00Z", True)
