"""The local host refuses what Azure's worker refuses: same check, same words, nothing served."""

from __future__ import annotations

import shutil
import subprocess
import sys
import typing
from pathlib import Path

import azure.functions as func
import pytest

from devtools.localhost import LocalHost
from devtools.localhost.queues import output_payloads
from devtools.localhost.worker import WorkerIndexError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
REFUSED = (
    "Worker failed to index functions: cannot load the renewal_sweep function: binding shards "
    "has invalid non-type annotation azure.functions._abc.Out[list[str]]"
)


def _refused_app_dir(tmp: Path) -> Path:
    """The real app with the first round's annotation, which the worker refuses."""
    source = (REPO / "function_app.py").read_text(encoding="utf-8")
    fixed = "shards: func.Out[typing.List[str]],  # noqa: UP006"
    assert fixed in source
    (tmp / "function_app.py").write_text(source.replace(fixed, "shards: func.Out[list[str]],"))
    for name in ("host.json", "local.settings.sample.json"):
        shutil.copy(REPO / name, tmp / name)
    return tmp


def test_the_local_host_serves_nothing_of_an_app_the_worker_refuses() -> None:
    app = func.FunctionApp()

    @app.route(route="fine")
    def fine(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("ok")

    @app.timer_trigger(arg_name="timer", schedule="0 */5 * * * *")
    @app.queue_output(arg_name="out", queue_name="q", connection="AzureWebJobsStorage")
    def sweep(timer: func.TimerRequest, out: func.Out[list[str]]) -> None:
        out.set([])

    with pytest.raises(WorkerIndexError, match="cannot load the sweep function"):
        LocalHost(app, {})


def test_the_local_host_command_exits_with_the_workers_message(tmp_path: Path) -> None:
    app_dir = _refused_app_dir(tmp_path)

    done = subprocess.run(
        [sys.executable, "-m", "devtools.localhost", "--app-dir", str(app_dir), "--port", "0",
         "--settings", str(tmp_path / "none.json"), "--no-timers", "--no-queues"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 1
    assert REFUSED in done.stderr


def test_the_local_run_refuses_an_app_the_worker_refuses(tmp_path: Path) -> None:
    app_dir = _refused_app_dir(tmp_path)

    done = subprocess.run(
        [sys.executable, "-m", "devtools.run_local", "--no-install", "--app-dir", str(app_dir),
         "--port", "0", "--local-dir", str(tmp_path / ".local"),
         "--settings", str(tmp_path / "local.settings.json"), "--azurite-free-ports",
         "--no-timers", "--skip", "apns_simulator", "--skip", "acs_identity_service",
         "--skip", "dev_identity_provider"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 1, done.stdout + done.stderr
    assert REFUSED in done.stderr
    assert "stopped Azurite" in done.stdout


def test_a_queue_output_list_becomes_one_message_per_item() -> None:
    assert output_payloads(["a", "b"], "queue", typing.List[str]) == [b"a", b"b"]  # noqa: UP006


def test_a_queue_output_the_worker_cannot_encode_fails_with_its_words() -> None:
    with pytest.raises(TypeError, match="unable to encode outgoing TypedData"):
        output_payloads(5, "queue", typing.List[str])  # noqa: UP006


def test_a_queue_message_output_sends_its_body() -> None:
    message = func.QueueMessage(body=b"shard-1")

    assert output_payloads(message, "queue", func.QueueMessage) == [b"shard-1"]
