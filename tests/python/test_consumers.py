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

from conftest import UPSTREAM_KEY, Mock, gateway_config, http, start_gateway
from harness import free_port

KEY_A1, KEY_A2 = "sk-team-a-first-7c1d", "sk-team-a-second-93ab"
KEY_B, KEY_C, KEY_D = "sk-team-b-0f2e", "sk-team-c-55d0", "sk-team-d-unlimited-11aa"
ALL_KEYS = [KEY_A1, KEY_A2, KEY_B, KEY_C, KEY_D, UPSTREAM_KEY]


class Redis:
    def __init__(self, work: Path, port: int | None = None):
        exe = shutil.which("redis-server")
        if not exe:
            pytest.fail("redis-server is not installed: apt-get install redis-server", pytrace=False)
        self.port = port or free_port()
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
  budget: {{usd: "0.000120", period: day}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {{name: team-d}}
spec:
  keySecretRef: {{name: consumer-keys, key: d}}
"""


def chat(gw, key, model="gpt-4o-mini", **extra) -> tuple[int, dict, dict]:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(
        f"{gw.base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers=headers,
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


def test_auth_is_required_by_default_and_open_only_when_asked(mock, tmp_path_factory):
    """Without AIConsumers the binary refuses callers unless started with
    `--require-auth=false`, which it warns about."""
    work = tmp_path_factory.mktemp("require-auth")
    cfg = gateway_config(mock.addr)
    closed = start_gateway(work, cfg, name="default-closed", require_auth=None)
    opened = start_gateway(work, cfg, name="explicitly-open", require_auth=False)
    try:
        status, _, body = chat(closed, None)
        assert status == 401 and body["error"]["code"] == "missing_api_key", body
        status, _, body = chat(closed, "sk-whatever")
        assert status == 401 and body["error"]["code"] == "invalid_api_key", body
        assert http("GET", f"{closed.base_url}/models")[0] == 401
        assert "--require-auth=false" not in closed.proc.output()

        assert chat(opened, None)[0] == 200
        assert chat(opened, "sk-whatever")[0] == 200, "an open gateway ignores SDK keys"
        warning = next(
            json.loads(l) for l in opened.proc.output().splitlines()
            if "--require-auth=false" in l
        )
        assert warning["level"] == "WARN", warning
    finally:
        closed.proc.stop()
        opened.proc.stop()


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
    # A request reserves its most: 94 body bytes at $1/M and max_tokens 10 at $2/M, 114
    # micro-USD of the 120. It costs ~22 (10 input + 6 output tokens): the next reservation
    # no longer fits, on either replica, until the day ends.
    status, _, body = chat(g1, KEY_C, max_tokens=10)
    assert status == 200, body
    deadline = time.monotonic() + 5
    while True:
        status, headers, body = chat(g2, KEY_C, max_tokens=10)
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
        # team-a's limit counts requests (5 a minute). team-b's counts tokens, reserving an
        # estimate (prompt + 256) that each answer corrects in Redis only after it is sent:
        # on a busy machine the second gateway's check could still see the first one's
        # reservation and refuse (260 + 260 > 400), which is not what this test is about.
        assert chat(open_gw, KEY_A1)[0] == 200
        assert chat(closed_gw, KEY_A1)[0] == 200
        redis.stop()
        status, _, body = chat(open_gw, KEY_A1)
        assert status == 200, f"fail-open must admit: {body}"
        status, headers, body = chat(closed_gw, KEY_A1)
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


def test_redis_down_at_start_up_serves_per_failure_mode_then_limits_apply(mock, tmp_path_factory):
    """Redis unreachable when the gateway starts: it starts anyway, answers per the failure
    mode without waiting on Redis for each request (the breaker skips it), connects in the
    background, and the shared limits hold once a redis-server comes up on that port."""
    work = tmp_path_factory.mktemp("redis-late")
    port = free_port()  # nothing listens here yet
    url = f"redis://127.0.0.1:{port}/0"
    cfg = config(mock)
    open_gw = start_gateway(work, cfg, ["--redis-url", url, "--redis-failure-mode", "open"], name="late-open")
    closed_gw = start_gateway(work, cfg, ["--redis-url", url, "--redis-failure-mode", "closed"], name="late-closed")
    redis = None
    try:
        for gw in (open_gw, closed_gw):
            assert "limit counters unreachable at start-up" in gw.proc.output()
        # Each Redis call may take 0.5 s before it counts as failed: ten limited requests
        # waiting on it would take 5 s or more. With the breaker open they answer at once.
        started = time.monotonic()
        for _ in range(10):
            status, _, body = chat(open_gw, KEY_A1)
            assert status == 200, f"fail-open must admit: {body}"
        open_elapsed = time.monotonic() - started
        started = time.monotonic()
        for _ in range(10):
            status, headers, body = chat(closed_gw, KEY_B)
            assert status == 503 and body["error"]["code"] == "limits_unavailable", body
            assert headers.get("retry-after") == "1"
        closed_elapsed = time.monotonic() - started
        assert open_elapsed < 3 and closed_elapsed < 3, (open_elapsed, closed_elapsed)
        # Consumers without limits never touch Redis.
        assert chat(closed_gw, KEY_D)[0] == 200

        redis = Redis(work, port=port)
        for gw in (open_gw, closed_gw):
            gw.proc.wait_for(
                lambda l: l if "limit counters reachable: connected to Redis" in l else None,
                "the background connection to Redis", 15,
            )
        status, _, body = chat(closed_gw, KEY_B)
        assert status == 200, f"fail-closed must admit once Redis is back: {body}"
        # team-a's 5 requests per minute now hold across both replicas, through Redis (the
        # 10 admitted while it was away were not counted anywhere).
        statuses = [chat((open_gw, closed_gw)[i % 2], KEY_A1)[0] for i in range(8)]
        # (6 at most: a minute boundary in the middle can round one request off the
        # sliding estimate.)
        assert 5 <= statuses.count(200) <= 6 and statuses.count(429) >= 2, statuses
    finally:
        open_gw.proc.stop()
        closed_gw.proc.stop()
        if redis:
            redis.stop()


def test_a_hung_redis_is_skipped_not_waited_on(mock, tmp_path_factory):
    """Redis stops answering (SIGSTOP: connections stay open, replies never come). The first
    call waits out its timeout and opens the breaker; later requests get the failure mode's
    answer at once instead of each waiting 0.5 s. Once Redis answers again, a background probe
    closes the breaker and the limits apply again."""
    import signal

    work = tmp_path_factory.mktemp("redis-hung")
    redis = Redis(work)
    cfg = config(mock)
    open_gw = start_gateway(work, cfg, ["--redis-url", redis.url, "--redis-failure-mode", "open"], name="hung-open")
    closed_gw = start_gateway(work, cfg, ["--redis-url", redis.url, "--redis-failure-mode", "closed"], name="hung-closed")
    try:
        assert chat(open_gw, KEY_B)[0] == 200
        assert chat(closed_gw, KEY_B)[0] == 200
        redis.proc.send_signal(signal.SIGSTOP)
        # Ten limited requests each waiting out the 0.5 s Redis timeout would take 5 s.
        started = time.monotonic()
        for _ in range(10):
            status, _, body = chat(open_gw, KEY_B)
            assert status == 200, f"fail-open must admit: {body}"
        open_elapsed = time.monotonic() - started
        started = time.monotonic()
        for _ in range(10):
            status, _, body = chat(closed_gw, KEY_B)
            assert status == 503 and body["error"]["code"] == "limits_unavailable", body
        closed_elapsed = time.monotonic() - started
        assert open_elapsed < 3 and closed_elapsed < 3, (open_elapsed, closed_elapsed)
        for gw in (open_gw, closed_gw):
            assert "limit counters unreachable: skipping Redis" in gw.proc.output()

        redis.proc.send_signal(signal.SIGCONT)
        # (team-a, whose window the commands queued in the stopped Redis did not fill.)
        deadline = time.monotonic() + 10
        while chat(closed_gw, KEY_A1)[0] != 200:
            assert time.monotonic() < deadline, closed_gw.proc.output()
            time.sleep(0.1)
        assert "limit counters reachable again" in closed_gw.proc.output()
    finally:
        if redis.proc.poll() is None:
            redis.proc.send_signal(signal.SIGCONT)
        open_gw.proc.stop()
        closed_gw.proc.stop()
        redis.stop()
