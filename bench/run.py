#!/usr/bin/env python3
"""`make bench`: Switchyard against a direct call to the mock upstream and against nginx.

One run starts `switchyard-mock` (the upstream), Switchyard in front of it, and nginx as a
plain reverse proxy to the same mock, then runs every workload against all three targets,
interleaved round by round, and prints one table with ratios. Raw figures go to
`bench/results/latest.json`.

Pinning (`taskset`): the load generator and the mock share one core, the proxy under test
(Switchyard or nginx) gets the other, so both proxies have the same one-core budget. nginx runs
`worker_processes 1`; Switchyard's tokio runtime sees one CPU and so runs one worker thread.

Load: `wrk` (Debian) for closed-loop throughput and latency; `switchyard-loadgen`
(bench/loadgen) for time to first byte, open-loop fixed-rate latency and held slow streams.

TLS upstream (on by default, `--no-tls-upstream` skips it): a second, smaller workload set in
every round, through an nginx "provider edge" (TLS, h2 offered by ALPN, certificate from a
throwaway CA made with openssl) in front of the same mock and pinned with it: `direct-tls`
(wrk -> edge), `switchyard-tls` (wrk -> Switchyard -> edge over h2, the backend trusting the CA
through `spec.tls.caSecretRef`) and `nginx-tls` (wrk -> nginx -> edge; nginx 1.22 proxies over
HTTP/1.1 only). The protocol each client spoke to the edge is read from the edge's access log
during one warm-up request each; the load then runs with that log off.

Everything listens on 127.0.0.1, every load loop is bounded in time and in count, and every
child process is stopped on exit. Standard library only.

    python3 bench/run.py                 # the full run (`make bench`)
    python3 bench/run.py --duration 3 --rounds 1 --no-micro   # a quick look
    python3 bench/run.py --no-tls-upstream                     # without the TLS-upstream set
    python3 bench/run.py --smoke --bin-dir target/debug --out /tmp/b.json   # harness check
    python3 bench/run.py --table-from bench/results/latest.json            # reprint a table
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
DEFAULT_OUT = BENCH / "results" / "latest.json"
CARGO = os.environ.get("CARGO", "cargo")

# The key the mock requires. Direct calls present it themselves; nginx and Switchyard inject it.
UPSTREAM_KEY = "sk-bench-upstream"
CALLER_AUTH = "Authorization: Bearer sk-bench-caller"
MODEL = "mock-model"
SLOW_MODEL = "slow-model"

TARGETS = ("direct", "nginx", "switchyard")
# The same two proxies with their access log off (workloads 1 and 2 only): what the log costs.
LOG_OFF = ("nginx-nolog", "switchyard-nolog")
# Streams whose chunks the mock writes one at a time, SEP_DELAY_MS apart (a model emitting
# tokens), routed by this model name; the burst case (one write for the whole answer) is
# workload 2.
SEP_MODEL = "sep-model"
# Agentic bodies (bench/bodies/): routed by model to an OpenAI-dialect backend or to an
# Anthropic one, so each body goes through passthrough and through translation.
AGENT_OPENAI = "agent-openai"
AGENT_ANTHROPIC = "agent-anthropic"
BODIES = BENCH / "bodies"
ANTHROPIC_HEADERS = ["anthropic-version: 2023-06-01"]
# The upstream-TLS set: the same load through a TLS + h2 "provider edge" in front of the mock.
TLS_TARGETS = ("direct-tls", "nginx-tls", "switchyard-tls")
# The model (and route) Switchyard sends to the edge, through a backend trusting its CA.
TLS_MODEL = "bench-tls"
# The protocol row reads the edge's access log; these tell the warm-up requests apart there.
PROBE_AGENT = "switchyard-bench-probe/"
# Switchyard with --busy-poll: an extra target of the open-loop workloads.
BUSY = "switchyard_busy_poll"
STARTUP_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
MiB = 1024 * 1024

# Every request carries the same messages; streams ask for usage (as the gateway always does
# upstream) so the mock sends the same bytes whichever way the request came.
MESSAGES = [
    {"role": "system", "content": "You are a benchmark."},
    {"role": "user", "content": "Say something, please."},
]

# Targets from issue 9. Ratios are taken in the same run on the same machine.
LIMITS = {
    "throughput_ratio_min": 0.9,
    "added_p50_us_max": 100.0,
    "added_p99_vs_nginx_max": 1.5,
    "idle_rss_mib_max": 20.0,
    "streams_rss_mib_max": 64.0,
    "rss_growth_mib_max": 2.0,
    "lookup_growth_max": 1.5,
    "compile_10k_ms_max": 50.0,
    # Issue 21: the same run, access log on for both proxies.
    "throughput_vs_nginx_min": 1.0,
    "access_log_cpu_us_max": 1.0,
    "sep_chunk_cpu_vs_nginx_max": 1.0,
    "agentic_passthrough_cpu_vs_nginx_max": 1.2,
    "translation_us_max": 100.0,
    # Issue 22: affinity, and the budget reservation kept locally, per request.
    "cost_control_us_max": 2.0,
    "stream_event_ns_max": 1000.0,
    "streams_rss_vs_nginx_max": 1.0,
    # Issue 21 item 3: the control plane at 10 000 routes.
    "scale_rss_mib_max": 64.0,
    "scale_status_s_max": 15.0,
    "scale_apply_ms_max": 500.0,
}


# === Settings ===


class Settings:
    """How long and how hard each workload runs."""

    def __init__(self, a: argparse.Namespace):
        smoke = a.smoke
        self.smoke = smoke
        self.duration = a.duration if a.duration is not None else (0.3 if smoke else 10.0)
        self.warmup = a.warmup if a.warmup is not None else (0.1 if smoke else 1.0)
        self.rounds = a.rounds if a.rounds is not None else (1 if smoke else 3)
        self.gateway_args: list[str] = list(a.gateway_arg or [])
        self.connections = 32
        self.chunks = 20
        self.rates = [float(r) for r in a.rates.split(",")] if a.rates else (
            [100.0] if smoke else [500.0, 2000.0])
        self.ttfb_rate = 50.0 if smoke else 500.0
        self.hold_streams = a.hold_streams if a.hold_streams is not None else (
            20 if smoke else 1000)
        self.slow_chunks = 5 if smoke else 60
        self.slow_delay_ms = 20 if smoke else 50
        self.hold_ramp_ms = 100 if smoke else 1000
        self.max_requests = 2_000_000
        self.timeout_s = 10.0
        # Both proxies log every request by default, as they are deployed (nginx with a
        # buffered log); the log-off rows measure each without it.
        self.access_log = not a.no_access_log
        self.sep_delay_ms = a.sep_delay_ms
        self.agentic = not a.no_agentic
        self.agentic_duration = a.agentic_duration if a.agentic_duration is not None else (
            0.3 if smoke else max(1.0, round(self.duration / 3)))
        self.hold_streams_big = a.hold_streams_big if a.hold_streams_big is not None else (
            40 if smoke else 10000)
        # A second Switchyard with --busy-poll, measured on the open-loop workloads only.
        self.busy_poll = a.busy_poll
        self.kube_changes = 2 if smoke else 30
        # The control plane at scale (#21 item 3): a new operator's 10 000 routes.
        self.kube_scale_routes = a.kube_scale_routes if a.kube_scale_routes is not None else (
            20 if smoke else 10000)
        self.kube_scale_backends = max(1, self.kube_scale_routes // 10)
        self.kube_scale_timeout_s = 120.0
        self.kube_timeout_s = 15.0
        # The upstream-TLS set runs in every round for half the duration (wrk counts whole
        # seconds) at the first open-loop rate: it adds about a fifth to the run.
        self.tls_upstream = not a.no_tls_upstream
        self.tls_duration = a.tls_duration if a.tls_duration is not None else float(
            max(1, round(self.duration / 2)))
        self.tls_rate = self.rates[0]


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


# === Tools: install, build ===


def ensure_tools(install: bool, need_nginx: bool) -> dict[str, Optional[str]]:
    """Finds nginx and wrk, installing them with apt-get when missing and allowed."""
    found = {"nginx": find_nginx(), "wrk": shutil.which("wrk"), "taskset": shutil.which("taskset")}
    missing = [p for p, path in (("nginx", found["nginx"]), ("wrk", found["wrk"])) if not path]
    if not need_nginx and "nginx" in missing:
        missing.remove("nginx")
    if missing and install:
        apt = shutil.which("apt-get")
        if not apt:
            raise BenchError(f"{', '.join(missing)} missing and apt-get not available: "
                             "install them, or pass --no-install to run without")
        sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
        if sudo is None:
            raise BenchError(f"{', '.join(missing)} missing; installing needs root or sudo")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive",
                   # Keeps the package from starting a system nginx on port 80.
                   RUNLEVEL="1")
        lock = ["-o", "DPkg::Lock::Timeout=300"]
        print(f"bench: installing {' '.join(missing)} with apt-get", file=sys.stderr)
        for argv in ([*sudo, apt, *lock, "update", "-qq"],
                     [*sudo, apt, *lock, "install", "-y", "-qq", "--no-install-recommends",
                      *missing]):
            r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                raise BenchError(f"{' '.join(argv)} failed:\n{r.stderr[-2000:]}")
        found["nginx"] = find_nginx()
        found["wrk"] = shutil.which("wrk")
    return found


def find_nginx() -> Optional[str]:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


def target_dir() -> Path:
    d = os.environ.get("CARGO_TARGET_DIR")
    return Path(d) if d else REPO / "target"


def build_release() -> Path:
    print(f"bench: cargo build --release (target dir {target_dir()})", file=sys.stderr)
    run_cmd([CARGO, "build", "--release", "-p", "switchyard", "-p",
             "switchyard-mock", "-p", "switchyard-loadgen"], 3600, "cargo build --release")
    return target_dir() / "release"


def binaries(bin_dir: Path) -> dict[str, Path]:
    out = {}
    for name in ("switchyard", "switchyard-mock", "switchyard-loadgen"):
        p = bin_dir / name
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise BenchError(f"{p} not found: build it (cargo build --release -p {name}) "
                             "or point --bin-dir at the folder holding it")
        out[name] = p
    return out


# === The three targets ===


def gateway_config(mock: str, s: Settings, edge: Optional[tuple[str, str]] = None) -> str:
    """The bench config; with `edge` (its address and the PEM of its CA) also the TLS-upstream
    route: model `bench-tls` to the same mock behind the TLS edge."""
    return f"""\
apiVersion: v1
kind: Secret
metadata: {{name: upstream}}
stringData: {{apiKey: "{UPSTREAM_KEY}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: mock}}
spec:
  provider: openai-compatible
  endpoint: http://{mock}/v1
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models: [{{name: {MODEL}, pricing: {{inputPerMillion: "0.15", outputPerMillion: "0.60"}}}}]
  timeouts: {{connect: 2s, firstByte: 30s, idle: 30s}}
---
# The same mock, asked for slow streams (workload 4) through its request-header knobs.
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: mock-slow}}
spec:
  provider: openai-compatible
  endpoint: http://{mock}/v1
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models: [{{name: {MODEL}}}]
  timeouts: {{connect: 2s, firstByte: 30s, idle: 30s}}
  headers:
    set: {{x-mock-chunks: "{s.slow_chunks}", x-mock-chunk-delay-ms: "{s.slow_delay_ms}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: bench}}
spec:
  match: {{models: ["{MODEL}"]}}
  backends: [{{backendRef: {{name: mock}}, model: {MODEL}}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: bench-slow}}
spec:
  match: {{models: ["{SLOW_MODEL}"]}}
  backends: [{{backendRef: {{name: mock-slow}}, model: {MODEL}}}]
---
# The same mock writing each chunk of a stream on its own, {s.sep_delay_ms} ms apart.
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: mock-sep}}
spec:
  provider: openai-compatible
  endpoint: http://{mock}/v1
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models: [{{name: {MODEL}}}]
  timeouts: {{connect: 2s, firstByte: 30s, idle: 30s}}
  headers:
    set: {{x-mock-chunk-delay-ms: "{s.sep_delay_ms}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: bench-sep}}
spec:
  match: {{models: ["{SEP_MODEL}"]}}
  backends: [{{backendRef: {{name: mock-sep}}, model: {MODEL}}}]
---
# The same mock as an Anthropic backend (its /v1/messages), for the agentic bodies.
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: mock-anthropic}}
spec:
  provider: anthropic
  endpoint: http://{mock}
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models: [{{name: {MODEL}, pricing: {{inputPerMillion: "3", outputPerMillion: "15"}}}}]
  timeouts: {{connect: 2s, firstByte: 30s, idle: 30s}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: agent-openai}}
spec:
  match: {{models: ["{AGENT_OPENAI}"]}}
  backends: [{{backendRef: {{name: mock}}, model: {MODEL}}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: agent-anthropic}}
spec:
  match: {{models: ["{AGENT_ANTHROPIC}"]}}
  backends: [{{backendRef: {{name: mock-anthropic}}, model: {MODEL}}}]
""" + (tls_gateway_config(*edge) if edge else "")


def tls_gateway_config(edge: str, ca_pem: str) -> str:
    port = edge.rsplit(":", 1)[1]
    # A JSON string is YAML: the PEM's newlines survive as escapes.
    return f"""\
---
apiVersion: v1
kind: Secret
metadata: {{name: edge-ca}}
stringData: {{"ca.crt": {json.dumps(ca_pem)}}}
---
# The mock behind the TLS edge: h2 by ALPN, the edge's certificate (for localhost) checked
# against the throwaway CA only.
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: edge-tls}}
spec:
  provider: openai-compatible
  endpoint: https://localhost:{port}/v1
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models: [{{name: {MODEL}, pricing: {{inputPerMillion: "0.15", outputPerMillion: "0.60"}}}}]
  timeouts: {{connect: 2s, firstByte: 30s, idle: 30s}}
  tls: {{caSecretRef: {{name: edge-ca, key: ca.crt}}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: {TLS_MODEL}}}
spec:
  match: {{models: ["{TLS_MODEL}"]}}
  backends: [{{backendRef: {{name: edge-tls}}, model: {MODEL}}}]
