"""APNs payloads for chat events (and the IncomingCall VoIP payload), always within Apple's limits.

Received and edited messages get an alert: ``thread-id`` = threadId, sound, category and the
stable ids (threadId, messageId, senderId, kind) as custom keys; the caller sends it with
``apns-collapse-id`` = messageId so an edit replaces the banner. What the alert shows depends on
the deployment's preview mode:

- ``encrypted`` (default): with a live device key, the ACS-compatible encrypted preview in
  ``data`` (see :mod:`shared.domain.preview_crypto`), ``mutable-content: 1`` so the notification
  service extension can decrypt it, and the generic alert as the visible fallback. Without a live
  key, the generic alert alone: no plaintext leaves.
- ``plaintext``: title = sender display name (generic title if absent), body = the message text.
- ``none``: the generic alert.

Deleted messages get a background push naming the message so the app can withdraw it.

A message with no text after HTML is stripped shows the files its metadata names, or the
generic body (:func:`preview_text`): never a blank banner.

Payloads never exceed the limit, and a chat message always gets one: what does not fit is given
up in a fixed order (:func:`shrink_preview`): the metadata (``acsChatMessageMetadata`` becomes
``"null"``, which the SDK accepts), then the text, then the sender's display name, each cut on a
character boundary that never splits a combining sequence, emoji ZWJ sequence, flag or Hangul
syllable, ending with "…". When even that does not fit (ids of thousands of characters), the
generic alert goes instead, without the custom ids if need be. JSON is never cut. What was given
up is the payload's ``note``, which the delivery log keeps.

Raises :class:`PayloadError` (an :class:`~shared.errors.InputError`) only when the deployment's
generic title and body alone exceed the limit, when a withdraw or call payload cannot fit, or
when an IncomingCall's context cannot be read.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import logging
import os
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from shared.apns.errors import NotificationError
from shared.apns.notification import MAX_COLLAPSE_ID_BYTES, Notification, Priority, PushType
from shared.apns.payload import (
    MAX_VOIP_PAYLOAD_BYTES,
    alert_payload,
    background_payload,
    encode_payload,
    max_payload_bytes,
)
from shared.domain.devices import Device
from shared.domain.events import ChatMessageEvent, IncomingCallEvent, MessageEventKind
from shared.domain.preview_crypto import (
    KEY_BYTES,
    PreviewFields,
    RandomBytes,
    arrival_time_field,
    blob_length,
    data_part,
    encrypt_fields,
    metadata_field,
)
from shared.errors import InputError
from shared.settings import PreviewMode, Settings

logger = logging.getLogger(__name__)

ELLIPSIS: Final = "…"
INCOMING_CALL_EVENT_ID: Final = 107  # the ACS Calling SDK's push event id for an incoming call


class PayloadError(InputError):
    """No payload within the limit can be built for this event (or its call context is bad)."""


class PreviewShown(enum.StrEnum):
    """What a payload reveals of the message (recorded in the delivery log)."""

    ENCRYPTED = "encrypted"
    PLAINTEXT = "plaintext"
    GENERIC = "generic"
    NONE = "none"  # background and VoIP payloads: no alert text


@dataclass(frozen=True, slots=True)
class ChatPayloadOptions:
    """The deployment's choices for chat alerts."""

    preview_mode: PreviewMode = PreviewMode.ENCRYPTED
    generic_title: str = "New message"
    generic_body: str = "You have a new message"
    sound: str = "default"  # "" for silent alerts
    category: str = ""  # "" for none
    # Per recipient (shared.usecases.unread): the unread count, and "passive" during quiet hours.
    badge: int | None = None
    interruption_level: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ChatPayloadOptions:
        """The options the settings name (PREVIEW_MODE, NOTIFICATION_*)."""
        return cls(
            preview_mode=settings.preview_mode,
            generic_title=settings.generic_title,
            generic_body=settings.generic_body,
            sound=settings.notification_sound,
            category=settings.notification_category,
        )


@dataclass(frozen=True, slots=True)
class ChatPayload:
    """A payload ready to send: the dict, its encoded bytes and the headers that go with it."""

    payload: Mapping[str, object]
    encoded: bytes
    push_type: PushType
    priority: Priority
    collapse_id: str | None
    preview: PreviewShown
    shortened: bool = False  # the text or the display name was cut to fit
    note: str = ""  # what the delivery log says of it: what was given up to fit, or substituted


