"""Constants of the benchmark (targets, models, keys, limits) and its `Settings`."""

from __future__ import annotations

import argparse
import os
import resource
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
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
# The name Switchyard gives its access-log writer thread (crates/telemetry/src/access_log.rs).
LOG_WRITER_THREAD = "access-log"
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


# File descriptors a proxy holds besides the held streams' two connections each: nginx's idle
# upstream keep-alive pools (`keepalive 256` in each of its two upstream blocks, filled by the
# earlier workloads) and listeners, logs and stragglers. With 512 in all, nginx ran out of
# connections at 9 744 streams under a limit of 20 000 ("worker_connections are not enough,
# reusing connections") and ~215 of its streams failed, while Switchyard's did not.
HOLD_FD_MARGIN = 1024


def hold_big_streams(s: Settings) -> int:
    """The larger held-stream count, within the file descriptors a proxy has: each stream
    holds a client and an upstream connection."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(0, min(s.hold_streams_big, (soft - HOLD_FD_MARGIN) // 2))