"""


NGINX_CONF = """\
# nginx as the floor for a proxy: a plain reverse proxy to the same mock, one worker (the same
# one-core budget as Switchyard), upstream keep-alive, no buffering (streams pass through as
# they come), its access log on and buffered as it is deployed (64 KiB buffer, flushed every
# second; off with --no-access-log, and on the log-off server), request bodies up to 128 KiB
# kept in memory (the default 16 KiB would write agent-sized bodies to a temp file), and
# keep-alive request limits lifted so neither side of nginx closes connections every 1000
# requests.
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
    access_log {access_log};
    client_body_buffer_size 128k;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    upstream mock {{
        server {mock};
        keepalive 256;
        keepalive_requests 10000000;
    }}
    proxy_http_version 1.1;
    proxy_buffering off;
    proxy_set_header Connection "";
    proxy_set_header Authorization "Bearer {key}";
    proxy_set_header x-api-key "{key}";
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ proxy_pass http://mock; }}
    }}
    server {{
        listen 127.0.0.1:{nolog_port} backlog=4096;
        access_log off;
        location / {{ proxy_pass http://mock; }}
    }}
    server {{
        listen 127.0.0.1:{sep_port} backlog=4096;
        location / {{
            proxy_pass http://mock;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {key}";
            proxy_set_header x-mock-chunk-delay-ms "{sep_delay_ms}";
        }}
    }}
    server {{
        listen 127.0.0.1:{slow_port} backlog=4096;
        location / {{
            proxy_pass http://mock;
            # A proxy_set_header here replaces every inherited one, so repeat them.
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {key}";
            proxy_set_header x-mock-chunks "{slow_chunks}";
            proxy_set_header x-mock-chunk-delay-ms "{slow_delay_ms}";
        }}
    }}
{tls}}}
"""

# nginx-tls, added to NGINX_CONF when the TLS-upstream set runs: the same proxy to the TLS
# edge, with upstream keep-alive, verifying the edge's certificate against the throwaway CA as
# Switchyard does. nginx 1.22 cannot proxy over h2: it speaks HTTP/1.1 (over TLS) upstream.
NGINX_TLS_SERVER = """\
    upstream edge {{
        server {edge};
        keepalive 256;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass https://edge;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
        }}
    }}
