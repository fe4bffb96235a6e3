"""A Responses request continuing a stored response (`previous_response_id`) reaches the
backend and key that stored it (crates/gateway/src/owners.rs): there affinity is correctness.

The mock keeps stored responses per API key, as OpenAI keeps them per project, and answers a
continuation sent with any other key 400 `previous_response_not_found` (checked here first,
straight at the mock, so the tests below can fail). Behind the gateway: a 3:1 split whose
heavier side is a pool of four keys, so an unpinned continuation would land on the wrong key
most of the time. Chains of turns, plain and streamed, with affinity on and off, all succeed,
and the mock's request log shows every turn on its first turn's key. With two replicas sharing
a real redis-server, a response stored through one is continued through the other.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import http, key_pool_refs, keys_secret_data, mock_with_keys, start_gateway
from test_consumers import Redis

POOL_KEYS = [f"sk-stored-pool-{i}-2b7d" for i in range(4)]
SOLO_KEY = "sk-stored-solo-8e1a"
ALL_KEYS = POOL_KEYS + [SOLO_KEY]
CHAINS = 12
TURNS = 4


@pytest.fixture(scope="module")
def store_mock(tmp_path_factory):
    yield from mock_with_keys(tmp_path_factory, "stored-mock", ALL_KEYS, chunks=3)


def config(addr: str) -> str:
    secrets = keys_secret_data(ALL_KEYS)
    pool = key_pool_refs(len(POOL_KEYS))

    def route(name: str, affinity: str) -> str:
        return f"""---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: {name}}}
spec:
  match: {{models: [{name}]}}
  affinity: {affinity}
  backends:
  - {{backendRef: {{name: pool}}, model: mock-model, weight: 3}}
  - {{backendRef: {{name: solo}}, model: mock-model, weight: 1}}
"""

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
  provider: openai
  endpoint: http://{addr}/v1
  auth:
    keys:
{pool}
  models: [{{name: mock-model}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: solo}}
spec:
  provider: openai
  endpoint: http://{addr}/v1
  auth: {{secretRef: {{name: keys, key: k{len(POOL_KEYS)}}}}}
  models: [{{name: mock-model}}]
{route("stored", "prefix")}{route("stored-none", "none")}"""


