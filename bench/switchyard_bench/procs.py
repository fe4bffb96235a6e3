"""Child processes (started, awaited, always stopped), /proc readings of them, and the
loopback HTTP and TCP probes the bench waits on."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Optional

import harness
from harness import HarnessError

from .settings import STARTUP_TIMEOUT_S, STOP_TIMEOUT_S


# === Processes ===


class Proc(harness.Proc):
    """A child process (tests/python/harness.py) as the bench runs it: in a session of its own,
    given longer to start and to stop, its failures quoting the end of its log. Every one is
    stopped by `Proc.stop_all` at the end of a run."""

    startup_timeout = STARTUP_TIMEOUT_S
    stop_timeout = STOP_TIMEOUT_S
    output_tail = 3000
    new_session = True


# A setup or run failure with a message meant for the user; the same class as the harness's,
# so a child that exits or never gets ready is one too.
BenchError = HarnessError


def pinned(cpu: Optional[int], argv: list) -> list:
    return (["taskset", "-c", str(cpu)] if cpu is not None else []) + list(argv)


def run_cmd(argv: list, timeout: float, what: str, env: Optional[dict] = None,
            cwd: Optional[Path] = None) -> str:
    try:
        r = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                           timeout=timeout, check=False, env=env, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{what} did not finish in {timeout:.0f}s") from e
    if r.returncode != 0:
        raise BenchError(f"{what} failed ({r.returncode}):\n{r.stderr[-3000:]}{r.stdout[-2000:]}")
    return r.stdout

# === /proc readings ===


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def threads(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_ns(pid: int, name: str) -> int:
    """On-CPU time of the process's threads named `name`, in ns. From `schedstat`, which the
    scheduler keeps in ns: a thread busy for a few ms a second is lost in `stat`'s 10 ms ticks."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            if (task / "comm").read_text().strip() == name:
                total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


class Meter:
    """RSS and CPU of a proxy: one process, or nginx's master and its workers."""

    def __init__(self, pid: int, with_children: bool):
        self.pid = pid
        self.with_children = with_children

    def pids(self) -> list[int]:
        return [self.pid] + (children(self.pid) if self.with_children else [])

    def rss(self) -> int:
        return sum(rss_bytes(p) for p in self.pids())

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids())


class Sampler:
    """Samples a meter's RSS in the background (every `period`) while a workload runs."""

    def __init__(self, meter: Optional[Meter], period: float = 0.05):
        import threading

        self.meter = meter
        self.period = period
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.meter:
                self.peak = max(self.peak, self.meter.rss())
            self._stop.wait(self.period)

    def __enter__(self) -> "Sampler":
        self.cpu0 = self.meter.cpu() if self.meter else 0.0
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.wall = time.monotonic() - self.t0
        self.cpu_s = (self.meter.cpu() - self.cpu0) if self.meter else 0.0
