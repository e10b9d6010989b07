"""A CPU-time sampling profiler small enough to trust (standard library only).

``SIGPROF`` fires every ``interval`` seconds of the process's *CPU* time (``ITIMER_PROF``; the
kernel rounds it up to its tick, often 4 ms), so waiting in ``select`` is never sampled; the
samples are scaled to the CPU time measured over the same span, and read as "CPU per push". The
handler records the interrupted Python stack; time spent inside a C function (the ssl module,
the json encoder) is charged to the Python function that called it. Overhead is one stack walk
per sample (a few microseconds at 1 ms), unlike cProfile's cost on every call.
"""

from __future__ import annotations

import resource
import signal
from collections import Counter
from pathlib import PurePath
from types import FrameType
from typing import Any

Site = tuple[str, str]
"""(short file name, function name)."""

# Where a function's self time goes in the summary, by the path of its file.
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("/hpack/", "hpack"),
    ("/hyperframe/", "hyperframe (frames)"),
    ("/h2/", "h2 (HTTP/2 state machines)"),
    ("shared/apns/header_block.py", "shared.apns.header_block (HPACK)"),
    ("shared/apns/connection.py", "shared.apns.connection"),
    ("shared/apns/client.py", "shared.apns.client"),
    ("shared/apns/notification.py", "shared.apns.notification"),
    ("shared/apns/", "shared.apns (other)"),
    ("asyncio/sslproto.py", "TLS (asyncio sslproto + ssl)"),
    ("/ssl.py", "TLS (asyncio sslproto + ssl)"),
    ("/json/", "json (payload encoding)"),
    ("asyncio/", "asyncio event loop, futures, timers"),
    ("bench/apns/", "benchmark runner (workload loop)"),
)


class CpuSampler:
    """Samples the main thread's Python stack every ``interval`` CPU-seconds."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.stacks: Counter[tuple[Site, ...]] = Counter()
        self._previous: Any = None
        self._cpu_start = 0.0
        self.cpu_seconds = 0.0

    def start(self) -> None:
        """Install the SIGPROF handler and start the CPU-time timer."""
        self._previous = signal.signal(signal.SIGPROF, self._sample)
        self._cpu_start = _cpu()
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)

    def stop(self) -> None:
        """Stop the timer and restore the previous handler."""
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        self.cpu_seconds = _cpu() - self._cpu_start
        signal.signal(signal.SIGPROF, self._previous or signal.SIG_DFL)

    def _sample(self, _signum: int, frame: FrameType | None) -> None:
        stack: list[Site] = []
        while frame is not None:
            code = frame.f_code
            stack.append((code.co_filename, code.co_name))
            frame = frame.f_back
        self.stacks[tuple(stack)] += 1

    def report(self, pushes: int, top: int = 30) -> str:
        """Self and inclusive CPU µs per push, by component and by function."""
        total = sum(self.stacks.values())
        if not total:
            return "no samples"
        per_push = self.cpu_seconds * 1e6 / total / pushes
        own: Counter[Site] = Counter()
        inclusive: Counter[Site] = Counter()
        components: Counter[str] = Counter()
        for stack, count in self.stacks.items():
            own[stack[0]] += count
            components[_component(stack)] += count
            for site in set(stack):
                inclusive[site] += count
        lines = [
            f"{total} samples over {self.cpu_seconds:.2f} s of CPU: {total * per_push:.1f} µs "
            f"CPU per push over {pushes} pushes",
            "(a component's self time includes the C functions, dataclass __init__s and enum "
            "hashes it calls)",
            "",
            "Self time by component:",
        ]
        lines += _rows(components.most_common(), total, per_push, str)
        lines += ["", f"Self time by function (top {top}):"]
        lines += _rows(own.most_common(top), total, per_push, _name)
        lines += ["", f"Inclusive time by function (top {top}):"]
        lines += _rows(inclusive.most_common(top), total, per_push, _name)
        return "\n".join(lines)


def _rows(items: Any, total: int, per_push: float, name: Any) -> list[str]:
    return [
        f"  {count / total:6.1%}  {count * per_push:7.1f} µs  {name(key)}" for key, count in items
    ]


def _name(site: Site) -> str:
    path = PurePath(site[0])
    return f"{path.parent.name}/{path.name}:{site[1]}"


def _component(stack: tuple[Site, ...]) -> str:
    filename = stack[0][0]
    for frame_file, _ in stack:
        # Generated __init__s (dataclasses: h2's events, our models) and enum hashing belong
        # to whoever called them.
        if not frame_file.startswith("<") and not frame_file.endswith(_HELPERS):
            filename = frame_file
            break
    for marker, component in COMPONENTS:
        if marker in filename:
            return component
    return "other: " + PurePath(filename).name


_HELPERS = ("/enum.py", "/typing.py", "/dataclasses.py")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