@pytest.fixture(scope="module")
def gw(store_mock, tmp_path_factory):
    g = start_gateway(tmp_path_factory.mktemp("stored-gw"), config(store_mock), name="stored-gw")
    yield g
    g.proc.stop()


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(url: str, body: dict, key: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "content-type": "application/json", "authorization": f"Bearer {key}"})
    try:
        with _DIRECT.open(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def mock_clear(addr: str) -> None:
    status, _ = http("DELETE", f"http://{addr}/mock/requests")
    assert status in (200, 204)


def mock_log(addr: str) -> list[dict]:
    status, body = http("GET", f"http://{addr}/mock/requests")
    assert status == 200
    return [r for r in json.loads(body) if r["path"] == "/v1/responses"]


def key_of(rec: dict) -> str:
    return rec["headers"]["authorization"].removeprefix("Bearer ")


def create(gw, model: str, text: str, previous: str | None = None, stream: bool = False):
    """One turn through the gateway: (status, response id or error body)."""
    body = {"model": model, "input": text}
    if previous:
        body["previous_response_id"] = previous
    if stream:
        body["stream"] = True
    status, raw = post(f"{gw.base_url}/responses", body, "caller")
    if status != 200:
        return status, raw
    if not stream:
        return status, json.loads(raw)["id"]
    events = [json.loads(l[6:]) for l in raw.decode().splitlines() if l.startswith("data: ")]
    done = [e for e in events if e.get("type") == "response.completed"]
    assert done, f"no response.completed in {raw[:400]!r}"
    return status, done[0]["response"]["id"]


def test_the_mock_refuses_a_continuation_under_another_key(store_mock):
    """The control: the strictness the pinning below depends on is real."""
    url = f"http://{store_mock}/v1/responses"
    status, raw = post(url, {"model": "mock-model", "input": "hi"}, POOL_KEYS[0])
    assert status == 200
    rid = json.loads(raw)["id"]
    status, raw = post(url, {"model": "mock-model", "input": "more", "previous_response_id": rid},
                       POOL_KEYS[1])
    assert status == 400
    err = json.loads(raw)["error"]
    assert err["code"] == "previous_response_not_found" and err["param"] == "previous_response_id"
    assert rid in err["message"]
    status, _ = post(url, {"model": "mock-model", "input": "more", "previous_response_id": rid},
                     POOL_KEYS[0])
    assert status == 200
    # Not stored: nothing to continue, even under the same key.
    status, raw = post(url, {"model": "mock-model", "input": "hi", "store": False}, POOL_KEYS[0])
    rid = json.loads(raw)["id"]
    status, _ = post(url, {"model": "mock-model", "input": "x", "previous_response_id": rid},
                     POOL_KEYS[0])
    assert status == 400


@pytest.mark.parametrize("model", ["stored", "stored-none"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_every_turn_reaches_the_key_that_stored_the_last(gw, store_mock, model, stream):
    mock_clear(store_mock)
    chains = []
    for c in range(CHAINS):
        # Distinct first turns: with affinity on they hash to different places.
        status, rid = create(gw, model, f"conversation {c}: hello", stream=stream)
        assert status == 200, rid
        chain = [rid]
        for t in range(1, TURNS):
            status, rid = create(gw, model, f"turn {t}", previous=chain[-1], stream=stream)
            assert status == 200, f"chain {c} turn {t}: {rid!r}"
            chain.append(rid)
        chains.append(chain)
    log = mock_log(store_mock)
    assert len(log) == CHAINS * TURNS
    # Each chain's turns in the log, in order: all under one key.
    keys_used = set()
    i = 0
    for c in range(CHAINS):
        recs = log[i:i + TURNS]
        i += TURNS
        assert recs[0]["body"]["input"] == f"conversation {c}: hello"
        assert [r["body"].get("previous_response_id") for r in recs] == [None] + chains[c][:-1]
        keys = {key_of(r) for r in recs}
        assert len(keys) == 1, f"chain {c} spread over keys {keys}"
        keys_used |= keys
    # The split and the pool are really in play: first turns land on several keys.
    assert len(keys_used) >= 2, keys_used


def test_an_unknown_id_is_the_providers_answer_in_the_callers_format(gw):
    status, raw = create(gw, "stored", "hi", previous="resp_never_made")
    assert status == 400
    err = json.loads(raw)["error"]
    assert err["code"] == "previous_response_not_found"
    assert "resp_never_made" in err["message"]


def test_two_replicas_sharing_redis_continue_each_others_responses(store_mock, tmp_path_factory):
    work = tmp_path_factory.mktemp("stored-replicas")
    redis = Redis(tmp_path_factory.mktemp("stored-redis"))
    gws = []
    try:
        gws = [start_gateway(work, config(store_mock), ["--redis-url", redis.url], name=f"stored-{i}")
               for i in (1, 2)]
        mock_clear(store_mock)
        for c in range(CHAINS):
            status, rid = create(gws[0], "stored-none", f"replica chain {c}")
            assert status == 200, rid
            # Continued through the other replica, which never saw the first turn.
            status, rid2 = create(gws[1], "stored-none", "next", previous=rid)
            assert status == 200, f"chain {c}: {rid2!r}"
            status, rid3 = create(gws[0], "stored-none", "and again", previous=rid2)
            assert status == 200, f"chain {c}: {rid3!r}"
        log = mock_log(store_mock)
        for c in range(CHAINS):
            recs = log[3 * c:3 * c + 3]
            assert len({key_of(r) for r in recs}) == 1
        cli = shutil.which("redis-cli")
        if cli:
            keys = subprocess.run([cli, "-p", str(redis.port), "--scan", "--pattern", "sy:resp:*"],
                                  capture_output=True, text=True, check=True).stdout.split()
            assert len(keys) == 3 * CHAINS
            ttl = int(subprocess.run([cli, "-p", str(redis.port), "TTL", keys[0]],
                                     capture_output=True, text=True, check=True).stdout)
            assert 29 * 86400 < ttl <= 30 * 86400
    finally:
        for g in gws:
            g.proc.stop()
        redis.stop()
