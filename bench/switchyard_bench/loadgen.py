"""The load generators: wrk (closed loop, and paced for the TLS set) and
switchyard-loadgen (bench/loadgen), and the parsing of their reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from .procs import BenchError, pinned, run_cmd
from .settings import BENCH, MESSAGES, MODEL, Settings


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
