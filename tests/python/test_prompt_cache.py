"""Prompt-cache affinity and cache-aware pricing, end to end through the real gateway and the
mock's simulated prompt cache (crates/mock/src/cache.rs: per key and model, 1024 tokens and
up, OpenAI's automatic caching in 128-token steps, Anthropic's at cache_control marks).

(c) 50 conversations × 5 turns over a 3:1 split whose heavier backend is a pool of four keys:
with affinity (the AIRoute default) the cached share of input is at least 90 % of the ideal
(every turn on one warm key), and without it (affinity: none) the figure is printed for
comparison, with the dollars the cache saved in both cases.

(d) Anthropic cache usage translated both ways is priced by the cache prices: an Anthropic
caller on an OpenAI backend (cached_tokens → cache_read_input_tokens) and an OpenAI caller on
an Anthropic backend (cache_creation/read_input_tokens → prompt_tokens_details), each request's
access-log cost_usd and the spend counter equal to the figure computed here by hand.
"""

from __future__ import annotations

import json
import random
import time
import urllib.request

import pytest

from conftest import key_pool_refs, keys_secret_data, mock_with_keys, start_gateway

POOL_KEYS = [f"sk-pool-{i}-7c1e" for i in range(4)]
SOLO_KEY = "sk-solo-9d2f"
IDEAL_KEY = "sk-ideal-4a5b"
ANTHROPIC_KEY = "sk-ant-cache-1f3e"
ALL_KEYS = POOL_KEYS + [SOLO_KEY, IDEAL_KEY, ANTHROPIC_KEY]

CONVERSATIONS = 50
TURNS = 5

# USD per million tokens (gpt-4o's list prices; Claude Sonnet's for the Anthropic backend).
IN, READ, OUT = 2.50, 1.25, 10.00
A_IN, A_WRITE, A_READ, A_OUT = 3.00, 3.75, 0.30, 15.00


@pytest.fixture(scope="module")
def cache_mock(tmp_path_factory):
    yield from mock_with_keys(tmp_path_factory, "cache-mock", ALL_KEYS, chunks=4)


def config(addr: str) -> str:
    ep = f"http://{addr}/v1"
    secrets = keys_secret_data(ALL_KEYS)
    pool_keys = key_pool_refs(len(POOL_KEYS))
    price = f'{{inputPerMillion: "{IN}", cacheReadPerMillion: "{READ}", outputPerMillion: "{OUT}"}}'
    a_price = (
        f'{{inputPerMillion: "{A_IN}", cacheWritePerMillion: "{A_WRITE}", '
        f'cacheReadPerMillion: "{A_READ}", outputPerMillion: "{A_OUT}"}}'
    )

    def route(name, model, affinity, backends):
        aff = f"  affinity: {affinity}\n" if affinity else ""
        lines = "\n".join(
            f"  - {{backendRef: {{name: {b}}}, model: {m}, weight: {w}}}" for b, m, w in backends
        )
        return f"""---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: {name}}}
spec:
  match: {{models: [{model}]}}
{aff}  backends:
{lines}
"""

    split = [("pool", "pool-model", 3), ("solo", "solo-model", 1)]
    return f"""apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData:
{secrets}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: pool}}
spec:
  provider: openai-compatible
  endpoint: {ep}
  auth:
    keys:
{pool_keys}
  models: [{{name: pool-model, pricing: {price}}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: solo}}
spec:
  provider: openai-compatible
  endpoint: {ep}
  auth: {{secretRef: {{name: keys, key: k{len(POOL_KEYS)}}}}}
  models: [{{name: solo-model, pricing: {price}}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: ideal}}
spec:
  provider: openai-compatible
  endpoint: {ep}
  auth: {{secretRef: {{name: keys, key: k{len(POOL_KEYS) + 1}}}}}
  models: [{{name: ideal-model, pricing: {price}}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: claude}}
spec:
  provider: anthropic
  endpoint: {ep}
  auth: {{secretRef: {{name: keys, key: k{len(POOL_KEYS) + 2}}}}}
  models: [{{name: claude-model, pricing: {a_price}}}]
  headers:
    set: {{x-mock-cache-mark: last}}
{route("affine", "chat-affine", None, split)}{route("random", "chat-random", "none", split)}{route("single", "chat-ideal", None, [("ideal", "ideal-model", 1)])}{route("to-openai", "oai-cached", None, [("ideal", "ideal-model", 1)])}{route("to-anthropic", "claude-cached", None, [("claude", "claude-model", 1)])}"""


