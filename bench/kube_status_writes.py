#!/usr/bin/env python3
"""API-server CPU per status write, one way of writing at a time (issue #21).

Creates N AIRoutes in a scratch namespace of the envtest API server (`tests/k8s/envtest.sh
start`) with `kubectl apply`, as the scale bench does, then writes the status of every one of
them, 16 at a time over HTTP/1.1 keep-alive connections (as the gateway's kube client does),
and reads kube-apiserver's CPU time (utime + stime, /proc/PID/stat) before and after. Each
write changes `lastTransitionTime`, so each one is a real change stored in etcd.

Variants (`--variant`, repeatable):

  merge        JSON merge patch of /status (what the gateway sends)
  jsonpatch    JSON patch: add /status
  ssa          server-side apply (application/apply-patch+yaml, force)
  put          PUT of /status: apiVersion, kind, name, resourceVersion and status only
  get          a GET of the object, for the cost of a request that writes nothing
  X-ignore     X with ?fieldValidation=Ignore
  X-small      X with conditions without `message`
  X+partial    X, asking for the response as PartialObjectMetadata

Loopback only, bounded (N writes per variant), standard library and the bench's own modules.

    tests/k8s/envtest.sh start
    python3 bench/kube_status_writes.py --routes 1000 --variant merge --variant put --rounds 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from switchyard_bench.kube import Cluster  # noqa: E402
from switchyard_bench.procs import cpu_seconds  # noqa: E402

ENVTEST_DIR = Path(os.environ.get("ENVTEST_DIR", "/tmp/switchyard-envtest"))
GV = "/apis/switchyard.dev/v1alpha1"
PARTIAL = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


class Server:
    """The envtest API server, reached as its admin kubeconfig says."""

    def __init__(self) -> None:
        # The running envtest's settings, read as the scale bench reads them (never started
        # here).
        env = Cluster(allow_start=False, log=print).env
        self.env = env
        host, port = env["KUBE_APISERVER_URL"].split("//", 1)[1].rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.token = next(ln.split(":", 1)[1].strip()
                          for ln in Path(env["KUBECONFIG_ADMIN"]).read_text().splitlines()
                          if ln.strip().startswith("token:"))
        self.tls = ssl.create_default_context(cafile=env["KUBE_CA_FILE"])
        self.local = threading.local()
        self.pid = int((ENVTEST_DIR / "kube-apiserver.pid").read_text().split()[0])

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def request(self, method: str, path: str, body: str | None = None,
                ctype: str = "application/json", accept: str = "application/json"):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPSConnection(self.host, self.port,
                                                                 context=self.tls, timeout=60)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": accept}
        if body is not None:
            headers["Content-Type"] = ctype
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return subprocess.run([self.env["KUBECTL"], "--kubeconfig", self.env["KUBECONFIG_ADMIN"],
                               *args], input=stdin, capture_output=True, text=True,
                              check=check, timeout=600).stdout


def setup(srv: Server, ns: str, n: int) -> None:
    for crd in sorted((REPO / "crds").glob("*.yaml")):
        srv.kubectl("apply", "--validate=false", "-f", str(crd))
    srv.kubectl("create", "namespace", ns)
    docs = ["""apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: be-0}
spec:
  provider: openai-compatible
  endpoint: http://127.0.0.1:9/v1
  auth: {secretRef: {name: upstream, key: apiKey}}
  models: [{name: mock-model}]
"""]
    docs += [f"""apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: route-{r}}}
spec:
  match: {{models: [scale-model-{r}]}}
  backends: [{{backendRef: {{name: be-0}}, model: mock-model}}]
