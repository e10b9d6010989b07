"""The reference device (devtools/reference_device) without sockets.

- It shares no code with pushrelay's encryption: it imports nothing from ``shared`` (checked in
  its source and in a fresh interpreter), yet decrypts whatever ``shared.domain.preview_crypto``
  encrypts, and follows the ACS SDK's quirks where they differ from pushrelay's own decryptor.
- Its key storage follows ``AppGroupPushNotificationKeyStorage``'s rules; its extension keeps
  the fallback text; its VoIP guard reports a placeholder call for a push it cannot read.
- Its registration logic (keep the key on relaunch, new token, token-move proof) runs against
  :class:`ContractServer`, pushrelay's device API as the registration contract fixes it.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from devtools.reference_device import (
    AppGroupKeyStorage,
    CallPhase,
    DecryptError,
    EndReason,
    Happened,
    KeyStorageError,
    Push,
    ReferenceDevice,
    decrypt_payload,
    extension_content,
    generate_key,
    parse_voip_push,
)
from shared.domain.preview_crypto import PreviewFields, data_part, encrypt_fields
from tests.unit.relay_contract import T0, Clock, ContractServer, contract_phone

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
KEY = bytes(range(64))
KEY_B64 = base64.b64encode(KEY).decode()


def fields(**changes: str) -> PreviewFields:
    values = {
        "senderId": "8:acs:bob", "recipientId": "8:acs:alice", "transactionId": "t1",
        "groupId": "19:thread@thread.v2", "messageId": "1700000000000", "messageType": "text",
        "messageBody": "Lunch?", "senderDisplayName": "Bob", "clientMessageId": "",
        "originalArrivalTime": "2026-03-01T09:00:00.000Z", "priority": "Normal",
        "version": "1700000000000", "acsChatMessageMetadata": "null",
    }  # fmt: skip
    values.update(changes)
    return PreviewFields(**values)


def alert(blob: str, event_id: Any = 200) -> dict[str, Any]:
    return {
        "aps": {"alert": {"title": "New message", "body": "You have a new message"},
                "mutable-content": 1},
        "data": {"eventId": event_id, "e": blob},
    }  # fmt: skip


def blob_of(plaintext: bytes, key: bytes = KEY, *, mode: int = 0x70, pad: bool = True) -> str:
    """A blob built step by step from the SDK's layout (for cases pushrelay never sends)."""
    iv = bytes(16)
    data = plaintext
    if pad:
        padder = padding.PKCS7(128).padder()
        data = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key[:32]), modes.CBC(iv)).encryptor()
    signed = bytes([mode]) + iv + encryptor.update(data) + encryptor.finalize()
    tag = hmac.new(hashlib.sha256(key[32:]).digest(), signed, hashlib.sha256).digest()
    return base64.b64encode(signed + tag).decode()


def keys(*values: str) -> Callable[[], list[str]]:
    return lambda: list(values)


# --- independence ---------------------------------------------------------------------------------


def test_the_reference_device_source_imports_nothing_from_shared() -> None:
    imported: set[str] = set()
    for path in (REPO / "devtools" / "reference_device").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
    assert sorted(m for m in imported if m.split(".")[0] == "shared") == []


def test_importing_the_reference_device_loads_no_shared_module() -> None:
    probe = (
        "import sys, devtools.reference_device, devtools.reference_device.__main__\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'shared'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# --- decryption -----------------------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8"), max_size=300)


@given(body=texts, name=texts, meta=st.dictionaries(texts, texts, max_size=4))
def test_what_pushrelay_encrypts_the_device_decrypts(
    body: str, name: str, meta: dict[str, str]
) -> None:
    metadata = json.dumps(meta, ensure_ascii=False) if meta else "null"
    sent = fields(messageBody=body, senderDisplayName=name, acsChatMessageMetadata=metadata)
    payload = {"aps": {"mutable-content": 1}, "data": data_part(encrypt_fields(KEY, sent))}
    got = decrypt_payload(payload, keys(KEY_B64))
    assert (got.message, got.sender_display_name, got.metadata) == (body, name, meta or None)


def test_the_right_key_is_found_among_several() -> None:
    other = generate_key()
    got = decrypt_payload(alert(encrypt_fields(KEY, fields())), keys(other, KEY_B64))
    assert (got.thread_id, got.message_id) == ("19:thread@thread.v2", "1700000000000")


@pytest.mark.parametrize("event_id", ["200", 201, True, None])
def test_an_event_id_the_sdk_does_not_cast_to_200_fails(event_id: Any) -> None:
    with pytest.raises(DecryptError):
        decrypt_payload(alert(encrypt_fields(KEY, fields()), event_id), keys(KEY_B64))


