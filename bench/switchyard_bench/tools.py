"""The tools and binaries the bench runs: nginx and wrk (apt-get installed when missing),
the release build of the Switchyard binaries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from .procs import BenchError, run_cmd
from .settings import CARGO, REPO


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
