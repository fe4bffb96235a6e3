"""Budgets that cannot overshoot (reserve, then settle), proven against two gateway replicas
sharing a real redis-server: 100 concurrent requests against a budget with room for exactly N
admit exactly N; streams cancelled mid-way give their reservation back; a crashed replica's
reservations expire; several AIConsumers share one AIBudget; and the same holds on a single
replica without Redis.

The reservation is the documented estimate (crates/router/src/budget.rs): every byte of the
request body one input token at the route's highest input price, plus `max_tokens` at its
highest output price. The tests send identical bodies, so a budget of N reservations is exact.
"""

from __future__ import annotations

import http.client as httpclient
import json
import math
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import UPSTREAM_KEY, Mock, http, start_gateway
from test_consumers import Redis

MAX_TOKENS = 50
# Prices per million tokens: the primary backend and a pricier fallback. A request may fall
# back, so it is reserved at the highest of each: input 1.00 (1 micro-USD a token) and output
# 3.00 (3 micro-USD a token).
IN_PRICE, OUT_PRICE = 1, 3

KEYS = {
    "solo": "sk-budget-solo-1a2b",
    "stream": "sk-budget-stream-3c4d",
    "crash": "sk-budget-crash-5e6f",
    "x": "sk-budget-team-x-7a8b",
    "y": "sk-budget-team-y-9c0d",
    "local": "sk-budget-local-1e2f",
}
N = 7  # room for exactly this many requests
N_STREAMS = 4
N_SHARED, N_Y = 5, 2


def body(stream: bool = False) -> bytes:
    b = {
        "model": "budgeted",
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": "how much is left?"}],
    }
    if stream:
        b["stream"] = True
        b["model"] = "budgeted-stream"
    return json.dumps(b).encode()


def reservation(stream: bool = False) -> int:
    """Micro-USD one request reserves: body bytes at the input price, the output cap at the
    output price."""
    return len(body(stream)) * IN_PRICE + MAX_TOKENS * OUT_PRICE


def usd(micro: int) -> str:
    return f"{micro / 1e6:.6f}"


def config(mock: Mock) -> str:
    r, rs = reservation(), reservation(stream=True)
    consumers = "".join(
        f"""---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {{name: {name}}}
spec:
  keySecretRef: {{name: budget-keys, key: {name}}}
{spec}"""
        for name, spec in [
            ("solo", f"  budget: {{usd: \"{usd(N * r)}\", period: day}}\n"),
            ("local", f"  budget: {{usd: \"{usd(N * r)}\", period: day}}\n"),
            ("stream", f"  budget: {{usd: \"{usd(N_STREAMS * rs)}\", period: day}}\n"),
            ("crash", f"  budget: {{usd: \"{usd(N_STREAMS * rs)}\", period: day}}\n"),
            ("x", "  budgetRef: {name: team}\n  budget: {usd: \"100\", period: month}\n"),
            ("y", f"  budgetRef: {{name: team}}\n  budget: {{usd: \"{usd(N_Y * r)}\", period: day}}\n"),
        ]
    )
    keys = ", ".join(f'{k}: "{v}"' for k, v in KEYS.items())
    return f"""\
apiVersion: v1
kind: Secret
metadata: {{name: upstream}}
stringData: {{apiKey: "{UPSTREAM_KEY}"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: budget-keys}}
stringData: {{{keys}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: slow}}
spec:
  provider: openai-compatible
  endpoint: http://{mock.addr}/v1
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models:
  - {{name: mock-model, pricing: {{inputPerMillion: "1.00", outputPerMillion: "2.00"}}}}
  headers:
    set: {{x-mock-latency-ms: "2000"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: pricey}}
spec:
  provider: openai-compatible
  endpoint: http://{mock.addr}/v1
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models:
  - {{name: mock-model, pricing: {{inputPerMillion: "0.50", outputPerMillion: "3.00"}}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: trickle}}
spec:
  provider: openai-compatible
  endpoint: http://{mock.addr}/v1
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models:
  - {{name: mock-model, pricing: {{inputPerMillion: "1.00", outputPerMillion: "3.00"}}}}
  headers:
    set: {{x-mock-chunks: "200", x-mock-chunk-delay-ms: "100"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: budgeted}}
spec:
  match: {{models: [budgeted]}}
  backends: [{{backendRef: {{name: slow}}, model: mock-model}}]
  fallbacks: [{{backendRef: {{name: pricey}}, model: mock-model}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: budgeted-stream}}
spec:
  match: {{models: [budgeted-stream]}}
  backends: [{{backendRef: {{name: trickle}}, model: mock-model}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIBudget
metadata: {{name: team}}
spec: {{usd: "{usd(N_SHARED * r)}", period: month}}
{consumers}"""


