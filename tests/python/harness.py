"""Starting Switchyard's binaries and stopping them: the one process harness of the Python
tests (conftest.py, edges.py, the test modules) and of the benchmark (bench/switchyard_bench).

A `Proc` is a child process whose output goes to a log file that can be polled; every `Proc`
not yet stopped is in `Proc.running`, so `Proc.stop_all` ends whatever a run left behind.
`start_mock` starts `switchyard-mock` and reads its address from its log, `start_serve` starts
`switchyard serve` on a config folder and waits until it serves and its /readyz answers 200.
Children get `child_env()`: this environment without the variables that would change how the
binaries under test behave. Everything listens on 127.0.0.1.

Standard library only (the bench runs without the tests' virtualenv); a failure raises
`HarnessError` with the child's output (conftest reports it without a traceback, as a
`pytest.fail`; the bench prints it as its error). Binaries come from `$SWITCHYARD_BIN_DIR`,
else `<repo>/target/debug/`, unless the caller names one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]

STARTUP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 3.0

# Loopback requests never go through a proxy configured in the environment.
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class HarnessError(Exception):
    """A child that exited, or did not get ready in time; the message carries its output."""


# === Binaries and environment ===


def bin_dir() -> Path:
    env = os.environ.get("SWITCHYARD_BIN_DIR")
    return Path(env) if env else REPO / "target" / "debug"


def binary(name: str) -> Path:
    path = bin_dir() / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise HarnessError(
            f"{name} not found at {path}: run `cargo build --workspace --bins` first "
            "(or point $SWITCHYARD_BIN_DIR at the folder holding the binaries)")
    return path


def child_env(**extra: str) -> dict[str, str]:
    """This environment without what would change how the processes under test behave
    (their own settings, the log filter, a cluster to talk to), plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SWITCHYARD_", "MOCK_")) and k != "RUST_LOG"
           and k not in ("KUBECONFIG", "POD_NAME", "POD_NAMESPACE")}
    env.update(extra)
    return env


# === Loopback probes ===


