#!/usr/bin/env python3
"""Control-plane benchmark: apply-to-live propagation through the real kube-apiserver.

Starts envtest (tests/k8s/envtest.sh), `switchyard-mock`, and `switchyard serve --kube` scoped to
one namespace, then creates AIRoutes one at a time through the API server and measures, for
each, the time from sending the create to the gateway routing the new model (polled on its
API port every millisecond). Prints p50/p90/p99/max and writes
bench/results/propagation.json. Loopback only; bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NS = "bench-propagation"
KEY = "sk-bench-propagation"


def envtest() -> dict[str, str]:
    subprocess.run([str(REPO / "tests/k8s/envtest.sh"), "start"], check=True, stdout=sys.stderr)
    env_dir = Path(os.environ.get("ENVTEST_DIR", "/tmp/switchyard-envtest"))
    out = {}
    for line in (env_dir / "env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k] = v
    return out


def token(kubeconfig: str) -> str:
    for line in Path(kubeconfig).read_text().splitlines():
        if line.strip().startswith("token:"):
            return line.split(":", 1)[1].strip().strip('"')
    raise SystemExit(f"no token in {kubeconfig}")


class Api:
    def __init__(self, env: dict[str, str]):
        self.base = env["KUBE_APISERVER_URL"]
        self.ctx = ssl.create_default_context(cafile=env["KUBE_CA_FILE"])
        self.token = token(env["KUBECONFIG_ADMIN"])

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        req = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"authorization": f"Bearer {self.token}", "content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=10) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


def bin_dir() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for d in (target / "release", REPO / "target/bench/release", target / "debug"):
        if (d / "switchyard").exists() and (d / "switchyard-mock").exists():
            return d
    raise SystemExit("build the binaries first: cargo build --release -p switchyard -p switchyard-mock")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(cond, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {what}")


def routed(port: int, model: str) -> bool:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                 headers={"content-type": "application/json"}, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=2) as r:
            return r.status == 200
    except (urllib.error.HTTPError, urllib.error.URLError, OSError):
        return False


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--changes", type=int, default=100, help="routes created (default 100)")
    p.add_argument("--out", default=str(REPO / "bench/results/propagation.json"))
    a = p.parse_args()

    env = envtest()
    api = Api(env)
    kubectl = env["KUBECTL"]
    kadmin = ["--kubeconfig", env["KUBECONFIG_ADMIN"]]
    subprocess.run([kubectl, *kadmin, "apply", "--validate=false", "-f", str(REPO / "crds")],
                   check=True, stdout=subprocess.DEVNULL)
    api.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    # Start from a clean namespace: namespaces cannot be deleted on envtest (no controllers).
    for kind in ("airoutes", "modelbackends"):
        api.call("DELETE", f"/apis/switchyard.dev/v1alpha1/namespaces/{NS}/{kind}")
    api.call("DELETE", f"/api/v1/namespaces/{NS}/secrets/mock-key")

    bins = bin_dir()
    mock_port, gw_port, admin_port = free_port(), free_port(), free_port()
    procs = []
    try:
        procs.append(subprocess.Popen([str(bins / "switchyard-mock"), "--listen", f"127.0.0.1:{mock_port}",
                                       "--api-key", KEY], stderr=subprocess.DEVNULL))
        api.call("POST", f"/api/v1/namespaces/{NS}/secrets", {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "mock-key", "labels": {"switchyard.dev/secret": "true"}},
            "stringData": {"apiKey": KEY}})
        api.call("POST", f"/apis/switchyard.dev/v1alpha1/namespaces/{NS}/modelbackends", {
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "ModelBackend",
            "metadata": {"name": "mock"},
            "spec": {"provider": "openai-compatible", "endpoint": f"http://127.0.0.1:{mock_port}/v1",
                     "auth": {"secretRef": {"name": "mock-key", "key": "apiKey"}},
                     "models": [{"name": "mock-model"}]}})
        procs.append(subprocess.Popen(
            [str(bins / "switchyard"), "serve", "--kube", "--kubeconfig", env["KUBECONFIG_ADMIN"],
             "--namespace", NS, "--listen", f"127.0.0.1:{gw_port}",
             "--admin-listen", f"127.0.0.1:{admin_port}", "--no-access-log"],
            stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"}))
        wait(lambda: _ready(admin_port), "the gateway to be ready", 30)

        run_id = f"{int(time.time())}"
        samples = []
        deadline = time.monotonic() + 120
        for i in range(a.changes):
            if time.monotonic() > deadline:
                break
            model = f"prop-{run_id}-{i}"
            route = {"apiVersion": "switchyard.dev/v1alpha1", "kind": "AIRoute",
                     "metadata": {"name": f"r-{run_id}-{i}"},
                     "spec": {"match": {"models": [model]},
                              "backends": [{"backendRef": {"name": "mock"}, "model": "mock-model"}]}}
            t0 = time.perf_counter()
            status, body = api.call("POST", f"/apis/switchyard.dev/v1alpha1/namespaces/{NS}/airoutes", route)
            if status not in (200, 201):
                raise SystemExit(f"creating the route failed: {status} {body}")
            t_applied = time.perf_counter()
            while not routed(gw_port, model):
                if time.perf_counter() - t0 > 10:
                    raise SystemExit(f"route {model} never became live")
                time.sleep(0.001)
            samples.append((time.perf_counter() - t0, t_applied - t0))
        live = [s[0] * 1000 for s in samples]
        api_ms = [s[1] * 1000 for s in samples]
        result = {
            "changes": len(live),
            "apply_to_live_ms": {"p50": percentile(live, 0.5), "p90": percentile(live, 0.9),
                                  "p99": percentile(live, 0.99), "max": max(live),
                                  "mean": statistics.mean(live)},
            "api_create_ms": {"p50": percentile(api_ms, 0.5), "p99": percentile(api_ms, 0.99)},
            "binaries": str(bins),
            "note": "from sending the create to the API server to the first request routed by the "
                    "new rule (polled every ~1 ms); includes the API write, the watch event, the "
                    "gateway's 50 ms debounce, compile and swap",
        }
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
        l = result["apply_to_live_ms"]
        print(f"control plane: apply-to-live over {len(live)} route creations: "
              f"p50 {l['p50']:.1f} ms, p90 {l['p90']:.1f} ms, p99 {l['p99']:.1f} ms, max {l['max']:.1f} ms "
              f"(API create alone p50 {result['api_create_ms']['p50']:.1f} ms)")
        return 0
    finally:
        for pr in procs:
            pr.terminate()
            try:
                pr.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pr.kill()


def _ready(port: int) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


if __name__ == "__main__":
    sys.exit(main())
