"""Anthropic, both ways, through the official SDKs.

* The official Anthropic Python SDK against the gateway's `/v1/messages`, served by an
  OpenAI-dialect backend (translated) and by an `anthropic` backend (passthrough).
* The official OpenAI Python SDK against an `anthropic` backend (translated).

The upstream is `switchyard-mock`, which speaks both dialects; its request log shows what the
gateway actually sent.
"""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from conftest import CALLER_KEY, MOCK_CHUNKS, UPSTREAM_KEY, collect_chat_stream, http, start_gateway

WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}
WEATHER_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": WEATHER_TOOL_ANTHROPIC["input_schema"],
    },
}
# What the mock fills in for that schema.
MOCK_ARGS = {"city": "mock", "days": 1}


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
  provider: openai-compatible
  endpoint: http://{mock_addr}/v1
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models:
  - name: mock-model
    pricing: {{inputPerMillion: "1", outputPerMillion: "2"}}
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: claude}}
spec:
  provider: anthropic
  endpoint: http://{mock_addr}
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models:
  - name: claude-mock
    pricing: {{inputPerMillion: "3", outputPerMillion: "15", cachedInputPerMillion: "0.3"}}
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: claude-overloaded}}
spec:
  provider: anthropic
  endpoint: http://{mock_addr}
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models: [{{name: claude-mock}}]
  headers: {{set: {{x-mock-status: "529"}}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: claude-on-openai}}
spec:
  match: {{models: ["claude-on-openai"]}}
  backends: [{{backendRef: {{name: oai}}, model: mock-model}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: claude-native}}
spec:
  match: {{models: ["claude-native"]}}
  backends: [{{backendRef: {{name: claude}}, model: claude-mock}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: gpt-on-anthropic}}
spec:
  match: {{models: ["gpt-on-anthropic"]}}
  backends: [{{backendRef: {{name: claude}}, model: claude-mock}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: overloaded}}
spec:
  match: {{models: ["overloaded"]}}
  backends: [{{backendRef: {{name: claude-overloaded}}, model: claude-mock}}]
