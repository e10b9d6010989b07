"""SIGINT/SIGTERM for the dev services' command lines: stop cleanly, exit 0.

A dev service (``python -m devtools.apns_simulator`` and the like) promises to serve until
SIGINT or SIGTERM and then exit 0. A signal that arrives while Python is still importing the
service (a quarter of a second for the simulator) would otherwise take the default action and
the process dies with 143, so each command line installs these handlers before importing
anything heavy: its package ``__init__`` imports lazily and its ``main`` starts here.

Both signals are handled whatever the process inherited (a shell's ``&`` ignores SIGINT in
background jobs, ``nohup`` ignores SIGHUP, ``start_new_session`` changes neither), so the
contract is the same in the foreground, in the background and in a session of its own.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals() -> threading.Event:
    """Route SIGTERM and SIGINT to the returned event (main thread only; replaces handlers)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    return stop


def serve_until(stop: threading.Event) -> None:
    """Block until ``stop`` is set (by a signal); wakes twice a second to let handlers run."""
    while not stop.wait(0.5):
        pass
