"""Consumers: virtual keys (rotation, wrong key), allow-lists, requests/tokens per minute and
budgets enforced by two gateway replicas sharing a real redis-server, the spend ledger, and
Redis going away (fail-open and fail-closed)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import UPSTREAM_KEY, Mock, http, start_gateway

KEY_A1, KEY_A2 = "sk-team-a-first-7c1d", "sk-team-a-second-93ab"
KEY_B, KEY_C, KEY_D = "sk-team-b-0f2e", "sk-team-c-55d0", "sk-team-d-unlimited-11aa"
ALL_KEYS = [KEY_A1, KEY_A2, KEY_B, KEY_C, KEY_D, UPSTREAM_KEY]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    def __init__(self, work: Path):
        exe = shutil.which("redis-server")
        if not exe:
            pytest.fail("redis-server is not installed: apt-get install redis-server", pytrace=False)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(work)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail("redis-server did not start", pytrace=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)


def config(mock: Mock) -> str:
    return f"""\
apiVersion: v1
kind: Secret
metadata: {{name: upstream}}
stringData: {{apiKey: "{UPSTREAM_KEY}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: mock}}
spec:
  provider: openai-compatible
  endpoint: http://{mock.addr}/v1
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models:
  - {{name: mock-model, pricing: {{inputPerMillion: "1.00", outputPerMillion: "2.00"}}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: chat}}
spec:
  match: {{models: [gpt-4o-mini, gpt-4o]}}
  backends: [{{backendRef: {{name: mock}}, model: mock-model}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: consumer-keys}}
stringData: {{a1: "{KEY_A1}", a2: "{KEY_A2}", b: "{KEY_B}", c: "{KEY_C}", d: "{KEY_D}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {{name: team-a}}
spec:
  keySecretRef: {{name: consumer-keys, key: a1}}
  additionalKeySecretRefs: [{{name: consumer-keys, key: a2}}]
  allow: [gpt-4o-mini]
  limits: {{requestsPerMinute: 5}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {{name: team-b}}
spec:
  keySecretRef: {{name: consumer-keys, key: b}}
  limits: {{tokensPerMinute: 400}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {{name: team-c}}
spec:
  keySecretRef: {{name: consumer-keys, key: c}}
  budget: {{usd: "0.000010", period: day}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {{name: team-d}}
spec:
  keySecretRef: {{name: consumer-keys, key: d}}
"""


def chat(gw, key, model="gpt-4o-mini", **extra) -> tuple[int, dict, dict]:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}
    req = urllib.request.Request(
        f"{gw.base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    r = Redis(tmp_path_factory.mktemp("redis"))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def replicas(mock: Mock, redis: Redis, tmp_path_factory):
    work = tmp_path_factory.mktemp("replicas")
    gws = [
        start_gateway(work, config(mock), ["--redis-url", redis.url], name=f"replica-{i}")
        for i in (1, 2)
    ]
    yield gws
    for g in gws:
        g.proc.stop()


def test_keys_rotation_wrong_key_and_allow_list(replicas):
    g1, _ = replicas
    assert chat(g1, KEY_A1)[0] == 200
    assert chat(g1, KEY_A2)[0] == 200, "the second (rotated-in) key must work too"
    status, _, body = chat(g1, "sk-not-a-real-key")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert "sk-not-a-real-key" not in json.dumps(body)
    status, _, body = chat(g1, KEY_A1, model="gpt-4o")
    assert status == 403 and body["error"]["code"] == "model_not_allowed"
    assert "gpt-4o" in body["error"]["message"]


def test_requests_per_minute_hold_across_replicas(replicas):
    g1, g2 = replicas
    # team-a already spent 2 of its 5 requests in the previous test (same minute window,
    # or the sliding remainder of it): count what is left through both replicas together.
    statuses = []
    for i in range(8):
        status, headers, body = chat((g1, g2)[i % 2], KEY_A1)
        statuses.append(status)
        if status == 429:
            assert body["error"]["code"] == "rate_limit_exceeded"
            assert headers["x-ratelimit-limit-requests"] == "5"
            assert headers["x-ratelimit-remaining-requests"] == "0"
            assert int(headers["retry-after"]) >= 1
    admitted = statuses.count(200)
    assert admitted <= 3, f"replicas together admitted past the limit: {statuses}"
    assert statuses.count(429) >= 5, statuses


def test_tokens_per_minute_hold_across_replicas(replicas, mock):
    g1, g2 = replicas
    # Two concurrent slow requests, one per replica, each reserving ~300 tokens
    # (max_tokens 280 + prompt): the second does not fit the shared 400-token window.
    results = {}

    def go(name, gw):
        results[name] = chat(gw, KEY_B, max_tokens=280, **{})

    with_latency = threading.Thread(target=go, args=("first", g1))
    with_latency.start()
    time.sleep(0.05)
    go("second", g2)
    with_latency.join(timeout=10)
    statuses = sorted(r[0] for r in results.values())
    assert statuses in ([200, 200], [200, 429]), statuses
    if statuses == [200, 200]:
        # The first finished (and settled its real, small usage) before the second began;
        # a request that cannot fit even after settling is still refused.
        status, headers, body = chat(g2, KEY_B, max_tokens=100_000)
        assert status == 429, body
        assert headers["x-ratelimit-limit-tokens"] == "400"
    else:
        refused = next(r for r in results.values() if r[0] == 429)
        assert refused[2]["error"]["code"] == "rate_limit_exceeded"


def test_budget_exhaustion_and_ledger(replicas):
    g1, g2 = replicas
    status, _, body = chat(g1, KEY_C)
    assert status == 200, body
    # ~10 input + 6 output tokens cost more than the 10 micro-USD budget: the next request,
    # on either replica, is refused until the day ends.
    deadline = time.monotonic() + 5
    while True:
        status, headers, body = chat(g2, KEY_C)
        if status == 429 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 429, body
    assert body["error"]["code"] == "insufficient_quota"
    assert body["error"]["type"] == "insufficient_quota"
    assert int(headers["retry-after"]) >= 1
    _, spend = http("GET", f"{g2.admin_url}/debug/spend")
    view = json.loads(spend)
    assert view["store"] == "redis"
    team_c = next(c for c in view["consumers"] if c["consumer"] == "default/team-c")
    day = team_c["days"][-1]
    assert day["requests"] == 1 and day["usd"] > 0.00001 and day["model"] == "gpt-4o-mini"
    metrics = g2.metrics()
    assert 'switchyard_ratelimited_total{consumer="default/team-c",reason="budget",route="default/chat"}' in metrics


def test_no_key_material_anywhere(replicas):
    for gw in replicas:
        outputs = [gw.proc.output()]
        for path in ("/metrics", "/debug/routes", "/debug/spend"):
            outputs.append(http("GET", f"{gw.admin_url}{path}")[1])
        blob = "\n".join(outputs)
        for key in ALL_KEYS:
            assert key not in blob, f"key material leaked: {key[:8]}…"


def test_redis_going_away_fails_open_or_closed(mock, tmp_path_factory):
    work = tmp_path_factory.mktemp("redis-down")
    redis = Redis(work)
    cfg = config(mock)
    open_gw = start_gateway(work, cfg, ["--redis-url", redis.url, "--redis-failure-mode", "open"], name="fail-open")
    closed_gw = start_gateway(work, cfg, ["--redis-url", redis.url, "--redis-failure-mode", "closed"], name="fail-closed")
    try:
        assert chat(open_gw, KEY_B)[0] == 200
        assert chat(closed_gw, KEY_B)[0] == 200
        redis.stop()
        status, _, body = chat(open_gw, KEY_B)
        assert status == 200, f"fail-open must admit: {body}"
        status, headers, body = chat(closed_gw, KEY_B)
        assert status == 503 and body["error"]["code"] == "limits_unavailable", body
        assert headers.get("retry-after") == "1"
        # Consumers without limits are not affected either way.
        assert chat(closed_gw, KEY_D)[0] == 200
        for gw in (open_gw, closed_gw):
            line = next(
                l for l in gw.metrics().splitlines()
                if l.startswith("switchyard_limits_store_errors_total ")
            )
            assert float(line.split()[1]) >= 1, line
            assert "limit counters unreachable" in gw.proc.output()
    finally:
        open_gw.proc.stop()
        closed_gw.proc.stop()
        redis.stop()
