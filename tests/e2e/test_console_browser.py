"""The developer console in a real headless Chromium, against the real app on the local host.

Everything is real but the phones' hardware: Azurite, the APNs simulator over HTTP/2+TLS, the
development identity provider, the local ACS identity service, the app served by the local host,
and the console (``devtools/console``) beside it. The browser is Debian's ``chromium``
(``scripts/test.sh`` installs it), driven by Playwright pointed at that executable.

Each test does in the page what a developer would: add phones, send a message, edit it, delete
it, ring a phone, delete an app, script a fault, and checks what the lock screens and the wire
show. With ``CONSOLE_SCREENSHOTS=DIR`` the tests save the README's pictures there
(``bash scripts/console-screenshots.sh``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.acs_identity_service import AcsIdentityService
from devtools.apns_simulator import ApnsSimulator
from devtools.azurite import Azurite
from devtools.console.server import Console
from devtools.dev_identity_provider import DevIdentityProvider
from tests.e2e.conftest import LocalApp
from tests.local_apns import APP, KEY, simulator_settings

pytestmark = pytest.mark.e2e

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

KEK = "k1=" + base64.b64encode(b"\x05" * 32).decode()
WAIT_MS = 20_000  # how long a locator may wait for the page to reach a state (not a timing check)
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")


def chromium_path() -> str:
    """Debian's chromium; in CI its absence is a failure, elsewhere the tests are skipped."""
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser"):
        found = shutil.which(name) if name else None
        if found:
            return found
    message = (
        "chromium is not installed (bash scripts/test.sh installs it: apt-get install chromium)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class ServedConsole:
    """The console on its own event loop in a daemon thread (as the local run serves it)."""

    def __init__(self, env: dict[str, str], app_url: str, sim: ApnsSimulator, token_url: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def make() -> Console:
            return Console.from_settings(
                env, app_url=app_url, simulator_url=sim.control_url, token_url=token_url
            )

        self.console = self._run(make())
        self.url = self._run(self.console.start())

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def stop(self) -> None:
        try:
            self._run(self.console.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    with playwright_api.sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def app_settings(
    sim: ApnsSimulator,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
    az: Azurite,
    prefix: str,
    **extra: str,
) -> dict[str, str]:
    return {
        "STORAGE_CONNECTION": az.connection_string,
        "AzureWebJobsStorage": az.connection_string,
        "TABLE_PREFIX": prefix,
        "RENEWAL_QUEUE": prefix + "-renewal",
        **simulator_settings(sim, [KEY.app(APP)]),
        "APNS_RETRY_BUDGET_SECONDS": "3",
        "KEY_ENCRYPTION_KEYS": KEK,
        "ACS_CONNECTION_STRING": acs.connection_string,
        "ACS_CA_FILE": str(acs.ca_file),
        **idp.settings,
        **extra,
    }


class ConsolePage:
    """The page, with the steps a developer takes in it."""

    def __init__(self, page: Any, app_url: str, idp: DevIdentityProvider) -> None:
        self.page = page
        self.app_url = app_url
        self.idp = idp

    def phone(self, user: str) -> Any:
        return self.page.locator(f'.phone[data-user="{user}"]')

    def add_phone(self, name: str, *, calls: bool = True) -> None:
        self.page.fill("#phone-name", name)
        checkbox = self.page.locator('#form-phone input[name="calls"]')
        if checkbox.is_checked() != calls:
            checkbox.click()
        self.page.click("#form-phone button[type=submit]")
        expect(self.phone(name)).to_have_count(1, timeout=WAIT_MS)

    def send(self, sender: str, recipient: str, text: str, *, schema: str = "eventgrid") -> None:
        self.page.select_option("#send-from", label=sender)
        self.page.select_option("#send-to", label=recipient)
        self.page.select_option("#send-schema", schema)
        self.page.fill("#send-text", text)
        self.page.click("#send-button")
        expect(self.page.locator("#send-text")).to_have_value("", timeout=WAIT_MS)

    def banners(self, user: str) -> Any:
        return self.phone(user).locator(".notif")

    def wire_rows(self) -> Any:
        return self.page.locator("#wire tr.req")

    def shot(self, name: str, element: Any = None) -> None:
        if not SHOTS:
            return
        path = Path(SHOTS) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.wait_for_timeout(300)  # let the last state event paint (pictures only)
        (element or self.page).screenshot(path=str(path))


@pytest.fixture
def console(
    browser: Any,
    local_app: LocalApp,
    apns: ApnsSimulator,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
    azurite: Azurite,
    table_prefix: str,
    request: pytest.FixtureRequest,
) -> Iterator[ConsolePage]:
    extra = getattr(request, "param", {})
    env = app_settings(apns, idp, acs, azurite, table_prefix, **extra)
    app_url = local_app(env)
    served = ServedConsole(env, app_url, apns, idp.token_url)
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    try:
        page = context.new_page()
        page.goto(served.url)
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
        yield ConsolePage(page, app_url, idp)
    finally:
        context.close()
        served.stop()


@pytest.fixture
def alice_and_bob(console: ConsolePage) -> ConsolePage:
    console.add_phone("alice")
    console.add_phone("bob")
    return console


# --- the tests ------------------------------------------------------------------------------------


def test_the_page_says_it_is_for_local_development_only(console: ConsolePage) -> None:
    expect(console.page.locator(".dev-only")).to_contain_text("local development only")


def test_a_message_appears_decrypted_on_the_recipients_lock_screen(
    alice_and_bob: ConsolePage,
) -> None:
    c = alice_and_bob
    c.send("bob", "alice", "Are we still on for 3pm?")

    banner = c.banners("alice").first
    expect(banner.locator(".notif-body")).to_have_text("Are we still on for 3pm?", timeout=WAIT_MS)
    expect(banner.locator(".notif-title")).to_have_text("bob")
    expect(banner).to_have_attribute("data-preview", "decrypted")
    expect(c.banners("bob")).to_have_count(0)
    c.shot("console-message.png")


def test_the_wire_links_the_push_to_its_delivery_log(alice_and_bob: ConsolePage) -> None:
    c = alice_and_bob
    c.send("bob", "alice", "follow me")

    row = c.wire_rows().first
    expect(row.locator(".steps")).to_have_attribute("data-log-state", "delivered", timeout=WAIT_MS)
    expect(row.locator(".steps")).to_contain_text("claimed")
    expect(row.locator(".ans")).to_have_text("200")


def test_an_edit_replaces_the_banner(alice_and_bob: ConsolePage) -> None:
    c = alice_and_bob
    c.send("bob", "alice", "Lunch at 12?", schema="cloudevents")
    expect(c.banners("alice")).to_have_count(1, timeout=WAIT_MS)

    c.page.click("li[data-message] button[data-edit]")
    c.page.fill("[data-edit-input]", "Lunch at 1 instead?")
    c.page.click("[data-edit-save]")

    expect(c.banners("alice").locator(".notif-body")).to_have_text(
        ["Lunch at 1 instead?"], timeout=WAIT_MS
    )
    expect(c.banners("alice").first.locator(".edited")).to_have_count(1)


def test_a_deleted_message_leaves_the_lock_screen(alice_and_bob: ConsolePage) -> None:
    c = alice_and_bob
    c.send("bob", "alice", "oops, wrong chat")
    expect(c.banners("alice")).to_have_count(1, timeout=WAIT_MS)

    c.page.click("li[data-message] button[data-delete]")

    expect(c.banners("alice")).to_have_count(0, timeout=WAIT_MS)
    expect(c.phone("alice").locator('.timeline .mark[data-mark="withdraw"]')).to_have_count(1)


def test_a_call_rings_the_callee(alice_and_bob: ConsolePage) -> None:
    c = alice_and_bob
    c.page.select_option("#call-from", label="bob")
    c.page.select_option("#call-to", label="alice")
    c.page.click("#call-button")

    screen = c.phone("alice").locator(".call-screen")
    expect(screen.locator(".caller")).to_have_text("bob", timeout=WAIT_MS)
    c.shot("console-call.png", c.phone("alice"))
    screen.locator('button[data-call-answer="decline"]').click()
    expect(screen).to_have_count(0, timeout=WAIT_MS)


def test_a_phone_whose_app_was_deleted_leaves_after_apns_says_unregistered(
    console: ConsolePage,
) -> None:
    c = console
    c.add_phone("alice")
    c.add_phone("bob", calls=False)

    c.phone("bob").locator("button[data-uninstall]").click()
    c.send("alice", "bob", "are you there?")

    expect(c.phone("bob")).to_have_count(0, timeout=WAIT_MS)
    expect(c.page.locator('#wire tr.req[data-status="410"]')).to_have_count(1)
    expect(c.page.locator("#activity")).to_contain_text("bob's iPhone left")


def test_a_scripted_fault_is_shown_on_the_wire_and_the_retry_delivers(
    alice_and_bob: ConsolePage,
) -> None:
    c = alice_and_bob
    c.page.select_option("#fault-kind", "ServiceUnavailable")
    c.page.select_option("#fault-phone", label="alice's iPhone")
    c.page.click("#fault-button")
    expect(c.page.locator("#faults li")).to_have_count(1, timeout=WAIT_MS)

    c.send("bob", "alice", "through the outage")

    faulted = c.page.locator('#wire tr.req[data-fault="yes"]')
    expect(faulted.locator(".ans")).to_have_text("503 ServiceUnavailable", timeout=WAIT_MS)
    expect(c.page.locator('#wire tr.req[data-status="200"] .steps').first).to_contain_text(
        "delivered after 2 attempts", timeout=WAIT_MS
    )
    expect(c.banners("alice").locator(".notif-body")).to_have_text(["through the outage"])
    c.shot("console-wire.png", c.page.locator(".wire-panel"))


def test_a_device_registered_through_the_api_shows_the_fallback_text(
    console: ConsolePage,
) -> None:
    c = console
    c.add_phone("alice")
    token = httpx.get(c.idp.token_url, params={"sub": "erin"}, timeout=10).json()["access_token"]
    auth = {"Authorization": "Bearer " + token}
    body = {
        "token": "e1" * 32,
        "kind": "alert",
        "topic": APP,
        "environment": "sandbox",
        "key": base64.b64encode(os.urandom(64)).decode(),  # a key only that device holds
    }
    assert httpx.put(c.app_url + "/api/devices", json=body, headers=auth).status_code == 200
    erin = httpx.post(c.app_url + "/api/token", headers=auth).json()["acsUserId"]
    foreign = c.page.locator('.phone[data-source="registry"]')
    expect(foreign).to_have_count(1, timeout=WAIT_MS)

    c.page.select_option("#send-from", label="alice")
    c.page.select_option("#send-to", erin)
    c.page.fill("#send-text", "only erin's phone can read this")
    c.page.click("#send-button")

    banner = foreign.locator(".notif")
    expect(banner).to_have_attribute("data-preview", "fallback", timeout=WAIT_MS)
    expect(banner.locator(".notif-body")).to_have_text("You have a new message")


@pytest.mark.parametrize("console", [{"PREVIEW_KEY_LIFETIME_MINUTES": "1"}], indirect=True)
def test_a_reference_phone_renews_its_key_at_the_wake_and_its_next_banner_is_decrypted(
    console: ConsolePage,
) -> None:
    c = console
    c.add_phone("alice")  # a 1-minute key: due for renewal at once (10 minutes of lead)
    c.add_phone("bob", calls=False)
    alice = c.phone("alice")
    expect(alice).to_have_attribute("data-source", "reference")
    app_log = alice.locator(".app-log li")
    expect(app_log.first).to_have_attribute("data-app-event", "registered", timeout=WAIT_MS)

    c.page.click("#run-sweep")

    expect(alice.locator('.timeline .mark[data-mark="renewal"]')).to_have_count(1, timeout=WAIT_MS)
    expect(c.page.locator("#activity")).to_contain_text(
        "alice's phone renewed its preview key", timeout=WAIT_MS
    )
    # Newest first: the wake, then the fresh key it uploaded.
    expect(app_log.nth(1)).to_have_attribute("data-app-event", "renewalWake", timeout=WAIT_MS)
    expect(app_log.nth(0)).to_have_attribute("data-app-event", "keyUploaded")

    c.send("bob", "alice", "sent after the renewal")

    banner = c.banners("alice").first
    expect(banner.locator(".notif-body")).to_have_text("sent after the renewal", timeout=WAIT_MS)
    expect(banner).to_have_attribute("data-preview", "decrypted")
    # The page draws what the phone's own extension produced.
    expect(app_log.first).to_have_attribute("data-app-event", "banner", timeout=WAIT_MS)
    expect(app_log.first).to_contain_text("“bob: sent after the renewal” (decrypted)")
    c.shot("console-reference-phone.png", alice)
