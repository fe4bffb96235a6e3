"""The Grafana dashboard, proven against a real Prometheus.

A real Prometheus server (Debian package `prometheus`) scrapes the gateway's admin port every
second on loopback while traffic flows through the gateway: plain and streamed chat, two
namespaces, two consumers, a fallback after a retried connect failure, an upstream 429, a 502,
an unknown model, a missing key, an upstream key refused and then rotated, and config reloads
(one rejected). Then every PromQL expression of every panel and every variable query of
`deploy/grafana/switchyard-dashboard.json` is evaluated through Prometheus's HTTP API, with
Grafana's variables replaced as Grafana would with "All" selected. A query fails the test if it
is invalid, returns no series, returns only NaN, shows no increase inside its rate window,
names a legend label its series lack, misses a dashboard filter for a label its metric has, or
does not show what the traffic produced (both consumers, every status, the ejected backend …).
`promtool check metrics` checks the exposition.

Needs `prometheus` and `promtool` (Debian package `prometheus`; `$PROMETHEUS_BIN` and
`$PROMTOOL_BIN` override the paths): without them the test fails, it does not skip.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest

from conftest import REPO, UPSTREAM_KEY, Gateway, Mock, Proc, child_env, http, start_gateway
from harness import free_port

DASHBOARD = REPO / "deploy" / "grafana" / "switchyard-dashboard.json"
APT_HINT = "install the Debian package: apt-get install -y --no-install-recommends prometheus"

JOB = "switchyard"
SCRAPE_INTERVAL = "1s"
STARTUP_TIMEOUT_S = 15.0
SCRAPE_WAIT_S = 10.0
RELOAD_WAIT_S = 5.0

# How the test stands in for Grafana: every filter selects everything, intervals are fixed.
GRAFANA_VARS = {
    "datasource": None,  # never inside an expression
    "job": ".*",
    "namespace": ".*",
    "route": ".*",
    "model": ".*",
    "consumer": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
}

# The upstream key the mock refuses, with the rotation's number appended.
REVOKED_KEY = "sk-upstream-revoked-"

# Virtual keys of the two AIConsumers.
KEY_BATCH = "sk-consumer-batch-5d1e"
KEY_APP = "sk-consumer-app-93b0"

MESSAGES = [{"role": "user", "content": "Say something, please."}]


@dataclass(frozen=True)
class Call:
    """One request of a round of traffic, and the status it must get."""

    what: str
    key: Optional[str]
    model: str
    stream: bool
    status: int


TRAFFIC = [
    Call("plain chat (default/chat)", KEY_BATCH, "gpt-4o-mini", False, 200),
    Call("streamed chat (default/chat)", KEY_APP, "gpt-4o-mini", True, 200),
    Call("streamed chat in another namespace (team-a/assistant)", KEY_APP, "team-model", True, 200),
    Call("plain chat in another namespace (team-a/assistant)", KEY_APP, "team-model", False, 200),
    Call("primary down: retried, then served by the fallback", KEY_BATCH, "fallback-model", False,
         200),
    Call("upstream answers 429", KEY_BATCH, "rate-limited-model", False, 429),
    # Three per round: the fifth consecutive failure, in round two, ejects the backend.
    *[Call("only backend down: 502", KEY_APP, "broken-model", False, 502)] * 3,
    Call("the upstream refuses the key: disabled", KEY_BATCH, "revoked-model", False, 502),
    Call("unknown model: 404 (no route)", KEY_BATCH, "no-such-model", False, 404),
    # A prompt above the mock's 1024-token caching minimum, twice a round: read from its
    # prompt cache from the second request on, so the cache counters exist in round one and
    # increase in round two (cache hit ratio, dollars saved).
    *[Call("long prompt, cached upstream (default/cached)", KEY_BATCH, "cached-model", False,
           200)] * 2,
    Call("model without a price: spend unknown (default/unpriced)", KEY_BATCH, "unpriced-model",
         False, 200),
    Call("no key: 401 (no route, no consumer)", None, "gpt-4o-mini", False, 401),
]


# === Tools ===


def tool(name: str, env_var: str) -> str:
    """The path of a Prometheus tool; fails (never skips) when it is not installed."""
    path = os.environ.get(env_var) or shutil.which(name) or f"/usr/bin/{name}"
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(
            f"`{name}` not found (looked at ${env_var}, $PATH and /usr/bin): {APT_HINT}",
            pytrace=False,
        )
    return path


def wait_until(check: Callable[[], Optional[object]], what: str, timeout: float, detail=lambda: ""):
    """Polls `check` until it returns a value other than None/False; bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    last_err = None
    while True:
        try:
            got = check()
            if got is not None and got is not False:
                return got
        except (OSError, ValueError, KeyError) as e:
            last_err = e
        if time.monotonic() >= deadline:
            pytest.fail(
                f"timed out after {timeout}s waiting for {what}"
                f"{f' (last error: {last_err})' if last_err else ''}\n{detail()}",
                pytrace=False,
            )
        time.sleep(0.1)