@pytest.fixture(scope="module")
def gw(cache_mock, tmp_path_factory):
    g = start_gateway(tmp_path_factory.mktemp("cache-gw"), config(cache_mock))
    try:
        yield g
    finally:
        g.proc.stop()


def post(gw, path: str, body: dict, headers: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"http://{gw.listen}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", "authorization": "Bearer caller",
                 "anthropic-version": "2023-06-01", **(headers or {})},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as resp:
        return json.loads(resp.read())


def system_prompt(conv: int) -> str:
    # Some 1500 mock tokens (characters / 4): above the 1024-token caching minimum.
    rng = random.Random(conv)
    words = [f"w{rng.randrange(10_000)}" for _ in range(1200)]
    return f"You are assistant #{conv}. " + " ".join(words)


def run_workload(gw, model: str) -> tuple[int, int]:
    """Runs the 50 × 5 conversations, interleaved turn by turn; returns (cached, input)."""
    convs = [[{"role": "system", "content": system_prompt(c)}] for c in range(CONVERSATIONS)]
    cached = total = 0
    for turn in range(TURNS):
        for c, msgs in enumerate(convs):
            msgs.append({"role": "user", "content": f"conversation {c}, question {turn}: " + "x " * 40})
            r = post(gw, "/v1/chat/completions", {"model": model, "messages": msgs})
            u = r["usage"]
            total += u["prompt_tokens"]
            cached += u.get("prompt_tokens_details", {}).get("cached_tokens", 0)
            msgs.append({"role": "assistant", "content": r["choices"][0]["message"]["content"]})
    return cached, total


def counter(metrics: str, name: str, **labels) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_affinity_keeps_conversations_on_warm_caches(gw):
    ideal_cached, ideal_total = run_workload(gw, "chat-ideal")
    aff_cached, aff_total = run_workload(gw, "chat-affine")
    rnd_cached, rnd_total = run_workload(gw, "chat-random")
    ideal = ideal_cached / ideal_total
    with_aff = aff_cached / aff_total
    without = rnd_cached / rnd_total
    m = gw.metrics()
    saved = {r: counter(m, "switchyard_cost_saved_usd_total", route=f"default/{r}")
             for r in ("single", "affine", "random")}
    spend = {r: counter(m, "switchyard_spend_usd_total", route=f"default/{r}")
             for r in ("single", "affine", "random")}
    print(
        f"\ncached share of input: ideal {ideal:.3f}, with affinity {with_aff:.3f} "
        f"({with_aff / ideal:.1%} of ideal), without affinity {without:.3f} "
        f"({without / ideal:.1%} of ideal)"
        f"\nsaved by the prompt cache: with affinity ${saved['affine']:.4f} "
        f"(spend ${spend['affine']:.4f}), without ${saved['random']:.4f} "
        f"(spend ${spend['random']:.4f}), ideal ${saved['single']:.4f}"
    )
    assert ideal > 0.5, ideal
    assert with_aff >= 0.9 * ideal, (with_aff, ideal)
    assert without < with_aff
    # The metrics agree with the responses: cache-read tokens counted per route.
    assert counter(m, "switchyard_tokens_total", route="default/affine", type="cache_read") == aff_cached
    # Saved = cache reads × (input − cache-read price).
    assert saved["affine"] == pytest.approx(aff_cached * (IN - READ) / 1e6)
    # The split held in aggregate: about 3:1 between the pool and the single key.
    pool = counter(m, "switchyard_requests_total", route="default/affine", backend="default/pool")
    solo = counter(m, "switchyard_requests_total", route="default/affine", backend="default/solo")
    assert 0.6 <= pool / (pool + solo) <= 0.9, (pool, solo)