"""

# The "provider edge" of the TLS-upstream set: TLS with h2 offered by ALPN (as public provider
# APIs are), proxying to the mock over HTTP/1.1 with keep-alive and no buffering. It stands
# for the provider, so it runs pinned with the mock on the load CPU. Its access log (the
# protocol and TLS version each client spoke) is on for the warm-up requests only: the harness
# then rewrites this file with `access_log off` and reloads the edge before any load.
EDGE_CONF = """\
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format proto '$server_protocol|$ssl_protocol|$status|$http_user_agent';
    access_log {access_log};
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    # Since nginx 1.19.7 these also bound the requests and idle time of an h2 connection.
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    upstream mock {{
        server {mock};
        keepalive 64;
        keepalive_requests 10000000;
    }}
    proxy_http_version 1.1;
    proxy_buffering off;
    proxy_set_header Connection "";
    server {{
        listen 127.0.0.1:{port} ssl http2 backlog=4096;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{ proxy_pass http://mock; }}
    }}
}}
"""


def make_pki(work: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for `localhost` (DNS SAN only) issued by it,
    with the openssl CLI: P-256, valid a day (the recipe of tests/python/edges.py)."""
    openssl = shutil.which("openssl")
    if not openssl:
        raise BenchError("openssl not found (needed for the TLS edge; --no-tls-upstream skips it)")
    work.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        r = subprocess.run([openssl, *args], cwd=work, capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise BenchError(f"openssl {' '.join(args)} failed:\n{r.stdout}{r.stderr}")

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=Switchyard bench CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", "edge.key", "-out", "edge.csr", "-subj", "/CN=localhost")
    (work / "edge.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
        "subjectAltName=DNS:localhost\n")
    run("x509", "-req", "-in", "edge.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-sha256", "-extfile", "edge.ext", "-out", "edge.pem")
    return {"ca": work / "ca.pem", "cert": work / "edge.pem", "key": work / "edge.key"}


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


class Stack:
    """The mock, Switchyard and (when installed) nginx, started once for the whole run; with
    `edge_nginx` also the TLS edge in front of the mock, Switchyard's `bench-tls` route to it
    and nginx's server proxying to it (the TLS-upstream set)."""

    def __init__(self, bins: dict[str, Path], nginx: Optional[str], s: Settings,
                 work: Path, load_cpu: Optional[int], proxy_cpu: Optional[int],
                 edge_nginx: Optional[str] = None):
        self.bins = bins
        self.s = s
        self.work = work
        self.load_cpu = load_cpu
        self.proxy_cpu = proxy_cpu
        env = clean_env()
        self.env = env

        self.mock_proc = Proc("switchyard-mock", pinned(load_cpu, [
            bins["switchyard-mock"], "--listen", "127.0.0.1:0", "--api-key", UPSTREAM_KEY,
            "--chunks", str(s.chunks), "--models", MODEL,
        ]), work / "mock.log", dict(env, RUST_LOG="warn"))
        self.mock = self.mock_proc.wait_for(mock_address, "its listening address")

        self.edge_proc: Optional[Proc] = None
        self.edge: Optional[str] = None
        self.nginx_tls: Optional[str] = None
        if edge_nginx:
            self._start_edge(edge_nginx)

        config = work / "config"
        config.mkdir()
        # The access log (one JSON line per request, to the log file here) is on, as nginx's
        # is: both proxies are measured doing the same work. --no-access-log turns both off;
        # the log-off rows run a second Switchyard without it either way.
        help_text = subprocess.run([bins["switchyard"], "serve", "--help"],
                                   capture_output=True, text=True).stdout
        no_log = ["--no-access-log"] if "--no-access-log" in help_text else []
        serve_flags = [] if s.access_log else list(no_log)
        # The bench config has no AIConsumer: a gateway that requires a key by default is
        # told to serve without one, as nginx does (and as gateways before that default did).
        if "--require-auth[=" in help_text:
            serve_flags.append("--require-auth=false")
        # Room for the larger held-stream workload: a stream is a request in flight (and a
        # connection) until its last byte, and the defaults (4096, 10 000) would shed them.
        big = hold_big_streams(s)
        if big and "--max-in-flight" in help_text:
            serve_flags += ["--max-in-flight", str(max(4096, big + 1024)),
                            "--max-connections", str(max(10_000, big + 1024))]
        # Extra `switchyard serve` flags from --gateway-arg (e.g. --upstream-http2=false).
        serve_flags.extend(s.gateway_args)
        self.serve_flags = serve_flags
        (config / "bench.yaml").write_text(gateway_config(
            self.mock, s, (self.edge, self.pki["ca"].read_text()) if self.edge else None))
        def serving(line: str) -> Optional[tuple[str, str]]:
            try:
                fields = json.loads(line).get("fields", {})
            except (ValueError, AttributeError):
                return None
            if fields.get("message") == "switchyard serving":
                return fields["listen"], fields["admin"]
            return None

        def start_gateway(name: str, extra: list) -> tuple[Proc, str, str]:
            """A `switchyard serve` on the bench config, once it says it is ready."""
            # Its access log (stdout) goes to a file of its own, emptied between workloads.
            proc = Proc(name, pinned(proxy_cpu, [
                bins["switchyard"], "serve", "--config", config, "--listen", "127.0.0.1:0",
                "--admin-listen", "127.0.0.1:0", "--log-format", "json", *serve_flags, *extra,
            ]), work / f"{name}.log", dict(env, RUST_LOG="info"),
                stdout=work / f"{name}.access.log")
            listen, admin = proc.wait_for(serving, "'switchyard serving'")
            wait_until(lambda: http_status(f"http://{admin}/readyz") == 200,
                       f"{name} /readyz", proc)
            return proc, listen, admin

        self.gw_proc, self.gateway, self.admin = start_gateway("switchyard", [])
        self.gw_started = time.monotonic()
        # The log-off twin, for workloads 1 and 2.
        self.nolog_proc: Optional[Proc] = None
        self.gateway_nolog: Optional[str] = None
        if no_log:
            self.nolog_proc, self.gateway_nolog, _ = start_gateway(
                "switchyard-nolog", [] if no_log[0] in serve_flags else no_log)

        # The same gateway with busy polling, for the open-loop latency workloads. It sleeps
        # (costs nothing) except for its window after each of its own requests.
        self.busy_proc: Optional[Proc] = None
        self.gateway_busy: Optional[str] = None
        if s.busy_poll and s.busy_poll not in ("0", "0s") and "--busy-poll" in help_text:
            self.busy_proc, self.gateway_busy, _ = start_gateway(
                "switchyard-busy-poll", ["--busy-poll", s.busy_poll])

        self.nginx_proc: Optional[Proc] = None
        self.nginx_version = None
        if nginx:
            port, slow_port = free_port(), free_port()
            nolog_port, sep_port = free_port(), free_port()
            tls_port = free_port() if self.edge else None
            nprefix = work / "nginx"
            nprefix.mkdir()
            conf = nprefix / "nginx.conf"
            conf.write_text(NGINX_CONF.format(
                prefix=nprefix, mock=self.mock, key=UPSTREAM_KEY, port=port,
                nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                slow_port=slow_port, slow_chunks=s.slow_chunks, slow_delay_ms=s.slow_delay_ms,
                nolog_port=nolog_port, sep_port=sep_port, sep_delay_ms=s.sep_delay_ms,
                worker_connections=max(4096, 2 * max(s.hold_streams, s.hold_streams_big) + 256),
                access_log=f"{nprefix}/access.log combined buffer=64k flush=1s" if s.access_log
                else "off",
                tls=NGINX_TLS_SERVER.format(edge=self.edge, port=tls_port, ca=self.pki["ca"])
                if self.edge else ""))
            self.nginx_version = subprocess.run(
                [nginx, "-v"], capture_output=True, text=True).stderr.strip()
            self.nginx_proc = Proc("nginx", pinned(proxy_cpu, [
                nginx, "-p", nprefix, "-e", nprefix / "error.log", "-c", conf,
                "-g", "daemon off;",
            ]), work / "nginx.log")
            self.nginx = f"127.0.0.1:{port}"
            self.nginx_slow = f"127.0.0.1:{slow_port}"
            self.nginx_nolog = f"127.0.0.1:{nolog_port}"
            self.nginx_sep = f"127.0.0.1:{sep_port}"
            self.nginx_tls = f"127.0.0.1:{tls_port}" if tls_port else None
            wait_until(lambda: tcp_open(self.nginx) and tcp_open(self.nginx_slow) and tcp_open(
                self.nginx_nolog) and tcp_open(self.nginx_sep) and (
                not self.nginx_tls or tcp_open(self.nginx_tls)),
                       "nginx listening", self.nginx_proc)
            self.nginx_started = time.monotonic()

    def _start_edge(self, nginx: str) -> None:
        """The TLS edge, on the load CPU with the mock, its access log on (for the warm-up
        requests of `tls_probe`, which turns it off)."""
        self.pki = make_pki(self.work / "pki")
        prefix = self.work / "edge"
        prefix.mkdir()
        self.edge_prefix = prefix
        self.edge_port = free_port()
        self.edge_log = prefix / "probe.access.log"
        self._write_edge_conf(access_log=True)
        self.edge_proc = Proc("nginx-edge", pinned(self.load_cpu, [
            nginx, "-p", prefix, "-e", prefix / "error.log", "-c", prefix / "nginx.conf",
            "-g", "daemon off;",
        ]), self.work / "nginx-edge.log")
        self.edge = f"127.0.0.1:{self.edge_port}"
        wait_until(lambda: tcp_open(self.edge), "the TLS edge listening", self.edge_proc)

    def _write_edge_conf(self, access_log: bool) -> None:
        (self.edge_prefix / "nginx.conf").write_text(EDGE_CONF.format(
            prefix=self.edge_prefix, mock=self.mock, port=self.edge_port,
            nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            cert=self.pki["cert"], key=self.pki["key"],
            access_log=f"{self.edge_log} proto" if access_log else "off"))

    def edge_log_off(self) -> None:
        """Rewrites the edge's config with its access log off and reloads it (SIGHUP), then
        waits until the old worker (and so every connection it held) is gone."""
        assert self.edge_proc
        old = set(children(self.edge_proc.pid))
        self._write_edge_conf(access_log=False)
        os.kill(self.edge_proc.pid, signal.SIGHUP)

        if not old:  # no /proc/<pid>/task/*/children here: give the reload a moment
            time.sleep(1.0)
            return

        def reloaded() -> bool:
            now = set(children(self.edge_proc.pid))
            return bool(now) and not (now & old)

        wait_until(reloaded, "the TLS edge's reload (access log off)", self.edge_proc)

    def edge_log_lines(self) -> int:
        try:
            return len(self.edge_log.read_text().splitlines())
        except OSError:
            return 0

    def targets(self) -> list[str]:
        return [t for t in TARGETS if t != "nginx" or self.nginx_proc]

    def log_off_targets(self) -> list[str]:
        """The proxies with their access log off (workloads 1 and 2)."""
        return [t for t, up in (("nginx-nolog", self.nginx_proc),
                                ("switchyard-nolog", self.nolog_proc)) if up]

    def tls_targets(self) -> list[str]:
        """Targets of the TLS-upstream set (none without the edge)."""
        if not self.edge:
            return []
        return [t for t in TLS_TARGETS if t != "nginx-tls" or self.nginx_tls]

    def model(self, target: str) -> str:
        return TLS_MODEL if target == "switchyard-tls" else MODEL

    def latency_targets(self) -> list[str]:
        """Targets of the open-loop workloads: also the busy-polling gateway, when started."""
        return self.targets() + ([BUSY] if self.busy_proc else [])

    def url(self, target: str, slow: bool = False, sep: bool = False,
            path: str = "/v1/chat/completions") -> str:
        if target == "direct-tls":
            # wrk verifies no certificate: the address is enough.
            return f"https://{self.edge}{path}"
        nginx = "nginx_slow" if slow else "nginx_sep" if sep else "nginx"
        host = {"direct": self.mock, "switchyard": self.gateway,
                BUSY: self.gateway_busy, "switchyard-tls": self.gateway,
                "switchyard-nolog": self.gateway_nolog,
                "nginx-tls": self.nginx_tls, "nginx-nolog": getattr(self, "nginx_nolog", None),
                "nginx": getattr(self, nginx, None)}[target]
        return f"http://{host}{path}"

    def headers(self, target: str, slow: bool = False, sep: bool = False,
                anthropic: bool = False) -> list[str]:
        """Direct calls present the upstream key (and, for slow or separate-chunk streams, the
        mock knobs) themselves; through a proxy the caller presents its own key, which the
        proxy replaces."""
        extra = ANTHROPIC_HEADERS if anthropic else []
        if target not in ("direct", "direct-tls"):
            return [CALLER_AUTH, *extra]
        h = [f"Authorization: Bearer {UPSTREAM_KEY}", *extra]
        if anthropic:
            h.append(f"x-api-key: {UPSTREAM_KEY}")
        if slow:
            h += [f"x-mock-chunks: {self.s.slow_chunks}",
                  f"x-mock-chunk-delay-ms: {self.s.slow_delay_ms}"]
        if sep:
            h.append(f"x-mock-chunk-delay-ms: {self.s.sep_delay_ms}")
        return h

    def meter(self, target: str) -> Optional[Meter]:
        if target in ("switchyard", "switchyard-tls"):
            return Meter(self.gw_proc.pid, with_children=False)
        if target == BUSY and self.busy_proc:
            return Meter(self.busy_proc.pid, with_children=False)
        if target == "switchyard-nolog" and self.nolog_proc:
            return Meter(self.nolog_proc.pid, with_children=False)
        if target in ("nginx", "nginx-tls", "nginx-nolog") and self.nginx_proc:
            return Meter(self.nginx_proc.pid, with_children=True)
        return None

    def truncate_logs(self) -> None:
        """Empties the proxies' access logs between workloads (both append, so this is safe
        under them): a full run writes a few GB of lines otherwise."""
        for p in (self.gw_proc, self.nolog_proc, self.busy_proc):
            if p:
                p.truncate_stdout()
        if self.nginx_proc:
            try:
                os.truncate(self.work / "nginx" / "access.log", 0)
            except OSError:
                pass

    def check_alive(self) -> None:
        for p in (self.mock_proc, self.gw_proc, self.nginx_proc, self.busy_proc,
                  self.edge_proc, self.nolog_proc):
            if p and p.popen.poll() is not None:
                raise BenchError(f"{p.name} exited ({p.popen.returncode}):\n{p.output()[-3000:]}")


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


# === Load generators ===


def body(stream: bool, model: str = MODEL) -> str:
    b: dict[str, Any] = {"model": model, "messages": MESSAGES}
    if stream:
        b["stream"] = True
        b["stream_options"] = {"include_usage": True}
    return json.dumps(b, separators=(",", ":"))


class Load:
    """Runs wrk or switchyard-loadgen, pinned to the load core, and parses what they print."""

    def __init__(self, loadgen: Path, wrk: Optional[str], cpu: Optional[int], s: Settings,
                 work: Path):
        self.loadgen = loadgen
        self.wrk = wrk
        self.cpu = cpu
        self.s = s
        self.work = work
        self.bodies: dict[str, Path] = {}

    def body_file(self, text: str) -> Path:
        if text not in self.bodies:
            p = self.work / f"body-{len(self.bodies)}.json"
            p.write_text(text)
            self.bodies[text] = p
        return self.bodies[text]

    def warm_closed(self, url: str, headers: list[str], body_text: str, warmup: float) -> None:
        """wrk's warm-up, run apart so the proxy's CPU is metered over the measurement only
        (loadgen warms up inside its own run). wrk runs whole seconds: shorter warm-ups
        (smoke runs) are skipped."""
        if self.wrk and warmup >= 1:
            self._wrk(url, headers, body_text, warmup)

    def closed(self, url: str, headers: list[str], body_text: str, duration: float,
               warmup: float) -> dict:
        """Fixed concurrency, back to back: wrk when installed, else switchyard-loadgen."""
        if self.wrk:
            return self._wrk(url, headers, body_text, duration)
        r = self.loadgen_run("closed", url, headers, body_text, [
            "--connections", self.s.connections, "--duration", duration, "--warmup", warmup,
            "--max-requests", self.s.max_requests], duration + warmup)
        r["tool"] = "switchyard-loadgen"
        return r

    def _wrk(self, url: str, headers: list[str], body_text: str, duration: float) -> dict:
        secs = max(1, round(duration))
        argv = pinned(self.cpu, [
            self.wrk, "-t1", f"-c{self.s.connections}", f"-d{secs}s",
            f"--timeout", f"{int(self.s.timeout_s)}s", "-s", BENCH / "wrk.lua", url, "--",
            self.body_file(body_text), *headers])
        out = run_cmd(argv, secs + 30, "wrk")
        return parse_wrk(out)

    def paced(self, url: str, headers: list[str], body_text: str, rate: float,
              duration: float) -> dict:
        """About `rate` requests per second from wrk, for the TLS-upstream set (loadgen speaks
        plain HTTP only). Each connection pauses before each request for a time drawn from an
        exponential distribution, so together they send a Poisson stream at `rate`; a request
        is timed from its sending (a slow answer delays that connection's next request: open
        loop only while the target keeps up, as it does at low rates)."""
        conns = max(4, round(rate / 50))
        mean_ms = 1000.0 * conns / rate
        script = self.work / f"wrk-paced-{conns}-{rate:g}.lua"
        if not script.exists():
            script.write_text(PACED_LUA.format(wrk_lua=json.dumps(str(BENCH / "wrk.lua")),
                                               mean_ms=f"{mean_ms:.3f}"))
        secs = max(1, round(duration))
        argv = pinned(self.cpu, [
            self.wrk, "-t1", f"-c{conns}", f"-d{secs}s", "--timeout", f"{int(self.s.timeout_s)}s",
            "-s", script, url, "--", self.body_file(body_text), *headers])
        r = parse_wrk(run_cmd(argv, secs + 30, "wrk (paced)"))
        r.update(tool="wrk, Poisson-paced", rate=rate, connections=conns)
        return r

    def loadgen_run(self, mode: str, url: str, headers: list[str], body_text: str,
                    args: list, expected_s: float, timeout_s: Optional[float] = None) -> dict:
        argv = pinned(self.cpu, [
            self.loadgen, mode, "--url", url, "--body-file", self.body_file(body_text),
            "--timeout", timeout_s or self.s.timeout_s, *args])
        for h in headers:
            argv += ["--header", h]
        return parse_loadgen(run_cmd(argv, expected_s + 2 * self.s.timeout_s + 30, "loadgen"))


# bench/wrk.lua plus a pause before each request (wrk's `delay`, whole milliseconds, rounded
# at random so the mean stays exact), exponentially distributed.
PACED_LUA = """\
dofile({wrk_lua})
math.randomseed(os.time())
local mean_ms = {mean_ms}
function delay()
   return math.floor(-math.log(1 - math.random()) * mean_ms + math.random())
end
"""


def parse_wrk(out: str) -> dict:
    """The `WRK_JSON` line bench/wrk.lua prints, in the shape loadgen reports use."""
    for line in out.splitlines():
        if line.startswith("WRK_JSON "):
            w = json.loads(line[len("WRK_JSON "):])
            secs = w["duration_us"] / 1e6
            errors = w["errors"]
            status = errors["status"]
            lat = {k: float(v) for k, v in w["latency_us"].items()}
            lat["count"] = w["requests"]
            return {
                "tool": "wrk",
                "elapsed_s": secs,
                "ok": w["requests"] - status,
                "errors": errors,
                "error_total": sum(errors.values()),
                "rps": (w["requests"] - status) / secs if secs > 0 else 0.0,
                "bytes": w["bytes"],
                "latency_us": lat,
            }
    raise BenchError(f"no WRK_JSON line in wrk's output:\n{out[-2000:]}")


def parse_loadgen(out: str) -> dict:
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise BenchError(f"no JSON in loadgen's output:\n{out[-2000:]}")
    r = json.loads(lines[-1])
    for key in ("mode", "ok", "error_total", "latency_us"):
        if key not in r:
            raise BenchError(f"loadgen report lacks {key!r}: {lines[-1][:500]}")
    return r


# === Workloads ===


def order(targets: list[str], rnd: int) -> list[str]:
    """Rotates the target order each round so no target always runs first (or last)."""
    k = rnd % len(targets)
    return targets[k:] + targets[:k]


def measured(stack: Stack, target: str, fn: Callable[[], dict], sample_rss: bool = False,
             warm: Optional[Callable[[], None]] = None) -> dict:
    """Runs one measurement, adding the proxy's CPU time (and peak RSS) over it.

    CPU per request is the CPU rate over the whole run times the measured window, divided by
    the requests in it: loadgen's in-process warm-up runs at the same load, so it does not
    skew the rate."""
    stack.check_alive()
    stack.truncate_logs()
    if warm:
        warm()
    meter = stack.meter(target)
    with Sampler(meter if sample_rss else None) as smp:
        cpu0 = meter.cpu() if meter else 0.0
        r = fn()
        cpu1 = meter.cpu() if meter else 0.0
    if meter:
        r["proxy_cpu_s"] = round(cpu1 - cpu0, 3)
        r["proxy_cpu_pct"] = round(100 * (cpu1 - cpu0) / smp.wall, 1) if smp.wall else None
        if r.get("ok") and smp.wall and r.get("elapsed_s"):
            rate = (cpu1 - cpu0) / smp.wall
            r["proxy_cpu_us_per_req"] = round(1e6 * rate * r["elapsed_s"] / r["ok"], 1)
        if sample_rss:
            r["proxy_rss_peak_bytes"] = smp.peak
        r["proxy_rss_after_bytes"] = meter.rss()
    stack.check_alive()
    return r


def run_workloads(stack: Stack, load: Load, s: Settings, log: Callable[[str], None]) -> dict:
    targets = stack.targets()
    w: dict[str, dict[str, list]] = {}

    def add(name: str, target: str, r: dict) -> None:
        w.setdefault(name, {}).setdefault(target, []).append(r)

    rss_rounds: dict[str, list] = {"after_requests": [], "after_streams": []}
    with_log_off = targets + stack.log_off_targets()
    for rnd in range(s.rounds):
        log(f"round {rnd + 1}/{s.rounds}")
        for t in order(with_log_off, rnd):
            log(f"  chat (non-streaming, c={s.connections}) -> {t}")
            add("chat", t, measured(stack, t, lambda: load.closed(
                stack.url(t), stack.headers(t), body(False), s.duration, s.warmup),
                warm=lambda: load.warm_closed(stack.url(t), stack.headers(t), body(False),
                                              s.warmup)))
        for t in order(with_log_off, rnd):
            log(f"  stream ({s.chunks} chunks in one write, c={s.connections}) -> {t}")
            add("stream", t, measured(stack, t, lambda: load.closed(
                stack.url(t), stack.headers(t), body(True), s.duration, s.warmup),
                warm=lambda: load.warm_closed(stack.url(t), stack.headers(t), body(True),
                                              s.warmup)))
        for t in order(targets, rnd):
            log(f"  stream ({s.chunks} chunks written one at a time, {s.sep_delay_ms} ms apart, "
                f"c={s.connections}) -> {t}")
            model = SEP_MODEL if t == "switchyard" else MODEL
            add("stream_sep", t, measured(stack, t, lambda: load.closed(
                stack.url(t, sep=True), stack.headers(t, sep=True), body(True, model),
                s.duration, s.warmup),
                warm=lambda: load.warm_closed(stack.url(t, sep=True), stack.headers(t, sep=True),
                                              body(True, model), s.warmup)))
        for t in order(targets, rnd):
            log(f"  stream TTFB (open loop {s.ttfb_rate:g}/s) -> {t}")
            add("stream_ttfb", t, measured(stack, t, lambda: load.loadgen_run(
                "open", stack.url(t), stack.headers(t), body(True), [
                    "--rate", s.ttfb_rate, "--duration", s.duration, "--warmup", s.warmup,
                    "--max-requests", s.max_requests], s.duration + s.warmup)))
        for rate in s.rates:
            for t in order(stack.latency_targets(), rnd):
                log(f"  open loop {rate:g}/s -> {t}")
                add(f"open_{rate:g}", t, measured(stack, t, lambda: load.loadgen_run(
                    "open", stack.url(t), stack.headers(t), body(False), [
                        "--rate", rate, "--duration", s.duration, "--warmup", s.warmup,
                        "--max-requests", s.max_requests], s.duration + s.warmup)))
        rss_rounds["after_requests"].append(rss_bytes(stack.gw_proc.pid))
        for t in order(targets, rnd):
            if t == "direct":
                continue
            log(f"  {s.hold_streams} slow streams ({s.slow_chunks} x {s.slow_delay_ms} ms) -> {t}")
            model = SLOW_MODEL if t == "switchyard" else MODEL
            add("hold", t, measured(stack, t, lambda: load.loadgen_run(
                "hold", stack.url(t, slow=True), stack.headers(t, slow=True),
                body(True, model), ["--streams", s.hold_streams, "--ramp-ms", s.hold_ramp_ms],
                s.hold_ramp_ms / 1000 + s.slow_chunks * s.slow_delay_ms / 1000),
                sample_rss=True))
        time.sleep(0.5 if s.smoke else 1.0)
        rss_rounds["after_streams"].append(rss_bytes(stack.gw_proc.pid))
        if s.agentic:
            run_agentic_round(stack, load, s, rnd, add, log)
        big = hold_big_streams(s)
        if big:
            for t in order([t for t in targets if t != "direct"], rnd):
                log(f"  {big} slow streams ({s.slow_chunks} x {s.slow_delay_ms} ms) -> {t}")
                model = SLOW_MODEL if t == "switchyard" else MODEL
                ramp = 100 if s.smoke else 2000
                # Each stream may take well over its 3 s while the mock (sharing the load CPU)
                # writes 10 000 streams' chunks: a timeout for the whole stream, not a chunk.
                add("hold_big", t, measured(stack, t, lambda: load.loadgen_run(
                    "hold", stack.url(t, slow=True), stack.headers(t, slow=True),
                    body(True, model), ["--streams", big, "--ramp-ms", ramp],
                    ramp / 1000 + s.slow_chunks * s.slow_delay_ms / 1000, timeout_s=60.0),
                    sample_rss=True))
            time.sleep(0.5 if s.smoke else 1.0)
        if stack.tls_targets():
            run_tls_round(stack, load, s, rnd, add, log)
    return {"workloads": w, "rss_rounds": rss_rounds}


def hold_big_streams(s: Settings) -> int:
    """The larger held-stream count, within the file descriptors a proxy has: each stream
    holds a client and an upstream connection."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(0, min(s.hold_streams_big, (soft - 512) // 2))


def agentic_body(name: str, stream: bool, model: str) -> str:
    """One of bench/bodies/ with `stream` set as asked and `model` as the last key (where
    openai-python puts it; Claude Code and Codex put it first, kept there)."""
    d = json.loads((BODIES / name).read_text())
    model_last = list(d)[-1] == "model"
    d["stream"] = stream
    if name.startswith("openai"):
        d.pop("stream_options", None)
        if stream:
            d["stream_options"] = {"include_usage": True}
    if model_last:
        d.pop("model")
    d["model"] = model
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)


# The agentic workloads: (name, what the row shows, path, body file, the Switchyard route's
# model, Anthropic headers, targets). Direct and nginx always pass the body through (nginx
# cannot translate): on the translated rows they are the passthrough reference.
AGENTIC = (
    ("agent_openai_pass", "OpenAI 70 KB (model last), passthrough", "/v1/chat/completions",
     "openai-70k-model-last.json", AGENT_OPENAI, False),
    ("agent_claude_pass", "Claude Code 87 KB, Anthropic passthrough", "/v1/messages",
     "claude-code.json", AGENT_ANTHROPIC, True),
    ("agent_claude_to_openai", "Claude Code 87 KB, Anthropic -> OpenAI", "/v1/messages",
     "claude-code.json", AGENT_OPENAI, True),
    ("agent_openai_to_anthropic", "OpenAI 70 KB, OpenAI -> Anthropic", "/v1/chat/completions",
     "openai-70k-model-last.json", AGENT_ANTHROPIC, False),
    ("agent_codex_to_chat", "Codex 40 KB, Responses -> chat", "/v1/responses",
     "codex.json", AGENT_OPENAI, False),
)


# A translated row's reference: the workload whose direct and nginx figures (the same body
# passed through) it is shown against. Codex's Responses body has no passthrough row of its
# own: direct and nginx send it to the mock's /v1/responses in its own workload.
AGENTIC_REF = {"agent_claude_to_openai": "agent_claude_pass",
               "agent_openai_to_anthropic": "agent_openai_pass"}


def agentic_translated(name: str) -> bool:
    return not name.endswith("_pass")


def agentic_targets(stack: Stack, name: str) -> list[str]:
    return ["switchyard"] if name in AGENTIC_REF else stack.targets()


def run_agentic_round(stack: Stack, load: Load, s: Settings, rnd: int,
                      add: Callable[[str, str, dict], None], log: Callable[[str], None]) -> None:
    """Agent-sized bodies through passthrough and every translation, streaming and not, for
    `agentic_duration` each. Direct and nginx run only on the passthrough rows: a translated
    row is compared with the passthrough of the same body."""
    for name, label, path, file, model, anthropic in AGENTIC:
        for stream in (False, True):
            wl = name + ("_stream" if stream else "")
            targets = agentic_targets(stack, name)
            for t in order(targets, rnd):
                log(f"  {label}, {'streaming (one write)' if stream else 'non-streaming'} "
                    f"-> {t}")
                text = agentic_body(file, stream, model if t == "switchyard" else MODEL)
                url, hdrs = stack.url(t, path=path), stack.headers(t, anthropic=anthropic)
                if s.smoke:
                    # Debug binaries translate an 87 KB body slowly: a few connections, so
                    # some requests finish inside the short run.
                    add(wl, t, measured(stack, t, lambda: load.loadgen_run(
                        "closed", url, hdrs, text, [
                            "--connections", 2, "--duration", max(1.0, s.agentic_duration),
                            "--warmup", 0, "--max-requests", 1000],
                        max(1.0, s.agentic_duration))))
                    continue
                add(wl, t, measured(stack, t, lambda: load.closed(
                    url, hdrs, text, s.agentic_duration, s.warmup),
                    warm=lambda: load.warm_closed(url, hdrs, text, s.warmup)))


def run_tls_round(stack: Stack, load: Load, s: Settings, rnd: int,
                  add: Callable[[str, str, dict], None], log: Callable[[str], None]) -> None:
    """One round of the TLS-upstream set: the bodies and closed-loop parameters of workloads
    1 and 2, and a paced run at the first open-loop rate, each for `tls_duration`, through
    the TLS edge. The edge's CPU over each run goes with it (it shares the load CPU)."""
    d = s.tls_duration
    edge = Meter(stack.edge_proc.pid, with_children=True)

    def with_edge(fn: Callable[[], dict]) -> Callable[[], dict]:
        def run() -> dict:
            c0, t0 = edge.cpu(), time.monotonic()
            r = fn()
            wall = time.monotonic() - t0
            r["edge_cpu_pct"] = round(100 * (edge.cpu() - c0) / wall, 1) if wall else None
            return r
        return run

    targets = stack.tls_targets()
    for stream, name, what in ((False, "tls_chat", "chat (non-streaming"),
                               (True, "tls_stream", f"stream ({s.chunks} chunks")):
        for t in order(targets, rnd):
            log(f"  TLS upstream: {what}, c={s.connections}) -> {t}")
            b = body(stream, stack.model(t))
            add(name, t, measured(stack, t, with_edge(lambda: load.closed(
                stack.url(t), stack.headers(t), b, d, s.warmup)),
                warm=lambda: load.warm_closed(stack.url(t), stack.headers(t), b, s.warmup)))
    rate = s.tls_rate
    for t in order(targets, rnd):
        log(f"  TLS upstream: paced {rate:g}/s -> {t}")
        b = body(False, stack.model(t))
        add(f"tls_paced_{rate:g}", t, measured(stack, t, with_edge(lambda: load.paced(
            stack.url(t), stack.headers(t), b, rate, d)),
            warm=lambda: s.warmup >= 1 and load.paced(
                stack.url(t), stack.headers(t), b, rate, s.warmup)))


def tls_probe(stack: Stack) -> dict:
    """One request of each kind through each TLS target, so a broken set-up fails in seconds;
    the edge's access log shows which protocol each client spoke to it (told apart by
    User-Agent: Switchyard sends its own, nginx passes the caller's on). Then the edge's
    access log goes off for the load, checked by one more request through Switchyard (which
    also shows it reconnects after the reload closed its connection)."""
    ctx = ssl.create_default_context(cafile=str(stack.pki["ca"]))
    start = stack.edge_log_lines()
    expected = 0
    for t in stack.tls_targets():
        for stream in (False, True):
            url = stack.url(t)
            if t == "direct-tls":
                # Through the name the certificate is for, verified against the CA.
                url = url.replace(stack.edge, f"localhost:{stack.edge_port}")
            status, text = tls_request(url, stack.headers(t), body(stream, stack.model(t)),
                                       f"{PROBE_AGENT}{t}", ctx)
            if status != 200 or (stream and "[DONE]" not in text):
                raise BenchError(f"preflight: {t} {'stream' if stream else 'chat'} failed: "
                                 f"{status} {text[:600]}")
            expected += 1
    deadline = time.monotonic() + 5
    while stack.edge_log_lines() - start < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    lines = stack.edge_log.read_text().splitlines()[start:]
    protocols: dict[str, set] = {}
    tls_versions: dict[str, set] = {}
    for line in lines:
        proto, tls_version, _status, agent = (line.split("|", 3) + ["", "", "", ""])[:4]
        who = ("switchyard-tls" if agent.startswith("switchyard/")
               else agent[len(PROBE_AGENT):] if agent.startswith(PROBE_AGENT) else agent)
        protocols.setdefault(who, set()).add(proto)
        tls_versions.setdefault(who, set()).add(tls_version)
    out: dict[str, Any] = {
        "edge_protocols": {k: " + ".join(sorted(v)) for k, v in protocols.items()},
        "edge_tls_versions": {k: " + ".join(sorted(v)) for k, v in tls_versions.items()},
        "edge_probe_log": lines,
    }
    stack.edge_log_off()
    n = stack.edge_log_lines()
    status, text = tls_request(stack.url("switchyard-tls"), stack.headers("switchyard-tls"),
                               body(False, TLS_MODEL), f"{PROBE_AGENT}after-reload", ctx)
    if status != 200:
        raise BenchError(f"preflight: switchyard-tls after the edge's reload: {status} "
                         f"{text[:600]}")
    time.sleep(0.2)
    if stack.edge_log_lines() != n:
        raise BenchError("the TLS edge still writes its access log after the reload")
    out["edge_log_lines_before_load"] = stack.edge_log_lines()
    return out


def tls_request(url: str, headers: list[str], body_text: str, agent: str,
                ctx: ssl.SSLContext) -> tuple[int, str]:
    h = dict(hd.split(": ", 1) for hd in headers)
    h.update({"content-type": "application/json", "user-agent": agent})
    req = urllib.request.Request(url, method="POST", data=body_text.encode(), headers=h)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=ctx))
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except OSError as e:
        return 0, str(e)


