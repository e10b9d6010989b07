"""The bad-input corpus (``tests/reliability/corpus/*.json``) against the app on the local host.

Every case gets the answer it names: a clear 4xx, or 202 for an event the app acknowledges and
logs. Never a 500 (a retry cannot fix bad input, so a 500 would make Event Grid or the app retry
forever), and never a write: storage is compared before and after each case. The traffic cases
(odd but legal messages) say how many pushes the APNs simulator must accept for them, and what
the delivery log must record: a chat event to a registered device ends in a push, or in a
record saying why policy skipped it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.acs_identity_service import AcsIdentityService
from devtools.apns_simulator import ApnsSimulator
from devtools.azurite import Azurite
from devtools.dev_identity_provider import DevIdentityProvider
from tests.reliability.conftest import (
    APP,
    EG_HEADERS,
    WEBHOOK,
    Served,
    app_env,
    sample_event,
    served_app,
    snapshot,
    store_devices,
)

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

CORPUS = Path(__file__).resolve().parent / "corpus"
SUBJECT = "corpus-user"
BASES = {
    "received.eventgrid": "chat_message_received.eventgrid.json",
    "received.cloudevents": "chat_message_received.cloudevents.json",
    "deleted.eventgrid": "chat_message_deleted.eventgrid.json",
    "edited.eventgrid": "chat_message_edited.eventgrid.json",
    "in_thread.eventgrid": "chat_message_received_in_thread.eventgrid.json",
    "call.eventgrid": "incoming_call.eventgrid.json",
    "validation.eventgrid": "subscription_validation.eventgrid.json",
}
KEY = bytes(range(64))
DROP = object()


def load_cases() -> list[Any]:
    """Every case; a ``known_issue`` case is a strict xfail naming the issue (it must fail)."""
    params = []
    for path in sorted(CORPUS.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for case in doc["cases"]:
            marks = []
            if "known_issue" in case:
                marks.append(pytest.mark.xfail(reason=case["known_issue"], strict=True))
            params.append(pytest.param(case, id=f"{path.stem}:{case['name']}", marks=marks))
    return params


CASES = load_cases()


# --- generated values -----------------------------------------------------------------------------


def generated(value: Any) -> Any:
    """Expand the corpus's ``@@`` values (see corpus/README.md)."""
    if isinstance(value, dict):
        return {k: generated(v) for k, v in value.items()}
    if isinstance(value, list):
        return [generated(v) for v in value]
    if not isinstance(value, str) or "@@" not in value:
        return value
    head, _, spec = value.partition("@@")
    return _expand(spec) if not head else head + str(_expand(spec))