def access_costs(gw, route: str, n: int) -> list[dict]:
    """The route's access-log lines, waiting (bounded) for `n`: the log is written by a
    background thread."""
    deadline = time.monotonic() + 5.0
    while True:
        lines = _access_lines(gw, route)
        if len(lines) >= n or time.monotonic() >= deadline:
            return lines
        time.sleep(0.05)


def _access_lines(gw, route: str) -> list[dict]:
    out = []
    for line in gw.proc.output().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("message") == "request" and rec.get("route") == route:
            out.append(rec)
        elif isinstance(rec.get("fields"), dict) and rec["fields"].get("route") == route \
                and rec["fields"].get("message") == "request":
            out.append(rec["fields"])
    return out


def test_anthropic_caller_on_openai_backend_priced_by_cache_prices(gw):
    system = system_prompt(1000)
    msgs = [{"role": "user", "content": "first question " + "y " * 20}]
    usages = []
    for turn in range(3):
        r = post(gw, "/v1/messages", {"model": "oai-cached", "max_tokens": 64,
                                      "system": system, "messages": msgs})
        usages.append(r["usage"])
        msgs += [{"role": "assistant", "content": r["content"][0]["text"]},
                 {"role": "user", "content": f"follow-up {turn}"}]
    assert usages[0]["cache_read_input_tokens"] == 0
    assert usages[1]["cache_read_input_tokens"] > 1024
    lines = access_costs(gw, "default/to-openai", 3)
    assert len(lines) == 3
    for u, line in zip(usages, lines):
        fresh, read = u["input_tokens"], u["cache_read_input_tokens"]
        want = (fresh * IN + read * READ + u["output_tokens"] * OUT) / 1e6
        assert line["cached_input_tokens"] == read
        assert line["cost_usd"] == pytest.approx(want, rel=1e-9), (u, line)
    spend = counter(gw.metrics(), "switchyard_spend_usd_total", route="default/to-openai")
    assert spend == pytest.approx(sum(l["cost_usd"] for l in lines), rel=1e-9)


def test_openai_caller_on_anthropic_backend_priced_by_cache_prices(gw):
    msgs = [{"role": "system", "content": system_prompt(2000)},
            {"role": "user", "content": "first question " + "z " * 20}]
    usages = []
    for turn in range(3):
        r = post(gw, "/v1/chat/completions", {"model": "claude-cached", "max_tokens": 64,
                                              "messages": msgs})
        usages.append(r["usage"])
        msgs += [{"role": "assistant", "content": r["choices"][0]["message"]["content"]},
                 {"role": "user", "content": f"follow-up {turn}"}]
    details = [u["prompt_tokens_details"] for u in usages]
    # Turn 1 writes the prefix, later turns read it and write their new tail.
    assert details[0]["cached_tokens"] == 0 and details[0]["cache_write_tokens"] > 1024
    assert details[1]["cached_tokens"] > 1024
    lines = access_costs(gw, "default/to-anthropic", 3)
    assert len(lines) == 3
    for u, d, line in zip(usages, details, lines):
        read, write = d["cached_tokens"], d.get("cache_write_tokens", 0)
        fresh = u["prompt_tokens"] - read - write
        want = (fresh * A_IN + write * A_WRITE + read * A_READ + u["completion_tokens"] * A_OUT) / 1e6
        assert line["cache_write_tokens"] == write
        assert line["cost_usd"] == pytest.approx(want, rel=1e-9), (u, line)
    m = gw.metrics()
    assert counter(m, "switchyard_tokens_total", route="default/to-anthropic", type="cache_write") \
        == sum(d.get("cache_write_tokens", 0) for d in details)
    spend = counter(m, "switchyard_spend_usd_total", route="default/to-anthropic")
    assert spend == pytest.approx(sum(l["cost_usd"] for l in lines), rel=1e-9)
