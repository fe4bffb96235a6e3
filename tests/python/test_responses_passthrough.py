"""The Responses API passed through to backends that serve it (`openai`, `azure-openai`).

What Codex sends reaches OpenAI's (or Azure's) own `/responses` with only `model` rewritten,
so stored responses (`previous_response_id`, `store`), hosted tools (`web_search` …),
`include` and `reasoning` behave as with the provider: no 400 for state the gateway does not
keep, no hosted tool left out, no `x-switchyard-dropped`. Usage is read from the answer
(plain) or from the stream's `response.completed` event and recorded in /metrics. The
backends are played by `switchyard-mock`, whose request log shows what was sent.
"""

from __future__ import annotations

import json
import secrets
import time

import pytest

from conftest import CALLER_KEY, MOCK_CHUNKS, UPSTREAM_KEY, start_gateway
from test_anthropic import mock_text

# Route → (the upstream path, the model the backend is sent).
ROUTES = {
    "pt-openai": ("/v1/responses", "mock-model"),
    "pt-azure": ("/openai/v1/responses", "gpt-4o-prod"),
}


def config(mock_addr: str) -> str:
    return f"""\
apiVersion: v1
kind: Secret
metadata: {{name: upstream-key}}
stringData: {{apiKey: "{UPSTREAM_KEY}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: oai}}
spec:
  provider: openai
  endpoint: http://{mock_addr}/v1
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models: [{{name: mock-model, pricing: {{inputPerMillion: "1", outputPerMillion: "2"}}}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: azure}}
spec:
  provider: azure-openai
  endpoint: http://{mock_addr}
  azure: {{apiVersion: 2025-04-01-preview}}
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models: [{{name: gpt-4o-prod}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: pt-openai}}
spec:
  match: {{models: ["pt-openai"]}}
  backends: [{{backendRef: {{name: oai}}, model: mock-model}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: pt-azure}}
spec:
  match: {{models: ["pt-azure"]}}
  backends: [{{backendRef: {{name: azure}}, model: gpt-4o-prod}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: truncated}}
spec:
  provider: openai
  endpoint: http://{mock_addr}/v1
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models: [{{name: mock-model}}]
  headers: {{set: {{x-mock-fault: truncate-stream, x-mock-reset-after: "5"}}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: pt-truncated}}
spec:
  match: {{models: ["pt-truncated"]}}
  backends: [{{backendRef: {{name: truncated}}, model: mock-model}}]
"""


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    g = start_gateway(tmp_path_factory.mktemp("responses-pt"), config(mock.addr), name="responses-pt-gw")
    yield g
    g.proc.stop()


# What Codex sends and a translating gateway would refuse or leave out (and
# `previous_response_id`, of a response stored first: see `earlier`).
EXTRAS = dict(
    instructions="Be brief.",
    store=True,
    tools=[{"type": "web_search"}],
    include=["reasoning.encrypted_content"],
    reasoning={"effort": "low", "summary": "auto"},
    prompt_cache_key="codex-session-1",
    extra_body={"vendor_extension": {"keep": [1, 2]}},
)


def metric(gw, family: str, route: str, extra: str = "") -> float:
    total = 0.0
    for line in gw.metrics().splitlines():
        if line.startswith(family + "{") and f'route="default/{route}"' in line and extra in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def tokens(gw, route: str, kind: str) -> float:
    return metric(gw, "switchyard_tokens_total", route, f'type="{kind}"')


def earlier(oai, upstream, route: str) -> str:
    """A response stored through `route` (the mock, like OpenAI, continues only what it
    stored, under the same key), with the mock's request log cleared after it."""
    rid = oai.responses.create(model=route, input="earlier").id
    upstream.clear()
    return rid


