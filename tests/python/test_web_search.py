"""A caller's web search through the gateway, with the official OpenAI and Anthropic SDKs.

Responses' `web_search` tool, Chat's `web_search_options` and Anthropic's
`web_search_20250305` server tool run on the backend's own search where the route says
`webSearch: backend`: Anthropic's server-side web search tool, Gemini's Google Search
grounding (the mock checks both shapes as the providers do, and answers with a search: server
tool blocks and citations from Anthropic, grounding metadata from Gemini, none of which may
reach the caller as a tool call of its own). Elsewhere `unsupportedTools` decides, per target:
a backend serving the caller's API (OpenAI's Responses API) keeps the tool, a translating one
leaves it out and names it in `x-switchyard-dropped`, or refuses the request so a fallback can
take it.
"""

from __future__ import annotations

import json

import openai
import pytest

from conftest import MOCK_CHUNKS, UPSTREAM_KEY, start_gateway
from test_anthropic import mock_text

REPLY = mock_text(MOCK_CHUNKS)
ANTHROPIC_SEARCH = {"type": "web_search_20250305", "name": "web_search"}


def config(mock_addr: str) -> str:
    def backend(name: str, provider: str, endpoint: str, model: str) -> str:
        return f"""\
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: {name}}}
spec:
  provider: {provider}
  endpoint: {endpoint}
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models: [{{name: {model}}}]
"""

    def route(name: str, spec: str) -> str:
        return f"""\
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: {name}}}
spec:
  match: {{models: [{name}]}}
{spec}"""

    base = f"http://{mock_addr}"
    return "".join([
        f"""\
apiVersion: v1
kind: Secret
metadata: {{name: upstream-key}}
stringData: {{apiKey: "{UPSTREAM_KEY}"}}
""",
        backend("openai", "openai", f"{base}/v1", "gpt-mock"),
        backend("compat", "openai-compatible", f"{base}/v1", "qwen-mock"),
        backend("anthropic", "anthropic", base, "claude-mock"),
        backend("gemini", "gemini", base, "gemini-mock"),
        route("ws-anthropic", """\
  webSearch: backend
  backends: [{backendRef: {name: anthropic}, model: claude-mock}]
"""),
        route("ws-gemini", """\
  webSearch: backend
  backends: [{backendRef: {name: gemini}, model: gemini-mock}]
"""),
        # The default: a translating backend leaves the search out and names it.
        route("ws-off", """\
  backends: [{backendRef: {name: gemini}, model: gemini-mock}]
"""),
        # A translating primary that has no search refuses; the fallback runs it.
        route("ws-fallback", """\
  webSearch: backend
  unsupportedTools: reject
  backends: [{backendRef: {name: compat}, model: qwen-mock}]
  fallbacks: [{backendRef: {name: anthropic}, model: claude-mock}]
"""),
        # Reject on the route, but the primary serves the Responses API itself.
        route("ws-strict", """\
  unsupportedTools: reject
  backends: [{backendRef: {name: openai}, model: gpt-mock}]
  fallbacks: [{backendRef: {name: anthropic}, model: claude-mock}]
"""),
        route("ws-strict-translated", """\
  unsupportedTools: reject
  backends: [{backendRef: {name: gemini}, model: gemini-mock}]
"""),
    ])


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    g = start_gateway(tmp_path_factory.mktemp("web-search"), config(mock.addr),
                      name="web-search-gw")
    yield g
    g.proc.stop()


def calls(upstream, prefix: str) -> list[dict]:
    return [r for r in upstream.requests() if r["path"].startswith(prefix)]


def gemini_calls(upstream) -> list[dict]:
    return calls(upstream, "/v1beta/models/gemini-mock:")


def output_texts(resp) -> list[str]:
    return [c.text for item in resp.output if item.type == "message" for c in item.content
            if c.type == "output_text"]