def build_chat_payload(
    event: ChatMessageEvent,
    options: ChatPayloadOptions,
    *,
    preview_key: bytes | None = None,
    random_bytes: RandomBytes = os.urandom,
) -> ChatPayload:
    """The payload for one device: an alert for received/edited, a background push for deleted.

    ``preview_key`` is the device's live 64-byte key, or None when it has none (or it expired).
    Raises :class:`PayloadError` when nothing fits (a withdraw whose ids alone exceed the limit,
    or generic alert settings over it) and
    :class:`~shared.domain.preview_crypto.PreviewKeyError` for a key that is not 64 bytes.
    """
    if event.kind is MessageEventKind.DELETED:
        return build_deleted_payload(event)
    if options.preview_mode is PreviewMode.PLAINTEXT:
        return _plaintext_alert(event, options)
    if options.preview_mode is PreviewMode.ENCRYPTED and preview_key is not None:
        return _encrypted_alert(event, options, preview_key, random_bytes)
    payload, dropped = generic_alert_within_limit(event, options)
    return _finish(payload, event, PreviewShown.GENERIC, bool(dropped), dropped)


def build_deleted_payload(event: ChatMessageEvent) -> ChatPayload:
    """``{"aps": {"content-available": 1}, "deleted": {threadId, messageId}}``, priority 5."""
    payload = background_payload(
        {"deleted": {"threadId": event.thread_id, "messageId": event.message_id}}
    )
    encoded = encode_payload(payload)
    _require_fits(encoded, PushType.BACKGROUND, event.event_id)
    return ChatPayload(
        payload=payload,
        encoded=encoded,
        push_type=PushType.BACKGROUND,
        priority=Priority.CONSIDERATE,
        collapse_id=None,
        preview=PreviewShown.NONE,
    )


def preview_fields(event: ChatMessageEvent, body: str) -> PreviewFields:
    """The 13 encrypted fields for ``event`` with ``body`` as messageBody (all strings)."""
    return PreviewFields(
        senderId=event.sender_id,
        recipientId=event.recipient_id,
        transactionId=event.transaction_id,
        groupId=event.thread_id,
        messageId=event.message_id,
        # The SDK maps this onto ChatMessageType, whose values are lowercase ("text", "html").
        messageType=(event.message_type or "text").lower(),
        messageBody=body,
        senderDisplayName=event.sender_display_name,
        clientMessageId="",
        originalArrivalTime=arrival_time_field(event.compose_time or event.event_time),
        priority="Normal",
        version=str(event.version),
        acsChatMessageMetadata=metadata_field(event.metadata),
    )


def chat_notification(
    event: ChatMessageEvent,
    device: Device,
    settings: Settings,
    now: datetime,
    *,
    random_bytes: RandomBytes = os.urandom,
    options: ChatPayloadOptions | None = None,
) -> Notification:
    """The notification for one device (:func:`chat_push` without the payload's details)."""
    return chat_push(event, device, settings, now, random_bytes=random_bytes, options=options)[0]


def chat_push(
    event: ChatMessageEvent,
    device: Device,
    settings: Settings,
    now: datetime,
    *,
    random_bytes: RandomBytes = os.urandom,
    options: ChatPayloadOptions | None = None,
) -> tuple[Notification, ChatPayload]:
    """The notification for one device (its token and topic, the payload and its headers), and
    the payload it carries (what it shows, what was given up to fit).

    Uses the device's key only while it is live at ``now``; a stored key that is not 64 bytes is
    treated as absent (logged). ``options`` default to the settings' (the chat push passes the
    recipient's badge and quiet hours). Raises :class:`~shared.apns.errors.NotificationError`
    (field ``payload``) when no payload fits (only generic alert settings over the limit).
    """
    key = device.live_key(now)
    if key is not None and len(key) != KEY_BYTES:
        logger.warning(
            "device %s has a preview key of %d bytes; sending the generic alert (event %s)",
            device.short_token,
            len(key),
            event.event_id,
        )
        key = None
    options = options or ChatPayloadOptions.from_settings(settings)
    try:
        built = build_chat_payload(event, options, preview_key=key, random_bytes=random_bytes)
    except PayloadError as exc:
        raise NotificationError("payload", str(exc)) from exc
    return _notification(built, device), built


