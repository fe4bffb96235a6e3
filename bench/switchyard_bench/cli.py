"""The command line of bench/run.py: options, the machine, and one run from start to the
results file."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from harness import child_env, start_mock

from . import pgo
from .kube import control_plane, control_plane_scale
from .loadgen import Load
from .micro import run_micro
from .procs import BenchError, Proc, threads
from .report import summarize, table, tls_ratios, verdicts
from .settings import DEFAULT_OUT, LIMITS, MODEL, REPO, UPSTREAM_KEY, Settings
from .stack import Stack
from .tools import binaries, build_release, ensure_tools, target_dir
from .workloads import gateway_counts, idle_figures, preflight, run_workloads, tls_probe


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
    env = child_env()
    try:
        mock = start_mock(work / "mock.log", ["--api-key", UPSTREAM_KEY, "--models", MODEL],
                          exe=bins["switchyard-mock"], proc_type=Proc)
        res = control_plane_scale(mock.addr, bins["switchyard"], env, ["--require-auth=false"], work,
                                  s, None, log, allow_start=True)
    finally:
        Proc.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(res, indent=2)
    print(text)
    if out_path:
        out_path.write_text(text)
    return 0 if "error" not in res else 1


def main(argv: Optional[list[str]] = None, description: Optional[str] = None) -> int:
    """One run as the command line says; `description` heads `--help` (bench/run.py passes
    the first paragraph of its docstring)."""
    p = argparse.ArgumentParser(description=description)
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
    p.add_argument("--no-pgo", action="store_true",
                   help="measure the plain release build, not the profile-guided one the "
                        "image ships (bench/pgo.py; the first PGO build takes ~40 min)")
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
    build_kind = "as found in --bin-dir" if a.bin_dir else "debug" if s.smoke else "release"
    if not (a.bin_dir or s.smoke or a.no_build or a.no_pgo):
        # What the image ships (Dockerfile): the gateway built with a profile of these
        # workloads. The mock and load generator stay the plain build.
        bins["switchyard"] = pgo.build(log, tools=bin_dir)
        build_kind = "release, profile-guided (bench/pgo.py)"

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
        meta, pinning=pin_text, nginx=None, bin_dir=str(bin_dir), build=build_kind,
        gateway_bin=str(bins["switchyard"]),
        closed_loop_tool="wrk" if wrk else "switchyard-loadgen",
        settings=dict(vars(s)), limits=LIMITS,
        nginx_conf="bench/switchyard_bench/configs.py NGINX_CONF",
        argv=sys.argv[1:] if argv is None else argv)}
    res["tls_upstream"] = {"skipped": tls_skip} if tls_skip else {
        "edge_conf": "bench/switchyard_bench/configs.py EDGE_CONF",
        "nginx_tls_conf": "bench/switchyard_bench/configs.py NGINX_TLS_SERVER",
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
