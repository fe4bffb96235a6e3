"""A profile-guided (PGO) release build of `switchyard`: what the image ships and `make bench`
measures.

Why: between two requests at a few hundred a second the core's caches, TLB and branch
predictors go cold, and the gateway runs through more code than nginx (tokio, hyper, http,
ours). A layout from a profile puts the hot paths together and the cold ones away: with it
the added p50 at 500 requests/s and the CPU per agent-sized or translated request drop by a
fifth (docs/performance.md has the figures).

How, in three steps, each in a target directory of its own so none invalidates another's
cache or the plain release build:
1. build `switchyard` with `-Cprofile-generate` (target/pgo-generate);
2. run the bench's workloads through it (`train`): every request shape the bench measures,
   passthrough and each translation, streaming and not, in front of `switchyard-mock`;
3. merge the counters with the toolchain's `llvm-profdata` (rustup's `llvm-tools` component,
   added when missing) and build again with `-Cprofile-use` (target/pgo).

rustc lists the profile among each crate's inputs (its dep-info), so a new profile rebuilds
what it changes and nothing is left optimised for an old one. Training is not repeatable
byte for byte, so every new profile costs the whole optimised build (~20 min here): the
profile is kept, with a digest of what it came from beside it (the instrumented binary, the
training set and load), and used again while those are unchanged (`--retrain` makes a new
one anyway).

    python3 bench/pgo.py                         # target/pgo/release/switchyard
    python3 bench/pgo.py --target x86_64-unknown-linux-musl --install /out/switchyard
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

from harness import child_env, start_mock, start_serve

from .configs import gateway_config
from .loadgen import body, parse_loadgen
from .procs import BenchError, Proc, run_cmd
from .settings import ANTHROPIC_HEADERS, CARGO, MODEL, REPO, SEP_MODEL, UPSTREAM_KEY
from .tools import target_dir
from .workloads import AGENTIC, agentic_body

Log = Callable[[str], None]


class _Shape:
    """The stream shapes the bench config's routes need (`gateway_config` reads these)."""

    slow_chunks = 5
    slow_delay_ms = 20
    sep_delay_ms = 2


def training_set() -> list[tuple[str, str, str, list[str]]]:
    """(name, path, body, headers) of every request shape the bench measures."""
    out = [("chat", "/v1/chat/completions", body(False, MODEL), []),
           ("stream", "/v1/chat/completions", body(True, MODEL), []),
           ("stream_sep", "/v1/chat/completions", body(True, SEP_MODEL), [])]
    for name, _label, path, file, model, anthropic in AGENTIC:
        for stream in (False, True):
            out.append((f"{name}{'_stream' if stream else ''}", path,
                        agentic_body(file, stream, model),
                        list(ANTHROPIC_HEADERS) if anthropic else []))
    return out


def train(gateway: Path, mock: Path, loadgen: Path, seconds: float, log: Log) -> dict[str, int]:
    """Runs `training_set` through a `switchyard serve` on the bench config (access log on, as
    deployed) in front of the mock, `seconds` each; returns the answered requests per shape.
    Every request must succeed: a profile of error paths would lay out the wrong code."""
    work = Path(tempfile.mkdtemp(prefix="switchyard-pgo-"))
    env = child_env(RUST_LOG="warn")
    m = start_mock(work / "mock.log", ["--api-key", UPSTREAM_KEY, "--chunks", "20",
                                      "--models", MODEL], exe=mock, proc_type=Proc)
    try:
        (work / "config").mkdir()
        (work / "config" / "bench.yaml").write_text(gateway_config(m.addr, _Shape()))
        gw = start_serve(work / "config", work / "gateway.log", ["--require-auth=false"],
                         exe=gateway, env=dict(env, RUST_LOG="info"),
                         stdout=work / "access.log", proc_type=Proc)
        try:
            done = {}
            for i, (name, path, text, headers) in enumerate(training_set()):
                f = work / f"body-{i}.json"
                f.write_text(text)
                hdrs = [a for h in headers for a in ("--header", h)]
                r = parse_loadgen(run_cmd([
                    loadgen, "closed", "--url", f"http://{gw.listen}{path}", "--body-file", f,
                    *hdrs, "--duration", str(seconds), "--warmup", "0.1",
                    "--connections", "4"], 60 + 4 * seconds, f"training load {name}"))
                if r["error_total"] or not r["ok"]:
                    raise BenchError(f"training load {name}: {r['ok']} answered, "
                                     f"errors {r.get('errors')}")
                done[name] = r["ok"]
                log(f"pgo: trained {name}: {r['ok']} requests")
            return done
        finally:
            gw.proc.stop()
    finally:
        m.proc.stop()
        shutil.rmtree(work, ignore_errors=True)


