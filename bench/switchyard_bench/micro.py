"""The criterion micro-benchmarks (`cargo bench`) and their estimates."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

from .procs import pinned, run_cmd
from .settings import CARGO
from .tools import target_dir


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