def idle_figures(stack: Stack, bins: dict[str, Path], nginx: Optional[str]) -> dict:
    """RSS right after start-up (settled for a second, before any request) and binary sizes."""
    settle = 1.0 - (time.monotonic() - stack.gw_started)
    if settle > 0:
        time.sleep(settle)
    out: dict[str, Any] = {
        "switchyard_rss_bytes": rss_bytes(stack.gw_proc.pid),
        "switchyard_threads": threads(stack.gw_proc.pid),
        "switchyard_binary_bytes": bins["switchyard"].stat().st_size,
    }
    strip = shutil.which("strip")
    if strip:
        stripped = stack.work / "switchyard.stripped"
        if subprocess.run([strip, "-o", stripped, bins["switchyard"]],
                          capture_output=True).returncode == 0:
            out["switchyard_binary_stripped_bytes"] = stripped.stat().st_size
    if stack.nginx_proc and nginx:
        out["nginx_rss_bytes"] = Meter(stack.nginx_proc.pid, True).rss()
        out["nginx_binary_bytes"] = Path(nginx).stat().st_size
    return out


# === Control plane (item 7): apply-to-live against a real API server ===

ENVTEST = REPO / "tests" / "k8s" / "envtest.sh"
CRD_NAMES = ("crd/airoutes.switchyard.dev", "crd/modelbackends.switchyard.dev",
             "crd/aiconsumers.switchyard.dev")


class Skip(Exception):
    """A workload that cannot run here, and why."""


class Cluster:
    """The envtest kube-apiserver of `tests/k8s/envtest.sh` (what `make test` runs): used as
    it is when already running; started (and stopped afterwards) otherwise, when allowed."""

    def __init__(self, allow_start: bool, log: Callable[[str], None]):
        if not ENVTEST.is_file():
            raise Skip("tests/k8s/envtest.sh not found")
        self.started_here = False
        status = subprocess.run([str(ENVTEST), "status"], capture_output=True, timeout=120)
        if status.returncode != 0:
            if not allow_start:
                raise Skip("the envtest API server is not running (smoke runs do not start it)")
            log("control plane: starting the envtest API server (tests/k8s/envtest.sh start)")
            r = subprocess.run([str(ENVTEST), "start"], capture_output=True, text=True,
                               timeout=3600)
            if r.returncode != 0:
                raise Skip(f"tests/k8s/envtest.sh start failed: {(r.stderr or r.stdout)[-400:]}")
            self.started_here = True
        env_file = Path(os.environ.get("ENVTEST_DIR", "/tmp/switchyard-envtest")) / "env"
        try:
            self.env = dict(line.split("=", 1) for line in env_file.read_text().splitlines()
                            if "=" in line and not line.startswith("#"))
        except OSError as e:
            raise Skip(f"cannot read {env_file}: {e}") from e
        self.kubeconfig = self.env["KUBECONFIG_ADMIN"]

    def kubectl(self, args: list, stdin: Optional[str] = None) -> str:
        r = subprocess.run([self.env["KUBECTL"], "--kubeconfig", self.kubeconfig, *map(str, args)],
                           input=stdin, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise BenchError(f"kubectl {' '.join(map(str, args))}: {r.stderr[-800:]}")
        return r.stdout

    def stop_if_started(self) -> None:
        if self.started_here:
            subprocess.run([str(ENVTEST), "stop"], capture_output=True, timeout=120)


def cluster_manifests(mock: str) -> str:
    return f"""\
apiVersion: v1
kind: Secret
metadata:
  name: upstream
  labels: {{switchyard.dev/secret: "true"}}
stringData: {{apiKey: "{UPSTREAM_KEY}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: mock}}
spec:
  provider: openai-compatible
  endpoint: http://{mock}/v1
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models: [{{name: {MODEL}}}]
"""


def chat_status(addr: str, model: str) -> Optional[int]:
    req = urllib.request.Request(f"http://{addr}/v1/chat/completions", method="POST",
                                 data=body(False, model).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with _LOCAL.open(req, timeout=5) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code
    except OSError:
        return None


def api(proxy: str, method: str, path: str, doc: Optional[dict] = None) -> int:
    req = urllib.request.Request(f"http://{proxy}{path}", method=method,
                                 data=json.dumps(doc).encode() if doc else None,
                                 headers={"content-type": "application/json"})
    try:
        with _LOCAL.open(req, timeout=30) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        raise BenchError(f"{method} {path}: {e.code} {e.read()[:300]!r}") from e


def poll_until(check: Callable[[], bool], timeout: float) -> Optional[float]:
    """Time at which `check` first held, polling every millisecond; None if it never did."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if check():
            return time.perf_counter()
        time.sleep(0.001)
    return None


def control_plane(stack: Stack, bins: dict[str, Path], s: Settings, cpu: Optional[int],
                  log: Callable[[str], None], allow_start: bool) -> dict:
    """Creates AIRoutes through the API server one at a time and times each from the create
    call to the first request it routes (and each delete to the first 404), through a
    `switchyard serve --kube` watching that namespace. A `kubectl proxy` carries the API
    calls, so the harness handles no credentials itself."""
    try:
        cluster = Cluster(allow_start, log)
    except Skip as e:
        return {"skipped": str(e)}
    ns = f"sy-bench-{os.getpid()}"
    procs: list[Proc] = []
    out: dict[str, Any] = {"namespace": ns, "changes": s.kube_changes,
                           "started_envtest": cluster.started_here}
    try:
        for crd in sorted((REPO / "crds").glob("*.yaml")):
            # kubectl 1.20 does not know the CEL rules' schema field; the server accepts them.
            cluster.kubectl(["apply", "--validate=false", "-f", crd])
        cluster.kubectl(["wait", "--for=condition=Established", "--timeout=60s", *CRD_NAMES])
        cluster.kubectl(["create", "namespace", ns])
        cluster.kubectl(["apply", "-n", ns, "-f", "-"], stdin=cluster_manifests(stack.mock))

        gw = Proc("switchyard (kube)", pinned(cpu, [
            bins["switchyard"], "serve", "--kube", "--kubeconfig", cluster.kubeconfig,
            "--namespace", ns, "--lease-namespace", ns, "--identity", "bench",
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "json",
            *stack.serve_flags,
        ]), stack.work / "switchyard-kube.log", dict(stack.env, RUST_LOG="info"))
        procs.append(gw)

        def serving(line: str) -> Optional[tuple[str, str]]:
            try:
                fields = json.loads(line).get("fields", {})
            except (ValueError, AttributeError):
                return None
            if fields.get("message") == "switchyard serving":
                return fields["listen"], fields["admin"]
            return None

        addr, admin = gw.wait_for(serving, "'switchyard serving'", 60)
        wait_until(lambda: http_status(f"http://{admin}/readyz") == 200, "kube-mode /readyz",
                   gw, 60)
        proxy_proc = Proc("kubectl proxy", [
            cluster.env["KUBECTL"], "--kubeconfig", cluster.kubeconfig, "proxy",
            "--address", "127.0.0.1", "--port", "0"], stack.work / "kubectl-proxy.log")
        procs.append(proxy_proc)
        proxy = proxy_proc.wait_for(
            lambda ln: (m := re.search(r"Starting to serve on (127\.0\.0\.1:\d+)", ln))
            and m.group(1), "its address", 30)
        routes = f"/apis/switchyard.dev/v1alpha1/namespaces/{ns}/airoutes"

        live, gone, writes, failed = [], [], [], 0
        log(f"control plane: {s.kube_changes} route creates and deletes through the API server")
        for i in range(s.kube_changes):
            name, model = f"prop-{i}", f"prop-model-{i}"
            doc = {"apiVersion": "switchyard.dev/v1alpha1", "kind": "AIRoute",
                   "metadata": {"name": name},
                   "spec": {"match": {"models": [model]},
                            "backends": [{"backendRef": {"name": "mock"}, "model": MODEL}]}}
            t0 = time.perf_counter()
            api(proxy, "POST", routes, doc)
            writes.append(time.perf_counter() - t0)
            t1 = poll_until(lambda: chat_status(addr, model) == 200, s.kube_timeout_s)
            if t1 is None:
                failed += 1
            else:
                live.append(t1 - t0)
            t2 = time.perf_counter()
            api(proxy, "DELETE", f"{routes}/{name}")
            t3 = poll_until(lambda: chat_status(addr, model) == 404, s.kube_timeout_s)
            if t3 is None:
                failed += 1
            else:
                gone.append(t3 - t2)
            gw_alive = gw.popen.poll() is None
            if not gw_alive:
                raise BenchError(f"kube-mode switchyard exited:\n{gw.output()[-2000:]}")
            time.sleep(0.05)

        def ms(xs: list[float]) -> dict:
            if not xs:
                return {"count": 0}
            xs = sorted(xs)

            def rank(p: float) -> float:  # nearest rank, as the load generators report
                return xs[min(len(xs), max(1, math.ceil(p * len(xs)))) - 1]

            return {"count": len(xs), "p50": 1e3 * rank(0.5), "p99": 1e3 * rank(0.99),
                    "max": 1e3 * xs[-1]}

        out.update(apply_to_live_ms=ms(live), delete_to_gone_ms=ms(gone),
                   api_write_ms=ms(writes), failed=failed)
    except BenchError as e:
        out["error"] = " / ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())[:300]
    finally:
        for p in reversed(procs):
            p.stop()
        try:
            # envtest runs no namespace controller: empty the namespace before deleting it.
            cluster.kubectl(["delete", "-n", ns, "airoutes,modelbackends,secrets", "--all",
                             "--wait=false"])
            cluster.kubectl(["delete", "namespace", ns, "--wait=false"])
        except (BenchError, subprocess.TimeoutExpired):
            pass
        cluster.stop_if_started()
    return out


def control_plane_scale(mock: str, switchyard: Path, env: dict, serve_flags: list, work: Path,
                        s: "Settings", cpu: Optional[int], log: Callable[[str], None],
                        allow_start: bool) -> dict:
    """The control plane at scale (issue #21 item 3), as a new operator would meet it:
    `kubectl apply` of `s.kube_scale_backends` ModelBackends and `s.kube_scale_routes`
    AIRoutes, then `switchyard serve --kube` started on them. Measured: start to /readyz,
    start to every object's status written (Accepted), RSS once converged, and create ->
    routable for new routes among the 10 000."""
    try:
        cluster = Cluster(allow_start, log)
    except Skip as e:
        return {"skipped": str(e)}
    ns = f"sy-scale-{os.getpid()}"
    n_routes, n_backends = s.kube_scale_routes, s.kube_scale_backends
    out: dict[str, Any] = {"namespace": ns, "routes": n_routes, "backends": n_backends}
    procs: list[Proc] = []
    try:
        for crd in sorted((REPO / "crds").glob("*.yaml")):
            cluster.kubectl(["apply", "--validate=false", "-f", crd])
        cluster.kubectl(["wait", "--for=condition=Established", "--timeout=60s", *CRD_NAMES])
        cluster.kubectl(["create", "namespace", ns])
        docs = [cluster_manifests(mock)]
        for b in range(n_backends):
            docs.append(f"""apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: be-{b}}}
spec:
  provider: openai-compatible
  endpoint: http://{mock}/v1
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models: [{{name: {MODEL}}}]
""")
        for r in range(n_routes):
            docs.append(f"""apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: route-{r}}}