# === The exposition ===

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"unparseable exposition line: {line!r}"
        labels = dict(_LABEL.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, float(m.group(3))))
    return samples


def metric_sum(text: str, name: str, **match: str) -> float:
    return sum(
        v
        for n, labels, v in parse_exposition(text)
        if n == name and all(labels.get(k, "") == want for k, want in match.items())
    )


# === Gateway under observation ===


def dashboard_gateway_config(mock_addr: str, dead_addr: str) -> str:
    endpoint = f"http://{mock_addr}/v1"
    dead = f"http://{dead_addr}/v1"
    return f"""\
apiVersion: v1
kind: Secret
metadata: {{name: upstream-key}}
stringData: {{apiKey: "{UPSTREAM_KEY}"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: upstream-key, namespace: team-a}}
stringData: {{apiKey: "{UPSTREAM_KEY}"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: consumer-keys}}
stringData: {{batch: "{KEY_BATCH}"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: consumer-keys, namespace: team-a}}
stringData: {{app: "{KEY_APP}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {{name: batch}}
spec:
  keySecretRef: {{name: consumer-keys, key: batch}}
  budget: {{usd: "1000", period: month}}
  budgetRef: {{name: platform}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIBudget
metadata: {{name: platform}}
spec: {{usd: "5000", period: month}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {{name: app, namespace: team-a}}
spec:
  keySecretRef: {{name: consumer-keys, key: app}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: mock}}
spec:
  provider: openai-compatible
  endpoint: {endpoint}
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models:
  - name: mock-model
    pricing: {{inputPerMillion: "0.15", outputPerMillion: "0.60"}}
  # No price here nor in the built-in catalog: its spend is unknown (PricingUnknown).
  - name: mock-unpriced
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: cached}}
spec:
  match: {{models: ["cached-model"]}}
  backends:
  - backendRef: {{name: mock}}
    model: mock-model
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: unpriced}}
spec:
  match: {{models: ["unpriced-model"]}}
  backends:
  - backendRef: {{name: mock}}
    model: mock-unpriced
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: mock, namespace: team-a}}
spec:
  provider: openai-compatible
  endpoint: {endpoint}
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models:
  - name: mock-model
    pricing: {{inputPerMillion: "2.50", outputPerMillion: "10.00"}}
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
---
# Every request asks the mock to answer 429. Retry-After 0, so the key does not rest and the
# next round gets a 429 again rather than 503 upstream_keys_exhausted.
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: mock-429}}
spec:
  provider: openai-compatible
  endpoint: {endpoint}
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models:
  - name: mock-model
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
  headers:
    set: {{x-mock-status: "429", x-mock-retry-after: "0"}}
---
# The upstream refuses every key as invalid (401): the gateway disables the key. Between
# rounds the test rotates the Secret, which puts a new key in service (a key restored).
apiVersion: v1
kind: Secret
metadata: {{name: revoked-key}}
stringData: {{apiKey: "{REVOKED_KEY}0"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: revoked}}
spec:
  provider: openai-compatible
  endpoint: {endpoint}
  auth: {{secretRef: {{name: revoked-key, key: apiKey}}}}
  models:
  - name: mock-model
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
  headers:
    set: {{x-mock-status: "401"}}
---
# Nothing listens there: every attempt is a connect error.
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: down}}
spec:
  provider: openai-compatible
  endpoint: {dead}
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models:
  - name: mock-model
  timeouts: {{connect: 1s, firstByte: 10s, idle: 10s}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: down-too}}
spec:
  provider: openai-compatible
  endpoint: {dead}
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models:
  - name: mock-model
  timeouts: {{connect: 1s, firstByte: 10s, idle: 10s}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: chat}}
spec:
  match: {{models: ["gpt-4o-mini"]}}
  backends:
  - backendRef: {{name: mock}}
    model: mock-model
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: assistant, namespace: team-a}}
spec:
  match: {{models: ["team-model"]}}
  backends:
  - backendRef: {{name: mock}}
    model: mock-model
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: fallback}}
spec:
  match: {{models: ["fallback-model"]}}
  backends:
  - backendRef: {{name: down}}
    model: mock-model
  fallbacks:
  - backendRef: {{name: mock}}
    model: mock-model
  retry: {{attempts: 2, on: ["connect"], backoff: 10ms}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: rate-limited}}
spec:
  match: {{models: ["rate-limited-model"]}}
  backends:
  - backendRef: {{name: mock-429}}
    model: mock-model
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: revoked}}
spec:
  match: {{models: ["revoked-model"]}}
  backends:
  - backendRef: {{name: revoked}}
    model: mock-model
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: broken}}
spec:
  match: {{models: ["broken-model"]}}
  backends:
  - backendRef: {{name: down-too}}
    model: mock-model
"""