def withdraw_notification(event: ChatMessageEvent, device: Device) -> Notification:
    """The background push that tells the device to withdraw a deleted message.

    Raises :class:`~shared.apns.errors.NotificationError` (field ``payload``) if it cannot fit.
    """
    try:
        built = build_deleted_payload(event)
    except PayloadError as exc:
        raise NotificationError("payload", str(exc)) from exc
    return _notification(built, device)


def _notification(built: ChatPayload, device: Device) -> Notification:
    return Notification(
        device_token=device.token,
        topic=device.topic,
        push_type=built.push_type,
        payload=built.encoded,
        priority=built.priority,
        collapse_id=built.collapse_id,
    )


# --- alerts ----------------------------------------------------------------------------------


def _custom(event: ChatMessageEvent) -> dict[str, object]:
    return {
        "threadId": event.thread_id,
        "messageId": event.message_id,
        "senderId": event.sender_id,
        "kind": event.kind.value,
    }


def _alert(
    event: ChatMessageEvent,
    options: ChatPayloadOptions,
    *,
    title: str,
    body: str,
    mutable: bool = False,
    extra: Mapping[str, object] | None = None,
) -> dict[str, object]:
    return alert_payload(
        title=title,
        body=body,
        sound=options.sound or None,
        thread_id=event.thread_id,
        category=options.category or None,
        mutable_content=mutable,
        badge=options.badge,
        interruption_level=options.interruption_level,
        custom={**_custom(event), **(extra or {})},
    )


def _generic_alert(event: ChatMessageEvent, options: ChatPayloadOptions) -> dict[str, object]:
    return _alert(event, options, title=options.generic_title, body=options.generic_body)


def _plaintext_alert(event: ChatMessageEvent, options: ChatPayloadOptions) -> ChatPayload:
    limit = max_payload_bytes(PushType.ALERT)
    text, note = preview_text(event, options)

    def fits(name: str, body: str, _metadata: str) -> bool:
        title = name or options.generic_title
        return len(encode_payload(_alert(event, options, title=title, body=body))) <= limit

    chosen = shrink_preview(Preview(event.sender_display_name, text, NO_METADATA), fits)
    if chosen is None:
        return _generic_fallback(event, options, "the plaintext preview did not fit")
    shown, how = chosen
    title = shown.name or options.generic_title
    payload = _alert(event, options, title=title, body=shown.text)
    notes = ", ".join(n for n in (note, how) if n)
    shortened = (shown.name, shown.text) != (event.sender_display_name, text)
    return _finish(payload, event, PreviewShown.PLAINTEXT, shortened, notes)


def _encrypted_alert(
    event: ChatMessageEvent,
    options: ChatPayloadOptions,
    key: bytes,
    random_bytes: RandomBytes,
) -> ChatPayload:
    limit = max_payload_bytes(PushType.ALERT)
    # The blob's length depends only on the plaintext's length, so measure with a stand-in blob
    # of that length and encrypt once, at the end.
    frame = len(encode_payload(_encrypted_frame(event, options, "")))
    text, note = preview_text(event, options)

    def fields(preview: Preview) -> PreviewFields:
        return replace(
            preview_fields(event, preview.text),
            senderDisplayName=preview.name,
            acsChatMessageMetadata=preview.metadata,
        )

    def fits(name: str, body: str, metadata: str) -> bool:
        plaintext = fields(Preview(name, body, metadata)).to_json_bytes()
        return frame + blob_length(len(plaintext)) <= limit

    full = Preview(event.sender_display_name, text, metadata_field(event.metadata))
    chosen = shrink_preview(full, fits)
    if chosen is None:
        return _generic_fallback(event, options, "the encrypted preview did not fit")
    shown, how = chosen
    blob = encrypt_fields(key, fields(shown), random_bytes=random_bytes)
    payload = _encrypted_frame(event, options, blob)
    notes = ", ".join(n for n in (note, how) if n)
    shortened = (shown.name, shown.text) != (full.name, full.text)
    return _finish(payload, event, PreviewShown.ENCRYPTED, shortened, notes)


