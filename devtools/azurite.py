"""Start and stop a real Azurite (npm ``azurite`` 3.35.0, the last release that runs on Node 20).

Used by the local run (data kept on disk under ``.local/azurite``) and by the tests (each session
starts its own on free ports, in memory or on disk). Always ``--disableTelemetry``.

    with Azurite.start(location=None) as az:
        az.connection_string   # blob, queue and table endpoints of devstoreaccount1
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft; not a secret).
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def azurite_command() -> list[str]:
    """The command that runs the pinned Azurite; fails with a clear message if not installed."""
    script = REPO / "node_modules" / "azurite" / "dist" / "src" / "azurite.js"
    if not script.exists():
        raise RuntimeError(
            "Azurite is not installed: run 'npm ci' (or 'npm install') in the repository first"
        )
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH: Azurite needs Node.js 20")
    return [node, str(script)]


def _wait_listening(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Azurite exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"Azurite did not listen on port {port} in time")


@dataclass
class Azurite:
    """A running Azurite process with blob, queue and table endpoints."""

    process: subprocess.Popen[bytes]
    blob_port: int
    queue_port: int
    table_port: int
    location: Path | None

    @property
    def table_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.table_port}/{ACCOUNT}"

    @property
    def queue_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.queue_port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint={self.queue_endpoint};TableEndpoint={self.table_endpoint};"
        )

    @classmethod
    def start(
        cls,
        location: Path | None = None,
        *,
        ports: tuple[int, int, int] | None = None,
        log: Path | None = None,
        timeout: float = 30.0,
    ) -> Azurite:
        """Start Azurite: on disk under ``location``, or in memory when it is None."""
        blob, queue, table = ports or (free_port(), free_port(), free_port())
        args = [
            *azurite_command(),
            "--blobHost", "127.0.0.1", "--blobPort", str(blob),
            "--queueHost", "127.0.0.1", "--queuePort", str(queue),
            "--tableHost", "127.0.0.1", "--tablePort", str(table),
            "--disableTelemetry", "--skipApiVersionCheck", "--loose",
        ]  # fmt: skip
        if location is None:
            args.append("--inMemoryPersistence")
        else:
            location.mkdir(parents=True, exist_ok=True)
            args += ["--location", str(location)]
        if log is None:
            args.append("--silent")
            out = subprocess.DEVNULL
            proc = subprocess.Popen(args, stdout=out, stderr=out, start_new_session=True)
        else:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as fh:
                proc = subprocess.Popen(args, stdout=fh, stderr=fh, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            for port in (blob, queue, table):
                _wait_listening(port, proc, deadline)
        except BaseException:
            proc.kill()
            raise
        return cls(proc, blob, queue, table, location)

    def stop(self) -> None:
        """Stop Azurite and wait for it; idempotent."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def restart(self, timeout: float = 30.0) -> None:
        """Stop and start again on the same ports and folder (storage-fault tests)."""
        self.stop()
        again = Azurite.start(
            self.location, ports=(self.blob_port, self.queue_port, self.table_port), timeout=timeout
        )
        self.process = again.process

    def __enter__(self) -> Azurite:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
