"""Child processes (started, awaited, always stopped), /proc readings of them, and the
loopback HTTP and TCP probes the bench waits on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

from .settings import STARTUP_TIMEOUT_S, STOP_TIMEOUT_S


# === Processes ===


class Proc:
    """A child process with its output in a log file; always stopped by `stop_all`."""

    running: list["Proc"] = []

    def __init__(self, name: str, argv: list[str], log: Path, env: Optional[dict] = None,
                 stdout: Optional[Path] = None):
        """With `stdout`, standard output goes to that file (opened for appending, so
        `truncate_stdout` can empty it under the running process) and only stderr to `log`."""
        self.name = name
        self.log_path = log
        self._log = open(log, "wb")
        self.stdout_path = stdout
        self._out = open(stdout, "ab") if stdout else None
        self.popen = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=self._out or self._log,
            stderr=self._log if self._out else subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        Proc.running.append(self)

    def truncate_stdout(self) -> None:
        """Empties the stdout file (an access log), so long runs do not fill the disk."""
        if self.stdout_path:
            os.truncate(self.stdout_path, 0)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, find: Callable[[str], Any], what: str, timeout: float = STARTUP_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while True:
            for line in self.output().splitlines():
                found = find(line)
                if found is not None:
                    return found
            if self.popen.poll() is not None:
                raise BenchError(f"{self.name} exited ({self.popen.returncode}) before {what}:\n"
                                 f"{self.output()[-3000:]}")
            if time.monotonic() >= deadline:
                raise BenchError(f"{self.name} did not report {what} in {timeout}s:\n"
                                 f"{self.output()[-3000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=STOP_TIMEOUT_S)
        self._log.close()
        if self._out:
            self._out.close()
        if self in Proc.running:
            Proc.running.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        for p in list(reversed(cls.running)):
            try:
                p.stop()
            except Exception as e:  # noqa: BLE001 - best effort at teardown
                print(f"warning: stopping {p.name}: {e}", file=sys.stderr)


class BenchError(Exception):
    """A setup or run failure with a message meant for the user."""


def pinned(cpu: Optional[int], argv: list) -> list:
    return (["taskset", "-c", str(cpu)] if cpu is not None else []) + list(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cmd(argv: list, timeout: float, what: str) -> str:
    try:
        r = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                           timeout=timeout, check=False)
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


def clean_env() -> dict[str, str]:
    """This environment without what would change how the processes under test behave."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("SWITCHYARD_", "MOCK_")) and k != "RUST_LOG"
            and k not in ("KUBECONFIG", "POD_NAME", "POD_NAMESPACE")}


def mock_address(line: str) -> Optional[str]:
    """The mock's listening address, from the line announcing it."""
    prefix = "switchyard-mock listening on http://"
    i = line.find(prefix)
    return line[i + len(prefix):].strip() if i >= 0 else None


def wait_until(cond: Callable[[], bool], what: str, proc: Proc,
               timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.popen.poll() is not None:
            raise BenchError(f"{proc.name} exited before {what}:\n{proc.output()[-3000:]}")
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out waiting for {what}:\n{proc.output()[-3000:]}")
        time.sleep(0.05)


_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(url: str) -> Optional[int]:
    try:
        with _LOCAL.open(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def tcp_open(addr: str) -> bool:
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False