@dataclass
class DashboardGateway:
    gw: Gateway
    config_dir: Path


@pytest.fixture(scope="module")
def dashboard_gateway(mock: Mock, tmp_path_factory) -> DashboardGateway:
    work = tmp_path_factory.mktemp("dashboard-gateway")
    config = dashboard_gateway_config(mock.addr, f"127.0.0.1:{free_port()}")
    gw = start_gateway(work, config, ["--budget-metrics-interval", "1s"], name="switchyard")
    try:
        yield DashboardGateway(gw, work / "switchyard-config")
    finally:
        gw.proc.stop()


# === Prometheus ===


@dataclass
class Prometheus:
    proc: Proc
    url: str

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = http("GET", url, timeout=5.0)
        try:
            doc = json.loads(body)
        except ValueError:
            raise AssertionError(f"GET {url}: {status} {body[:500]!r}") from None
        return doc

    def query(self, expr: str) -> dict:
        return self.api("query", query=expr, time=f"{time.time():.3f}")

    def scalar(self, expr: str) -> Optional[float]:
        doc = self.query(expr)
        if doc.get("status") != "success" or not doc["data"]["result"]:
            return None
        return float(doc["data"]["result"][0]["value"][1])


@pytest.fixture(scope="module")
def prometheus(dashboard_gateway: DashboardGateway, tmp_path_factory) -> Prometheus:
    exe = tool("prometheus", "PROMETHEUS_BIN")
    work = tmp_path_factory.mktemp("prometheus")
    config = work / "prometheus.yml"
    config.write_text(
        f"""\
global:
  scrape_interval: {SCRAPE_INTERVAL}
  scrape_timeout: {SCRAPE_INTERVAL}
  evaluation_interval: {SCRAPE_INTERVAL}
scrape_configs:
- job_name: {JOB}
  static_configs:
  - targets: ["{dashboard_gateway.gw.admin}"]
"""
    )
    # Prometheus cannot report an ephemeral port, so pick a free one; retry if it was taken.
    for attempt in range(3):
        port = free_port()
        proc = Proc(
            "prometheus",
            [
                exe,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / f'data{attempt}'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=info",
            ],
            work / f"prometheus{attempt}.log",
            child_env(),
        )
        prom = Prometheus(proc, f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        ready = False
        while time.monotonic() < deadline and proc.popen.poll() is None:
            try:
                if http("GET", f"{prom.url}/-/ready", timeout=1.0)[0] == 200:
                    ready = True
                    break
            except OSError:
                pass
            time.sleep(0.1)
        if ready:
            break
        out = proc.output()
        proc.stop()
        if "address already in use" not in out or attempt == 2:
            pytest.fail(f"prometheus did not become ready:\n{out}", pytrace=False)
    try:
        wait_until(
            lambda: prom.scalar(f'up{{job="{JOB}"}}') == 1.0,
            "Prometheus to scrape the gateway's admin port (up == 1)",
            STARTUP_TIMEOUT_S,
            lambda: json.dumps(prom.api("targets"))[:2000] + "\n" + proc.output()[-3000:],
        )
        yield prom
    finally:
        proc.stop()


# === Traffic ===


# Some 1500 mock tokens (characters / 4), the same every round.
LONG_MESSAGES = [
    {"role": "system", "content": "You are a patient assistant. " + "Context line. " * 430},
    {"role": "user", "content": "Summarise the context."},
]


def send(gw: Gateway, call: Call) -> tuple[int, str, str]:
    messages = LONG_MESSAGES if call.model == "cached-model" else MESSAGES
    body = {"model": call.model, "messages": messages}
    if call.stream:
        body["stream"] = True
    req = urllib.request.Request(
        f"{gw.base_url}/chat/completions",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    if call.key:
        req.add_header("authorization", f"Bearer {call.key}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10.0) as resp:
            return resp.status, resp.headers.get("content-type", ""), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read().decode()


def one_round(gw: Gateway) -> None:
    for call in TRAFFIC:
        status, ctype, text = send(gw, call)
        assert status == call.status, (
            f"{call.what}: expected {call.status}, got {status} {text[:500]!r}"
        )
        if call.stream and status == 200:
            assert ctype.startswith("text/event-stream"), f"{call.what}: {ctype}"
            assert "data: [DONE]" in text, f"{call.what}: stream did not finish: {text[-300:]!r}"


def requests_total(gw: Gateway) -> float:
    return metric_sum(gw.metrics(), "switchyard_requests_total")


def settle(gw: Gateway, prom: Prometheus, expected_requests: int) -> None:
    """Waits until the gateway has recorded every request (streams record when they end),
    then until Prometheus holds a scrape taken after that."""
    wait_until(
        lambda: requests_total(gw) >= expected_requests or None,
        f"the gateway to record {expected_requests} requests",
        SCRAPE_WAIT_S,
        lambda: f"switchyard_requests_total = {requests_total(gw)}",
    )
    wait_until(
        lambda: (prom.scalar(f'sum(switchyard_requests_total{{job="{JOB}"}})') or 0)
        >= expected_requests
        or None,
        f"Prometheus to scrape {expected_requests} requests",
        SCRAPE_WAIT_S,
    )


def reload_config(obs: DashboardGateway) -> None:
    """A valid edit, a rejected one, and its removal: reloads of both results."""
    gw = obs.gw

    def reloads(result: str) -> float:
        return metric_sum(gw.metrics(), "switchyard_config_reloads_total", result=result)

    ok0 = reloads("success")
    main = obs.config_dir / "switchyard.yaml"
    main.write_text(main.read_text() + "# touched by the dashboard test\n")
    wait_until(lambda: reloads("success") > ok0 or None, "a successful reload", RELOAD_WAIT_S)

    err0 = reloads("error")
    bad = obs.config_dir / "zz-bad.yaml"
    bad.write_text("apiVersion: switchyard.dev/v1alpha1\nkind: AIRoute\nspec: [unclosed\n")
    wait_until(lambda: reloads("error") > err0 or None, "a rejected reload", RELOAD_WAIT_S)

    ok1 = reloads("success")
    bad.unlink()
    wait_until(lambda: reloads("success") > ok1 or None, "a reload after the fix", RELOAD_WAIT_S)


def rotate_revoked_key(obs: DashboardGateway, n: int) -> None:
    """Rotates the Secret of the key the upstream refused: the new key is in service, which
    the gateway counts as a key restored."""
    gw = obs.gw

    def restored() -> float:
        return metric_sum(gw.metrics(), "switchyard_upstream_keys_restored_total",
                          backend="default/revoked")

    before = restored()
    main = obs.config_dir / "switchyard.yaml"
    main.write_text(main.read_text().replace(f'"{REVOKED_KEY}{n - 1}"', f'"{REVOKED_KEY}{n}"'))
    wait_until(lambda: restored() > before or None, "a disabled key restored by its Secret",
               RELOAD_WAIT_S)


# === The dashboard ===


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows keep their panels inside
    return out


def panel_targets(dash: dict) -> list[tuple[str, dict]]:
    return [
        (p["title"], t)
        for p in all_panels(dash)
        if p.get("type") != "row"
        for t in p.get("targets", [])
    ]


_VAR = re.compile(r"\$\{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?\}|\$([a-zA-Z_][a-zA-Z0-9_]*)")


def substitute(expr: str, **overrides: str) -> str:
    """The expression as Grafana would send it with `overrides` (else "All") selected."""
    values = {**GRAFANA_VARS, **overrides}

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        value = values.get(name)
        if value is None:
            raise AssertionError(f"unknown variable ${name} in {expr!r}")
        return value

    return _VAR.sub(repl, expr)


_SELECTOR = re.compile(r'\b(switchyard_[a-zA-Z0-9_]+)\b(\s*\{((?:[^}"]|"(?:[^"\\]|\\.)*")*)\})?')
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')


def matchers(body: str) -> set[tuple[str, str, str]]:
    out = set()
    pos = 0
    while pos < len(body):
        m = _MATCHER.match(body, pos)
        assert m, f"cannot parse label matchers {body!r} at {pos}"
        out.add((m.group(1), m.group(2), m.group(3)))
        pos = m.end()
        if pos < len(body):
            assert body[pos] == ",", f"cannot parse label matchers {body!r} at {pos}"
            pos += 1
    return out


def missing_filters(expr: str, labels_of: dict[str, set[str]]) -> list[str]:
    """Every selector must carry the dashboard's filters for the labels its metric has."""
    problems = []
    for m in _SELECTOR.finditer(expr):
        metric, body = m.group(1), m.group(3)
        if body is None:
            problems.append(f"{metric} has no label matchers")
            continue
        have = matchers(body)
        labels = labels_of.get(metric)
        if labels is None:
            problems.append(f"{metric} is not in the gateway's exposition")
            continue
        need = {("job", "=~", "$job")}
        if "route" in labels:
            need |= {("route", "=~", "${namespace}(/.*)?"), ("route", "=~", "$route")}
        elif "backend" in labels:
            need.add(("backend", "=~", "${namespace}(/.*)?"))
        if "model" in labels:
            need.add(("model", "=~", "$model"))
        if "consumer" in labels:
            need.add(("consumer", "=~", "$consumer"))
        for n in sorted(need - have):
            problems.append(f'{metric} lacks {n[0]}{n[1]}"{n[2]}"')
    return problems


def label_sets(exposition: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name, labels, _ in parse_exposition(exposition):
        out.setdefault(name, set()).update(labels)
    return out


# === Traffic observed by Prometheus ===


@dataclass
class Observed:
    gw: Gateway
    prom: Prometheus
    exposition: str


@pytest.fixture(scope="module")
def observed(dashboard_gateway: DashboardGateway, prometheus: Prometheus) -> Observed:
    """Config reloads, then two rounds of traffic, all scraped by Prometheus.

    Two rounds, so that every counter both exists and increases inside the rate window (a
    counter's first sample alone gives a rate of 0)."""
    gw = dashboard_gateway.gw
    base = int(requests_total(gw))
    # Reloads first, so that the rejected one's counter is scraped more than once by the end.
    reload_config(dashboard_gateway)
    one_round(gw)
    rotate_revoked_key(dashboard_gateway, 1)
    settle(gw, prometheus, base + len(TRAFFIC))
    one_round(gw)
    rotate_revoked_key(dashboard_gateway, 2)
    settle(gw, prometheus, base + 2 * len(TRAFFIC))
    # The reloads happened before the traffic, so this scrape holds them too; check anyway.
    gen = metric_sum(gw.metrics(), "switchyard_config_generation")
    wait_until(
        lambda: (prometheus.scalar(f'max(switchyard_config_generation{{job="{JOB}"}})') or 0)
        >= gen
        or None,
        f"Prometheus to scrape config generation {gen}",
        SCRAPE_WAIT_S,
    )
    return Observed(gw, prometheus, gw.metrics())


def run_query(prom: Prometheus, promql: str) -> tuple[Optional[str], list[dict]]:
    """(error, series) of an instant query; a scalar result counts as one series."""
    doc = prom.query(promql)
    if doc.get("status") != "success":
        return f"{doc.get('errorType')}: {doc.get('error')}", []
    result = doc["data"]["result"]
    if doc["data"]["resultType"] == "scalar":
        result = [{"metric": {}, "value": result}]
    return None, result


def show(result: list[dict], limit: int = 8) -> str:
    return ", ".join(
        f"{json.dumps(r['metric'], sort_keys=True)}={float(r['value'][1]):.4g}"
        for r in result[:limit]
    ) + (" …" if len(result) > limit else "")


# === Tests ===


def test_dashboard_structure():
    dash = load_dashboard()
    assert dash["schemaVersion"] >= 38
    assert dash.get("uid"), "a stable uid keeps links and provisioning stable"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "namespace", "route", "model", "consumer"):
        assert name in variables, f"no ${name} variable"
        v = variables[name]
        assert v["type"] == "query" and v["includeAll"] and v["allValue"] == ".*", v
        assert v["datasource"]["uid"] == "${datasource}"

    panels = all_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"{p['title']}: {g}"
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p.get("targets"), f"{p['title']} has no query"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            windows = set(re.findall(r"\[([^\]]*)\]", t["expr"]))
            assert windows <= {"$__rate_interval", "$__range"}, (
                f"{p['title']}: range windows should be $__rate_interval or $__range: {t['expr']}"
            )
            substitute(t["expr"])  # only known variables

    # The Helm chart cannot read files outside its folder, so it may carry a copy: keep it equal.
    for copy in (REPO / "charts" / "switchyard").rglob("*.json"):
        if copy.name == DASHBOARD.name:
            assert copy.read_bytes() == DASHBOARD.read_bytes(), (
                f"{copy.relative_to(REPO)} differs from {DASHBOARD.relative_to(REPO)}"
            )

    titles = " | ".join(p["title"].lower() for p in panels)
    for want in (
        "spend per model", "spend per consumer", "requests/s", "error ratio", "upstream errors",
        "p50 / p95 / p99", "time to first token", "time per output token", "tokens/s",
        "retries and fallbacks",
        "backend health", "in-flight", "rate-limited", "config reloads", "config generation",
    ):
        assert want in titles, f"no panel for {want!r}: {titles}"


def test_promtool_check_metrics(observed: Observed):
    promtool = tool("promtool", "PROMTOOL_BIN")
    res = subprocess.run(
        [promtool, "check", "metrics"],
        input=observed.exposition.encode(),
        capture_output=True,
        timeout=20,
    )
    out = (res.stdout + res.stderr).decode(errors="replace").strip()
    print(f"promtool check metrics: exit {res.returncode}: {out or 'no findings'}")
    # promtool exits 1 when the exposition cannot be parsed and 3 when it parses but has lint
    # findings (naming conventions, missing help); findings are reported, not failed on.
    assert res.returncode in (0, 3), f"promtool check metrics failed ({res.returncode}):\n{out}"
    if res.returncode == 3:
        warnings.warn(UserWarning(f"promtool check metrics lint findings:\n{out}"))


def test_dashboard_variables_list_values(observed: Observed):
    dash = load_dashboard()
    labels_of = label_sets(observed.exposition)
    want_values = {
        "job": {JOB},
        "namespace": {"default", "team-a"},
        "route": {"default/chat", "team-a/assistant", "default/fallback", "default/rate-limited",
                  "default/broken"},
        "model": {"gpt-4o-mini", "team-model", "fallback-model", "rate-limited-model",
                  "broken-model"},
        "consumer": {"default/batch", "team-a/app"},
    }
    variables = {v["name"]: v for v in dash["templating"]["list"] if v["type"] == "query"}
    assert set(variables) == set(want_values), "a new variable needs its expected values here"
    problems, report = [], []
    for name, want in want_values.items():
        v = variables[name]
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        assert v.get("definition", q) == q, f"${name}: definition and query differ"
        m = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)\s*", q)
        assert m, f"${name}: not a label_values(selector, label) query: {q}"
        problems += [f"${name}: {p}" for p in missing_filters(m.group(1), labels_of)
                     if "lacks job" in p or "not in" in p]
        doc = observed.prom.api(
            f"label/{m.group(2)}/values", **{"match[]": substitute(m.group(1))}
        )
        if doc.get("status") != "success":
            problems.append(f"${name}: {q}: {doc.get('error')}")
            continue
        values = doc["data"]
        if v.get("regex"):
            # Grafana takes a JavaScript regex literal, /body/flags; the first group is the value.
            lit = re.fullmatch(r"/(.*)/([gimsuy]*)", v["regex"])
            assert lit, f"${name}: regex {v['regex']!r} is not a /…/ literal"
            rx = re.compile(lit.group(1).replace("\\/", "/"))
            values = sorted(
                {(mm.group(1) if mm.groups() else mm.group(0))
                 for val in values if (mm := rx.search(val))}
            )
        report.append(f"${name} = {values}")
        if not want <= set(values):
            problems.append(f"${name}: {q} gave {values}, missing {sorted(want - set(values))}")
    print("\n".join(report))
    assert not problems, "\n".join(problems)


def test_namespace_filter_selects_routes_and_backends(observed: Observed):
    """`route=~"${namespace}(/.*)?"`: one namespace selects its own routes only; All also keeps
    the requests that matched no route."""
    exprs = {(title, t["refId"]): t["expr"] for title, t in panel_targets(load_dashboard())}
    by_route = exprs[("Requests/s by route", "A")]
    by_backend = exprs[("Backend health", "A")]

    def labels(expr: str, label: str, **sel: str) -> set[str]:
        err, result = run_query(observed.prom, substitute(expr, **sel))
        assert err is None, err
        return {r["metric"].get(label, "") for r in result}

    assert labels(by_route, "route", namespace="team-a") == {"team-a/assistant"}
    default = labels(by_route, "route", namespace="default")
    assert default and all(r.startswith("default/") for r in default), default
    assert "(no route)" in labels(by_route, "route"), "All should keep unrouted requests"
    # Grafana sends a multi-value selection as a regex alternation.
    both = labels(by_route, "route", namespace="(default|team-a)")
    assert both == default | {"team-a/assistant"}, both
    assert labels(by_backend, "backend", namespace="team-a") == {"team-a/mock"}


ALL_ROUTES = {"default/chat", "team-a/assistant", "default/fallback", "default/rate-limited",
              "default/broken"}
ALL_BACKENDS = {"default/mock", "team-a/mock", "default/mock-429", "default/down",
                "default/down-too", "default/revoked"}

# What the traffic must make visible, by (panel title, refId): label -> values it must show.
EXPECTED = {
    ("Requests/s by route", "A"): {"route": ALL_ROUTES | {"(no route)"}},
    ("Requests/s by status", "A"): {"status": {"200", "401", "404", "429", "502"}},
    ("Spend per model (USD/hour)", "A"): {"model": {"gpt-4o-mini", "team-model", "fallback-model"}},
    ("Spend per consumer (USD/hour)", "A"): {"consumer": {"default/batch", "team-a/app"}},
    ("Tokens/s by type", "A"): {"type": {"input", "output"}},
    ("Upstream errors/s by kind", "A"): {"kind": {"connect", "status_429"}},
    ("Rate-limited requests/s", "A"): {"route": {"default/rate-limited"}, "reason": {"upstream"}},
    ("Retries and fallbacks/s", "A"): {"route": {"default/fallback"}},
    ("Retries and fallbacks/s", "B"): {"route": {"default/fallback"}},
    ("Time to first token p95 by model", "A"): {"model": {"gpt-4o-mini", "team-model"}},
    ("Time per output token p95 by model", "A"): {"model": {"gpt-4o-mini", "team-model"}},
    ("Backend health", "A"): {"backend": ALL_BACKENDS},
    ("In-flight requests by backend", "A"): {"backend": ALL_BACKENDS},
    ("Config reloads", "A"): {"result": {"success", "error"}},
}


# Values the traffic must produce, by (panel title, refId): a check over the series' values.
EXPECTED_VALUES = {
    ("Backends ejected", "A"): ("default/down-too is ejected", lambda vs: max(vs) >= 1),
    ("Backend health", "A"): ("one backend shows ejected (0)", lambda vs: min(vs) == 0),
}


def test_every_dashboard_query_returns_series(observed: Observed):
    dash = load_dashboard()
    labels_of = label_sets(observed.exposition)
    problems: list[str] = []
    report: list[str] = []
    targets = panel_targets(dash)

    def family(name: str) -> str:
        return re.sub(r"_(bucket|sum|count)$", "", name)

    shown = {family(m.group(1)) for _, t in targets for m in _SELECTOR.finditer(t["expr"])}
    exposed = {family(n) for n in labels_of if n.startswith("switchyard_")}
    for name in sorted(exposed - shown):
        problems.append(f"{name} is exposed but no panel shows it")
    unknown = (set(EXPECTED) | set(EXPECTED_VALUES)) - {(title, t["refId"]) for title, t in targets}
    assert not unknown, f"EXPECTED names panels the dashboard no longer has: {unknown}"
    for title, t in targets:
        where = f"{title} [{t['refId']}]"
        expr = t["expr"]
        problems += [f"{where}: {p}" for p in missing_filters(expr, labels_of)]
        promql = substitute(expr)
        err, result = run_query(observed.prom, promql)
        if err:
            problems.append(f"{where}: invalid: {err}\n    {promql}")
            continue
        if not result:
            problems.append(f"{where}: no series\n    {promql}")
            continue
        values = [float(r["value"][1]) for r in result]
        if not any(math.isfinite(x) for x in values):
            problems.append(f"{where}: only NaN/Inf: {show(result)}\n    {promql}")
        elif ("rate(" in expr or "increase(" in expr) and not any(x > 0 for x in values):
            problems.append(f"{where}: no increase inside the window: {show(result)}\n    {promql}")
        if (title, t["refId"]) in EXPECTED_VALUES:
            what, ok = EXPECTED_VALUES[(title, t["refId"])]
            if not ok(values):
                problems.append(f"{where}: expected {what}: {show(result)}")
        for label, want in EXPECTED.get((title, t["refId"]), {}).items():
            got = {r["metric"].get(label, "") for r in result}
            if not want <= got:
                problems.append(
                    f"{where}: {label} should show {sorted(want - got)}, got {sorted(got)}"
                )
        legend = t.get("legendFormat", "")
        for label in re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", legend):
            lacking = [r["metric"] for r in result if not r["metric"].get(label)]
            if lacking:
                problems.append(
                    f"{where}: the legend shows {{{{{label}}}}} but these series lack it: {lacking}"
                )
        report.append(f"{where}: {len(result)} series: {show(result)}")
    print("\n".join(report))
    assert not problems, (
        "dashboard queries failing against a real Prometheus:\n"
        + "\n".join(problems)
        + "\n\nthe others:\n"
        + "\n".join(report)
    )