spec:
  match: {{models: [scale-model-{r}]}}
  backends: [{{backendRef: {{name: be-{r % max(1, n_backends)}}}, model: {MODEL}}}]
""")
        manifest = work / "scale.yaml"
        manifest.write_text("---\n".join(docs))
        log(f"control plane at scale: kubectl apply of {n_backends} ModelBackends and "
            f"{n_routes} AIRoutes")
        t0 = time.perf_counter()
        r = subprocess.run([cluster.env["KUBECTL"], "--kubeconfig", cluster.kubeconfig, "apply",
                            "-n", ns, "-f", manifest], capture_output=True, text=True,
                           timeout=3600)
        if r.returncode != 0:
            raise BenchError(f"kubectl apply: {r.stderr[-600:]}")
        out["apply_seconds"] = time.perf_counter() - t0

        started = time.perf_counter()
        gw = Proc("switchyard (kube, scale)", pinned(cpu, [
            switchyard, "serve", "--kube", "--kubeconfig", cluster.kubeconfig,
            "--namespace", ns, "--lease-namespace", ns, "--identity", "bench-scale",
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "json",
            *serve_flags,
        ]), work / "switchyard-kube-scale.log", dict(env, RUST_LOG="info"))
        procs.append(gw)

        def serving(line: str) -> Optional[tuple[str, str]]:
            try:
                fields = json.loads(line).get("fields", {})
            except (ValueError, AttributeError):
                return None
            if fields.get("message") == "switchyard serving":
                return fields["listen"], fields["admin"]
            return None

        addr, admin = gw.wait_for(serving, "'switchyard serving'", 120)
        ready = poll_until(lambda: http_status(f"http://{admin}/readyz") == 200, 120)
        if ready is None:
            raise BenchError("kube-mode /readyz never turned ready at scale")
        out["start_to_ready_s"] = ready - started
        out["rss_ready_bytes"] = rss_bytes(gw.popen.pid)

        proxy_proc = Proc("kubectl proxy", [
            cluster.env["KUBECTL"], "--kubeconfig", cluster.kubeconfig, "proxy",
            "--address", "127.0.0.1", "--port", "0"], work / "kubectl-proxy-scale.log")
        procs.append(proxy_proc)
        proxy = proxy_proc.wait_for(
            lambda ln: (m := re.search(r"Starting to serve on (127\.0\.0\.1:\d+)", ln))
            and m.group(1), "its address", 30)

        def accepted(plural: str) -> int:
            req = urllib.request.Request(
                f"http://{proxy}/apis/switchyard.dev/v1alpha1/namespaces/{ns}/{plural}")
            with _LOCAL.open(req, timeout=60) as resp:
                items = json.loads(resp.read())["items"]
            return sum(1 for i in items if any(
                c.get("type") == "Accepted" and c.get("status") == "True"
                for c in (i.get("status") or {}).get("conditions") or []))

        total = n_routes + n_backends + 1
        seen, series = 0, []
        deadline = time.perf_counter() + s.kube_scale_timeout_s
        while time.perf_counter() < deadline:
            seen = accepted("airoutes") + accepted("modelbackends")
            series.append((round(time.perf_counter() - started, 1), seen))
            if seen >= total:
                break
            time.sleep(0.5)
        out["statuses_written"] = seen
        out["statuses_total"] = total
        out["statuses_series"] = series[-20:]
        if seen >= total:
            out["start_to_all_status_s"] = series[-1][0]
        out["rss_converged_bytes"] = rss_bytes(gw.popen.pid)

        routes = f"/apis/switchyard.dev/v1alpha1/namespaces/{ns}/airoutes"
        live: list[float] = []
        failed = 0
        for i in range(s.kube_changes):
            name, model = f"scale-new-{i}", f"scale-new-model-{i}"
            doc = {"apiVersion": "switchyard.dev/v1alpha1", "kind": "AIRoute",
                   "metadata": {"name": name},
                   "spec": {"match": {"models": [model]},
                            "backends": [{"backendRef": {"name": "mock"}, "model": MODEL}]}}
            t1 = time.perf_counter()
            api(proxy, "POST", routes, doc)
            t2 = poll_until(lambda: chat_status(addr, model) == 200, s.kube_timeout_s)
            if t2 is None:
                failed += 1
            else:
                live.append(t2 - t1)
            time.sleep(0.05)
        live.sort()
        if live:
            out["apply_to_live_ms"] = {
                "count": len(live), "p50": 1e3 * live[len(live) // 2],
                "p99": 1e3 * live[min(len(live) - 1, math.ceil(0.99 * len(live)) - 1)],
                "max": 1e3 * live[-1]}
        out["apply_to_live_failed"] = failed
        out["rss_end_bytes"] = rss_bytes(gw.popen.pid)
    except (BenchError, subprocess.TimeoutExpired) as e:
        out["error"] = " / ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())[:300]
    finally:
        for p in reversed(procs):
            p.stop()
        try:
            cluster.kubectl(["delete", "-n", ns, "airoutes,modelbackends,secrets", "--all",
                             "--wait=false"])
            cluster.kubectl(["delete", "namespace", ns, "--wait=false"])
        except (BenchError, subprocess.TimeoutExpired):
            pass
        cluster.stop_if_started()
    return out


# === Micro-benchmarks (criterion) ===


def run_micro(cpu: Optional[int], quick: bool, log: Callable[[str], None]) -> dict:
    """`cargo bench` for the router, compile, providers and gateway crates, then criterion's
    estimates."""
    crit = target_dir() / "criterion"
    # Named bench targets only: the libraries' own test harnesses reject criterion's flags.
    targets = ["-p", "switchyard-router", "-p", "switchyard-compile", "-p", "switchyard-providers",
               "-p", "switchyard-gateway",
               "--bench", "routing", "--bench", "record", "--bench", "wire",
               "--bench", "agentic", "--bench", "admit"]
    log("micro-benchmarks: cargo bench --no-run")
    run_cmd([CARGO, "bench", *targets, "--no-run"], 3600, "cargo bench --no-run")
    timing = ["--warm-up-time", "0.5", "--measurement-time", "1"] if quick else \
        ["--warm-up-time", "1", "--measurement-time", "3"]
    log("micro-benchmarks: running (criterion, pinned to the proxy's CPU)")
    started = time.time()
    run_cmd(pinned(cpu, [CARGO, "bench", *targets, "--", *timing]), 3600, "cargo bench")
    return read_criterion(crit, since=started)


def read_criterion(root: Path, since: float = 0.0) -> dict:
    """Criterion's estimates (`<target>/criterion/**/new/`), skipping results older than
    `since` (benchmarks renamed or dropped since an earlier run)."""
    out = {}
    for bench in sorted(root.rglob("new/benchmark.json")):
        try:
            if bench.stat().st_mtime < since:
                continue
            meta = json.loads(bench.read_text())
            est = json.loads((bench.parent / "estimates.json").read_text())
        except (OSError, ValueError):
            continue
        out[meta["full_id"]] = {
            "mean_ns": est["mean"]["point_estimate"],
            "median_ns": est["median"]["point_estimate"],
            "ci95_ns": [est["mean"]["confidence_interval"]["lower_bound"],
                        est["mean"]["confidence_interval"]["upper_bound"]],
            "throughput": meta.get("throughput"),
        }
    return out


# === Summary and table ===


def med(values: list) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def pick(runs: list[dict], *path: str) -> Optional[float]:
    vals = []
    for r in runs:
        v: Any = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        vals.append(v)
    return med(vals)


def summarize(res: dict) -> dict:
    """Medians across rounds per workload and target, plus ratios and the target verdicts."""
    w = res.get("workloads", {})
    summ: dict[str, dict] = {}
    for name, per_target in w.items():
        summ[name] = {}
        for t, runs in per_target.items():
            summ[name][t] = {
                "rps": pick(runs, "rps"),
                "p50_us": pick(runs, "latency_us", "p50"),
                "p99_us": pick(runs, "latency_us", "p99"),
                "ttfb_p50_us": pick(runs, "ttfb_us", "p50"),
                "ttfb_p99_us": pick(runs, "ttfb_us", "p99"),
                "errors": sum(r.get("error_total", 0) for r in runs),
                "ok": sum(r.get("ok", 0) for r in runs),
                "cpu_us_per_req": pick(runs, "proxy_cpu_us_per_req"),
                "cpu_pct": pick(runs, "proxy_cpu_pct"),
                "rss_peak_bytes": pick(runs, "proxy_rss_peak_bytes"),
                "max_open": pick(runs, "max_open"),
                "edge_cpu_pct": pick(runs, "edge_cpu_pct"),
            }
    return summ


def tls_ratios(summ: dict) -> dict:
    """The TLS-upstream set against its references: throughput ratios to nginx-tls and to
    direct-tls, latency added over direct-tls, and each proxy's CPU per request with a TLS
    upstream against its own with the plain one (workloads 1 and 2)."""
    out: dict[str, dict] = {}
    for name, row in summ.items():
        if not name.startswith("tls_"):
            continue
        g = lambda t, k: row.get(t, {}).get(k)  # noqa: E731
        r: dict[str, Any] = {}
        if not name.startswith("tls_paced_"):  # a paced run's rate is the one asked for
            r.update({
                "throughput switchyard-tls/nginx-tls": ratio(g("switchyard-tls", "rps"),
                                                             g("nginx-tls", "rps")),
                "throughput switchyard-tls/direct-tls": ratio(g("switchyard-tls", "rps"),
                                                              g("direct-tls", "rps")),
                "throughput nginx-tls/direct-tls": ratio(g("nginx-tls", "rps"),
                                                         g("direct-tls", "rps")),
            })
        for key in ("p50_us", "p99_us"):
            for t in ("switchyard-tls", "nginx-tls"):
                a, d = g(t, key), g("direct-tls", key)
                r[f"{key[:3]} added over direct-tls, us: {t}"] = (
                    a - d if a is not None and d is not None else None)
        plain = {"tls_chat": "chat", "tls_stream": "stream"}.get(name)
        if plain:
            for t in ("switchyard", "nginx"):
                r[f"proxy CPU per request, TLS/plain upstream: {t}"] = ratio(
                    g(f"{t}-tls", "cpu_us_per_req"),
                    summ.get(plain, {}).get(t, {}).get("cpu_us_per_req"))
        out[name] = r
    return out


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b not in (None, 0) else None


def added(summ: dict, name: str, target: str, key: str) -> Optional[float]:
    row = summ.get(name, {})
    a, d = row.get(target, {}).get(key), row.get("direct", {}).get(key)
    return a - d if a is not None and d is not None else None


def verdicts(res: dict) -> list[dict]:
    summ, idle, micro = res["summary"], res.get("idle", {}), res.get("micro", {})
    out = []

    def v(name: str, value: Optional[float], limit: str, met: Optional[bool], note: str = ""):
        out.append({"target": name, "value": value, "limit": limit,
                    "met": met, "note": note})

    for wl, label in (("chat", "non-streaming throughput"), ("stream", "streaming throughput")):
        r = ratio(summ.get(wl, {}).get("switchyard", {}).get("rps"),
                  summ.get(wl, {}).get("nginx", {}).get("rps"))
        v(f"{label} switchyard/nginx", r, f">= {LIMITS['throughput_ratio_min']}",
          None if r is None else r >= LIMITS["throughput_ratio_min"])
    rate = next((k for k in summ if k.startswith("open_500")), None) or next(
        (k for k in summ if k.startswith("open_")), None)
    if rate:
        a50 = added(summ, rate, "switchyard", "p50_us")
        v(f"added p50 at {rate[5:]}/s (switchyard - direct), us", a50,
          f"<= {LIMITS['added_p50_us_max']:g}",
          None if a50 is None else a50 <= LIMITS["added_p50_us_max"])
        b50 = added(summ, rate, BUSY, "p50_us")
        if b50 is not None:
            bp = res["meta"]["settings"].get("busy_poll")
            v(f"  the same with --busy-poll {bp} (not the default), us", b50,
              f"<= {LIMITS['added_p50_us_max']:g}", b50 <= LIMITS["added_p50_us_max"],
              f"p99 {added(summ, rate, BUSY, 'p99_us'):.0f} us added; "
              f"CPU {summ[rate][BUSY].get('cpu_pct') or 0:.0f}% of a core at {rate[5:]}/s")
        s99, n99 = added(summ, rate, "switchyard", "p99_us"), added(summ, rate, "nginx", "p99_us")
        if s99 is None or n99 is None:
            v(f"added p99 at {rate[5:]}/s vs nginx's", None, "<= 1.5x nginx", None, "no nginx")
        elif n99 <= 0:
            v(f"added p99 at {rate[5:]}/s vs nginx's", s99, "<= 1.5x nginx",
              s99 <= 0, f"nginx adds {n99:.0f} us (noise): ratio undefined")
        else:
            v(f"added p99 at {rate[5:]}/s vs nginx's (ratio)", s99 / n99,
              f"<= {LIMITS['added_p99_vs_nginx_max']}",
              s99 / n99 <= LIMITS["added_p99_vs_nginx_max"], f"{s99:.0f} us vs {n99:.0f} us")
    if "switchyard_rss_bytes" in idle:
        m = idle["switchyard_rss_bytes"] / MiB
        v("idle RSS, MiB", m, f"<= {LIMITS['idle_rss_mib_max']:g}",
          m <= LIMITS["idle_rss_mib_max"])
    holds = res.get("workloads", {}).get("hold", {}).get("switchyard", [])
    peaks = [r.get("proxy_rss_peak_bytes") or 0 for r in holds]
    if any(peaks):
        # The worst round counts: memory kept from earlier rounds is part of the footprint.
        n = summ["hold"]["switchyard"].get("max_open")
        m = max(peaks) / MiB
        v(f"RSS with {n:.0f} open streams (worst round), MiB", m,
          f"<= {LIMITS['streams_rss_mib_max']:g}", m <= LIMITS["streams_rss_mib_max"],
          "per round: " + ", ".join(f"{p / MiB:.1f}" for p in peaks))
    # RSS at the end of each round (every workload done, held streams closed). Round 1 fills
    # the upstream pool (1000 idle connections after the held streams) and the allocator's
    # free lists, so growth counts from the end of round 2 to the end of the last round.
    seq = res.get("rss_rounds", {}).get("after_streams", [])
    label = "RSS growth from round 2 to the last (leak check), MiB"
    if len(seq) >= 3:
        g = (seq[-1] - seq[1]) / MiB
        v(label, g, f"<= {LIMITS['rss_growth_mib_max']:g}", g <= LIMITS["rss_growth_mib_max"],
          "end of each round: " + ", ".join(f"{x / MiB:.1f}" for x in seq))
    elif seq:
        v(label, None, f"<= {LIMITS['rss_growth_mib_max']:g}", None,
          "needs 3 rounds or more; end of each round: " + ", ".join(f"{x / MiB:.1f}" for x in seq))
    e10, e10k = (micro.get(f"router/lookup/exact/{n}", {}).get("median_ns") for n in (10, 10000))
    if e10 and e10k:
        v("exact route lookup 10k/10 routes (O(1))", e10k / e10,
          f"<= {LIMITS['lookup_growth_max']}", e10k / e10 <= LIMITS["lookup_growth_max"],
          f"{e10:.0f} ns vs {e10k:.0f} ns")
    c10k = micro.get("router/compile/routes/10000", {}).get("median_ns")
    if c10k:
        ms = c10k / 1e6
        v("compile 10 000 routes, ms", ms, f"< {LIMITS['compile_10k_ms_max']:g}",
          ms < LIMITS["compile_10k_ms_max"])
    # Issue 21.
    g = lambda wl, t, k: summ.get(wl, {}).get(t, {}).get(k)  # noqa: E731
    for wl, label in (("chat", "non-streaming"), ("stream", "streaming, burst"),
                      ("stream_sep", "streaming, chunks one at a time")):
        r = ratio(g(wl, "switchyard", "rps"), g(wl, "nginx", "rps"))
        if r is not None:
            v(f"#21 throughput {label} switchyard/nginx", r,
              f">= {LIMITS['throughput_vs_nginx_min']}", r >= LIMITS["throughput_vs_nginx_min"])
    on, off = g("chat", "switchyard", "cpu_us_per_req"), g("chat", "switchyard-nolog",
                                                            "cpu_us_per_req")
    if on is not None and off is not None:
        v("#21 access log CPU per request (log on - log off), us", on - off,
          f"<= {LIMITS['access_log_cpu_us_max']}", on - off <= LIMITS["access_log_cpu_us_max"],
          f"{on:.1f} vs {off:.1f} us; noisy: a difference of two measurements")
    r = ratio(g("stream_sep", "switchyard", "cpu_us_per_req"),
              g("stream_sep", "nginx", "cpu_us_per_req"))
    if r is not None:
        v("#21 per-chunk relay CPU, chunks one at a time, switchyard/nginx", r,
          f"<= {LIMITS['sep_chunk_cpu_vs_nginx_max']}", r <= LIMITS["sep_chunk_cpu_vs_nginx_max"])
    for wl in ("agent_openai_pass", "agent_openai_pass_stream", "agent_claude_pass",
               "agent_claude_pass_stream"):
        r = ratio(g(wl, "switchyard", "cpu_us_per_req"), g(wl, "nginx", "cpu_us_per_req"))
        if r is not None:
            v(f"#21 passthrough CPU {wl[6:]} switchyard/nginx", r,
              f"<= {LIMITS['agentic_passthrough_cpu_vs_nginx_max']}",
              r <= LIMITS["agentic_passthrough_cpu_vs_nginx_max"])
    for key in ("claude_code_to_openai", "claude_code_to_gemini", "claude_code_to_bedrock",
                "openai_70k_to_anthropic", "codex_responses_to_chat"):
        m = micro.get(f"agentic/request/{key}", {}).get("median_ns")
        if m:
            v(f"#21 translation {key} (criterion), us", m / 1e3,
              f"<= {LIMITS['translation_us_max']:g}", m / 1e3 <= LIMITS["translation_us_max"])
    for key in ("anthropic_to_openai", "openai_to_anthropic", "anthropic_to_responses",
                "openai_to_responses"):
        m = micro.get(f"agentic/stream_event/{key}", {}).get("median_ns")
        if m:
            v(f"#21 stream translation {key}, ns per event", m,
              f"<= {LIMITS['stream_event_ns_max']:g}", m <= LIMITS["stream_event_ns_max"])
    # Issue 22: what affinity and the budget reservation add to a request (local; with Redis
    # the reservation is one script round trip, shared with the rate windows).
    mg = lambda k: micro.get(k, {}).get("median_ns")  # noqa: E731
    aff = [mg("router/affinity/key_from_prefix"), mg("router/affinity/plan_and_key"),
           mg("router/affinity/plan_and_key_without_affinity")]
    res_ns = [mg("gateway/reservation/reserve_and_settle"), mg("gateway/reservation/block_on_ready"),
              mg("gateway/reservation/max_cost")]
    if all(x is not None for x in aff):
        extra = aff[0] + aff[1] - aff[2]
        v("#22 affinity per request (key + rendezvous plan - plain plan), us", extra / 1e3,
          f"< {LIMITS['cost_control_us_max']:g}", extra / 1e3 < LIMITS["cost_control_us_max"],
          f"key {aff[0]:.0f} ns, plan+key {aff[1]:.0f} ns vs {aff[2]:.0f} ns")
    if all(x is not None for x in res_ns):
        cost = res_ns[0] - res_ns[1]
        v("#22 budget reserve + settle per request, local, us", cost / 1e3,
          f"< {LIMITS['cost_control_us_max']:g}", cost / 1e3 < LIMITS["cost_control_us_max"],
          f"{res_ns[0]:.0f} ns less block_on {res_ns[1]:.0f} ns; own + shared budget, rpm, tpm")
    r = ratio(g("hold", "switchyard", "rss_peak_bytes"), g("hold", "nginx", "rss_peak_bytes"))
    if r is not None:
        v("#21 RSS with 1000 open streams switchyard/nginx", r,
          f"<= {LIMITS['streams_rss_vs_nginx_max']}", r <= LIMITS["streams_rss_vs_nginx_max"])
    big = summ.get("hold_big", {}).get("switchyard", {})
    if big:
        v(f"#21 RSS with {big.get('max_open') or 0:.0f} open streams (reported), MiB",
          (big.get("rss_peak_bytes") or 0) / MiB, "(none set)", None,
          f"nginx {(g('hold_big', 'nginx', 'rss_peak_bytes') or 0) / MiB:.1f} MiB")
    cp = res.get("control_plane") or {}
    a2l = cp.get("apply_to_live_ms", {})
    if a2l.get("count"):
        v("control plane apply-to-live p99, ms", a2l["p99"], "(none set)", None,
          f"p50 {a2l['p50']:.0f} ms over {a2l['count']} creates; "
          f"{cp.get('failed', 0)} never went live")
    else:
        v("control plane apply-to-live", None, "(none set)", None,
          "not measured: " + (cp.get("skipped") or cp.get("error") or "--no-kube"))
    sc = res.get("control_plane_scale") or {}
    n = sc.get("routes")
    if sc.get("rss_converged_bytes"):
        rss = sc["rss_converged_bytes"] / MiB
        v(f"#21 RSS with {n} AIRoutes + {sc['backends']} ModelBackends, MiB", rss,
          f"<= {LIMITS['scale_rss_mib_max']:g}", rss <= LIMITS["scale_rss_mib_max"],
          f"at ready {sc.get('rss_ready_bytes', 0) / MiB:.1f}, end {sc.get('rss_end_bytes', 0) / MiB:.1f}; "
          f"ready {sc.get('start_to_ready_s', 0):.1f} s after start")
        t = sc.get("start_to_all_status_s")
        v(f"#21 every status written after start, {n} routes, s", t,
          f"<= {LIMITS['scale_status_s_max']:g}", t is not None and t <= LIMITS["scale_status_s_max"],
          f"{sc.get('statuses_written')} of {sc.get('statuses_total')} Accepted")
        a2l = sc.get("apply_to_live_ms", {})
        if a2l.get("count"):
            v(f"#21 apply-to-live p99 at {n} routes, ms", a2l["p99"],
              f"<= {LIMITS['scale_apply_ms_max']:g}", a2l["p99"] <= LIMITS["scale_apply_ms_max"],
              f"p50 {a2l['p50']:.0f} ms over {a2l['count']}; {sc.get('apply_to_live_failed')} never")
    elif sc:
        v("#21 control plane at scale", None, "(see issue)", None,
          "not measured: " + (sc.get("skipped") or sc.get("error") or "?"))
    return out


def fmt(v: Optional[float], unit: str = "") -> str:
    if v is None:
        return "-"
    if unit == "us":
        return f"{v:,.0f}"
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "MiB":
        return f"{v / MiB:.1f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}"


def signed(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:+,.0f}"


def table(res: dict) -> str:
    """The one table `make bench` prints (also reprinted by --table-from)."""
    summ, meta, idle, micro = res["summary"], res["meta"], res.get("idle", {}), res.get("micro", {})
    rows: list[tuple[str, ...]] = []
    head = ("workload / metric", "direct", "nginx", "switchyard", "switchyard vs nginx")

    def row(label: str, key: str, unit: str, name: str, cmp: str = "",
            cols: tuple = TARGETS, scale: float = 1.0, ref: Optional[str] = None) -> None:
        """One row: `cols` name the targets shown as direct, nginx and switchyard (the
        log-off rows show the log-off twins); `cmp` adds switchyard vs nginx; `ref` takes
        the direct and nginx columns from another workload (a translated row's passthrough)."""
        r = summ.get(name, {})
        vals = [r.get(t, {}).get(key) if t else None for t in cols]
        if ref:
            vals[0], vals[1] = (summ.get(ref, {}).get(t, {}).get(key) for t in cols[:2])
        vals = [None if x is None else x / scale for x in vals]
        if all(x is None for x in vals):
            return
        extra = ""
        if cmp == "ratio":
            extra = fmt(ratio(vals[2], vals[1]), "x")
        elif cmp == "added":
            s_add, n_add = added(summ, name, cols[2], key), added(summ, name, cols[1], key)
            extra = f"{signed(s_add)} vs {signed(n_add)} us added"
        elif cmp == "ratios":  # vs nginx and vs direct
            extra = (f"{fmt(ratio(vals[2], vals[1]), 'x')} nginx, "
                     f"{fmt(ratio(vals[2], vals[0]), 'x')} direct")
        rows.append((label, *(fmt(x, unit) for x in vals), extra))

    log_on = meta["settings"].get("access_log", False)
    logs = ("access log on (nginx: buffer=64k flush=1s)" if log_on else "access log off")
    off_cols = (None, "nginx-nolog", "switchyard-nolog")

    def section(title: str) -> None:
        rows.append((title, "", "", "", ""))

    conns = meta["settings"]["connections"]
    if "chat" in summ:
        tool = next(iter(res["workloads"]["chat"].values()))[0].get("tool", "loadgen")
        section(f"1 chat, non-streaming, {conns} connections ({tool}), {logs}")
        row("  throughput, req/s", "rps", "", "chat", "ratios")
        row("  latency p50, us", "p50_us", "us", "chat", "added")
        row("  latency p99, us", "p99_us", "us", "chat", "added")
        row("  proxy CPU per request, us", "cpu_us_per_req", "", "chat", "ratio")
        row("  access log off: throughput, req/s", "rps", "", "chat", "ratio", off_cols)
        row("  access log off: proxy CPU per request, us", "cpu_us_per_req", "", "chat",
            "ratio", off_cols)
    if "stream" in summ:
        section(f"2 chat, streaming {meta['settings']['chunks']} chunks in one write (burst), "
                f"{conns} connections, {logs}")
        row("  throughput, streams/s", "rps", "", "stream", "ratios")
        row("  full stream p50, us", "p50_us", "us", "stream", "added")
        row("  full stream p99, us", "p99_us", "us", "stream", "added")
        row("  proxy CPU per stream, us", "cpu_us_per_req", "", "stream", "ratio")
        row("  access log off: throughput, streams/s", "rps", "", "stream", "ratio", off_cols)
        row("  access log off: proxy CPU per stream, us", "cpu_us_per_req", "", "stream",
            "ratio", off_cols)
    if "stream_sep" in summ:
        st = meta["settings"]
        section(f"2 chat, streaming {st['chunks']} chunks written one at a time "
                f"{st.get('sep_delay_ms')} ms apart, {conns} connections, {logs}")
        row("  throughput, streams/s", "rps", "", "stream_sep", "ratios")
        row("  full stream p50, us", "p50_us", "us", "stream_sep", "added")
        row("  proxy CPU per stream, us", "cpu_us_per_req", "", "stream_sep", "ratio")
        row("  proxy CPU per chunk, us", "cpu_us_per_req", "", "stream_sep", "ratio",
            scale=float(st["chunks"]))
    if "stream_ttfb" in summ:
        section(f"2 streaming at {meta['settings']['ttfb_rate']:g}/s open loop (loadgen)")
        row("  time to first byte p50, us", "ttfb_p50_us", "us", "stream_ttfb", "added")
        row("  time to first byte p99, us", "ttfb_p99_us", "us", "stream_ttfb", "added")
        row("  full stream p50, us", "p50_us", "us", "stream_ttfb", "added")
        row("  full stream p99, us", "p99_us", "us", "stream_ttfb", "added")
    for name in sorted((k for k in summ if k.startswith("open_")), key=lambda k: float(k[5:])):
        section(f"3 open loop {name[5:]} req/s, non-streaming (loadgen)")
        row("  achieved, req/s", "rps", "", name)
        row("  latency p50, us", "p50_us", "us", name, "added")
        row("  latency p99, us", "p99_us", "us", name, "added")
        row("  proxy CPU, % of its core", "cpu_pct", "", name, "ratio")
        b = summ[name].get(BUSY)
        if b:
            bp = meta["settings"].get("busy_poll")
            for key, lab in (("p50_us", "p50"), ("p99_us", "p99")):
                rows.append((f"  switchyard --busy-poll {bp}: {lab}, us", "", "",
                             fmt(b.get(key), "us"),
                             f"{signed(added(summ, name, BUSY, key))} us added"))
            rows.append((f"  switchyard --busy-poll {bp}: CPU, % of its core", "", "",
                         fmt(b.get("cpu_pct")), ""))
    if "hold" in summ:
        st = meta["settings"]
        section(f"4 {st['hold_streams']} slow streams held open "
                f"({st['slow_chunks']} chunks x {st['slow_delay_ms']} ms)")
        row("  streams open at once", "max_open", "", "hold")
        row("  proxy peak RSS, MiB", "rss_peak_bytes", "MiB", "hold", "ratio")
        row("  proxy CPU, % of its core", "cpu_pct", "", "hold", "ratio")
    if "hold_big" in summ:
        st = meta["settings"]
        section(f"4 {st.get('hold_streams_big')} slow streams asked for "
                f"({st['slow_chunks']} chunks x {st['slow_delay_ms']} ms, chunks one at a time), "
                f"{logs}")
        row("  streams open at once", "max_open", "", "hold_big")
        row("  proxy peak RSS, MiB", "rss_peak_bytes", "MiB", "hold_big", "ratio")
        row("  proxy CPU, % of its core", "cpu_pct", "", "hold_big", "ratio")
        row("  failed streams", "errors", "", "hold_big")
    agentic = [a for a in AGENTIC if a[0] in summ or a[0] + "_stream" in summ]
    if agentic:
        section(f"9 agentic bodies, {conns} connections, {logs}; translated rows: switchyard "
                "translates, nginx and direct pass the same body through")
        for name, label, *_ in agentic:
            for wl, shape in ((name, "non-streaming"), (name + "_stream",
                                                        "streaming, one write")):
                if wl not in summ:
                    continue
                # A translated row's direct and nginx columns: the same body passed through.
                ref = wl.replace(name, AGENTIC_REF[name]) if name in AGENTIC_REF else None
                row(f"  {label}, {shape}: req/s", "rps", "", wl, "ratios", ref=ref)
                row(f"  {label}, {shape}: proxy CPU per request, us", "cpu_us_per_req", "",
                    wl, "ratio", ref=ref)
    if idle:
        section("5 idle, after start-up")
        rows.append(("  RSS, MiB", "", fmt(idle.get("nginx_rss_bytes"), "MiB"),
                     fmt(idle.get("switchyard_rss_bytes"), "MiB"), ""))
        size = idle.get("switchyard_binary_bytes")
        stripped = idle.get("switchyard_binary_stripped_bytes")
        rows.append(("  binary size, MiB", "", fmt(idle.get("nginx_binary_bytes"), "MiB"),
                     fmt(size, "MiB"), f"{fmt(stripped, 'MiB')} MiB stripped" if stripped else ""))
    if micro:
        section("6 micro-benchmarks (criterion, median per iteration)")
        for key, label in (
                ("router/lookup/exact/{n}", "  route lookup, exact, {n} routes, ns"),
                ("router/lookup/glob/{n}", "  route lookup, glob, {n} routes, ns"),
                ("router/compile/routes/{n}", "  compile {n} routes, us"),
                ("router/compile/routes_backends/{n}", "  compile {n} routes + {m} backends, us")):
            for n in (10, 1000, 10000):
                m = micro.get(key.format(n=n))
                if m:
                    scale = 1e3 if "compile" in key else 1.0
                    rows.append((label.format(n=n, m=max(1, n // 10)), "", "",
                                 fmt(m["median_ns"] / scale), ""))
        for key, label in (
                ("openai/request/decode_encode/small", "  OpenAI request decode+encode, small, ns"),
                ("openai/request/decode_encode/large_stream",
                 "  OpenAI request decode+encode, 4 KiB, ns"),
                ("sse/parse_inspect/chunk", "  SSE parse + inspect one chunk, ns"),
                ("sse/parse_inspect/stream_20_chunks", "  SSE parse + inspect 20-chunk stream, ns"),
                ("translate/request/openai_to_anthropic",
                 "  request translation OpenAI -> Anthropic, ns"),
                ("translate/request/anthropic_to_openai",
                 "  request translation Anthropic -> OpenAI, ns"),
                ("translate/stream/openai_to_anthropic",
                 "  stream translation OpenAI -> Anthropic, ns per event"),
                ("translate/stream/anthropic_to_openai",
                 "  stream translation Anthropic -> OpenAI, ns per event"),
                ("telemetry/record/request", "  metrics per request, ns"),
                ("telemetry/record/stream", "  metrics per stream, ns"),
                ("telemetry/access_log/format", "  access log line, formatting, ns"),
                ("telemetry/access_log/log", "  access log line, format + queue, ns"),
                ("agentic/scan/openai_70k_model_last", "  scan 70 KB OpenAI body for model, ns"),
                ("agentic/request/claude_code_to_openai",
                 "  Claude Code request -> OpenAI, ns"),
                ("agentic/request/claude_code_to_gemini",
                 "  Claude Code request -> Gemini, ns"),
                ("agentic/request/claude_code_to_bedrock",
                 "  Claude Code request -> Bedrock, ns"),
                ("agentic/request/openai_70k_to_anthropic",
                 "  OpenAI 70 KB request -> Anthropic, ns"),
                ("agentic/request/codex_responses_to_chat", "  Codex request -> chat, ns"),
                ("agentic/stream_event/anthropic_to_openai",
                 "  stream event Anthropic -> OpenAI, ns per event"),
                ("agentic/stream_event/openai_to_anthropic",
                 "  stream event OpenAI -> Anthropic, ns per event"),
                ("agentic/stream_event/openai_to_responses",
                 "  stream event OpenAI -> Responses, ns per event"),
                ("router/affinity/key_from_prefix", "  affinity key from a chat body's prefix, ns"),
                ("router/affinity/plan_and_key", "  affinity plan + key (3:1 split, 4 keys), ns"),
                ("router/affinity/plan_and_key_without_affinity",
                 "  weighted plan + key, no affinity, ns"),
                ("gateway/reservation/max_cost", "  budget reservation: max cost, ns"),
                ("gateway/reservation/reserve_and_settle",
                 "  budget reserve + settle, local (incl. block_on), ns"),
                ("gateway/reservation/block_on_ready", "  (block_on of a ready future, ns)")):
            m = micro.get(key)
            if m:
                per = (m.get("throughput") or {}).get("Elements") if "per event" in label else 1
                rows.append((label, "", "", fmt(m["median_ns"] / (per or 1)), ""))
    cp = res.get("control_plane") or {}
    if cp.get("apply_to_live_ms", {}).get("count"):
        section(f"7 control plane: {cp['changes']} route changes via kube-apiserver")
        for key, label in (("apply_to_live_ms", "  create -> first routed request"),
                           ("delete_to_gone_ms", "  delete -> first 404"),
                           ("api_write_ms", "  API server write alone")):
            m = cp.get(key, {})
            if m.get("count"):
                rows.append((f"{label} p50 / p99, ms", "", "",
                             f"{m['p50']:.0f} / {m['p99']:.0f}", ""))
    else:
        section("7 control plane apply-to-live")
        reason = cp.get("skipped") or cp.get("error") or "skipped (--no-kube)"
        rows.append((f"  not measured: {reason[:70]}", "", "", "-", ""))
    tls_section(res, rows, section)

    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]

    def line(r: tuple) -> str:
        return "  ".join(c.ljust(widths[i]) if i == 0 or i == 4 else c.rjust(widths[i])
                         for i, c in enumerate(r)).rstrip()

    rule = "-" * len(line(head))
    out = [header_text(meta), rule, line(head), rule]
    out += [line(r) for r in rows]
    tls = res.get("tls_upstream") or {}
    if any(k.startswith("tls_") for k in summ):
        versions = "/".join(sorted(set(tls.get("edge_tls_versions", {}).values()))) or "TLS"
        out += [rule,
                f"8: an nginx TLS edge ({versions}, h2 by ALPN, throwaway CA) in front of the "
                "mock, pinned with it on the load CPU;",
                "   direct-tls = wrk -> edge; nginx-tls = wrk -> nginx -> edge (HTTP/1.1, "
                "verified, keep-alive); switchyard-tls =",
                "   wrk -> Switchyard -> edge (h2, spec.tls.caSecretRef). Paced: wrk with "
                "exponential pauses (a Poisson stream;",
                "   loadgen speaks plain HTTP only), timed from each request's sending. Latency "
                "added over direct-tls."]
    out += [rule, "targets (issue 9; #21: issue 21):"]
    for t in res.get("targets", []):
        mark = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        val = "-" if t["value"] is None else (f"{t['value']:.2f}" if abs(t["value"]) < 100
                                               else f"{t['value']:,.0f}")
        note = f"  ({t['note']})" if t["note"] else ""
        out.append(f"  [{mark:>6}] {t['target']}: {val} (limit {t['limit']}){note}")
    return "\n".join(out)


def tls_section(res: dict, rows: list, section: Callable[[str], None]) -> None:
    """Section 8 of the table: the TLS-upstream set, its own targets in the three columns."""
    summ, tls = res["summary"], res.get("tls_upstream") or {}
    names = [k for k in summ if k.startswith("tls_")]
    st = res["meta"]["settings"]
    if not names:
        if tls.get("skipped"):
            section("8 TLS upstream (h2 via edge)")
            rows.append((f"  not measured: {tls['skipped'][:70]}", "", "", "-", ""))
        return
    section(f"8 TLS upstream (h2 via edge), {st['tls_duration']:g} s per run (see below)")
    rows.append(("  target", "direct-tls", "nginx-tls", "switchyard-tls",
                 "vs nginx-tls / vs direct-tls"))
    p = tls.get("edge_protocols", {})
    rows.append(("  protocol to the edge (edge log, warm-up)", p.get("direct-tls", "-"),
                 p.get("nginx-tls", "-"), p.get("switchyard-tls", "-"),
                 "nginx 1.22 proxies over HTTP/1.1 only"))
    plain_cpu = {w: [summ.get(w, {}).get(t, {}).get("cpu_us_per_req")
                     for t in ("nginx", "switchyard")] for w in ("chat", "stream")}

    def trow(label: str, key: str, unit: str, name: str, cmp: str = "") -> None:
        r = summ.get(name, {})
        vals = [r.get(t, {}).get(key) for t in TLS_TARGETS]
        if all(x is None for x in vals):
            return
        extra = ""
        if cmp == "ratio":
            extra = f"{fmt(ratio(vals[2], vals[1]), 'x')} / {fmt(ratio(vals[2], vals[0]), 'x')}"
        elif cmp == "cpu":
            extra = f"{fmt(ratio(vals[2], vals[1]), 'x')} nginx-tls"
        elif cmp == "added":
            s_add = vals[2] - vals[0] if None not in (vals[2], vals[0]) else None
            n_add = vals[1] - vals[0] if None not in (vals[1], vals[0]) else None
            extra = f"{signed(s_add)} vs {signed(n_add)} us added"
        rows.append((label, *(fmt(x, unit) for x in vals), extra))

    conns = st["connections"]
    if "tls_chat" in summ:
        trow(f"  chat, non-streaming, {conns} conns: req/s", "rps", "", "tls_chat", "ratio")
        trow("    latency p50, us", "p50_us", "us", "tls_chat", "added")
        trow("    latency p99, us", "p99_us", "us", "tls_chat", "added")
        trow("    proxy CPU per request, us", "cpu_us_per_req", "", "tls_chat", "cpu")
        n, sw = plain_cpu["chat"]
        if n is not None or sw is not None:
            rows.append(("    the same, plain upstream (section 1), us", "", fmt(n), fmt(sw),
                         f"{fmt(ratio(sw, n), 'x')} nginx"))
        trow("    edge CPU, % of a core", "edge_cpu_pct", "", "tls_chat")
    if "tls_stream" in summ:
        trow(f"  streaming {st['chunks']} chunks, {conns} conns: streams/s", "rps", "",
             "tls_stream", "ratio")
        trow("    full stream p50, us", "p50_us", "us", "tls_stream", "added")
        trow("    proxy CPU per stream, us", "cpu_us_per_req", "", "tls_stream", "cpu")
        n, sw = plain_cpu["stream"]
        if n is not None or sw is not None:
            rows.append(("    the same, plain upstream (section 2), us", "", fmt(n), fmt(sw),
                         f"{fmt(ratio(sw, n), 'x')} nginx"))
        trow("    edge CPU, % of a core", "edge_cpu_pct", "", "tls_stream")
    for name in sorted((k for k in names if k.startswith("tls_paced_")),
                       key=lambda k: float(k[len("tls_paced_"):])):
        trow(f"  {name[len('tls_paced_'):]}/s non-streaming, wrk paced: achieved",
             "rps", "", name)
        trow("    latency p50, us", "p50_us", "us", name, "added")
        trow("    latency p99, us", "p99_us", "us", name, "added")
        trow("    proxy CPU, % of its core", "cpu_pct", "", name, "cpu")
    if tls.get("edge_log_lines_during_load"):
        rows.append((f"  warning: the edge logged {tls['edge_log_lines_during_load']} lines "
                     "during the load", "", "", "", ""))


def header_text(meta: dict) -> str:
    st = meta["settings"]
    pin = meta["pinning"]
    lines = [
        f"Switchyard benchmark  {meta['started']}  git {meta.get('git', '?')}"
        f"{'  (SMOKE: figures meaningless)' if st['smoke'] else ''}",
        f"machine: {meta['cpus']} CPUs ({meta['cpu_model']}), load average at start "
        f"{meta['loadavg_start']:.2f}; {st['rounds']} round(s) x {st['duration']:g} s per "
        f"workload and target, medians across rounds",
        f"pinning: {pin}",
        f"nginx: {meta.get('nginx') or 'not installed (skipped)'}; closed loop: "
        f"{meta.get('closed_loop_tool')}; access logs: {'on' if st.get('access_log') else 'off'}"
        f" (both proxies)",
    ]
    if meta["loadavg_start"] > 0.5:
        lines.append("warning: the machine was busy at start: take final figures on a quiet one")
    return "\n".join(lines)


# === Main ===


def machine() -> dict:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    git = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "loadavg_start": os.getloadavg()[0],
        "git": (git.stdout.strip() + ("+dirty" if dirty else "")) if git.returncode == 0 else "?",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def choose_cpus(spec: Optional[str]) -> tuple[Optional[int], Optional[int], str]:
    if not shutil.which("taskset"):
        return None, None, "none (taskset not found)"
    if spec:
        a, b = (int(x) for x in spec.split(","))
    else:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return None, None, "none (only one CPU available)"
        a, b = cpus[0], cpus[1]
    return a, b, (f"load generator + mock on CPU {a}, proxy under test on CPU {b} "
                  f"(taskset -c); Switchyard sees 1 CPU -> 1 tokio worker; nginx 1 worker")


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def kube_scale_only(bins: dict[str, Path], s: Settings, log: Callable[[str], None],
                    out_path: Optional[Path]) -> int:
    """`--kube-scale-only`: a mock and the control plane at scale, nothing else."""
    work = Path(tempfile.mkdtemp(prefix="switchyard-bench-scale-"))
    env = clean_env()
    try:
        mock_proc = Proc("switchyard-mock", [
            bins["switchyard-mock"], "--listen", "127.0.0.1:0", "--api-key", UPSTREAM_KEY,
            "--models", MODEL], work / "mock.log", dict(env, RUST_LOG="warn"))
        mock = mock_proc.wait_for(mock_address, "its listening address")
        res = control_plane_scale(mock, bins["switchyard"], env, ["--require-auth=false"], work,
                                  s, None, log, allow_start=True)
    finally:
        Proc.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(res, indent=2)
    print(text)
    if out_path:
        out_path.write_text(text)
    return 0 if "error" not in res else 1


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="tiny run to check the harness (no install, no build, no criterion)")
    p.add_argument("--duration", type=float, help="measured seconds per workload and target")
    p.add_argument("--warmup", type=float, help="unmeasured seconds before each measurement")
    p.add_argument("--rounds", type=int, help="rounds (targets interleaved in each)")
    p.add_argument("--rates", help="open-loop rates, comma separated (default 500,2000)")
    p.add_argument("--hold-streams", type=int, help="slow streams held open (default 1000)")
    p.add_argument("--cpus", help="LOAD,PROXY: CPUs for load+mock and for the proxy")
    p.add_argument("--bin-dir", type=Path, help="use prebuilt binaries from here (no build)")
    p.add_argument("--no-build", action="store_true", help="use <target dir>/release as is")
    p.add_argument("--no-install", action="store_true",
                   help="never apt-get install nginx/wrk; run without what is missing")
    p.add_argument("--no-nginx", action="store_true", help="skip the nginx target")
    p.add_argument("--no-micro", action="store_true", help="skip the criterion benchmarks")
    p.add_argument("--no-kube", action="store_true",
                   help="skip the control-plane workload (real API server via envtest)")
    p.add_argument("--busy-poll", default="5ms",
                   help="window of the extra busy-polling Switchyard on the open-loop "
                        "workloads (default 5ms; 0 skips it)")
    p.add_argument("--access-log", action="store_true",
                   help="(the default) both proxies log every request; kept for old scripts")
    p.add_argument("--no-access-log", action="store_true",
                   help="run both proxies with their access log off (the log-off rows run "
                        "either way)")
    p.add_argument("--sep-delay-ms", type=int, default=2,
                   help="delay between the chunks of the separate-chunk streams (default 2)")
    p.add_argument("--no-agentic", action="store_true",
                   help="skip the agentic-body workloads (70-87 KB requests, translations)")
    p.add_argument("--agentic-duration", type=float,
                   help="measured seconds per agentic workload (default a third of --duration)")
    p.add_argument("--hold-streams-big", type=int,
                   help="the larger count of slow streams held open (default 10000; 0 skips; "
                        "capped by the file-descriptor limit)")
    p.add_argument("--gateway-arg", action="append", metavar="ARG",
                   help="an extra `switchyard serve` flag for every Switchyard under test "
                        "(repeatable), e.g. --gateway-arg=--upstream-http2=false")
    p.add_argument("--no-tls-upstream", action="store_true",
                   help="skip the TLS-upstream set (Switchyard and nginx to an nginx TLS + h2 "
                        "edge in front of the mock)")
    p.add_argument("--tls-duration", type=float,
                   help="measured seconds per TLS-upstream run (default half of --duration)")
    p.add_argument("--quick-micro", action="store_true", help="shorter criterion runs")
    p.add_argument("--kube-scale-routes", type=int,
                   help="AIRoutes in the control-plane-at-scale run (default 10000; 0 skips it)")
    p.add_argument("--kube-scale-only", action="store_true",
                   help="run only the control plane at scale (a mock and a kube-mode "
                        "Switchyard against the envtest API server) and print its figures")
    p.add_argument("--load-tool", choices=("auto", "wrk", "loadgen"), default="auto",
                   help="closed-loop load generator (auto: wrk when installed)")
    p.add_argument("--out", type=Path, default=None, help=f"JSON results (default {DEFAULT_OUT})")
    p.add_argument("--table-from", type=Path, help="print the table of a results file and exit")
    p.add_argument("--keep-work", action="store_true", help="keep the scratch folder (logs)")
    a = p.parse_args(argv)

    if a.table_from:
        print(table(json.loads(a.table_from.read_text())))
        return 0

    s = Settings(a)
    out_path = a.out or DEFAULT_OUT
    log = lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    raise_fd_limit()
    meta = machine()
    load_cpu, proxy_cpu, pin_text = choose_cpus(a.cpus)
    tools = ensure_tools(install=not (a.no_install or s.smoke), need_nginx=not a.no_nginx)
    nginx = None if a.no_nginx else tools["nginx"]
    wrk = tools["wrk"] if a.load_tool in ("auto", "wrk") else None
    if a.load_tool == "wrk" and not wrk:
        raise BenchError("--load-tool wrk but wrk is not installed")
    if a.bin_dir:
        bin_dir = a.bin_dir
    elif s.smoke or a.no_build:
        bin_dir = Path(os.environ["SWITCHYARD_BIN_DIR"]) if (
            s.smoke and os.environ.get("SWITCHYARD_BIN_DIR")) else target_dir() / (
            "debug" if s.smoke else "release")
    else:
        bin_dir = build_release()
    bins = binaries(bin_dir)

    if a.kube_scale_only:
        return kube_scale_only(bins, s, log, a.out)

    tls_skip = None
    if not s.tls_upstream:
        tls_skip = "--no-tls-upstream"
    elif not tools["nginx"]:
        tls_skip = "nginx not installed (the TLS edge is an nginx)"
    elif not wrk:
        tls_skip = "needs wrk (switchyard-loadgen speaks plain HTTP only)"
    elif not shutil.which("openssl"):
        tls_skip = "openssl not installed (it makes the edge's certificate)"

    work = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    res: dict[str, Any] = {"meta": dict(
        meta, pinning=pin_text, nginx=None, bin_dir=str(bin_dir),
        closed_loop_tool="wrk" if wrk else "switchyard-loadgen",
        settings=dict(vars(s)), limits=LIMITS, nginx_conf="bench/run.py NGINX_CONF",
        argv=sys.argv[1:] if argv is None else argv)}
    res["tls_upstream"] = {"skipped": tls_skip} if tls_skip else {
        "edge_conf": "bench/run.py EDGE_CONF", "nginx_tls_conf": "bench/run.py NGINX_TLS_SERVER",
        "targets": {
            "direct-tls": "wrk -> edge (TLS, HTTP/1.1: wrk offers no ALPN)",
            "nginx-tls": "wrk -> nginx -> edge (TLS, HTTP/1.1: nginx 1.22 proxies over 1.1 only)",
            "switchyard-tls": "wrk -> Switchyard -> edge (TLS, h2 by ALPN, caSecretRef)"},
        "paced": "wrk with exponential pauses per connection (a Poisson stream at the rate): "
                 "switchyard-loadgen's open loop speaks plain HTTP only"}

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        log(f"starting mock, switchyard{', nginx' if nginx else ''} ({pin_text})")
        if not tls_skip:
            log("starting the TLS edge (nginx, TLS + h2) in front of the mock")
        stack = Stack(bins, nginx, s, work, load_cpu, proxy_cpu,
                      edge_nginx=None if tls_skip else tools["nginx"])
        res["meta"]["nginx"] = stack.nginx_version
        res["idle"] = idle_figures(stack, bins, nginx)
        load = Load(bins["switchyard-loadgen"], wrk, load_cpu, s, work)
        preflight(stack, load)
        if stack.edge_proc:
            res["tls_upstream"].update(tls_probe(stack))
            seen = res["tls_upstream"]["edge_protocols"]
            log("TLS edge saw: " + ", ".join(
                f"{tt.replace('-tls', '')}->edge {seen.get(tt, '?')}"
                for tt in stack.tls_targets()))
        res.update(run_workloads(stack, load, s, log))
        if stack.edge_proc:
            res["tls_upstream"]["edge_log_lines_during_load"] = (
                stack.edge_log_lines() - res["tls_upstream"]["edge_log_lines_before_load"])
        if not a.no_kube:
            res["control_plane"] = control_plane(stack, bins, s, proxy_cpu, log,
                                                 allow_start=not s.smoke)
            if s.kube_scale_routes > 0:
                res["control_plane_scale"] = control_plane_scale(
                    stack.mock, bins["switchyard"], stack.env, stack.serve_flags, work, s,
                    proxy_cpu, log, allow_start=not s.smoke)
        res["meta"]["switchyard_threads_end"] = threads(stack.gw_proc.pid)
        res["meta"]["switchyard_requests_by_status"] = gateway_counts(stack)
    finally:
        Proc.stop_all()
        if not a.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"logs kept in {work}")
    if not (a.no_micro or s.smoke):
        res["micro"] = run_micro(proxy_cpu, a.quick_micro, log)
    res["summary"] = summarize(res)
    if not res["tls_upstream"].get("skipped"):
        res["tls_upstream"]["ratios"] = tls_ratios(res["summary"])
    res["targets"] = verdicts(res)
    text = table(res)
    res["table"] = text
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    tmp.replace(out_path)
    print(text)
    print(f"\nraw figures: {out_path}")
    errors = {f"{w}/{t}": v["errors"] for w, row in res["summary"].items()
              for t, v in row.items() if v.get("errors")}
    if errors:
        print(f"warning: failed requests: {errors}", file=sys.stderr)
    return 0