def test_a_blob_with_a_line_break_fails_like_foundations_strict_base64() -> None:
    blob = encrypt_fields(KEY, fields())
    with pytest.raises(DecryptError, match="not base64"):
        decrypt_payload(alert(blob[:40] + "\n" + blob[40:]), keys(KEY_B64))


def test_another_key_fails() -> None:
    with pytest.raises(DecryptError, match="Failed to decrypt"):
        decrypt_payload(alert(encrypt_fields(KEY, fields())), keys(generate_key()))


def test_no_key_in_storage_fails() -> None:
    storage = AppGroupKeyStorage(Clock())
    with pytest.raises(DecryptError, match="no key"):
        decrypt_payload(alert(encrypt_fields(KEY, fields())), storage.retrieve_keys)


def test_the_mode_byte_is_not_checked_as_in_the_sdk() -> None:
    plaintext = fields(messageBody="mode 0x71").to_json_bytes()
    got = decrypt_payload(alert(blob_of(plaintext, mode=0x71)), keys(KEY_B64))
    assert got.message == "mode 0x71"


def test_a_matching_key_with_bad_padding_fails_without_trying_another() -> None:
    plaintext = fields().to_json_bytes()
    unpadded = plaintext + b" " * (-len(plaintext) % 16)
    with pytest.raises(DecryptError, match="padding"):
        decrypt_payload(alert(blob_of(unpadded, pad=False)), keys(KEY_B64, KEY_B64))


def test_a_blob_too_short_for_the_layout_fails() -> None:
    with pytest.raises(DecryptError, match="would crash"):
        decrypt_payload(alert(base64.b64encode(bytes(48)).decode()), keys(KEY_B64))


@pytest.mark.parametrize("metadata", ["", "[]", '{"n": 1}', "not json"])
def test_metadata_other_than_null_or_an_object_of_strings_fails(metadata: str) -> None:
    blob = encrypt_fields(KEY, fields(acsChatMessageMetadata=metadata))
    with pytest.raises(DecryptError, match="acsChatMessageMetadata"):
        decrypt_payload(alert(blob), keys(KEY_B64))


def test_a_missing_field_fails() -> None:
    plaintext = json.loads(fields().to_json_bytes())
    del plaintext["clientMessageId"]
    with pytest.raises(DecryptError, match="clientMessageId"):
        decrypt_payload(alert(blob_of(json.dumps(plaintext).encode())), keys(KEY_B64))


# --- key storage ----------------------------------------------------------------------------------


def test_retrieving_before_any_key_was_stored_throws() -> None:
    with pytest.raises(KeyStorageError, match="no encryption key"):
        AppGroupKeyStorage(Clock()).retrieve_keys()


def test_retrieving_when_every_key_expired_throws_and_drops_them() -> None:
    clock = Clock()
    storage = AppGroupKeyStorage(clock)
    storage.persist_key("a", T0 + timedelta(minutes=45))
    clock.now = T0 + timedelta(minutes=45)  # expiry <= now is expired
    with pytest.raises(KeyStorageError, match="expire"):
        storage.retrieve_keys()
    assert storage.expiries() == {}


def test_persisting_drops_expired_keys_and_updates_a_known_one() -> None:
    clock = Clock()
    storage = AppGroupKeyStorage(clock)
    storage.persist_key("old", T0 + timedelta(minutes=10))
    storage.persist_key("new", T0 + timedelta(minutes=20))
    clock.now = T0 + timedelta(minutes=15)
    storage.persist_key("new", T0 + timedelta(minutes=60))
    assert storage.expiries() == {"new": T0 + timedelta(minutes=60)}


def test_a_generated_key_is_64_bytes_of_standard_base64() -> None:
    key = generate_key()
    assert (len(key), len(base64.b64decode(key, validate=True))) == (88, 64)


# --- the notification service extension -----------------------------------------------------------


def test_the_extension_shows_the_sender_and_the_message() -> None:
    content = extension_content(alert(encrypt_fields(KEY, fields())), keys(KEY_B64))
    assert (content.title, content.body, content.decrypted) == ("Bob", "Lunch?", True)


def test_an_empty_decrypted_message_keeps_the_fallback_text() -> None:
    blob = encrypt_fields(KEY, fields(messageBody="  "))
    content = extension_content(alert(blob), keys(KEY_B64))
    assert (content.title, content.body, content.decrypted) == (
        "Bob",
        "You have a new message",
        False,
    )