def llvm_profdata(log: Log) -> Path:
    """The toolchain's own `llvm-profdata` (a distribution's may not read rustc's LLVM's
    format), adding rustup's `llvm-tools` component when it is missing."""
    def find() -> Optional[Path]:
        sysroot = run_cmd(["rustc", "--print", "sysroot"], 60, "rustc --print sysroot",
                          cwd=REPO).strip()
        host = next(ln.split()[1] for ln in run_cmd(
            ["rustc", "-vV"], 60, "rustc -vV", cwd=REPO).splitlines() if ln.startswith("host:"))
        p = Path(sysroot) / "lib" / "rustlib" / host / "bin" / "llvm-profdata"
        return p if p.is_file() else None
    found = find()
    if not found:
        log("pgo: rustup component add llvm-tools")
        run_cmd(["rustup", "component", "add", "llvm-tools"], 900, "rustup component add")
        found = find()
    if not found:
        raise BenchError("llvm-profdata not found after adding rustup's llvm-tools component")
    return found


def _cargo_build(out_dir: Path, rustflags: str, target: Optional[str], what: str,
                 log: Log) -> Path:
    env = dict(os.environ, CARGO_TARGET_DIR=str(out_dir),
               RUSTFLAGS=" ".join(f for f in (os.environ.get("RUSTFLAGS", ""), rustflags) if f))
    log(f"pgo: {what}: cargo build --release -p switchyard (target dir {out_dir})")
    # From the repository, where rust-toolchain.toml picks the compiler the profile is for.
    run_cmd([CARGO, "build", "--release", "--locked", "-p", "switchyard", "--bin", "switchyard",
             *(["--target", target] if target else [])], 7200, what, env=env, cwd=REPO)
    return out_dir / (target or "") / "release" / "switchyard"


def _digest(binary: Path, seconds: float) -> str:
    """What a profile was trained from: the instrumented binary, the load and its shapes."""
    with binary.open("rb") as f:
        built = hashlib.file_digest(f, "sha256").hexdigest()
    return hashlib.sha256(f"{built}\nseconds={seconds}\n{training_set()!r}\n".encode()).hexdigest()


def build(log: Log, target: Optional[str] = None, seconds: float = 1.0,
          tools: Optional[Path] = None, retrain: bool = False) -> Path:
    """The PGO build of `switchyard` (for `target`, default the host); returns its path.
    `tools`: a folder with release builds of the mock and the load generator (built here
    when not given). The profile of an earlier call is used again while the instrumented
    binary, the training set and `seconds` are the same, unless `retrain`."""
    root = target_dir()
    profdata_tool = llvm_profdata(log)
    if tools is None:
        # The mock and load generator that drive the training: a plain host build.
        run_cmd([CARGO, "build", "--release", "--locked", "-p", "switchyard-mock", "-p",
                 "switchyard-loadgen"], 3600, "cargo build --release (mock, loadgen)", cwd=REPO)
        tools = root / "release"
    raw = root / "pgo-generate" / "profiles"
    instrumented = _cargo_build(root / "pgo-generate", f"-Cprofile-generate={raw}", target,
                                "instrumented build", log)
    profile = root / "pgo" / "switchyard.profdata"
    source = profile.with_name(profile.name + ".source")
    digest = _digest(instrumented, seconds)
    if (not retrain and profile.is_file() and source.is_file()
            and source.read_text().strip() == digest):
        log(f"pgo: {profile} is from this instrumented build: not trained again")
    else:
        shutil.rmtree(raw, ignore_errors=True)
        raw.mkdir(parents=True)
        train(instrumented, tools / "switchyard-mock", tools / "switchyard-loadgen", seconds,
              log)
        if not any(raw.glob("*.profraw")):
            raise BenchError(f"the instrumented gateway wrote no profile into {raw}")
        profile.parent.mkdir(parents=True, exist_ok=True)
        source.unlink(missing_ok=True)
        run_cmd([profdata_tool, "merge", "-o", profile, raw], 600, "llvm-profdata merge")
        source.write_text(digest + "\n")
    return _cargo_build(root / "pgo", f"-Cprofile-use={profile}", target, "optimised build",
                        log)


def main(argv: list[str]) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="bench/pgo.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", help="a rustc target triple (default: the host)")
    p.add_argument("--seconds", type=float, default=1.0,
                   help="training load per request shape (default 1)")
    p.add_argument("--install", type=Path, help="copy the built binary here")
    p.add_argument("--retrain", action="store_true",
                   help="train a new profile even if the instrumented binary is unchanged")
    a = p.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    try:
        out = build(log, a.target, a.seconds, retrain=a.retrain)
    except BenchError as e:
        print(f"pgo: {e}", file=sys.stderr)
        return 1
    finally:
        Proc.stop_all()
    if a.install:
        a.install.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out, a.install)
        out = a.install
    print(out)
    return 0