def http(method: str, url: str, timeout: float = 5.0) -> tuple[int, str]:
    """One plain HTTP request; returns (status, body text) without raising on 4xx/5xx."""
    req = urllib.request.Request(url, method=method)
    try:
        with LOCAL.open(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def http_status(url: str, timeout: float = 2.0) -> Optional[int]:
    """The status of a GET, or None when nothing answered."""
    try:
        with LOCAL.open(url, timeout=timeout) as r:
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


def free_port() -> int:
    """A port nothing listens on right now (another process may take it before it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# === Processes ===


class Proc:
    """A child process whose combined output goes to a log file that can be polled.

    The class attributes are the defaults of the tests; the bench's subclass waits and stops
    longer, starts each child in a session of its own and quotes only the end of a log."""

    running: list["Proc"] = []
    startup_timeout = STARTUP_TIMEOUT_S
    stop_timeout = STOP_TIMEOUT_S
    # How much of the log (its last characters) a failure quotes; None: all of it.
    output_tail: Optional[int] = None
    new_session = False

    def __init__(self, name: str, argv: Sequence[Any], log_path: Path,
                 env: Optional[dict[str, str]] = None, stdout: Optional[Path] = None):
        """With `stdout`, standard output goes to that file (opened for appending, so
        `truncate_stdout` can empty it under the running process) and only stderr to
        `log_path`."""
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.stdout_path = stdout
        self._out = open(stdout, "ab") if stdout else None
        self.popen = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=self._out or self._log,
            stderr=self._log if self._out else subprocess.STDOUT,
            env=env,
            start_new_session=self.new_session,
        )
        Proc.running.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def quoted_output(self) -> str:
        out = self.output()
        return out if self.output_tail is None else out[-self.output_tail:]

    def truncate_stdout(self) -> None:
        """Empties the stdout file (an access log), so long runs do not fill the disk."""
        if self.stdout_path:
            os.truncate(self.stdout_path, 0)

    def wait_for(self, find: Callable[[str], Any], what: str, timeout: Optional[float] = None):
        """Polls the output until `find` returns a value for some line; bounded by `timeout`
        (default `startup_timeout`)."""
        timeout = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            for line in self.output().splitlines():
                found = find(line)
                if found is not None:
                    return found
            if self.popen.poll() is not None:
                raise HarnessError(f"{self.name} exited with {self.popen.returncode} before "
                                   f"{what}:\n{self.quoted_output()}")
            if time.monotonic() >= deadline:
                raise HarnessError(f"{self.name} did not report {what} within {timeout}s:\n"
                                   f"{self.quoted_output()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=self.stop_timeout)
        self._log.close()
        if self._out:
            self._out.close()
        if self in Proc.running:
            Proc.running.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        """Stops every child not yet stopped, the last started first."""
        for p in list(reversed(Proc.running)):
            try:
                p.stop()
            except Exception as e:  # noqa: BLE001 - best effort at teardown
                print(f"warning: stopping {p.name}: {e}", file=sys.stderr)


def wait_until(cond: Callable[[], bool], what: str, proc: Proc,
               timeout: Optional[float] = None) -> None:
    """Polls `cond` until it holds; fails when `proc` exits first or after `timeout`
    (default the process's `startup_timeout`)."""
    timeout = proc.startup_timeout if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.popen.poll() is not None:
            raise HarnessError(f"{proc.name} exited before {what}:\n{proc.quoted_output()}")
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out waiting for {what}:\n{proc.quoted_output()}")
        time.sleep(0.05)


# === The mock upstream ===


def mock_address(line: str) -> Optional[str]:
    """The mock's listening address (host:port), from the line announcing it."""
    prefix = "switchyard-mock listening on http://"
    i = line.find(prefix)
    return line[i + len(prefix):].strip() if i >= 0 else None


@dataclass
class Mock:
    proc: Proc
    addr: str  # host:port

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def clear(self) -> None:
        status, body = http("DELETE", f"{self.url}/mock/requests")
        assert status in (200, 204), f"clearing mock requests: {status} {body}"

    def requests(self, path: Optional[str] = None) -> list[dict]:
        status, body = http("GET", f"{self.url}/mock/requests")
        assert status == 200, f"reading mock requests: {status} {body}"
        recs = json.loads(body)
        if path is not None:
            recs = [r for r in recs if r["path"] == path]
        return recs


def start_mock(log_path: Path, args: Sequence[Any] = (), *, exe: Optional[Path] = None,
               prefix: Sequence[Any] = (), proc_type: type[Proc] = Proc, **env: str) -> Mock:
    """Starts `switchyard-mock` on 127.0.0.1:0 with `args` (after `prefix`, e.g. a taskset
    command), its environment `child_env(RUST_LOG="warn", **env)`, and waits for its address.
    The caller stops it with `mock.proc.stop()`."""
    proc = proc_type(
        "switchyard-mock",
        [*prefix, exe or binary("switchyard-mock"), "--listen", "127.0.0.1:0", *args],
        log_path,
        child_env(**{"RUST_LOG": "warn", **env}),
    )
    try:
        return Mock(proc, proc.wait_for(mock_address, "its listening address"))
    except BaseException:
        proc.stop()
        raise


# === The gateway ===


def serving_addresses(line: str) -> Optional[tuple[str, str]]:
    """The API and admin addresses from the gateway's JSON log line 'switchyard serving'."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    fields = rec.get("fields") if isinstance(rec, dict) else None
    if isinstance(fields, dict) and fields.get("message") == "switchyard serving":
        return fields["listen"], fields["admin"]
    return None


@dataclass
class Gateway:
    proc: Proc
    listen: str  # host:port of the API listener
    admin: str  # host:port of the admin listener

    @property
    def base_url(self) -> str:
        return f"http://{self.listen}/v1"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin}"

    def metrics(self) -> str:
        status, body = http("GET", f"{self.admin_url}/metrics")
        assert status == 200, f"/metrics: {status} {body}"
        return body


def start_serve(config_dir: Path, log_path: Path, args: Sequence[Any] = (), *,
                name: str = "switchyard", exe: Optional[Path] = None,
                env: Optional[dict[str, str]] = None, stdout: Optional[Path] = None,
                prefix: Sequence[Any] = (), proc_type: type[Proc] = Proc) -> Gateway:
    """Starts `switchyard serve --config <config_dir>` with both listeners on 127.0.0.1:0, JSON
    logs and `args` (after `prefix`, e.g. a taskset command), in `env` (default
    `child_env(RUST_LOG="info")`), and waits until it says it serves and its /readyz answers
    200. With `stdout`, the access log goes to that file. The caller stops it with
    `gw.proc.stop()`."""
    proc = proc_type(name, [
        *prefix, exe or binary("switchyard"), "serve",
        "--config", config_dir,
        "--listen", "127.0.0.1:0",
        "--admin-listen", "127.0.0.1:0",
        "--log-format", "json",
        *args,
    ], log_path, child_env(RUST_LOG="info") if env is None else env, stdout=stdout)
    try:
        listen, admin = proc.wait_for(serving_addresses, "'switchyard serving'")
        gw = Gateway(proc, listen, admin)
        wait_until(lambda: http_status(f"{gw.admin_url}/readyz", timeout=1.0) == 200,
                   f"{name} /readyz", proc)
        return gw
    except BaseException:
        proc.stop()
        raise