def test_an_expired_key_keeps_the_fallback_text() -> None:
    clock = Clock()
    storage = AppGroupKeyStorage(clock)
    storage.persist_key(KEY_B64, T0 + timedelta(minutes=45))
    clock.now = T0 + timedelta(minutes=46)
    content = extension_content(alert(encrypt_fields(KEY, fields())), storage.retrieve_keys)
    assert (content.title, content.body) == ("New message", "You have a new message")


def test_without_mutable_content_the_extension_does_not_run() -> None:
    payload = alert(encrypt_fields(KEY, fields()))
    del payload["aps"]["mutable-content"]
    assert extension_content(payload, keys(KEY_B64)).decrypted is False


# --- VoIP pushes ----------------------------------------------------------------------------------

CALL_ID = "5a2e3f1b-8c7d-4e6f-9a0b-1c2d3e4f5a6b"


def voip(**data: Any) -> dict[str, Any]:
    base = {"eventId": 107, "cp": "b3BhcXVl", "callId": CALL_ID, "recipientId": "8:acs:alice",
            "callerId": "8:acs:bob", "displayName": "Bob", "videoCall": "false"}  # fmt: skip
    base.update(data)
    return {"aps": {}, "data": {k: v for k, v in base.items() if v is not None},
            "serverCallId": "srv"}  # fmt: skip


def test_the_guard_reads_pushrelays_voip_payload() -> None:
    info = parse_voip_push(voip())
    assert info is not None
    assert (str(info.call_id), info.display_name, info.video, info.server_call_id) == (
        CALL_ID,
        "Bob",
        False,
        "srv",
    )


@pytest.mark.parametrize(
    "change",
    [
        {"eventId": 110},
        {"eventId": "107"},
        {"callId": "not-a-uuid"},
        {"callId": None},
        {"callerId": ""},
        {"cp": None},
        {"videoCall": False},
        {"displayName": 7},
    ],
    ids=lambda c: ",".join(f"{k}={v!r}" for k, v in c.items()),
)
def test_the_guard_refuses_a_push_it_cannot_read(change: dict[str, Any]) -> None:
    assert parse_voip_push(voip(**change)) is None


# --- the phone against pushrelay's device API, as the contract fixes it ---------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock: Clock) -> ContractServer:
    return ContractServer(clock)


def phone(server: ContractServer, clock: Clock, **options: Any) -> ReferenceDevice:
    return contract_phone(server, clock, **options)[0]


def test_launch_uploads_a_key_and_stores_it_with_the_servers_expiry(
    server: ContractServer, clock: Clock
) -> None:
    device = phone(server, clock)
    device.sign_in("alice")
    device.launch()
    (key,) = device.keys.expiries()
    assert device.keys.expiries() == {key: T0 + timedelta(minutes=45)}
    assert server.keys[device.alert_token] == key


def test_a_relaunch_with_a_live_key_registers_without_key(
    server: ContractServer, clock: Clock
) -> None:
    device = phone(server, clock)
    device.sign_in("alice")
    device.launch()
    clock.now += timedelta(minutes=20)
    device.launch()
    alert_puts = [p for p in server.puts if p["kind"] == "alert"]
    assert ["key" in p for p in alert_puts] == [True, False]


def test_a_relaunch_close_to_expiry_uploads_a_fresh_key(
    server: ContractServer, clock: Clock
) -> None:
    device = phone(server, clock)
    device.sign_in("alice")
    device.launch()
    clock.now += timedelta(minutes=31)  # 14 minutes left, under RENEW_BEFORE
    device.launch()
    alert_keys = [p.get("key") for p in server.puts if p["kind"] == "alert"]
    assert len(alert_keys) == 2 and alert_keys[0] != alert_keys[1]


def test_previews_turned_off_stay_off_across_launches_and_wakes(
    server: ContractServer, clock: Clock
) -> None:
    device = phone(server, clock)
    device.sign_in("alice")
    device.launch()
    device.disable_previews()
    device.launch()
    server.send(device.alert_token, {"aps": {"content-available": 1}})
    device.sync()
    alert_keys = [p.get("key", "absent") for p in server.puts if p["kind"] == "alert"]
    assert alert_keys[1:] == [None, "absent"]
    assert (server.keys[device.alert_token], device.keys.exists) == (None, False)


