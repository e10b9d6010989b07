"""Event Grid's subscription validation against the real app, through the local host."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import LocalApp

pytestmark = pytest.mark.e2e

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "subscription_validation.eventgrid.json"
WEBHOOK = "/runtime/webhooks/eventgrid"


def _chat_function() -> str:
    """on_chat_event; until it exists, any Event Grid function of the app."""
    from devtools.localhost.catalog import app_functions
    from function_app import app

    names = [
        f.get_function_name()
        for f in app_functions(app)
        if any(
            b["type"] == "eventGridTrigger" for b in json.loads(f.get_function_json())["bindings"]
        )
    ]
    if "on_chat_event" in names:
        return "on_chat_event"
    if not names:
        pytest.skip("function_app has no Event Grid function yet")
    return names[0]


def test_subscription_validation_is_answered_with_the_code(local_app: LocalApp) -> None:
    function = _chat_function()
    base = local_app({})
    body = SAMPLE.read_bytes()
    code = json.loads(body)[0]["data"]["validationCode"]

    response = httpx.post(
        f"{base}{WEBHOOK}",
        params={"functionName": function},
        headers={"aeg-event-type": "SubscriptionValidation", "content-type": "application/json"},
        content=body,
    )

    assert response.status_code == 200
    assert response.json() == {"validationResponse": code}


def test_validation_for_a_function_the_app_does_not_have_is_404(local_app: LocalApp) -> None:
    base = local_app({})

    response = httpx.post(
        f"{base}{WEBHOOK}",
        params={"functionName": "no_such_function"},
        headers={"aeg-event-type": "SubscriptionValidation"},
        content=SAMPLE.read_bytes(),
    )

    assert response.status_code == 404