# --- what a preview shows, and how it shrinks -------------------------------------------------

NO_METADATA: Final = "null"  # acsChatMessageMetadata for "none": the SDK accepts exactly "null"
ATTACHMENT_MARK: Final = "\U0001f4ce"  # 📎, before the names of the files a message carries
FILE_SHARING_METADATA: Final = "fileSharingMetadata"


@dataclass(frozen=True, slots=True)
class Preview:
    """What an alert reveals: the sender's display name, the text, and the metadata (the
    encrypted preview's ``acsChatMessageMetadata``; ``"null"`` in plaintext mode)."""

    name: str
    text: str
    metadata: str


def attached_file_names(metadata: Mapping[str, str]) -> list[str]:
    """The names of the files a message's metadata lists, in order ([] when none or unreadable).

    The ACS UI library (Azure/communication-ui-library, the chat composite's file sharing) sends
    ``metadata["fileSharingMetadata"]`` = a JSON array of ``{"id", "name", "extension", "url",
    "attachmentType"}`` objects; anything else is not a file list.
    """
    raw = metadata.get(FILE_SHARING_METADATA)
    if not raw:
        return []
    try:
        files = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(files, list):
        return []
    names = (f.get("name") for f in files if isinstance(f, dict))
    return [" ".join(n.split()) for n in names if isinstance(n, str) and n.strip()]


def preview_text(event: ChatMessageEvent, options: ChatPayloadOptions) -> tuple[str, str]:
    """The text an alert shows for ``event``, and a note when it is not the message's own.

    A message with no text after HTML is stripped (an image-only HTML message, a null body)
    shows the files its metadata names (``📎 a.pdf, b.png``) or else the generic body, never a
    blank banner.
    """
    if event.body.strip():
        return event.body, ""
    names = attached_file_names(event.metadata)
    if names:
        return f"{ATTACHMENT_MARK} " + ", ".join(names), "empty text: attachment line"
    return options.generic_body, "empty text: generic body"


FitsPreview = Callable[[str, str, str], bool]
"""``fits(name, text, metadata)``: whether a payload showing these is within the limit."""


def shrink_preview(full: Preview, fits: FitsPreview) -> tuple[Preview, str] | None:
    """The fullest preview that fits, and what was given up (``""`` when nothing was).

    Order: the metadata becomes ``"null"``, then the text is shortened, then the display name
    (text "…"); each cut on a character boundary (:func:`shorten_to_fit`). ``None`` when even
    that does not fit: the caller sends the generic alert. ``fits`` must be monotonic in each
    argument's length (payload size is).
    """
    name, text, metadata = full.name, full.text, full.metadata
    if fits(name, text, metadata):
        return full, ""
    given_up: list[str] = []
    if metadata != NO_METADATA:
        metadata = NO_METADATA
        given_up.append("metadata dropped")
        if fits(name, text, metadata):
            return Preview(name, text, metadata), ", ".join(given_up)
    short_text, _ = shorten_to_fit(text, lambda t: fits(name, t, metadata))
    if short_text is not None:
        return Preview(name, short_text, metadata), ", ".join([*given_up, "text shortened"])
    short_name, _ = shorten_to_fit(name, lambda n: fits(n, ELLIPSIS, metadata))
    if short_name is None:
        return None
    given_up.append("text and display name shortened")
    return Preview(short_name, ELLIPSIS, metadata), ", ".join(given_up)


def _generic_fallback(
    event: ChatMessageEvent, options: ChatPayloadOptions, why: str
) -> ChatPayload:
    """The generic alert, for a message whose preview cannot fit (logged: the ids or the name
    are huge). Drops the custom ids, then ``thread-id``, when even they do not fit."""
    logger.warning("%s, sending the generic alert (event %s)", why, event.event_id)
    payload, dropped = generic_alert_within_limit(event, options)
    note = f"generic alert: {why}" + (f", {dropped}" if dropped else "")
    return _finish(payload, event, PreviewShown.GENERIC, True, note)