def test_a_new_apns_token_is_registered_with_a_key_and_the_old_one_deleted(
    server: ContractServer, clock: Clock
) -> None:
    device = phone(server, clock)
    device.sign_in("alice")
    device.launch()
    old = device.alert_token
    new = device.rotate_apns_token()
    assert (old in server.owners, server.owners.get(new), server.keys.get(new) is not None) == (
        False,
        "alice",
        True,
    )


def test_a_token_another_user_holds_moves_with_the_code_from_the_proof_push(
    server: ContractServer, clock: Clock
) -> None:
    token = "ab" * 32
    server.owners[token] = "alice"
    device = phone(server, clock, alert_token=token)
    device.sign_in("bob")
    device.apns_token_received(token)
    waiting = dict(device.pending_proofs)
    device.sync()
    done = [e.what for e in device.events]
    assert (token in waiting, server.owners[token], device.pending_proofs) == (True, "bob", {})
    # ... and the PushKit token is registered again: it follows the alert token's proof.
    assert done[-3:] == [Happened.PROOF_COMPLETED, Happened.KEY_UPLOADED, Happened.REGISTERED]
    assert device.keys.live_until() == T0 + timedelta(minutes=45)


def test_an_expired_proof_code_is_refused_and_the_phone_goes_on(
    server: ContractServer, clock: Clock
) -> None:
    token = "ab" * 32
    server.owners[token] = "alice"
    device = phone(server, clock, alert_token=token)
    device.sign_in("bob")
    device.apns_token_received(token)
    clock.now += timedelta(minutes=6)
    device.sync()
    assert (device.events[-1].what, server.owners[token]) == (Happened.PROOF_REFUSED, "alice")


def test_a_stray_proof_code_is_ignored(server: ContractServer, clock: Clock) -> None:
    device = phone(server, clock)
    device.sign_in("alice")
    device.launch()
    puts = len(server.puts)
    server.send(device.alert_token, {"aps": {"content-available": 1},
                                     "pushrelay": {"tokenProof": "guess"}})  # fmt: skip
    assert (device.sync(), len(server.puts)) == ([], puts)


def test_a_renewal_wake_uploads_a_fresh_key(server: ContractServer, clock: Clock) -> None:
    device = phone(server, clock)
    device.sign_in("alice")
    device.launch()
    first = server.keys[device.alert_token]
    clock.now += timedelta(minutes=35)
    server.send(device.alert_token, {"aps": {"content-available": 1}})
    device.sync()
    assert server.keys[device.alert_token] not in (None, first)
    assert len(device.keys.retrieve_keys()) == 2  # the old one lives until its own expiry


def chat_alert(message_id: str, thread: str = "19:thread@thread.v2") -> dict[str, Any]:
    return {
        "aps": {"alert": {"title": "New message", "body": "You have a new message"},
                "thread-id": thread},
        "threadId": thread, "messageId": message_id, "kind": "received",
    }  # fmt: skip


def withdraw(message_id: str, thread: str = "19:thread@thread.v2") -> dict[str, Any]:
    return {
        "aps": {"content-available": 1},
        "deleted": {"threadId": thread, "messageId": message_id},
    }


def test_a_withdraw_wake_renews_the_key_too(server: ContractServer, clock: Clock) -> None:
    device = phone(server, clock)
    device.sign_in("alice")
    device.launch()
    first = server.keys[device.alert_token]
    server.send(device.alert_token, chat_alert("m1"))
    server.send(device.alert_token, withdraw("m1"))
    device.sync()
    assert (device.banners, server.keys[device.alert_token] not in (None, first)) == ([], True)


def test_the_next_wake_clears_a_deleted_message_whose_withdraw_push_never_came(
    server: ContractServer, clock: Clock
) -> None:
    deleted = {("19:thread@thread.v2", "m2")}  # ACS knows; pushrelay's budget sent no withdraw
    device = phone(
        server,
        clock,
        deleted_messages=lambda thread, ids: [m for m in ids if (thread, m) in deleted],
    )
    device.sign_in("alice")
    device.launch()
    for message in ("m1", "m2"):
        server.send(device.alert_token, chat_alert(message))
    device.sync()
    server.send(device.alert_token, {"aps": {"content-available": 1}})  # a renewal wake
    device.sync()
    assert [b.message_id for b in device.banners] == ["m1"]
    assert device.events[-1].detail == {
        "threadId": "19:thread@thread.v2", "messageId": "m2", "removed": 1, "reconciled": True,
    }  # fmt: skip