@pytest.mark.parametrize("stream", [False, True])
def test_responses_web_search_runs_on_anthropics_search(gw, upstream, oai, stream):
    tool = {"type": "web_search", "filters": {"allowed_domains": ["example.com"]},
            "user_location": {"type": "approximate", "country": "GB", "city": "London"}}
    if stream:
        events = list(oai.responses.create(model="ws-anthropic", input="News?", tools=[tool],
                                           stream=True))
        done = [e for e in events if e.type == "response.completed"]
        assert done, [e.type for e in events]
        resp = done[0].response
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert deltas == REPLY
    else:
        resp = oai.responses.create(model="ws-anthropic", input="News?", tools=[tool])
    # The search ran upstream; the caller sees the cited answer, never a call to run itself.
    assert output_texts(resp) == [REPLY]
    assert all(item.type == "message" for item in resp.output), resp.output
    (sent,) = calls(upstream, "/v1/messages")
    assert sent["body"]["tools"] == [{
        "type": "web_search_20250305", "name": "web_search", "allowed_domains": ["example.com"],
        "user_location": {"type": "approximate", "city": "London", "country": "GB"}}]
    assert resp.usage.output_tokens == MOCK_CHUNKS


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_web_search_runs_on_google_search(gw, upstream, claude, stream):
    weather = {"name": "get_weather", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}}}
    args = dict(model="ws-gemini", max_tokens=100, tools=[ANTHROPIC_SEARCH],
                messages=[{"role": "user", "content": "News?"}])
    if stream:
        with claude.messages.stream(**args) as s:
            text = "".join(s.text_stream)
            msg = s.get_final_message()
    else:
        msg = claude.messages.create(**args)
        text = msg.content[0].text
    assert text == REPLY and msg.stop_reason == "end_turn"
    (sent,) = gemini_calls(upstream)
    assert sent["body"]["tools"] == [{"google_search": {}}]
    # Beside a function tool: both go, and the model calls the client's function.
    upstream.clear()
    msg = claude.messages.create(**{**args, "tools": [weather, ANTHROPIC_SEARCH]})
    assert [b.type for b in msg.content] == ["tool_use"] and msg.content[0].name == "get_weather"
    (sent,) = gemini_calls(upstream)
    assert sent["body"]["tools"][1] == {"google_search": {}}
    assert sent["body"]["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"


def test_chat_web_search_options_run_on_anthropics_search(gw, upstream, oai):
    chunks = list(oai.chat.completions.create(
        model="ws-anthropic", messages=[{"role": "user", "content": "News?"}], stream=True,
        web_search_options={"user_location": {"type": "approximate",
                                              "approximate": {"country": "DE"}}}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    (sent,) = calls(upstream, "/v1/messages")
    assert sent["body"]["tools"] == [{"type": "web_search_20250305", "name": "web_search",
                                      "user_location": {"type": "approximate", "country": "DE"}}]


def test_a_route_without_web_search_leaves_it_out_and_names_it(gw, upstream, oai):
    raw = oai.responses.with_raw_response.create(
        model="ws-off", input="News?", tools=[{"type": "web_search_preview"}])
    assert raw.headers["x-switchyard-dropped"] == "tools[0](web_search_preview)"
    assert output_texts(raw.parse()) == [REPLY]
    (sent,) = gemini_calls(upstream)
    assert "tools" not in sent["body"]


def test_reject_is_decided_per_target(gw, upstream, oai):
    # The translating primary has no search: refused there without a call, the fallback runs it.
    resp = oai.responses.create(model="ws-fallback", input="News?",
                                tools=[{"type": "web_search"}])
    assert output_texts(resp) == [REPLY]
    assert not calls(upstream, "/v1/chat/completions")
    (sent,) = calls(upstream, "/v1/messages")
    assert sent["body"]["tools"][0]["type"] == "web_search_20250305"
    # A backend serving the Responses API keeps hosted tools on a route that rejects them.
    upstream.clear()
    tools = [{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]}]
    raw = oai.responses.with_raw_response.create(model="ws-strict", input="News?", tools=tools)
    assert "x-switchyard-dropped" not in raw.headers
    (sent,) = calls(upstream, "/v1/responses")
    assert sent["body"]["tools"] == tools
    # A route whose only target translates, and has no search: a 400 naming the tool.
    upstream.clear()
    with pytest.raises(openai.BadRequestError) as e:
        oai.responses.create(model="ws-strict-translated", input="News?",
                             tools=[{"type": "web_search"}])
    assert e.value.body["param"] == "tools[0].type"
    assert "unsupportedTools: reject" in json.dumps(e.value.body)
    assert not upstream.requests()