""" for r in range(n)]
    srv.kubectl("apply", "-n", ns, "-f", "-", stdin="---\n".join(docs))


def status(round_: int, small: bool) -> dict:
    ts = f"2026-01-01T{round_ // 3600 % 24:02d}:{round_ // 60 % 60:02d}:{round_ % 60:02d}Z"
    conditions = []
    for t, msg in (("Accepted", "Accepted into the routing table"), ("ResolvedRefs", "")):
        c = {"type": t, "status": "True", "reason": t, "lastTransitionTime": ts,
             "observedGeneration": 1}
        if not small:
            c["message"] = msg
        conditions.append(c)
    return {"observedGeneration": 1, "conditions": conditions}


def request_for(variant: str, ns: str, name: str, rv: str, round_: int):
    """(method, path, body, content type) of one write."""
    v = variant.split("+")[0]
    small = v.endswith("-small")
    v = v.removesuffix("-small")
    query = "?fieldManager=switchyard"
    if v.endswith("-ignore"):
        query += "&fieldValidation=Ignore"
        v = v.removesuffix("-ignore")
    path = f"{GV}/namespaces/{ns}/airoutes/{name}"
    st = status(round_, small)
    if v == "get":
        return "GET", path, None, "application/json"
    if v == "merge":
        return "PATCH", f"{path}/status{query}", json.dumps({"status": st}), \
            "application/merge-patch+json"
    if v == "jsonpatch":
        return "PATCH", f"{path}/status{query}", \
            json.dumps([{"op": "add", "path": "/status", "value": st}]), \
            "application/json-patch+json"
    if v == "ssa":
        doc = {"apiVersion": "switchyard.dev/v1alpha1", "kind": "AIRoute",
               "metadata": {"name": name, "namespace": ns}, "status": st}
        return "PATCH", f"{path}/status{query}&force=true", json.dumps(doc), \
            "application/apply-patch+yaml"
    if v == "put":
        doc = {"apiVersion": "switchyard.dev/v1alpha1", "kind": "AIRoute",
               "metadata": {"name": name, "namespace": ns, "resourceVersion": rv}, "status": st}
        return "PUT", f"{path}/status{query}", json.dumps(doc), "application/json"
    raise SystemExit(f"unknown variant {variant!r}")


def run(srv: Server, ns: str, variant: str, in_flight: int, round_: int) -> dict:
    _, data = srv.request("GET", f"{GV}/namespaces/{ns}/airoutes")
    rvs = {i["metadata"]["name"]: i["metadata"]["resourceVersion"]
           for i in json.loads(data)["items"]}
    accept = PARTIAL if variant.endswith("+partial") else "application/json"
    codes: dict[int, int] = {}
    sizes = [0, 0]
    lock = threading.Lock()

    def one(name: str) -> None:
        method, path, body, ctype = request_for(variant, ns, name, rvs[name], round_)
        code, resp = srv.request(method, path, body, ctype, accept)
        with lock:
            codes[code] = codes.get(code, 0) + 1
            sizes[0] += len(body or "")
            sizes[1] += len(resp)
            if code >= 300 and codes[code] == 1:
                print(f"  {variant}: {code} {resp[:300]!r}", file=sys.stderr)

    time.sleep(1.0)  # the LIST's CPU is not the writes'
    cpu0, t0 = srv.cpu_seconds(), time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(one, sorted(rvs)))
    wall = time.perf_counter() - t0
    time.sleep(1.0)  # the watch cache's decoding of the last writes
    cpu = srv.cpu_seconds() - cpu0
    n = len(rvs)
    return {"variant": variant, "writes": n, "codes": codes, "wall_s": round(wall, 2),
            "per_s": round(n / wall, 1), "apiserver_cpu_s": round(cpu, 2),
            "apiserver_ms_per_write": round(1e3 * cpu / n, 2),
            "request_bytes": sizes[0] // n, "response_bytes": sizes[1] // n}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--routes", type=int, default=1000)
    p.add_argument("--variant", action="append", help="see above (default: merge)")
    p.add_argument("--rounds", type=int, default=1,
                   help="each variant this many times, interleaved")
    p.add_argument("--in-flight", type=int, default=16)
    p.add_argument("--namespace", default=f"sy-status-writes-{os.getpid()}")
    p.add_argument("--keep", action="store_true", help="leave the namespace (reuse with --reuse)")
    p.add_argument("--reuse", action="store_true", help="the namespace exists already")
    a = p.parse_args()
    srv = Server()
    ns = a.namespace
    if not a.reuse:
        setup(srv, ns, a.routes)
    round_ = int(time.time())
    try:
        for _ in range(a.rounds):
            for variant in a.variant or ["merge"]:
                round_ += 1
                print(json.dumps(run(srv, ns, variant, a.in_flight, round_)), flush=True)
    finally:
        if not a.keep:
            # envtest runs no namespace controller: empty the namespace before deleting it.
            srv.kubectl("delete", "-n", ns, "airoutes,modelbackends,events", "--all",
                        "--wait=false", check=False)
            srv.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