def generic_alert_within_limit(
    event: ChatMessageEvent, options: ChatPayloadOptions
) -> tuple[dict[str, object], str]:
    """The generic alert with as many of the event's ids as fit, and what was dropped.

    Raises :class:`PayloadError` only when the configured generic title and body alone exceed
    the limit.
    """
    limit = max_payload_bytes(PushType.ALERT)
    full = _generic_alert(event, options)
    if len(encode_payload(full)) <= limit:
        return full, ""
    for thread_id, dropped in (
        (event.thread_id, "ids dropped"),
        (None, "ids and thread-id dropped"),
    ):
        bare = alert_payload(
            title=options.generic_title,
            body=options.generic_body,
            sound=options.sound or None,
            thread_id=thread_id,
            category=options.category or None,
            custom={"kind": event.kind.value},
        )
        if len(encode_payload(bare)) <= limit:
            return bare, dropped
    raise PayloadError(f"event {event.event_id}: the generic alert alone exceeds {limit} bytes")


def _encrypted_frame(
    event: ChatMessageEvent, options: ChatPayloadOptions, blob: str
) -> dict[str, object]:
    return _alert(
        event,
        options,
        title=options.generic_title,
        body=options.generic_body,
        mutable=True,
        extra={"data": data_part(blob)},
    )


def _finish(
    payload: dict[str, object],
    event: ChatMessageEvent,
    preview: PreviewShown,
    shortened: bool,
    note: str = "",
) -> ChatPayload:
    encoded = encode_payload(payload)
    _require_fits(encoded, PushType.ALERT, event.event_id)
    collapse = event.message_id
    return ChatPayload(
        payload=payload,
        encoded=encoded,
        push_type=PushType.ALERT,
        priority=Priority.IMMEDIATE,
        collapse_id=collapse if len(collapse.encode()) <= MAX_COLLAPSE_ID_BYTES else None,
        preview=preview,
        shortened=shortened,
        note=note,
    )


def _require_fits(encoded: bytes, push_type: PushType, event_id: str) -> None:
    limit = max_payload_bytes(push_type)
    if len(encoded) > limit:
        raise PayloadError(f"event {event_id}: {push_type} payload of {len(encoded)} > {limit}")


# --- shortening ------------------------------------------------------------------------------


def shorten_to_fit(text: str, fits: Callable[[str], bool]) -> tuple[str | None, bool]:
    """``(text, False)`` if it fits, else ``(longest fitting prefix + "…", True)``.

    The prefix ends on a character boundary (:func:`is_boundary`) and trailing whitespace is
    dropped before the ellipsis. ``fits`` must be monotonic in the text's length (payload size
    is). Returns ``(None, True)`` when not even "…" fits.
    """
    if fits(text):
        return text, False
    # Every character encodes to at least one byte, so no longer prefix can fit any APNs limit.
    low, high, best = 0, min(len(text), MAX_VOIP_PAYLOAD_BYTES), None
    while low <= high:
        mid = (low + high) // 2
        cut = _boundary_at_or_before(text, mid)
        candidate = text[:cut].rstrip() + ELLIPSIS
        if fits(candidate):
            best, low = candidate, mid + 1
        else:
            high = mid - 1
    return best, True


def _boundary_at_or_before(text: str, index: int) -> int:
    while not is_boundary(text, index):
        index -= 1
    return index


_ZWJ: Final = "\u200d"


def _regional_indicator(ch: str) -> bool:
    return "\U0001f1e6" <= ch <= "\U0001f1ff"


def _extends(ch: str) -> bool:
    """Whether ``ch`` attaches to the character before it (so no cut may precede it)."""
    code = ord(ch)
    return (
        unicodedata.category(ch) in ("Mn", "Me", "Mc")  # combining and spacing marks
        or 0xFE00 <= code <= 0xFE0F  # variation selectors (emoji/text presentation)
        or 0xE0100 <= code <= 0xE01EF
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= code <= 0xE007F  # tag characters (subdivision flags)
        or 0x1160 <= code <= 0x11FF  # Hangul medial vowels and final consonants
        or 0xD7B0 <= code <= 0xD7FF
        or 0xD800 <= code <= 0xDFFF  # never split a (mis-decoded) surrogate pair
    )


