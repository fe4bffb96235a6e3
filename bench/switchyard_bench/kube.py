"""The control plane against a real API server (envtest): apply-to-live, and at scale."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

from harness import LOCAL, http_status, serving_addresses, wait_until

from .loadgen import body
from .procs import BenchError, Proc, pinned, rss_bytes
from .settings import MODEL, REPO, UPSTREAM_KEY, Settings
from .stack import Stack


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
        with LOCAL.open(req, timeout=5) as r:
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
        with LOCAL.open(req, timeout=30) as r:
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


def event_counts(proxy: str, ns: str) -> dict:
    """The Events recorded in `ns`, counted by type, reason and the kind they are about
    (`"Warning PricingUnknown ModelBackend": 1001`): which Events a run posted, not only how
    many."""
    req = urllib.request.Request(f"http://{proxy}/apis/events.k8s.io/v1/namespaces/{ns}/events")
    try:
        with LOCAL.open(req, timeout=60) as resp:
            items = json.loads(resp.read())["items"]
    except OSError:
        return {}
    counts: dict[str, int] = {}
    for e in items:
        key = f"{e.get('type')} {e.get('reason')} {(e.get('regarding') or {}).get('kind')}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


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
        addr, admin = gw.wait_for(serving_addresses, "'switchyard serving'", 60)
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
        # The gateway runs as an ordinary user (envtest's `switchyard-gateway`, with the
        # deploy/rbac grants bound in the namespace), not as the admin: system:masters is
        # exempt from priority and fairness, so only this way can the run show whether its
        # writes trip the API server's limits.
        rbac = REPO / "deploy" / "rbac" / "gateway-rbac.yaml"
        cluster.kubectl(["apply", "-n", ns, "-f", rbac])
        for name, role in (("sy-bench-gateway", "--clusterrole=switchyard-gateway"),
                           ("sy-bench-lease", "--role=switchyard-gateway-lease")):
            cluster.kubectl(["create", "rolebinding", name, role, "--user=switchyard-gateway",
                             "-n", ns])
        gateway_kubeconfig = cluster.env.get("KUBECONFIG_GATEWAY", cluster.kubeconfig)
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
            switchyard, "serve", "--kube", "--kubeconfig", gateway_kubeconfig,
            "--namespace", ns, "--lease-namespace", ns, "--identity", "bench-scale",
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "json",
            *serve_flags,
        ]), work / "switchyard-kube-scale.log", dict(env, RUST_LOG="info"))
        procs.append(gw)
        addr, admin = gw.wait_for(serving_addresses, "'switchyard serving'", 120)
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
            with LOCAL.open(req, timeout=60) as resp:
                items = json.loads(resp.read())["items"]
            return sum(1 for i in items if any(
                c.get("type") == "Accepted" and c.get("status") == "True"
                for c in (i.get("status") or {}).get("conditions") or []))

        def writes_done() -> float:
            try:
                with LOCAL.open(f"http://{admin}/metrics", timeout=5) as resp:
                    text = resp.read().decode()
            except OSError:
                return 0.0
            return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                       if ln.startswith('switchyard_status_writes_total{result="success"'))

        def flowcontrol() -> dict:
            # Requests the API server's priority and fairness rejected, and how long the
            # gateway's requests queued, as its /metrics counts them (all users).
            req = urllib.request.Request(f"http://{proxy}/metrics")
            try:
                with LOCAL.open(req, timeout=30) as resp:
                    text = resp.read().decode()
            except OSError:
                return {}
            sums: dict[str, float] = {}
            for ln in text.splitlines():
                for name in ("apiserver_flowcontrol_rejected_requests_total",
                             "apiserver_flowcontrol_request_wait_duration_seconds_sum",
                             "apiserver_flowcontrol_request_wait_duration_seconds_count"):
                    if ln.startswith(name + "{") or ln.startswith(name + " "):
                        sums[name] = sums.get(name, 0.0) + float(ln.rsplit(" ", 1)[1])
            return sums

        # Polled: the gateway's own count of status writes the API server acknowledged (cheap);
        # once that reaches every object, a LIST of all of them confirms each is Accepted, and
        # the time after that LIST is the figure. (Until 2026-12 the bench LISTed all 11 000
        # objects every 0.5 s instead: under load each LIST took ~40 s of API-server time and
        # slowed the status writes it was measuring by about a third.)
        total = n_routes + n_backends + 1
        seen, series, writes = 0, [], 0.0
        flow0 = flowcontrol()
        deadline = time.perf_counter() + s.kube_scale_timeout_s
        next_list = 0.0
        while time.perf_counter() < deadline:
            writes = writes_done()
            now = time.perf_counter()
            series.append((round(now - started, 1), int(writes)))
            if writes >= total and "start_to_writes_done_s" not in out:
                # The gateway's count reached every object; the LIST that confirms it below
                # (from etcd: ~0.5 ms of API-server CPU per object) is not part of this one.
                out["start_to_writes_done_s"] = round(now - started, 1)
            if writes >= total and now >= next_list:
                seen = accepted("airoutes") + accepted("modelbackends")
                if seen >= total:
                    out["start_to_all_status_s"] = round(time.perf_counter() - started, 1)
                    break
                next_list = time.perf_counter() + 5
            time.sleep(0.5)
        else:
            seen = accepted("airoutes") + accepted("modelbackends")
        flow1 = flowcontrol()
        out["statuses_written"] = seen
        out["statuses_total"] = total
        out["status_writes_series"] = series[::max(1, len(series) // 20)][-20:]
        out["apiserver_flowcontrol"] = {k: round(v - flow0.get(k, 0.0), 3)
                                        for k, v in flow1.items()}
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
        out["events"] = event_counts(proxy, ns)
    except (BenchError, subprocess.TimeoutExpired) as e:
        out["error"] = " / ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())[:300]
    finally:
        for p in reversed(procs):
            p.stop()
        try:
            cluster.kubectl(["delete", "-n", ns, "airoutes,modelbackends,secrets,events", "--all",
                             "--wait=false"])
            cluster.kubectl(["delete", "namespace", ns, "--wait=false"])
        except (BenchError, subprocess.TimeoutExpired):
            pass
        cluster.stop_if_started()
    return out