def post(gw, key: str, data: bytes, timeout: float = 15) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"{gw.base_url}/chat/completions",
        data=data,
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            resp.read()
            return resp.status, {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def burst(gws, keys: list[str], n: int, data: bytes) -> list[tuple[str, int, dict]]:
    """`n` requests at once, spread over the replicas and keys; (key, status, error body)."""
    results: list = [None] * n
    start = threading.Barrier(n)

    def one(i: int) -> None:
        key = keys[i % len(keys)]
        start.wait(timeout=10)
        status, err = post(gws[i % len(gws)], key, data)
        results[i] = (key, status, err)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(r is not None for r in results), "a request did not finish"
    return results


def spend_usd(gw, consumer: str) -> float:
    _, text = http("GET", f"{gw.admin_url}/debug/spend")
    view = json.loads(text)
    c = next(c for c in view["consumers"] if c["consumer"] == consumer)
    return sum(d.get("usd", 0) for d in c["days"])


class Stream:
    """A streaming request held open on a raw connection, to be dropped mid-way."""

    def __init__(self, gw, key: str):
        host, port = gw.listen.rsplit(":", 1)
        self.conn = httpclient.HTTPConnection(host, int(port), timeout=10)
        self.conn.request(
            "POST", "/v1/chat/completions", body=body(stream=True),
            headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
        )
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        if self.status == 200:
            # The first event: the stream is under way.
            assert self.resp.fp.readline()

    def cancel(self) -> None:
        self.conn.sock.close() if self.conn.sock else None
        self.conn.close()


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    r = Redis(tmp_path_factory.mktemp("budget-redis"))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def replicas(mock: Mock, redis: Redis, tmp_path_factory):
    work = tmp_path_factory.mktemp("budget-replicas")
    gws = [
        start_gateway(work, config(mock), ["--redis-url", redis.url, "--budget-metrics-interval", "200ms"],
                      name=f"budget-{i}")
        for i in (1, 2)
    ]
    yield gws
    for g in gws:
        g.proc.stop()


def redis_held(redis: Redis) -> dict[str, int]:
    """Every `sy:held:*` counter in the real Redis (the sum of outstanding reservations)."""
    cli = shutil.which("redis-cli")
    if not cli:
        pytest.skip("redis-cli is not installed")
    keys = subprocess.run([cli, "-p", str(redis.port), "--scan", "--pattern", "sy:held:*"],
                          capture_output=True, text=True, check=True).stdout.split()
    out = {}
    for k in keys:
        v = subprocess.run([cli, "-p", str(redis.port), "GET", k], capture_output=True, text=True,
                           check=True).stdout.strip()
        out[k] = int(v or 0)
    return out


def test_exactly_n_of_100_concurrent_requests_across_two_replicas(replicas, redis):
    r = reservation()
    cap = N * r
    results = burst(replicas, [KEYS["solo"]], 100, body())
    admitted = [x for x in results if x[1] == 200]
    refused = [x for x in results if x[1] == 429]
    assert len(admitted) == N, f"{len(admitted)} admitted, budget has room for {N}"
    assert len(refused) == 100 - N
    err = refused[0][2]["error"]
    assert err["code"] == "insufficient_quota" and err["type"] == "insufficient_quota"
    assert f"may cost up to {r / 1e6}" in err["message"], err["message"]
    # Settled to the actual cost (less than reserved), never past the cap; every
    # reservation given back.
    deadline = time.monotonic() + 5
    while any(redis_held(redis).values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(redis_held(redis).values()), redis_held(redis)
    spent = spend_usd(replicas[0], "default/solo")
    assert 0 < spent <= cap / 1e6, (spent, cap)
    print(f"\nbudget {cap} micro-USD, {N} admitted of 100, spend {spent * 1e6:.0f} micro-USD, "
          f"overshoot {max(0, spent * 1e6 - cap):.0f}")


def test_cancelled_streams_give_their_reservations_back(replicas, redis):
    g1, g2 = replicas
    key = KEYS["stream"]
    for round_ in range(2):
        streams = [Stream(replicas[i % 2], key) for i in range(N_STREAMS)]
        assert [s.status for s in streams] == [200] * N_STREAMS, round_
        # The budget is all reserved by the streams in flight: nothing more fits.
        status, err = post(g2, key, body(stream=True))
        assert status == 429 and err["error"]["code"] == "insufficient_quota", err
        for s in streams:
            s.cancel()
        # Dropped mid-way, with no usage yet: everything comes back, promptly.
        deadline = time.monotonic() + 5
        while any(redis_held(redis).values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(redis_held(redis).values()), redis_held(redis)
    # The whole budget is there again: exactly N_STREAMS fit, as at the start.
    streams = [Stream(replicas[i % 2], key) for i in range(N_STREAMS + 2)]
    assert [s.status for s in streams] == [200] * N_STREAMS + [429, 429]
    for s in streams:
        s.cancel()


def test_a_crashed_replicas_reservations_expire(mock, redis, replicas, tmp_path_factory):
    work = tmp_path_factory.mktemp("budget-crash")
    doomed = start_gateway(work, config(mock), ["--redis-url", redis.url, "--budget-reservation-ttl", "3s"],
                           name="budget-doomed")
    key = KEYS["crash"]
    try:
        streams = [Stream(doomed, key) for _ in range(N_STREAMS)]
        assert [s.status for s in streams] == [200] * N_STREAMS
        doomed.proc.popen.kill()  # SIGKILL: nothing is settled
        doomed.proc.popen.wait(timeout=5)
        for s in streams:
            s.cancel()
        status, _ = post(replicas[0], key, body(stream=True))
        assert status == 429, "the crashed replica's reservations still hold"
        # Admitted again once the reservations' 3 s TTL has passed, without the crashed
        # replica ever settling them.
        t0 = time.monotonic()
        while True:
            s = Stream(replicas[0], key)
            s.cancel()
            if s.status == 200:
                break
            assert s.status == 429
            assert time.monotonic() - t0 < 10, "the crashed replica's reservations never expired"
            time.sleep(0.1)
        print(f"\nreservations of a SIGKILLed replica expired after {time.monotonic() - t0:.1f}s (TTL 3s)")
    finally:
        doomed.proc.stop()


def test_consumers_share_one_budget(replicas):
    r = reservation()
    results = burst(replicas, [KEYS["x"], KEYS["y"]], 30, body())
    admitted = [x for x in results if x[1] == 200]
    by_y = [x for x in admitted if x[0] == KEYS["y"]]
    assert len(admitted) == N_SHARED, f"{len(admitted)} admitted, the shared budget has room for {N_SHARED}"
    assert len(by_y) <= N_Y, "y's own budget holds too"
    messages = {x[2]["error"]["message"] for x in results if x[1] == 429}
    assert any("the shared budget default/team" in m for m in messages), messages
    time.sleep(1)
    spent = spend_usd(replicas[0], "default/x") + spend_usd(replicas[0], "default/y")
    assert 0 < spent <= N_SHARED * r / 1e6
    metrics = replicas[1].metrics()
    line = next(l for l in metrics.splitlines()
                if l.startswith('switchyard_budget_remaining_usd{budget="default/team",kind="shared"}'))
    remaining = float(line.split()[-1])
    assert math.isclose(remaining, N_SHARED * r / 1e6 - spent, abs_tol=2e-6), (remaining, spent)
    assert 'switchyard_budget_remaining_usd{budget="default/y",kind="consumer"}' in metrics


def test_one_replica_without_redis_admits_exactly_n(mock, tmp_path_factory):
    gw = start_gateway(tmp_path_factory.mktemp("budget-local"), config(mock), name="budget-local")
    try:
        results = burst([gw], [KEYS["local"]], 100, body())
        assert sum(1 for x in results if x[1] == 200) == N
        assert spend_usd(gw, "default/local") <= N * reservation() / 1e6
    finally:
        gw.proc.stop()


CAP = 77
CAP_KEYS = {"capped": "sk-budget-capped-3a4b", "free": "sk-budget-free-5c6d"}


def cap_config(mock: Mock) -> str:
    def backend(name: str, provider: str, path: str) -> str:
        return f"""---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: {name}}}
spec:
  provider: {provider}
  endpoint: http://{mock.addr}{path}
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models: [{{name: mock-model, pricing: {{inputPerMillion: "1", outputPerMillion: "2"}}}}]
"""

    def route(name: str, backend: str) -> str:
        return f"""---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: {name}}}
spec:
  match: {{models: [{name}]}}
  defaultMaxOutputTokens: {CAP}
  backends: [{{backendRef: {{name: {backend}}}, model: mock-model}}]
"""

    keys = ", ".join(f'{k}: "{v}"' for k, v in CAP_KEYS.items())
    return f"""\
apiVersion: v1
kind: Secret
metadata: {{name: upstream}}
stringData: {{apiKey: "{UPSTREAM_KEY}"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: cap-keys}}
stringData: {{{keys}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {{name: capped}}
spec:
  keySecretRef: {{name: cap-keys, key: capped}}
  budget: {{usd: "100", period: day}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {{name: free}}
spec:
  keySecretRef: {{name: cap-keys, key: free}}
  limits: {{requestsPerMinute: 1000}}
{backend("oai", "openai", "/v1")}{backend("compat", "openai-compatible", "/v1")}{backend("claude", "anthropic", "")}\
{route("cap-openai", "oai")}{route("cap-compat", "compat")}{route("cap-anthropic", "claude")}"""


def test_the_reserved_default_cap_is_what_the_upstream_is_held_to(mock, upstream, tmp_path_factory):
    """A budgeted request that sets no output cap is reserved for the route's
    `defaultMaxOutputTokens`; the upstream is sent that cap, in its own field, so the answer
    cannot cost more than was reserved. Requests with their own cap, and consumers without a
    budget, reach the upstream as they were."""
    gw = start_gateway(tmp_path_factory.mktemp("budget-cap"), cap_config(mock), name="budget-cap")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def send(path: str, key: str, payload: dict) -> dict:
        upstream.clear()
        req = urllib.request.Request(f"{gw.base_url}{path}", data=json.dumps(payload).encode(),
                                     headers={"content-type": "application/json",
                                              "authorization": f"Bearer {key}"}, method="POST")
        with opener.open(req, timeout=15) as resp:
            assert resp.status == 200
        [rec] = upstream.requests()
        return rec["body"]

    chat = {"messages": [{"role": "user", "content": "hi"}]}
    try:
        sent = send("/chat/completions", CAP_KEYS["capped"], {"model": "cap-openai", **chat})
        assert sent["max_completion_tokens"] == CAP and "max_tokens" not in sent
        sent = send("/chat/completions", CAP_KEYS["capped"], {"model": "cap-compat", **chat})
        assert sent["max_tokens"] == CAP and "max_completion_tokens" not in sent
        sent = send("/chat/completions", CAP_KEYS["capped"], {"model": "cap-anthropic", **chat})
        assert sent["max_tokens"] == CAP
        sent = send("/responses", CAP_KEYS["capped"], {"model": "cap-openai", "input": "hi"})
        assert sent["max_output_tokens"] == CAP
        # The caller's own cap is reserved and sent as it was.
        sent = send("/chat/completions", CAP_KEYS["capped"],
                    {"model": "cap-openai", "max_tokens": 5, **chat})
        assert sent["max_tokens"] == 5 and "max_completion_tokens" not in sent
        # No budget, no reservation: nothing added.
        sent = send("/chat/completions", CAP_KEYS["free"], {"model": "cap-openai", **chat})
        assert "max_tokens" not in sent and "max_completion_tokens" not in sent
    finally:
        gw.proc.stop()
