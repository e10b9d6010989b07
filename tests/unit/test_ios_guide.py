"""docs/ios.md: whole Swift files, only SDK symbols the guide cites, none of the old mistakes.

There is no iOS toolchain here, so the Swift is not compiled. What is checked instead:

- every Swift block is a whole file (``// File: Name.swift``) with balanced brackets, or a
  usage snippet of a few lines; the files the guide lists are all there;
- every type the files use is declared in one of them, or is an Apple or ACS SDK symbol listed
  below with where it was checked, and each ACS SDK symbol and member is also named in the
  guide's prose (where its version and file are cited);
- the mistakes of the earlier guide are absent (a weak key storage handed to ``ChatClient``,
  ``startPushNotifications``, continuations around SDK callbacks, a VoIP class without
  ``providerDidReset`` or an answer action, ``fromDictionary`` before the keys are checked);
- the guide's timing constants are the reference device's; README and guide agree on what is
  unverified.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from devtools.reference_device.device import PROVISIONAL_KEY_LIFETIME, RENEW_BEFORE

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
GUIDE = (REPO / "docs" / "ios.md").read_text(encoding="utf-8")
README = (REPO / "README.md").read_text(encoding="utf-8")
FILES = {
    "PushConfig.swift", "PushRelayAPI.swift", "PreviewKeyManager.swift", "AppDelegate.swift",
    "BackgroundRenewal.swift", "NotificationService.swift", "VoipCalls.swift",
    "PushRelayInbox.swift", "PushRelaySettings.swift",  # section 13: badge, reads, settings
}  # fmt: skip

# ACS SDK types the files may use, and where each was checked (the guide's prose names them).
ACS_TYPES = {
    "AppGroupPushNotificationKeyStorage": "Chat 1.3.x AppGroupPushNotificationKeyStorage.swift",
    "CommunicationTokenCredential": "Common CommunicationTokenCredential.swift",
    "CommunicationTokenRefreshOptions": "Common CommunicationTokenRefreshOptions.swift",
    "PushNotificationInfo": "AzureCommunicationCalling 2.15.0 header",
    "CallClient": "AzureCommunicationCalling 2.15.0 header",
    "CallAgent": "AzureCommunicationCalling 2.15.0 header",
    "CallAgentDelegate": "AzureCommunicationCalling 2.15.0 header",
    "CallDelegate": "AzureCommunicationCalling 2.15.0 header",
    "IncomingCall": "AzureCommunicationCalling 2.15.0 header",
    "IncomingCallDelegate": "AzureCommunicationCalling 2.15.0 header",
    "PropertyChangedEventArgs": "AzureCommunicationCalling 2.15.0 header",
    "Call": "AzureCommunicationCalling 2.15.0 header",
    "AcceptCallOptions": "AzureCommunicationCalling 2.15.0 header",
    "IncomingAudioOptions": "AzureCommunicationCalling 2.15.0 header",
    "OutgoingAudioOptions": "AzureCommunicationCalling 2.15.0 header",
    "LocalOutgoingAudioStream": "AzureCommunicationCalling 2.15.0 header",
    "RemoteIncomingAudioStream": "AzureCommunicationCalling 2.15.0 header",
    "ChatThreadClient": "Chat 1.3.x ChatThreadClient.swift",
}  # fmt: skip
# ACS SDK members the files call.
ACS_MEMBERS = [
    "onPersistKey", "decryptPayload", "chatMessageReceivedEvent", "senderDisplayName",
    "fromDictionary", "handlePush", "createCallAgent", "didRecieveIncomingCall", "didEnd",
    "accept", "reject", "hangUp", "startAudio", "muteOutgoingAudio", "unmuteOutgoingAudio",
    "muteIncomingAudio", "unmuteIncomingAudio", "incomingAudioOptions", "outgoingAudioOptions",
    "didChangeState", "disconnected", "sendReadReceipt",
]  # fmt: skip
# Swift, Foundation, UIKit, UserNotifications, BackgroundTasks, CallKit, PushKit, AVFoundation.
APPLE = frozenset(
    (
        "Any", "AnyHashable", "AnyObject", "Bool", "Data", "Date", "Decodable", "DispatchQueue",
        "Error", "Int", "Set", "Self", "String", "Task", "TimeInterval", "UInt8", "UUID", "URL",
        "URLRequest", "URLResponse", "URLSession", "HTTPURLResponse", "NSNull", "NSObject",
        "JSONDecoder", "JSONSerialization", "ISO8601DateFormatter", "Bundle", "UserDefaults",
        "Notification", "NotificationCenter", "SecRandomCopyBytes", "UIApplication",
        "UIApplicationDelegate", "UIResponder", "UIBackgroundFetchResult",
        "UNUserNotificationCenter",
        "UNUserNotificationCenterDelegate", "UNNotification", "UNNotificationContent",
        "UNNotificationPresentationOptions", "UNNotificationResponse", "UNNotificationRequest",
        "UNNotificationServiceExtension", "UNMutableNotificationContent", "BGTaskScheduler",
        "BGAppRefreshTaskRequest", "CXProvider", "CXProviderConfiguration", "CXProviderDelegate",
        "CXCallUpdate", "CXHandle", "CXAnswerCallAction", "CXEndCallAction", "PKPushRegistry",
        "PKPushRegistryDelegate", "PKPushCredentials", "PKPushPayload", "PKPushType",
        "AVAudioSession", "CharacterSet", "Codable", "MainActor", "TimeZone",
        "DEBUG", "LaunchOptionsKey", "Name", "UTF8", "Void",
    )
)  # fmt: skip


def swift_blocks() -> list[str]:
    return re.findall(r"```swift\n(.*?)```", GUIDE, re.S)


def files() -> dict[str, str]:
    found: dict[str, str] = {}
    for block in swift_blocks():
        match = re.match(r"// File: (\w+\.swift) \(", block)
        if match:
            assert match.group(1) not in found, f"{match.group(1)} twice"
            found[match.group(1)] = block
    return found


def code_only(source: str) -> str:
    """Swift without comments and string literals (enough for these checks)."""
    source = re.sub(r'#"(?:[^"\\]|\\.)*"#', '""', source)
    source = re.sub(r'"(?:[^"\\\n]|\\.)*"', '""', source)
    return re.sub(r"//[^\n]*", "", source)


def prose() -> str:
    return re.sub(r"```.*?```", "", GUIDE, flags=re.S)


def test_the_guide_has_its_files_and_only_short_snippets_besides() -> None:
    assert set(files()) == FILES
    snippets = [b for b in swift_blocks() if not b.startswith("// File: ")]
    assert all(b.startswith("// In your ") and b.count("\n") <= 6 for b in snippets), snippets


@pytest.mark.parametrize("name", sorted(FILES))
def test_each_file_has_balanced_brackets(name: str) -> None:
    code = code_only(files()[name])
    depth = {"(": 0, "[": 0, "{": 0}
    closing = {")": "(", "]": "[", "}": "{"}
    for char in code:
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            assert depth[closing[char]] >= 0, f"{name}: unexpected {char}"
    assert depth == {"(": 0, "[": 0, "{": 0}, name


def declared_types() -> set[str]:
    pattern = r"\b(?:class|struct|enum|protocol|actor)\s+([A-Z]\w*)"
    return {m for block in files().values() for m in re.findall(pattern, block)}


def test_every_type_used_is_declared_apple_or_a_cited_acs_symbol() -> None:
    used: set[str] = set()
    for block in files().values():
        lines = [ln for ln in code_only(block).splitlines() if not ln.startswith("import ")]
        used.update(re.findall(r"\b[A-Z]\w*", "\n".join(lines)))
    unknown = used - declared_types() - APPLE - set(ACS_TYPES)
    assert sorted(unknown) == []


def test_each_acs_symbol_the_files_use_is_named_in_the_prose() -> None:
    code = "\n".join(code_only(b) for b in files().values())
    text = prose()
    used_types = [t for t in ACS_TYPES if re.search(rf"\b{t}\b", code)]
    used_members = [m for m in ACS_MEMBERS if re.search(rf"\b{m}\b", code)]
    assert len(used_members) == len(ACS_MEMBERS), set(ACS_MEMBERS) - set(used_members)
    missing = [s for s in used_types + used_members if not re.search(rf"\b{s}\b", text)]
    assert missing == []


def test_the_sdk_versions_the_guide_relies_on_are_stated() -> None:
    assert ("1.3.0 to 1.3.7" in GUIDE, "2.15.0" in GUIDE) == (True, True)


def test_no_key_storage_is_handed_to_a_chat_client_and_no_sdk_registration_is_made() -> None:
    code = "\n".join(code_only(b) for b in files().values())
    for banned in ("pushNotificationKeyStorage", "startPushNotifications", "stopPushNotifications",
                   "withCheckedThrowingContinuation", "withCheckedContinuation",
                   "registerPushNotifications", "ChatClient"):  # fmt: skip
        assert banned not in code, banned


def test_the_key_is_self_generated_stored_and_uploaded() -> None:
    manager = code_only(files()["PreviewKeyManager.swift"])
    assert "SecRandomCopyBytes" in manager and "count: 64" in manager
    store = manager.index("onPersistKey(key, expiryTime: Date(timeIntervalSinceNow")
    upload = manager.index(".upload(key)")
    assert store < upload  # stored for the extension before pushrelay can use it


def test_a_relaunch_keeps_the_key_and_turning_previews_off_sends_null() -> None:
    api = files()["PushRelayAPI.swift"]
    manager = code_only(files()["PreviewKeyManager.swift"])
    assert 'body["key"] = NSNull()' in api
    assert "key: .keep" in manager and "key: .remove" in manager


def test_the_extension_keeps_the_fallback_when_it_cannot_decrypt_or_the_text_is_empty() -> None:
    extension = code_only(files()["NotificationService.swift"])
    assert "decryptPayload(notification:" in extension
    assert "deliver(request.content)" in extension
    assert "trimmingCharacters(in: .whitespacesAndNewlines).isEmpty" in extension
    assert "ChatClient" not in extension


def test_the_voip_class_has_every_required_delegate_method_and_the_answer_action() -> None:
    voip = code_only(files()["VoipCalls.swift"])
    for needed in (
        "func providerDidReset(_ provider: CXProvider)",
        "perform action: CXAnswerCallAction",
        "perform action: CXEndCallAction",
        "didUpdate pushCredentials: PKPushCredentials",
        "didReceiveIncomingPushWith payload: PKPushPayload",
    ):
        assert needed in voip, needed


def test_every_voip_push_is_reported_and_the_keys_are_checked_before_from_dictionary() -> None:
    voip = code_only(files()["VoipCalls.swift"])
    handler = voip[voip.index("didReceiveIncomingPushWith") : voip.index("private func handOver")]
    assert handler.count("reportNewIncomingCall") == 2  # the call, or a placeholder
    assert handler.index("IncomingCallPush(") < handler.index("fromDictionary(")
    placeholder = handler[: handler.index("let update = CXCallUpdate()\n        update.remote")]
    assert "reportCall(with: placeholder" in placeholder


def test_background_renewal_needs_no_chat_client() -> None:
    renewal = code_only(files()["BackgroundRenewal.swift"])
    delegate = code_only(files()["AppDelegate.swift"])
    assert "BGAppRefreshTaskRequest" in renewal and "renewIfNeeded" in renewal
    assert "BackgroundRenewal.register()" in delegate and "renewKey()" in delegate


def test_the_guides_timing_is_the_reference_devices() -> None:
    config = files()["PushConfig.swift"]
    renew = re.search(r"renewBefore: TimeInterval = (\d+) \* 60", config)
    provisional = re.search(r"provisionalLifetime: TimeInterval = (\d+) \* 60", config)
    assert renew and provisional
    assert timedelta(minutes=int(renew.group(1))) == RENEW_BEFORE
    assert timedelta(minutes=int(provisional.group(1))) == PROVISIONAL_KEY_LIFETIME


def test_the_token_move_section_has_the_title_issue_16_fills_in() -> None:
    assert "\n## Moving a device token between users (proof of possession)\n" in GUIDE


def test_readme_marks_what_the_guide_marks_unverified() -> None:
    for line in README.splitlines():
        if "fromDictionary" in line:
            assert re.search(r"unverified|not verified", line, re.I), line
    assert "docs/ios.md" in README


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_within_the_guide_and_from_other_docs_finds_its_heading() -> None:
    anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", prose(), re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", GUIDE)
    for doc in (REPO / "docs").glob("*.md"):
        links += re.findall(r"\]\(ios\.md#([^)]+)\)", doc.read_text(encoding="utf-8"))
    assert sorted({link for link in links if link not in anchors}) == []


def test_a_held_pushkit_token_is_registered_again_once_the_alert_tokens_proof_completes() -> None:
    manager = code_only(files()["PreviewKeyManager.swift"])
    voip = manager[manager.index("func voipTokenReceived") : manager.index("func renewIfNeeded")]
    assert "status == 409" in voip and "heldVoipToken = token" in voip
    proof = manager[manager.index("func proofArrived") : manager.index("func signOut")]
    settled, again = proof.index("settle(answer"), proof.index("await voipTokenReceived(voip)")
    assert settled < again and "kind == .alert" in proof


def test_every_background_wake_renews_and_clears_the_banners_of_deleted_messages() -> None:
    delegate = code_only(files()["AppDelegate.swift"])
    handler = delegate[
        delegate.index("didReceiveRemoteNotification") : delegate.index("static func withdraw")
    ]
    # renewKey is not an alternative to the withdraw branch, and the clearing follows any wake
    # (after the "}" that closes the branch of every push but a token proof).
    deleted, renew = handler.index('userInfo[""] as? [String: Any]'), handler.index("renewKey()")
    clear = handler.index("clearDeletedBanners()")
    assert deleted < renew < clear and "} else if let deleted" not in handler
    assert "}" in handler[renew:clear]
    assert "protocol DeletedMessageLookup" in delegate and "func threadOpened(" in delegate


def test_a_withdraw_without_both_ids_removes_nothing() -> None:
    delegate = code_only(files()["AppDelegate.swift"])
    withdraw = delegate[delegate.index("static func withdraw") :]
    assert withdraw.index("guard let threadId, let messageId else { return }") < withdraw.index(
        "deliveredNotifications()"
    )


def test_the_guide_states_what_the_server_does_with_keys_and_large_messages() -> None:
    text = " ".join(prose().split())
    for fact in (
        "absent `key`** keeps the stored key and its expiry",
        "`keyExpiresAt`** is in the answer only when the `PUT` carried a key",
        "`📎 a.pdf, b.png`",
        '`senderDisplayName` ends with "…"',
        "**do not rely on push metadata**",
        "**generic alert alone**: no `data`",
        "**not pushed**",
        "**A delete may get no withdraw push.**",
    ):
        assert fact in text, fact
