"""Request checks that need no state: method, path, token format, headers, payload.

Order follows Pushy's MockApnsServer with the gaps Apple documents filled in (push type vs topic
suffix, background priority and content, VoIP size limit, expiration, duplicate headers)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

DEVICE_PREFIX = "/3/device/"
TOKEN_RE = re.compile(r"^[0-9a-fA-F]{64,200}$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
EXPIRATION_RE = re.compile(r"^[0-9]{1,19}$")
MAX_PAYLOAD = 4096
MAX_VOIP_PAYLOAD = 5120

# Push type -> topic suffix it requires (Apple, "Sending notification requests to APNs").
TOPIC_SUFFIX: dict[str, str] = {
    "voip": ".voip",
    "complication": ".complication",
    "fileprovider": ".pushkit.fileprovider",
    "location": ".location-query",
    "liveactivity": ".push-type.liveactivity",
    "widgets": ".push-type.widgets",
    "controls": ".push-type.controls",
    "pushtotalk": ".voip-ptt",
}
PUSH_TYPES = frozenset({"alert", "background", "mdm", *TOPIC_SUFFIX})
PRIORITIES = frozenset({"10", "5", "1"})
BACKGROUND_FORBIDDEN = ("alert", "sound", "badge")


@dataclass(frozen=True)
class CheckedRequest:
    """What the stateless checks extracted (fields are None when absent or not reached)."""

    token: str | None
    topic: str | None
    push_type: str | None
    apns_id: str | None
    payload: Any
    reason: str | None


def base_topic(topic: str) -> str:
    """The bundle ID a topic belongs to (the topic without a push-type suffix)."""
    for suffix in TOPIC_SUFFIX.values():
        if topic.endswith(suffix):
            return topic[: -len(suffix)]
    return topic


def check_request(
    method: str, path: str, headers: list[tuple[str, str]], body: bytes, raw_size: int
) -> CheckedRequest:
    """Run every stateless check in order; ``reason`` is the first failure or None."""
    first: dict[str, str] = {}
    duplicated = False
    for name, value in headers:
        if name in first:
            duplicated = True
        else:
            first[name] = value
    token = _token_of(path)
    apns_id = first.get("apns-id")
    topic = first.get("apns-topic")
    push_type = first.get("apns-push-type")

    def done(reason: str | None, payload: Any = None) -> CheckedRequest:
        return CheckedRequest(token, topic, push_type, apns_id, payload, reason)

    if method != "POST":
        return done("MethodNotAllowed")
    if not path.startswith(DEVICE_PREFIX) and path.rstrip("/") != DEVICE_PREFIX.rstrip("/"):
        return done("BadPath")
    if not token:
        return done("MissingDeviceToken")
    if not TOKEN_RE.match(token) or len(token) % 2:
        return done("BadDeviceToken")
    if apns_id is not None and not UUID_RE.match(apns_id):
        return done("BadMessageId")
    reason = _check_headers(first, topic, push_type)
    if reason is None and duplicated:
        reason = "DuplicateHeaders"
    if reason is not None:
        return done(reason)
    return _check_payload(done, push_type, body, raw_size)


def _token_of(path: str) -> str | None:
    if not path.startswith(DEVICE_PREFIX):
        return None
    return path[len(DEVICE_PREFIX) :] or None


def _check_headers(first: dict[str, str], topic: str | None, push_type: str | None) -> str | None:
    if not topic:
        return "MissingTopic"
    if push_type not in PUSH_TYPES:
        return "InvalidPushType"
    reason = _check_topic_suffix(topic, push_type)
    if reason is not None:
        return reason
    priority = first.get("apns-priority", "10")
    if priority not in PRIORITIES:
        return "BadPriority"
    if push_type == "background" and priority == "10":
        # Apple: "Specifying 10 for a background notification is an error" (10 is the default).
        return "BadPriority"
    expiration = first.get("apns-expiration")
    if expiration is not None and not EXPIRATION_RE.match(expiration):
        return "BadExpirationDate"
    collapse_id = first.get("apns-collapse-id")
    if collapse_id is not None and len(collapse_id.encode()) > 64:
        return "BadCollapseId"
    return None


def _check_topic_suffix(topic: str, push_type: str) -> str | None:
    if push_type == "mdm":
        return None
    wanted = TOPIC_SUFFIX.get(push_type)
    carried = next((s for s in TOPIC_SUFFIX.values() if topic.endswith(s)), None)
    # The longest matching suffix wins (".voip" vs ".voip-ptt" cannot both end a topic).
    if wanted is None:
        return "InvalidPushType" if carried is not None else None
    if carried == wanted:
        return None
    if carried is not None:
        return "InvalidPushType"
    return "BadTopic"


def _check_payload(done: Any, push_type: str | None, body: bytes, raw_size: int) -> CheckedRequest:
    if raw_size == 0:
        return done("PayloadEmpty")
    limit = MAX_VOIP_PAYLOAD if push_type == "voip" else MAX_PAYLOAD
    if raw_size > limit:
        return done("PayloadTooLarge")
    try:
        payload = json.loads(body)
    except ValueError:
        # Apple documents no reason for malformed JSON; it answers 400 PayloadEmpty for it.
        return done("PayloadEmpty")
    if not isinstance(payload, dict):
        return done("PayloadEmpty", payload)
    aps = payload.get("aps")
    forbidden = isinstance(aps, dict) and any(key in aps for key in BACKGROUND_FORBIDDEN)
    if push_type == "background" and forbidden:
        # The push type must match the payload (Apple); a background push cannot alert.
        return done("InvalidPushType", payload)
    return done(None, payload)
