"""The OpenAI-dialect columns of the translation matrix that the per-provider modules leave
out: an `openai` backend (not only `openai-compatible`) and `azure-openai`, each reached by
the official OpenAI SDK and the official Anthropic SDK — plain, streaming and a tool-call
round trip (plain and streamed) in every cell.

Each test checks what reached `switchyard-mock` (path, key header, body) as well as what the
SDK parsed, so a cell cannot pass by being routed somewhere else.
"""

from __future__ import annotations

import json

import pytest

from conftest import CALLER_KEY, MOCK_CHUNKS, UPSTREAM_KEY, collect_chat_stream, start_gateway
from test_anthropic import MOCK_ARGS, WEATHER_TOOL_ANTHROPIC, WEATHER_TOOL_OPENAI, mock_text, only

# alias -> (upstream path, key header, expected key header value)
BACKENDS = {
    "via-openai": ("/v1/chat/completions", "authorization", f"Bearer {UPSTREAM_KEY}"),
    "via-azure": ("/openai/deployments/gpt-4o-prod/chat/completions", "api-key", UPSTREAM_KEY),
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
metadata: {{name: openai}}
spec:
  provider: openai
  endpoint: http://{mock_addr}/v1
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models: [{{name: mock-model}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: azure}}
spec:
  provider: azure-openai
  endpoint: http://{mock_addr}
  azure: {{apiVersion: 2024-10-21}}
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models: [{{name: gpt-4o-prod}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: via-openai}}
spec:
  match: {{models: ["via-openai"]}}
  backends: [{{backendRef: {{name: openai}}, model: mock-model}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: via-azure}}
spec:
  match: {{models: ["via-azure"]}}
  backends: [{{backendRef: {{name: azure}}, model: gpt-4o-prod}}]
"""


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    g = start_gateway(tmp_path_factory.mktemp("matrix"), config(mock.addr), name="matrix-gw")
    yield g
    g.proc.stop()


def sent(upstream, alias: str) -> dict:
    """The one upstream request, checked for the backend's path and key header."""
    path, header, value = BACKENDS[alias]
    rec = only(upstream, path)
    assert rec["headers"].get(header) == value
    assert CALLER_KEY not in json.dumps(rec["headers"])
    return rec["body"]


# === OpenAI SDK ===


@pytest.mark.parametrize("alias", list(BACKENDS))
def test_openai_sdk_plain(oai, upstream, alias):
    resp = oai.chat.completions.create(
        model=alias, messages=[{"role": "user", "content": "hi"}], max_tokens=50)
    assert resp.choices[0].message.content == mock_text()
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == MOCK_CHUNKS
    assert sent(upstream, alias)["max_tokens"] == 50


@pytest.mark.parametrize("alias", list(BACKENDS))
def test_openai_sdk_stream(oai, upstream, alias):
    text, chunks = collect_chat_stream(oai.chat.completions.create(
        model=alias, messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}))
    assert text == mock_text()
    assert chunks[-1].usage.completion_tokens == MOCK_CHUNKS
    assert sent(upstream, alias)["stream"] is True


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("alias", list(BACKENDS))
def test_openai_sdk_tool_round_trip(oai, upstream, alias, stream):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    kwargs = dict(model=alias, tools=[WEATHER_TOOL_OPENAI])
    if stream:
        chunks = list(oai.chat.completions.create(messages=messages, stream=True, **kwargs))
        deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        call_id = next(d.id for d in deltas if d.id)
        name = next(d.function.name for d in deltas if d.function and d.function.name)
        args = "".join(d.function.arguments or "" for d in deltas if d.function)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        resp = oai.chat.completions.create(messages=messages, **kwargs)
        tc = resp.choices[0].message.tool_calls[0]
        call_id, name, args = tc.id, tc.function.name, tc.function.arguments
        finish = [resp.choices[0].finish_reason]
    assert finish == ["tool_calls"]
    assert name == "get_weather" and json.loads(args) == MOCK_ARGS
    assert sent(upstream, alias)["tools"] == [WEATHER_TOOL_OPENAI]

    messages += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "18°C, sunny"},
    ]
    upstream.clear()
    final = oai.chat.completions.create(messages=messages, **kwargs)
    assert final.choices[0].message.content == mock_text()
    body = sent(upstream, alias)
    assert body["messages"][2] == {"role": "tool", "tool_call_id": call_id, "content": "18°C, sunny"}


# === Anthropic SDK (translated to Chat Completions) ===


@pytest.mark.parametrize("alias", list(BACKENDS))
def test_anthropic_sdk_plain(claude, upstream, alias):
    msg = claude.messages.create(
        model=alias, max_tokens=100, system="You are a test.",
        messages=[{"role": "user", "content": "hi"}])
    assert msg.type == "message" and msg.content[0].text == mock_text()
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens == MOCK_CHUNKS
    body = sent(upstream, alias)
    assert body["messages"][0] == {"role": "system", "content": "You are a test."}


@pytest.mark.parametrize("alias", list(BACKENDS))
def test_anthropic_sdk_stream(claude, upstream, alias):
    with claude.messages.stream(
        model=alias, max_tokens=100, messages=[{"role": "user", "content": "Stream, please."}],
    ) as s:
        events = [e.type for e in s]
        final = s.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_delta" in events
    assert final.content[0].text == mock_text() and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == MOCK_CHUNKS
    body = sent(upstream, alias)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("alias", list(BACKENDS))
def test_anthropic_sdk_tool_round_trip(claude, upstream, alias, stream):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    kwargs = dict(model=alias, max_tokens=200, tools=[WEATHER_TOOL_ANTHROPIC])
    if stream:
        with claude.messages.stream(messages=messages, **kwargs) as s:
            list(s)
            first = s.get_final_message()
    else:
        first = claude.messages.create(messages=messages, **kwargs)
    assert first.stop_reason == "tool_use"
    [call] = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.input == MOCK_ARGS
    assert sent(upstream, alias)["tools"] == [WEATHER_TOOL_OPENAI]

    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": "18°C, sunny"}]},
    ]
    upstream.clear()
    final = claude.messages.create(messages=messages, **kwargs)
    assert final.stop_reason == "end_turn" and final.content[0].text == mock_text()
    body = sent(upstream, alias)
    assert body["messages"][1]["tool_calls"][0]["id"] == call.id
    assert body["messages"][2] == {"role": "tool", "tool_call_id": call.id, "content": "18°C, sunny"}