def _expand(spec: str) -> Any:
    if spec == "delete":
        return DROP
    if spec.startswith("principal:"):
        principal = {"auth_typ": "aad", "claims": [{"typ": "sub", "val": spec.split(":", 1)[1]}]}
        return base64.b64encode(json.dumps(principal).encode()).decode()
    if spec.startswith("key64"):
        text = base64.b64encode(b"\xfb\xff" * 32).decode()
        return {
            "key64urlsafe": base64.urlsafe_b64encode(b"\xfb\xff" * 32).decode(),
            "key64nopad": text.rstrip("="),
            "key64wrapped": "\n".join(text[i : i + 40] for i in range(0, len(text), 40)),
        }.get(spec, text)
    repeated = re.fullmatch(r"rep(\d+):(.+)", spec, flags=re.DOTALL)
    if repeated:
        return repeated.group(2) * int(repeated.group(1))
    match = re.fullmatch(r"(x|bang|hex|nest|key|files|manykeys)(\d+)", spec)
    assert match, f"unknown generator @@{spec}"
    kind, n = match.group(1), int(match.group(2))
    if kind == "x":
        return "x" * n
    if kind == "bang":
        return "!" * n
    if kind == "hex":
        return ("0123456789abcdef" * (n // 16 + 1))[:n]
    if kind == "key":
        return base64.b64encode(bytes(range(n % 256)) * (n // 256) + bytes(n % 256)).decode()
    if kind == "files":
        return json.dumps([shared_file(k) for k in range(n)])
    if kind == "manykeys":
        return {f"key{k:02d}": "v" * 60 for k in range(n)}
    nested: Any = 1
    for _ in range(n):
        nested = {"a": nested}
    return nested


def shared_file(k: int) -> dict[str, str]:
    """One attached file as the ACS UI library's chat composite lists it in the message's
    ``fileSharingMetadata`` (a JSON array of these, as a string)."""
    return {
        "id": f"{k:08d}-0000-4000-8000-000000000000",
        "name": f"Quarterly report {k}.pdf",
        "extension": "pdf",
        "url": "https://contoso-my.sharepoint.com/personal/ann_contoso_com/Documents/"
        f"Microsoft%20Teams%20Chat%20Files/Quarterly%20report%20{k}.pdf?e=" + "x" * 250,
        "attachmentType": "fileSharing",
    }


def valid_registration() -> dict[str, Any]:
    return {
        "token": "feed" * 16,
        "kind": "alert",
        "topic": APP,
        "environment": "sandbox",
        "key": base64.b64encode(KEY).decode(),
    }


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = doc
    for step in parents:
        node = node.setdefault(step, {})
    node[last] = value


def del_path(doc: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    node = doc
    for step in parents:
        node = node[step]
    node.pop(last, None)


# --- requests -------------------------------------------------------------------------------------


class Corpus:
    """Turns a case into a request to the served app."""

    def __init__(self, served: Served, idp: DevIdentityProvider, acs_user: str) -> None:
        self.served, self.idp, self.acs_user = served, idp, acs_user

    def body(self, case: dict[str, Any], event_id: str) -> bytes:
        if "raw" in case:
            return str(case["raw"]).encode("utf-8", "surrogatepass")
        if "raw_b64" in case:
            return base64.b64decode(case["raw_b64"])
        if "gen" in case:
            g = case["gen"]
            text = g.get("prefix", "") + g["repeat"] * g["times"] + g.get("suffix", "")
            return text.encode()
        if case["target"] == "event":
            return json.dumps(self.event(case, event_id)).encode()
        doc = valid_registration() if case.get("over_valid") else {}
        for key, value in generated(case.get("json", {})).items():
            if value is DROP:
                doc.pop(key, None)
            else:
                doc[key] = value
        return json.dumps(doc).encode()

    def event(self, case: dict[str, Any], event_id: str) -> Any:
        event: dict[str, Any] = copy.deepcopy(sample_event(BASES[case["base"]]))
        event["id"] = event_id
        who = {"rawId": self.acs_user, "communicationUser": {"id": self.acs_user}}
        data = event.get("data")
        if isinstance(data, dict):
            data["to" if "to" in data else "recipientCommunicationIdentifier"] = who
        for path, value in generated(case.get("set", {})).items():
            set_path(event, path, value)
        for path in case.get("delete", []):
            del_path(event, path)
        wrap = case.get("wrap", "object" if "specversion" in event else "array")
        return event if wrap == "object" else [event]

    def headers(self, case: dict[str, Any]) -> dict[str, str]:
        headers: dict[str, str] = {}
        if case["target"] == "event":
            headers.update(EG_HEADERS)
        else:
            headers["content-type"] = "application/json"
        if case.get("auth") == "user":
            headers["authorization"] = "Bearer " + self.idp.token(SUBJECT)
        for name, value in case.get("headers", {}).items():
            if name == "@@junk":
                headers.update({f"x-junk-{i}": "j" * 50 for i in range(value)})
            elif value is None:
                headers.pop(name.lower(), None)
            else:
                text = str(generated(value)).replace("{user_token}", self.idp.token(SUBJECT))
                headers[name.lower()] = text
        return headers

    def url(self, case: dict[str, Any]) -> tuple[str, str]:
        if case["target"] == "event":
            return "POST", WEBHOOK + case.get("function", "on_chat_event")
        path = str(generated(case.get("path", "/api/devices")))
        return case.get("method", "PUT"), path

    def send_prior(self, case: dict[str, Any]) -> None:
        """Post the events a case needs first (a delete before the edit that follows it)."""
        for n, prior in enumerate(case.get("prior", [])):
            event_id = f"corpus-{case['name']}-p{n}"
            body = json.dumps(self.event({**prior, "target": "event"}, event_id))
            with httpx.Client(base_url=self.served.base, timeout=60) as client:
                r = client.post(WEBHOOK + "on_chat_event", content=body, headers=EG_HEADERS)
            assert r.status_code == 202, f"prior event {n} answered {r.status_code}"

    def send(self, case: dict[str, Any]) -> tuple[int, str]:
        event_id = f"corpus-{case['name']}"
        method, path = self.url(case)
        body = self.body(case, event_id)
        headers = {k: v.encode("latin-1", "replace") for k, v in self.headers(case).items()}
        with httpx.Client(base_url=self.served.base, timeout=60) as client:
            r = client.request(method, path, content=body, headers=headers)
        return r.status_code, event_id


@pytest.fixture(scope="module")
def corpus(
    sim: ApnsSimulator,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
    azurite: Azurite,
) -> Iterator[tuple[Corpus, str]]:
    prefix = "c" + uuid.uuid4().hex[:12]
    env = app_env(azurite.connection_string, prefix, sim=sim, idp=idp, acs=acs)
    with served_app(env) as served:
        token = httpx.post(
            served.base + "/api/token",
            headers={"Authorization": "Bearer " + idp.token(SUBJECT)},
            timeout=30,
        )
        acs_user = token.json()["acsUserId"]
        asyncio.run(store_devices(env, [(acs_user, "c0" * 32, True), (acs_user, "c1" * 32, False)]))
        yield Corpus(served, idp, acs_user), prefix


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("shared", "function_app")):
            self.lines.append(record.getMessage())


@pytest.fixture
def app_logs() -> Iterator[Captured]:
    handler = Captured()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_answered_without_a_crash_or_a_write(
    case: dict[str, Any],
    corpus: tuple[Corpus, str],
    sim: ApnsSimulator,
    azurite: Azurite,
    app_logs: Captured,
    figures: dict[str, dict[str, Any]],
) -> None:
    client, prefix = corpus
    client.send_prior(case)
    before = snapshot(azurite.connection_string, prefix)
    accepted_before = accepted(sim)
    status, event_id = client.send(case)
    after = snapshot(azurite.connection_string, prefix)
    pushes = accepted(sim)[len(accepted_before) :]
    tally = figures.setdefault("bad input corpus", {"cases": 0, "4xx": 0, "acknowledged": 0})
    tally["cases"] += 1
    tally["4xx" if 400 <= status < 500 else "acknowledged"] += 1
    mark = case["expect"].get("logged")
    needle = mark if isinstance(mark, str) else event_id
    logged = any(needle in line or "(no id)" in line for line in app_logs.lines)
    assert status in case["expect"]["status"], f"{case['why']}: answered {status}"
    if not case.get("writes"):
        assert after == before, f"{case['why']}: storage changed"
    if case["expect"].get("logged"):
        assert logged, f"{case['why']}: acknowledged without a log line naming the event"
    if "pushes" in case["expect"]:
        assert len(pushes) == case["expect"]["pushes"], f"{case['why']}: {len(pushes)} pushes"
    if "encrypted" in case["expect"]:
        sealed = sum(1 for p in pushes if isinstance(p.payload, dict) and "data" in p.payload)
        assert sealed == case["expect"]["encrypted"], f"{case['why']}: {sealed} encrypted"
    if "records" in case["expect"]:
        check_records(case, new_records(before, after, prefix))


def accepted(sim: ApnsSimulator) -> list[Any]:
    """The requests the simulator accepted (200), oldest first."""
    return [r for r in sim.requests() if r.status == 200]


def new_records(
    before: dict[str, list[dict[str, Any]]], after: dict[str, list[dict[str, Any]]], prefix: str
) -> list[dict[str, Any]]:
    """Delivery-log records the case created or changed (claims only: they have a state)."""
    table = prefix + "deliveries"
    old = {(r["PartitionKey"], r["RowKey"]): r for r in before.get(table, [])}
    return [
        r
        for r in after.get(table, [])
        if "state" in r and old.get((r["PartitionKey"], r["RowKey"])) != r
    ]


def check_records(case: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """``expect.records``: ``count``, every record's ``state``, a ``detail`` every record's
    detail holds, a ``some_detail`` one of them holds."""
    want, why = case["expect"]["records"], case["why"]
    details = [str(r.get("detail") or "") for r in records]
    assert len(records) == want.get("count", len(records)), f"{why}: {len(records)} records"
    if "state" in want:
        assert {r["state"] for r in records} == {want["state"]}, f"{why}: {records}"
    if "detail" in want:
        assert all(want["detail"] in d for d in details), f"{why}: {details}"
    if "some_detail" in want:
        assert any(want["some_detail"] in d for d in details), f"{why}: {details}"


def test_the_corpus_has_at_least_20_cases_per_category() -> None:
    counts = {
        path.stem: len(json.loads(path.read_text(encoding="utf-8"))["cases"])
        for path in CORPUS.glob("*.json")
    }
    assert len(counts) >= 6 and min(counts.values()) >= 20, counts