"""


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    g = start_gateway(tmp_path_factory.mktemp("anthropic"), config(mock.addr), name="anthropic-gw")
    yield g
    g.proc.stop()


def only(upstream, path: str) -> dict:
    recs = upstream.requests(path)
    assert len(recs) == 1, f"expected one upstream request to {path}, got {recs!r}"
    return recs[0]


def mock_text(n: int = MOCK_CHUNKS) -> str:
    pieces = ["Mock", " reply", " from", " switchyard", " with", " deterministic", " content",
              " for", " demos,", " tests", " and", " benchmarks", "."]
    return "".join(pieces[:n])


# === Anthropic SDK → gateway → OpenAI-dialect backend (translated) ===


def test_anthropic_sdk_plain_on_openai_backend(claude, upstream):
    msg = claude.messages.create(
        model="claude-on-openai",
        max_tokens=100,
        system="You are a test.",
        messages=[{"role": "user", "content": "Say something."}],
        stop_sequences=["STOP"],
        # This SDK version has no `temperature` keyword; the API still takes the field.
        extra_body={"temperature": 0.5},
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.model == "mock-model"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == mock_text()
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens == MOCK_CHUNKS

    rec = only(upstream, "/v1/chat/completions")
    body = rec["body"]
    assert body["model"] == "mock-model"
    assert body["messages"] == [
        {"role": "system", "content": "You are a test."},
        {"role": "user", "content": "Say something."},
    ]
    assert body["max_tokens"] == 100 and body["temperature"] == 0.5 and body["stop"] == ["STOP"]
    assert rec["headers"].get("authorization") == f"Bearer {UPSTREAM_KEY}"
    assert "x-api-key" not in rec["headers"]


def test_anthropic_sdk_stream_on_openai_backend(claude, upstream):
    with claude.messages.stream(
        model="claude-on-openai",
        max_tokens=100,
        messages=[{"role": "user", "content": "Stream, please."}],
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start"
    assert "content_block_delta" in events and events[-1] == "message_stop"
    assert final.content[0].text == mock_text()
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == MOCK_CHUNKS
    body = only(upstream, "/v1/chat/completions")["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_tool_round_trip_on_openai_backend(claude, upstream, stream):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    kwargs = dict(model="claude-on-openai", max_tokens=200, tools=[WEATHER_TOOL_ANTHROPIC])
    if stream:
        with claude.messages.stream(messages=messages, **kwargs) as s:
            deltas = [e for e in s if e.type == "content_block_delta"]
            first = s.get_final_message()
        partials = [d.delta.partial_json for d in deltas if d.delta.type == "input_json_delta"]
        assert len(partials) > 1, "the tool input should stream in pieces"
    else:
        first = claude.messages.create(messages=messages, **kwargs)
    assert first.stop_reason == "tool_use"
    [call] = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.input == MOCK_ARGS
    assert isinstance(call.input, dict)

    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": "18°C, sunny"},
        ]},
    ]
    upstream.clear()
    final = claude.messages.create(messages=messages, **kwargs)
    assert final.stop_reason == "end_turn" and final.content[0].text == mock_text()

    sent = only(upstream, "/v1/chat/completions")["body"]
    assert sent["tools"] == [WEATHER_TOOL_OPENAI]
    assistant, tool = sent["messages"][1], sent["messages"][2]
    assert assistant["role"] == "assistant"
    assert assistant["tool_calls"][0]["id"] == call.id
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == MOCK_ARGS
    assert tool == {"role": "tool", "tool_call_id": call.id, "content": "18°C, sunny"}


def test_anthropic_errors_come_back_in_anthropic_shape(claude, gw, upstream):
    with pytest.raises(anthropic.NotFoundError) as e:
        claude.messages.create(model="no-such-model", max_tokens=10,
                               messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "not_found_error"

    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model="claude-on-openai", max_tokens=10,
                               messages=[{"role": "user", "content": [
                                   {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}])
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0].type" in e.value.body["error"]["message"]

    # Anthropic's 529 overloaded reaches an Anthropic caller as 529 overloaded_error …
    with pytest.raises(anthropic.APIStatusError) as e:
        claude.messages.create(model="overloaded", max_tokens=10,
                               messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 529
    assert e.value.body["error"]["type"] == "overloaded_error"


def test_openai_caller_sees_overloaded_as_503(oai, upstream):
    with pytest.raises(openai.InternalServerError) as e:
        oai.chat.completions.create(model="overloaded", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 503


# === Anthropic SDK → gateway → anthropic backend (passthrough) ===


def test_anthropic_sdk_passthrough(claude, upstream):
    msg = claude.messages.create(
        model="claude-native",
        max_tokens=100,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31",
                       "anthropic-version": "2023-06-01-e2e"},
    )
    assert msg.model == "claude-mock" and msg.content[0].text == mock_text()
    rec = only(upstream, "/v1/messages")
    assert rec["body"]["model"] == "claude-mock"
    assert rec["body"]["messages"] == [{"role": "user", "content": "hi"}]
    h = rec["headers"]
    assert h.get("x-api-key") == UPSTREAM_KEY
    assert "authorization" not in h
    # The caller's version and beta flags pass through to Anthropic backends.
    assert h.get("anthropic-version") == "2023-06-01-e2e"
    assert h.get("anthropic-beta") == "prompt-caching-2024-07-31"
    assert CALLER_KEY not in json.dumps(h)


def test_anthropic_sdk_passthrough_stream_records_usage(claude, gw, upstream):
    with claude.messages.stream(
        model="claude-native", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == mock_text() and final.usage.output_tokens == MOCK_CHUNKS
    metrics = gw.metrics()
    line = [l for l in metrics.splitlines()
            if l.startswith("switchyard_tokens_total") and 'route="default/claude-native"' in l
            and 'type="output"' in l]
    assert line, metrics


def test_count_tokens(claude, upstream):
    native = claude.messages.count_tokens(
        model="claude-native", messages=[{"role": "user", "content": "hello there"}])
    assert native.input_tokens > 0
    assert only(upstream, "/v1/messages/count_tokens")["body"]["model"] == "claude-mock"
    upstream.clear()
    raw = claude.messages.with_raw_response.count_tokens(
        model="claude-on-openai", messages=[{"role": "user", "content": "hello there"}])
    assert raw.headers.get("x-switchyard-token-estimate") == "true"
    assert raw.parse().input_tokens > 0
    assert upstream.requests() == [], "an OpenAI backend cannot count; the gateway estimates"


def test_x_api_key_is_accepted_as_the_virtual_key(gw, upstream):
    # No AIConsumers here: the key is ignored, but the request must pass and not leak it.
    c = anthropic.Anthropic(base_url=f"http://{gw.listen}", api_key="some-virtual-key", max_retries=0)
    c.messages.create(model="claude-native", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert "some-virtual-key" not in json.dumps(only(upstream, "/v1/messages")["headers"])
    c.close()


# === OpenAI SDK → gateway → anthropic backend (translated) ===


def test_openai_sdk_plain_on_anthropic_backend(oai, upstream):
    resp = oai.chat.completions.create(
        model="gpt-on-anthropic",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        max_tokens=50,
    )
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content == mock_text()
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == MOCK_CHUNKS
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    rec = only(upstream, "/v1/messages")
    assert rec["body"]["system"] == [{"type": "text", "text": "Be brief."}]
    assert rec["body"]["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert rec["body"]["max_tokens"] == 50
    assert rec["headers"].get("x-api-key") == UPSTREAM_KEY
    assert rec["headers"].get("anthropic-version") == "2023-06-01"
    assert "authorization" not in rec["headers"]


def test_openai_sdk_stream_on_anthropic_backend(oai, upstream):
    stream = oai.chat.completions.create(
        model="gpt-on-anthropic",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, chunks = collect_chat_stream(stream)
    assert text == mock_text()
    assert [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason] == ["stop"]
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].completion_tokens == MOCK_CHUNKS
    assert only(upstream, "/v1/messages")["body"]["stream"] is True


def test_openai_sdk_max_tokens_maps_to_length(oai, upstream):
    resp = oai.chat.completions.create(
        model="gpt-on-anthropic", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert resp.choices[0].finish_reason == "length"


@pytest.mark.parametrize("stream", [False, True])
def test_openai_sdk_tool_round_trip_on_anthropic_backend(oai, upstream, stream):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    kwargs = dict(model="gpt-on-anthropic", tools=[WEATHER_TOOL_OPENAI])
    if stream:
        chunks = list(oai.chat.completions.create(messages=messages, stream=True, **kwargs))
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        args = "".join(tc.function.arguments or "" for tc in calls)
        call_id = next(tc.id for tc in calls if tc.id)
        name = next(tc.function.name for tc in calls if tc.function and tc.function.name)
        assert len([tc for tc in calls if tc.function.arguments]) > 1, "arguments should stream in pieces"
        finish = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    else:
        resp = oai.chat.completions.create(messages=messages, **kwargs)
        tc = resp.choices[0].message.tool_calls[0]
        call_id, name, args = tc.id, tc.function.name, tc.function.arguments
        finish = [resp.choices[0].finish_reason]
    assert finish == ["tool_calls"]
    assert name == "get_weather" and json.loads(args) == MOCK_ARGS

    messages += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "18°C, sunny"},
    ]
    upstream.clear()
    final = oai.chat.completions.create(messages=messages, **kwargs)
    assert final.choices[0].message.content == mock_text()
    assert final.choices[0].finish_reason == "stop"

    sent = only(upstream, "/v1/messages")["body"]
    assert sent["tools"] == [WEATHER_TOOL_ANTHROPIC]
    assert sent["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": call_id, "name": "get_weather", "input": MOCK_ARGS}]}
    assert sent["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call_id, "content": [{"type": "text", "text": "18°C, sunny"}]}]}


def test_openai_sdk_unsupported_parameter_is_refused(oai, upstream):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(
            model="gpt-on-anthropic", messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_object"})
    assert e.value.body["param"] == "response_format"
    assert upstream.requests() == []