def gateway_counts(stack: Stack) -> dict[str, float]:
    """`switchyard_requests_total` by status from the admin port: a cross-check that the load
    went through the gateway and was answered as the load generators say."""
    out: dict[str, float] = {}
    try:
        with _LOCAL.open(f"http://{stack.admin}/metrics", timeout=5) as r:
            text = r.read().decode("utf-8", "replace")
    except OSError:
        return out
    for line in text.splitlines():
        m = re.match(r'switchyard_requests_total\{(.*)\} ([0-9.e+]+)$', line)
        if m:
            status = re.search(r'status="([^"]*)"', m.group(1))
            key = status.group(1) if status else "?"
            out[key] = out.get(key, 0) + float(m.group(2))
    return out


def preflight(stack: Stack, load: Load) -> None:
    """One request of each kind through every target, so a broken set-up fails in seconds
    rather than after minutes of zeros."""
    for t in stack.latency_targets():
        kinds = ((False, False),) if t == BUSY else ((False, False), (True, False), (True, True))
        for stream, slow in kinds:
            model = SLOW_MODEL if slow and t == "switchyard" else MODEL
            r = load.loadgen_run("closed", stack.url(t, slow), stack.headers(t, slow),
                                 body(stream, model), [
                                     "--connections", 1, "--duration", 0.05, "--warmup", 0,
                                     "--max-requests", 1], 5)
            if r["ok"] < 1 or r["error_total"]:
                raise BenchError(f"preflight: {t} {'stream' if stream else 'chat'} "
                                 f"{'(slow) ' if slow else ''}failed: {json.dumps(r)[:800]}")
    checks = [(t, stack.url(t, sep=True), stack.headers(t, sep=True),
               body(True, SEP_MODEL if t == "switchyard" else MODEL), "separate chunks")
              for t in stack.targets()]
    checks += [(t, stack.url(t), stack.headers(t), body(True), "log off")
               for t in stack.log_off_targets()]
    if stack.s.agentic:
        for name, label, path, file, model, anthropic in AGENTIC:
            for t in agentic_targets(stack, name):
                for stream in (False, True):
                    checks.append((t, stack.url(t, path=path),
                                   stack.headers(t, anthropic=anthropic),
                                   agentic_body(file, stream,
                                                model if t == "switchyard" else MODEL),
                                   f"{label}{' stream' if stream else ''}"))
    for t, url, hdrs, text, what in checks:
        r = load.loadgen_run("closed", url, hdrs, text, [
            "--connections", 1, "--duration", 0.05, "--warmup", 0, "--max-requests", 1], 5)
        if r["ok"] < 1 or r["error_total"]:
            raise BenchError(f"preflight: {t} {what} failed: {json.dumps(r)[:800]}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        Proc.stop_all()
        print(f"bench: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        Proc.stop_all()
        print("bench: interrupted", file=sys.stderr)
        sys.exit(130)