def is_boundary(text: str, index: int) -> bool:
    """Whether cutting ``text`` at ``index`` keeps every user-perceived character whole.

    Conservative approximation of Unicode grapheme clusters (UAX #29) without tables: no cut
    before a combining mark, variation selector, skin-tone modifier, tag or Hangul jamo
    continuation; none next to a zero-width joiner; none inside a regional-indicator pair
    (a flag) or CR LF.

    Not ``regex``'s ``\\X``: the payload is shrunk by cutting at a byte budget, so the question is
    "may I cut here?" for a few indices, not a split of the whole text; ``\\X`` would walk every
    cluster of a 4 KB body per try and add a compiled dependency to the hot path, while a cut one
    cluster early costs nothing but a character of preview.
    """
    if index <= 0 or index >= len(text):
        return True
    before, after = text[index - 1], text[index]
    if before == "\r" and after == "\n":
        return False
    if _ZWJ in (before, after) or _extends(after):
        return False
    if _regional_indicator(before) and _regional_indicator(after):
        run = 0
        while index - 1 - run >= 0 and _regional_indicator(text[index - 1 - run]):
            run += 1
        return run % 2 == 0
    return True


# --- IncomingCall (VoIP) ---------------------------------------------------------------------

# The ACS Calling SDK's push dictionary as the public Event Grid calling sample builds it
# (Azure-Samples/azure-communication-services-calling-event-grid: Utilities.cs ConvertToPNInfo,
# Models RootPayloadBody): {"aps": {}, "data": {eventId, cp, callId, recipientId, callerId,
# displayName, videoCall}}, sent through a Notification Hub's direct send, which hands the body
# to APNs unchanged. The chat push's encrypted preview uses the same "data" wrapper.
VERIFIED_CALL_KEYS: Final = frozenset(
    {"eventId", "cp", "callId", "videoCall", "recipientId", "callerId", "displayName"}
)
# Ours, outside "data" so the SDK never sees it; for apps that want it (unverified: not needed).
UNVERIFIED_CALL_KEYS: Final = frozenset({"serverCallId"})


def call_context_cc(incoming_call_context: str) -> str:
    """The ``cc`` claim of incomingCallContext's middle (base64url JSON) segment.

    Raises :class:`PayloadError` when the context is not three dot-separated parts whose middle
    decodes to a JSON object with a non-empty string ``cc``.
    """
    parts = incoming_call_context.split(".")
    if len(parts) != 3:
        raise PayloadError("incomingCallContext is not a three-part token")
    segment = parts[1].replace("-", "+").replace("_", "/")
    try:
        claims = json.loads(base64.b64decode(segment + "=" * (-len(segment) % 4), validate=True))
    except (binascii.Error, ValueError):
        raise PayloadError("incomingCallContext's middle segment is not base64 JSON") from None
    cc = claims.get("cc") if isinstance(claims, dict) else None
    if not isinstance(cc, str) or not cc:
        raise PayloadError("incomingCallContext carries no cc claim")
    return cc


def build_call_payload(event: IncomingCallEvent) -> ChatPayload:
    """The VoIP (PushKit) payload for an incoming call, within 5120 bytes.

    ``{"aps": {}, "data": {<the SDK's keys>}, "serverCallId": ...}``. Raises
    :class:`PayloadError` when the call context is unreadable or the payload cannot fit.
    """
    limit = max_payload_bytes(PushType.VOIP)
    cc = call_context_cc(event.incoming_call_context)

    def payload(name: str) -> dict[str, object]:
        data = {
            "eventId": INCOMING_CALL_EVENT_ID,
            "cp": cc,
            "callId": event.correlation_id,
            "recipientId": event.to_id,
            "callerId": event.from_id,
            "displayName": name,
            "videoCall": "false",  # IncomingCall does not say; the sample sends "false" too
        }
        return {"aps": {}, "data": data, "serverCallId": event.server_call_id}

    name, shortened = shorten_to_fit(
        event.caller_display_name, lambda n: len(encode_payload(payload(n))) <= limit
    )
    if name is None:
        raise PayloadError(f"event {event.event_id}: call payload exceeds {limit} bytes")
    body = payload(name)
    return ChatPayload(
        payload=body,
        encoded=encode_payload(body),
        push_type=PushType.VOIP,
        priority=Priority.IMMEDIATE,
        collapse_id=None,
        preview=PreviewShown.NONE,
        shortened=shortened,
    )
