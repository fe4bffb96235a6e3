"""The workloads, run round by round against every target, and the figures around them
(idle, TLS probe, preflight, the gateway's own counts)."""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

from harness import LOCAL

from .loadgen import Load, body
from .procs import BenchError, Meter, Sampler, rss_bytes, thread_cpu_ns, threads
from .settings import (
    AGENT_ANTHROPIC, AGENT_OPENAI, BODIES, BUSY, LOG_WRITER_THREAD, MODEL, PROBE_AGENT,
    SEP_MODEL, SLOW_MODEL, TLS_MODEL, Settings, hold_big_streams,
)
from .stack import Stack


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
    # Switchyard's access-log writer thread, measured on its own: with the per-line cost
    # on the request path (the `telemetry/access_log/log` micro row) it is what the log
    # costs, without subtracting two noisy whole-process figures.
    writer = LOG_WRITER_THREAD if meter and target.startswith("switchyard") else None
    with Sampler(meter if sample_rss else None) as smp:
        cpu0 = meter.cpu() if meter else 0.0
        w0 = thread_cpu_ns(meter.pid, writer) if writer else 0
        r = fn()
        cpu1 = meter.cpu() if meter else 0.0
        w1 = thread_cpu_ns(meter.pid, writer) if writer else 0
    if writer and r.get("ok") and smp.wall and r.get("elapsed_s"):
        r["log_writer_ns_per_req"] = round((w1 - w0) / smp.wall * r["elapsed_s"] / r["ok"], 1)
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
        # Once, in the last round: allocators keep what 10 000 streams took (nginx's and
        # jemalloc's alike), so an earlier run would inflate later rounds' 1 000-stream peaks
        # (measured: nginx 35 -> 167 MiB, Switchyard 44 -> 53 MiB).
        if big and rnd == s.rounds - 1:
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


def gateway_counts(stack: Stack) -> dict[str, float]:
    """`switchyard_requests_total` by status from the admin port: a cross-check that the load
    went through the gateway and was answered as the load generators say."""
    out: dict[str, float] = {}
    try:
        with LOCAL.open(f"http://{stack.admin}/metrics", timeout=5) as r:
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
