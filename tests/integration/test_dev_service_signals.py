"""The dev services' command-line contract: serve until SIGINT/SIGTERM, then exit 0.

Each service is started as its own process the ways the local run and a developer's shell
start it: in a session of its own (``start_new_session``, like ``setsid``), as a background job
that inherited ignored SIGINT/SIGHUP (what ``&`` in a script and ``nohup`` do), and with the
signal arriving while Python is still importing the service, before it is ready.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Each command line and the module whose import is the bulk of its start-up.
SERVICES = {
    "devtools.apns_simulator": "devtools.apns_simulator.simulator",
    "devtools.acs_identity_service": "devtools.acs_identity_service.server",
    "devtools.dev_identity_provider": "devtools.dev_identity_provider.server",
}
# Runs a service with SIGTERM sent to itself the moment its heavy module starts importing:
# a deterministic "SIGTERM during start-up" with no sleeps.
SIGNAL_DURING_IMPORT = """
import importlib.abc, os, runpy, signal, sys
module, heavy = sys.argv.pop(1), sys.argv.pop(1)

class SignalDuringImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == heavy:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGTERM)
        return None

sys.meta_path.insert(0, SignalDuringImport())
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def start(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def ready_line(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"{proc.args!r} exited before printing its JSON line"
    document = json.loads(line)
    assert isinstance(document, dict) and "settings" in document
    return document


@pytest.mark.parametrize("module", list(SERVICES))
def test_service_in_its_own_session_exits_0_on_sigterm(module: str, tmp_path: Path) -> None:
    proc = start([sys.executable, "-m", module, "--state-dir", str(tmp_path / "state")])
    try:
        ready_line(proc)
    finally:
        proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    assert code == 0, err[-2000:]
    assert "stopped" in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("module", list(SERVICES))
def test_background_job_with_ignored_signals_exits_0(
    module: str, sig: signal.Signals, tmp_path: Path
) -> None:
    # A script's `cmd &` starts the job with SIGINT ignored, nohup with SIGHUP ignored.
    command = f'trap "" INT HUP; exec "$0" -m {module} --state-dir "$1"'
    proc = start(["sh", "-c", command, sys.executable, str(tmp_path / "state")])
    try:
        ready_line(proc)
    finally:
        proc.send_signal(sig)
    code, _, err = finish(proc)
    assert code == 0, err[-2000:]


@pytest.mark.parametrize("module", list(SERVICES))
def test_sigterm_during_start_up_exits_0(module: str, tmp_path: Path) -> None:
    argv = [sys.executable, "-c", SIGNAL_DURING_IMPORT, module, SERVICES[module]]
    proc = start([*argv, "--state-dir", str(tmp_path / "state")])
    code, out, err = finish(proc)
    # Without handlers installed before the import, SIGTERM's default action ends it: -15.
    assert code == 0, (code, err[-2000:])
    assert "stopped" in err
    assert out.count("\n") == 1  # it still started, said where, and stopped at once
