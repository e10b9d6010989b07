"""VoIP pushes and CallKit, as the VoIP class of docs/ios.md handles them.

Apple's rule (PushKit, iOS 13 and later): every VoIP push must be reported to CallKit
(``reportNewIncomingCall``) before the push handler returns, or iOS terminates the app and, after
repeated failures, stops delivering VoIP pushes to it. The ACS Calling SDK's
``PushNotificationInfo.fromDictionary`` cannot be asked whether a dictionary parses (the header
of AzureCommunicationCalling 2.15.0 declares it ``+(ACSPushNotificationInfo* _Nonnull)
fromDictionary:(NSDictionary* _Nonnull)``; older headers leave the result unannotated, imported
as an implicitly unwrapped value), so the guide checks the keys first (:func:`parse_voip_push`)
and reports a placeholder call, ended at once, for a push it cannot read.

This models the CallKit side only: nothing connects media (there is no Calling SDK here).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

# PushNotificationEventType of AzureCommunicationCalling (2.15.0 header): incoming call, incoming
# group call, incoming PSTN call. 110 (stop ringing) is not an incoming call.
INCOMING_CALL_EVENTS: Final = frozenset({107, 109, 111})


@dataclass(frozen=True, slots=True)
class VoipPush:
    """The keys of a VoIP push the guide reads before handing it to the Calling SDK."""

    event_id: int
    call_id: uuid.UUID
    caller_raw_id: str
    callee_raw_id: str
    display_name: str
    video: bool
    server_call_id: str | None


def parse_voip_push(payload: Mapping[str, Any]) -> VoipPush | None:
    """The guide's guard: the push's keys, or None when any is missing or malformed."""
    data = payload.get("data")
    if not isinstance(data, dict):
        return None
    event_id = data.get("eventId")
    if isinstance(event_id, bool) or event_id not in INCOMING_CALL_EVENTS:
        return None
    strings = {name: data.get(name) for name in ("callId", "callerId", "recipientId", "cp")}
    if not all(isinstance(v, str) and v for v in strings.values()):
        return None
    display_name, video = data.get("displayName", ""), data.get("videoCall")
    if not isinstance(display_name, str) or video not in ("true", "false"):
        return None
    try:
        call_id = uuid.UUID(str(strings["callId"]))
    except ValueError:
        return None
    server_call_id = payload.get("serverCallId")
    return VoipPush(
        event_id=event_id,
        call_id=call_id,
        caller_raw_id=str(strings["callerId"]),
        callee_raw_id=str(strings["recipientId"]),
        display_name=display_name,
        video=video == "true",
        server_call_id=server_call_id if isinstance(server_call_id, str) else None,
    )


class CallPhase(StrEnum):
    """Where a CallKit call is."""

    RINGING = "ringing"
    ACTIVE = "active"
    ENDED = "ended"


class EndReason(StrEnum):
    """``CXCallEndedReason`` (reported by the app) and the user's own hang-up."""

    FAILED = "failed"
    REMOTE_ENDED = "remoteEnded"
    UNANSWERED = "unanswered"
    ANSWERED_ELSEWHERE = "answeredElsewhere"
    DECLINED_ELSEWHERE = "declinedElsewhere"
    USER = "user"  # CXEndCallAction: the user declined or hung up


@dataclass(frozen=True, slots=True)
class Call:
    """A call CallKit knows about."""

    uuid: uuid.UUID
    caller_name: str
    handle: str
    video: bool
    placeholder: bool
    phase: CallPhase
    end_reason: EndReason | None
    reported_at: datetime
    server_call_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        """JSON-ready form (for the command line and a console)."""
        return {
            "uuid": str(self.uuid),
            "callerName": self.caller_name,
            "handle": self.handle,
            "video": self.video,
            "placeholder": self.placeholder,
            "phase": self.phase.value,
            "endReason": self.end_reason.value if self.end_reason else None,
            "reportedAt": self.reported_at.isoformat(),
            "serverCallId": self.server_call_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Call:
        """The inverse of :meth:`as_json`."""
        reason = data.get("endReason")
        return cls(
            uuid=uuid.UUID(data["uuid"]),
            caller_name=data["callerName"],
            handle=data["handle"],
            video=bool(data["video"]),
            placeholder=bool(data["placeholder"]),
            phase=CallPhase(data["phase"]),
            end_reason=EndReason(reason) if reason else None,
            reported_at=datetime.fromisoformat(data["reportedAt"]),
            server_call_id=data.get("serverCallId"),
        )


class CallKitError(Exception):
    """What ``reportNewIncomingCall``'s completion gets (e.g. a UUID already reported)."""


class CallKit:
    """A ``CXProvider`` and the actions the guide's ``CXProviderDelegate`` answers."""

    def __init__(self) -> None:
        self._calls: dict[uuid.UUID, Call] = {}
        self.reports = 0  # reportNewIncomingCall calls, one per VoIP push

    def report_new_incoming_call(self, call: Call) -> None:
        """``reportNewIncomingCall(with:update:)``. Raises CallKitError for a known UUID."""
        self.reports += 1
        if call.uuid in self._calls:
            raise CallKitError("callUUIDAlreadyExists")
        self._calls[call.uuid] = call

    def report_ended(self, call_id: uuid.UUID, reason: EndReason) -> None:
        """``reportCall(with:endedAt:reason:)``; a call already ended stays as it was."""
        call = self._calls.get(call_id)
        if call is not None and call.phase is not CallPhase.ENDED:
            self._calls[call_id] = replace(call, phase=CallPhase.ENDED, end_reason=reason)

    def answer(self, call_id: uuid.UUID) -> bool:
        """``CXAnswerCallAction``: fulfilled (True) for a ringing call, failed otherwise."""
        call = self._calls.get(call_id)
        if call is None or call.phase is not CallPhase.RINGING:
            return False
        self._calls[call_id] = replace(call, phase=CallPhase.ACTIVE)
        return True

    def end(self, call_id: uuid.UUID) -> bool:
        """``CXEndCallAction`` (decline or hang up): fulfilled for a call that has not ended."""
        call = self._calls.get(call_id)
        if call is None or call.phase is CallPhase.ENDED:
            return False
        self._calls[call_id] = replace(call, phase=CallPhase.ENDED, end_reason=EndReason.USER)
        return True

    def restore(self, call: Call) -> None:
        """Put back a call saved earlier (not a report: iOS does not count it)."""
        self._calls[call.uuid] = call

    def reset(self) -> None:
        """``providerDidReset(_:)``: every call is gone."""
        for call_id in list(self._calls):
            self.report_ended(call_id, EndReason.FAILED)

    @property
    def calls(self) -> list[Call]:
        """Every call reported so far, oldest first."""
        return list(self._calls.values())

    def get(self, call_id: uuid.UUID) -> Call | None:
        """The call with this UUID, if reported."""
        return self._calls.get(call_id)
