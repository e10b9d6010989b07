"""The local run's orchestration (``devtools/run_local.py``), as ``scripts/run-local.sh`` runs it.

Launched without installs (``--no-install``), on free ports, with its data in a temporary folder
and a contract-following fake service in place of the real development services.
"""

from __future__ import annotations

import base64
import io
import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.azurite import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "tests" / "samples" / "subscription_validation.eventgrid.json"
READY = "Stop with Ctrl-C."


class Run:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.console_port = free_port()
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "devtools.run_local", "--no-install",
                "--port", str(self.port), "--console-port", str(self.console_port),
                "--local-dir", str(tmp / ".local"),
                "--settings", str(tmp / "local.settings.json"),
                "--azurite-free-ports", "--no-timers",
                "--skip", "apns_simulator", "--skip", "acs_identity_service",
                "--skip", "dev_identity_provider",
                "--extra-service", "tests.integration.localhost.fake_dev_service",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.strip() == READY:
                self.ready.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    r = Run(tmp_path_factory.mktemp("run-local"))
    try:
        assert r.ready.wait(90), f"the local run did not come up:\n{r.output}"
        yield r
    finally:
        if r.process.poll() is None:
            r.process.kill()
            r.process.wait()


def test_the_app_is_served_on_the_chosen_port(run: Run) -> None:
    r = httpx.get(f"http://127.0.0.1:{run.port}/")

    assert "LOCAL DEVELOPMENT HOST" in r.text


def test_the_webhook_answers_the_validation_handshake(run: Run) -> None:
    from devtools.localhost.catalog import app_functions
    from function_app import app

    names = [
        f.get_function_name()
        for f in app_functions(app)
        if any(
            b["type"] == "eventGridTrigger" for b in json.loads(f.get_function_json())["bindings"]
        )
    ]
    if not names:
        pytest.skip("function_app has no Event Grid function yet")
    function = "on_chat_event" if "on_chat_event" in names else names[0]

    r = httpx.post(
        f"http://127.0.0.1:{run.port}/runtime/webhooks/eventgrid",
        params={"functionName": function},
        headers={"aeg-event-type": "SubscriptionValidation"},
        content=SAMPLE.read_bytes(),
    )

    assert r.json() == {
        "validationResponse": json.loads(SAMPLE.read_text())[0]["data"]["validationCode"]
    }


def test_first_run_creates_local_settings_with_a_fresh_key(run: Run) -> None:
    values = json.loads((run.tmp / "local.settings.json").read_text())["Values"]

    key_id, _, key = values["KEY_ENCRYPTION_KEYS"].partition("=")
    assert key_id and len(base64.b64decode(key, validate=True)) == 32
    assert "created" in run.output


def test_the_summary_names_started_and_skipped_services(run: Run) -> None:
    assert "fake_dev_service (simulated" in run.output
    assert "token_url http://x" in run.output
    assert "APNs simulator: skipped (--skip apns_simulator)" in run.output
    assert f"http://127.0.0.1:{run.port}/runtime/webhooks/eventgrid" in run.output


def test_the_summary_lists_the_endpoints_of_every_registered_function(run: Run) -> None:
    from devtools.localhost.catalog import app_functions
    from function_app import app

    heading = "Event Grid webhooks (subscribe the ACS events here):"
    assert heading in run.output
    endpoints = run.output.split(heading, 1)[1]  # the summary's own list, not the host banner
    base = f"http://127.0.0.1:{run.port}"
    expected = []
    for f in app_functions(app):
        bindings = json.loads(f.get_function_json())["bindings"]
        trigger = next(b for b in bindings if b["type"].endswith("Trigger"))
        name = f.get_function_name()
        if trigger["type"] == "eventGridTrigger":
            expected.append(f"  {name}: {base}/runtime/webhooks/eventgrid?functionName={name}")
        elif trigger["type"] == "httpTrigger":
            route = trigger.get("route") or name
            expected.append(f"{base}/api/{route} ({name})")
        elif trigger["type"] == "timerTrigger":
            expected.append(name)
    assert expected
    assert [e for e in expected if e not in endpoints] == []
    assert "functionName=on_call_event" in endpoints


def test_the_summary_prints_the_console_url_and_the_console_serves_its_page(run: Run) -> None:
    url = f"http://127.0.0.1:{run.console_port}/"
    line = next(line for line in run.lines if line.startswith("Developer console"))

    page = httpx.get(url)
    state = httpx.get(url + "api/state").json()

    assert line.endswith(url)
    assert "pushrelay developer console" in page.text
    # No APNs simulator in this run (skipped): the console says so rather than failing.
    assert (state["simulator"], state["phones"]) == (False, [])


def test_the_delivery_log_command_finds_the_runs_storage_by_itself(
    run: Run, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: it read local.settings.json's UseDevelopmentStorage=true and so looked on ports
    10000-10002, where this run's Azurite (on free ports) is not."""
    from devtools.delivery_log import main

    monkeypatch.delenv("STORAGE_CONNECTION", raising=False)
    monkeypatch.delenv("TABLE_PREFIX", raising=False)
    table_port = re.search(r"Azurite \(data in .*\): blob \d+, queue \d+, table (\d+)", run.output)
    assert table_port is not None
    args = ["--thread", "19:x@thread.v2", "--message", "1", "--user", "8:acs:nobody"]
    args += ["--local-dir", str(run.tmp / ".local")]
    args += ["--settings", str(run.tmp / "local.settings.json")]
    status = main(args, io.StringIO())
    reading = capsys.readouterr().err
    assert f"http://127.0.0.1:{table_port.group(1)}/devstoreaccount1" in reading
    assert status == 1  # reached its storage: no records for that message


def test_the_summary_shows_the_delivery_log_command(run: Run) -> None:
    assert "python -m devtools.delivery_log --thread" in run.output


def test_sigterm_stops_everything_cleanly(run: Run) -> None:
    run.process.send_signal(signal.SIGTERM)

    assert run.process.wait(timeout=30) == 0
    run.reader.join(timeout=10)
    assert "stopped Azurite" in run.output
    assert (run.tmp / ".local" / "fake_dev_service" / "stopped").read_text() == "cleanly"
    assert "fake_dev_service (exit 0)" in run.output
    assert not (run.tmp / ".local" / "run.json").exists()  # a stopped run names no storage