def test_a_withdraw_push_without_ids_removes_nothing(server: ContractServer, clock: Clock) -> None:
    device = phone(server, clock)
    device.sign_in("alice")
    device.launch()
    bare = chat_alert("m1")
    del bare["threadId"], bare["messageId"], bare["aps"]["thread-id"]  # the extreme generic alert
    server.send(device.alert_token, bare)
    server.send(device.alert_token, {"aps": {"content-available": 1}, "deleted": {}})
    device.sync()
    assert [(b.thread_id, b.message_id) for b in device.banners] == [(None, None)]


def test_opening_a_thread_clears_its_banners_only(server: ContractServer, clock: Clock) -> None:
    device = phone(server, clock)
    device.sign_in("alice")
    device.launch()
    server.send(device.alert_token, chat_alert("m1"))
    server.send(device.alert_token, chat_alert("m2", thread="19:other@thread.v2"))
    device.sync()
    assert device.open_thread("19:thread@thread.v2") == 1
    assert [b.message_id for b in device.banners] == ["m2"]


def test_an_app_without_calls_registers_no_pushkit_token(
    server: ContractServer, clock: Clock
) -> None:
    device = phone(server, clock, calls=False)
    device.sign_in("alice")
    device.launch()
    assert ([p["kind"] for p in server.puts], sorted(device.registrations)) == (
        ["alert"],
        ["alert"],
    )


def test_a_force_quit_app_gets_no_background_push(server: ContractServer, clock: Clock) -> None:
    device = phone(server, clock)
    device.sign_in("alice")
    device.launch()
    device.force_quit()
    puts = len(server.puts)
    server.send(device.alert_token, {"aps": {"content-available": 1}})
    device.sync()
    assert (len(server.puts), device.events[-1].what) == (puts, Happened.NOT_DELIVERED)


def voip_push(device: ReferenceDevice, payload: dict[str, Any], seq: int) -> Push:
    return Push(seq, device.voip_token, "voip", "app.voip", "10", None, None, payload)


def test_an_unreadable_voip_push_is_reported_as_a_placeholder_call_and_ended(
    server: ContractServer, clock: Clock
) -> None:
    device = phone(server, clock)
    device.handle(voip_push(device, {"aps": {}, "data": {"eventId": 107}}, 1))
    (call,) = device.calls
    assert (call.placeholder, call.phase, call.end_reason) == (
        True,
        CallPhase.ENDED,
        EndReason.FAILED,
    )
    assert device.callkit.reports == 1


def test_a_redelivered_call_is_reported_again_but_rings_once(
    server: ContractServer, clock: Clock
) -> None:
    device = phone(server, clock)
    device.handle(voip_push(device, voip(), 1))
    device.handle(voip_push(device, voip(), 2))
    assert (device.callkit.reports, len(device.calls)) == (2, 1)


def test_a_call_that_ended_cannot_be_answered(server: ContractServer, clock: Clock) -> None:
    device = phone(server, clock)
    device.handle(voip_push(device, voip(), 1))
    device.end_call(CALL_ID)
    assert device.answer(CALL_ID) is False


def test_provider_reset_ends_every_call(server: ContractServer, clock: Clock) -> None:
    device = phone(server, clock)
    device.handle(voip_push(device, voip(), 1))
    device.callkit.reset()
    assert [c.phase for c in device.calls] == [CallPhase.ENDED]


def test_sign_out_deletes_both_registrations_keys_and_banners(
    server: ContractServer, clock: Clock
) -> None:
    device = phone(server, clock)
    device.sign_in("alice")
    device.launch()
    server.send(device.alert_token, alert(encrypt_fields(KEY, fields())))
    device.sync()
    device.sign_out()
    assert (server.owners, device.keys.exists, device.banners) == ({}, False, [])


def test_a_saved_phone_is_restored_whole(server: ContractServer, clock: Clock) -> None:
    device = phone(server, clock)
    device.sign_in("alice")
    device.launch()
    device.handle(voip_push(device, voip(), 1))
    again = phone(server, clock)
    again.restore(json.loads(json.dumps(device.to_state())))
    assert again.to_state() == device.to_state()


def test_the_phone_signs_in_at_the_token_url_the_run_prints(
    server: ContractServer, clock: Clock
) -> None:
    # The summary's token_url, not the issuer: the issuer stays put when the port moves.
    asked: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "idp":
            asked.append(str(request.url))
            return httpx.Response(200, json={"access_token": "tok-alice", "expires_in": 3600})
        return server.handle(request)

    device, _ = contract_phone(server, clock, token_url="http://idp:4000/token", handler=handle)
    assert (device.sign_in("alice"), asked) == ("8:acs:alice", ["http://idp:4000/token?sub=alice"])