def sent_unchanged(upstream, route: str, stream: bool, previous: str) -> dict:
    path, model = ROUTES[route]
    recs = upstream.requests(path)
    assert len(recs) == 1, f"expected one request to {path}, the mock saw {upstream.requests()!r}"
    rec = recs[0]
    assert rec["method"] == "POST"
    body = rec["body"]
    assert body["model"] == model
    expected = {k: v for k, v in EXTRAS.items() if k != "extra_body"}
    expected.update(EXTRAS["extra_body"], model=model, input="hi", previous_response_id=previous)
    if stream:
        expected["stream"] = True
    # Nothing added (no stream_options), nothing dropped, nothing rewritten but the model.
    assert body == expected
    assert CALLER_KEY not in json.dumps(rec["headers"])
    return rec


@pytest.mark.parametrize("route", list(ROUTES))
def test_plain_passes_through(gw, oai, upstream, route):
    previous = earlier(oai, upstream, route)
    before = (tokens(gw, route, "input"), tokens(gw, route, "output"))
    spend = metric(gw, "switchyard_spend_usd_total", "pt-openai")
    raw = oai.responses.with_raw_response.create(model=route, input="hi",
                                                 previous_response_id=previous, **EXTRAS)
    assert "x-switchyard-dropped" not in raw.headers
    resp = raw.parse()
    assert resp.status == "completed" and resp.output_text == mock_text()
    # The provider's own answer: its echo of the stored-response settings, its id.
    assert resp.store is True and resp.previous_response_id == previous
    assert [t.type for t in resp.tools] == ["web_search"]
    assert resp.model == ROUTES[route][1]
    sent_unchanged(upstream, route, stream=False, previous=previous)
    assert tokens(gw, route, "output") - before[1] == MOCK_CHUNKS
    assert tokens(gw, route, "input") - before[0] == resp.usage.input_tokens > 0
    if route == "pt-openai":  # the priced model
        assert metric(gw, "switchyard_spend_usd_total", route) > spend


@pytest.mark.parametrize("route", list(ROUTES))
def test_stream_passes_through(gw, oai, upstream, route):
    previous = earlier(oai, upstream, route)
    before = tokens(gw, route, "output")
    raw = oai.responses.with_raw_response.create(model=route, input="hi", stream=True,
                                                 previous_response_id=previous, **EXTRAS)
    assert "x-switchyard-dropped" not in raw.headers
    events = list(raw.parse())
    # The provider's events, relayed as they came.
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == mock_text()
    assert events[-1].response.usage.output_tokens == MOCK_CHUNKS
    sent_unchanged(upstream, route, stream=True, previous=previous)
    assert tokens(gw, route, "output") - before == MOCK_CHUNKS


def test_stream_helper_and_function_calls(oai, upstream):
    tool = {"type": "function", "name": "get_weather", "description": "Weather.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}
    with oai.responses.stream(model="pt-openai", input="Weather in Paris?",
                              tools=[tool, {"type": "web_search"}]) as s:
        args = "".join(e.delta for e in s if e.type == "response.function_call_arguments.delta")
        final = s.get_final_response()
    [call] = [o for o in final.output if o.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == json.loads(args)
    sent = upstream.requests("/v1/responses")[0]["body"]
    assert sent["tools"] == [tool, {"type": "web_search"}]


def test_a_stream_cut_short_is_an_error(gw, oai, upstream):
    # The mock ends the stream cleanly after five events: no `response.completed`, so the
    # caller gets an error event, never a stream passed off as complete.
    rid = "req-pt-cut-" + secrets.token_hex(4)
    events = list(oai.responses.create(model="pt-truncated", input="hi", stream=True,
                                       extra_headers={"x-request-id": rid}))
    assert events[0].type == "response.created"
    assert "response.completed" not in [e.type for e in events]
    assert events[-1].type == "error" and events[-1].code == "upstream_stream_truncated"
    assert "ended before the answer was complete" in events[-1].message
    deadline = time.monotonic() + 5.0
    while not (lines := [l for l in gw.proc.output().splitlines() if rid in l and '"request"' in l]):
        assert time.monotonic() < deadline, "no access log line"
        time.sleep(0.05)
    assert json.loads(lines[-1])["error"] == "upstream_stream_truncated"
