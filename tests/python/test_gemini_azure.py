"""Gemini and Azure OpenAI backends, through the official SDKs.

* The official OpenAI Python SDK against a `gemini` backend (translated): plain, streaming,
  tool-call round trips, errors.
* The official Anthropic Python SDK against a `gemini` backend (translated).
* The official OpenAI Python SDK against an `azure-openai` backend (deployment URLs,
  `api-key`, `api-version`), and the Anthropic SDK against it (translated).

The upstream is `switchyard-mock`, which speaks Gemini's `generateContent` and Azure's
deployment paths; its request log shows what the gateway actually sent.
"""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from conftest import CALLER_KEY, MOCK_CHUNKS, UPSTREAM_KEY, collect_chat_stream, start_gateway
from test_anthropic import MOCK_ARGS, WEATHER_TOOL_ANTHROPIC, WEATHER_TOOL_OPENAI, mock_text, only

GEMINI_GENERATE = "/v1beta/models/gemini-mock:generateContent"
GEMINI_STREAM = "/v1beta/models/gemini-mock:streamGenerateContent"
AZURE_CHAT = "/openai/deployments/gpt-4o-prod/chat/completions"


def config(mock_addr: str) -> str:
    return f"""\
apiVersion: v1
kind: Secret
metadata: {{name: upstream-key}}
stringData: {{apiKey: "{UPSTREAM_KEY}", wrong: "not-the-key"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: gemini}}
spec:
  provider: gemini
  endpoint: http://{mock_addr}
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models:
  - name: gemini-mock
    pricing: {{inputPerMillion: "0.3", outputPerMillion: "2.5", cachedInputPerMillion: "0.075"}}
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: gemini-limited}}
spec:
  provider: gemini
  endpoint: http://{mock_addr}
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models: [{{name: gemini-mock}}]
  headers: {{set: {{x-mock-status: "429"}}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: gemini-bad-key}}
spec:
  provider: gemini
  endpoint: http://{mock_addr}
  auth: {{secretRef: {{name: upstream-key, key: wrong}}}}
  models: [{{name: gemini-mock}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: azure}}
spec:
  provider: azure-openai
  endpoint: http://{mock_addr}
  azure: {{apiVersion: 2025-04-01-preview}}
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models:
  - name: gpt-4o-prod
    pricing: {{inputPerMillion: "2.5", outputPerMillion: "10"}}
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: gemini}}
spec:
  match: {{models: ["gemini"]}}
  backends: [{{backendRef: {{name: gemini}}, model: gemini-mock}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: gemini-limited}}
spec:
  match: {{models: ["gemini-limited"]}}
  backends: [{{backendRef: {{name: gemini-limited}}, model: gemini-mock}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: gemini-bad-key}}
spec:
  match: {{models: ["gemini-bad-key"]}}
  backends: [{{backendRef: {{name: gemini-bad-key}}, model: gemini-mock}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: azure}}
spec:
  match: {{models: ["gpt-4o"]}}
  backends: [{{backendRef: {{name: azure}}, model: gpt-4o-prod}}]
"""


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    g = start_gateway(tmp_path_factory.mktemp("gemini"), config(mock.addr), name="gemini-gw")
    yield g
    g.proc.stop()


def gemini_headers(rec: dict) -> None:
    h = rec["headers"]
    assert h.get("x-goog-api-key") == UPSTREAM_KEY
    assert "authorization" not in h and "x-api-key" not in h
    assert CALLER_KEY not in json.dumps(h)


# === OpenAI SDK → gateway → gemini backend (translated) ===


def test_openai_sdk_plain_on_gemini(oai, upstream):
    resp = oai.chat.completions.create(
        model="gemini",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        max_tokens=50,
        temperature=0.4,
        stop=["STOP"],
    )
    assert resp.object == "chat.completion"
    assert resp.model == "gemini-mock"
    assert resp.choices[0].message.content == mock_text()
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == MOCK_CHUNKS
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens

    rec = only(upstream, GEMINI_GENERATE)
    assert rec["query"] is None
    body = rec["body"]
    assert body == {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"maxOutputTokens": 50, "temperature": 0.4, "stopSequences": ["STOP"]},
    }
    gemini_headers(rec)


def test_openai_sdk_stream_on_gemini(oai, upstream):
    stream = oai.chat.completions.create(
        model="gemini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, chunks = collect_chat_stream(stream)
    assert text == mock_text()
    assert [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason] == ["stop"]
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].completion_tokens == MOCK_CHUNKS
    rec = only(upstream, GEMINI_STREAM)
    assert rec["query"] == "alt=sse"
    assert "stream" not in rec["body"]


def test_openai_sdk_max_tokens_maps_to_length_on_gemini(oai, upstream):
    resp = oai.chat.completions.create(
        model="gemini", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert resp.choices[0].finish_reason == "length"
    assert resp.choices[0].message.content == mock_text(2)


def test_openai_sdk_json_mode_on_gemini(oai, upstream):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    oai.chat.completions.create(
        model="gemini", messages=[{"role": "user", "content": "a number"}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "n", "strict": True, "schema": schema}})
    gen = only(upstream, GEMINI_GENERATE)["body"]["generationConfig"]
    assert gen == {"responseMimeType": "application/json", "responseJsonSchema": schema}


@pytest.mark.parametrize("stream", [False, True])
def test_openai_sdk_tool_round_trip_on_gemini(oai, upstream, stream):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    kwargs = dict(model="gemini", tools=[WEATHER_TOOL_OPENAI], tool_choice="required")
    if stream:
        chunks = list(oai.chat.completions.create(messages=messages, stream=True, **kwargs))
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        args = "".join(tc.function.arguments or "" for tc in calls)
        call_id = next(tc.id for tc in calls if tc.id)
        name = next(tc.function.name for tc in calls if tc.function and tc.function.name)
        finish = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    else:
        resp = oai.chat.completions.create(messages=messages, **kwargs)
        tc = resp.choices[0].message.tool_calls[0]
        call_id, name, args = tc.id, tc.function.name, tc.function.arguments
        finish = [resp.choices[0].finish_reason]
    assert finish == ["tool_calls"]
    assert name == "get_weather" and json.loads(args) == MOCK_ARGS
    assert call_id.startswith("call_")
    first = only(upstream, GEMINI_STREAM if stream else GEMINI_GENERATE)["body"]
    assert first["tools"] == [{"functionDeclarations": [{
        "name": "get_weather", "description": "Current weather for a city.",
        "parametersJsonSchema": WEATHER_TOOL_OPENAI["function"]["parameters"]}]}]
    assert first["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}

    messages += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "18°C, sunny"},
    ]
    upstream.clear()
    final = oai.chat.completions.create(messages=messages, model="gemini", tools=[WEATHER_TOOL_OPENAI])
    assert final.choices[0].message.content == mock_text()
    assert final.choices[0].finish_reason == "stop"

    sent = only(upstream, GEMINI_GENERATE)["body"]
    assert sent["contents"][1] == {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": MOCK_ARGS},
         "thoughtSignature": "skip_thought_signature_validator"}]}
    # Gemini matches results to calls by function name, and wants an object as the response.
    assert sent["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"output": "18°C, sunny"}}}]}


def test_openai_sdk_image_url_without_media_type_is_refused(oai, upstream):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="gemini", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/render?id=7"}}]}])
    assert e.value.body["param"] == "messages[0].content[0]"
    assert upstream.requests() == []


def test_gemini_errors_reach_openai_callers_classified(oai, upstream):
    # RESOURCE_EXHAUSTED: a rate limit, in OpenAI's shape, with Gemini's status name as code.
    with pytest.raises(openai.RateLimitError) as e:
        oai.chat.completions.create(model="gemini-limited", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 429
    assert e.value.body["code"] == "RESOURCE_EXHAUSTED"
    assert e.value.body["type"] == "upstream_error"
    # Gemini refuses a bad key with 400 INVALID_ARGUMENT / API_KEY_INVALID: that is the
    # gateway's key, not the caller's request.
    with pytest.raises(openai.APIStatusError) as e:
        oai.chat.completions.create(model="gemini-bad-key", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 502
    assert e.value.body["code"] == "upstream_auth_failed"


# === Anthropic SDK → gateway → gemini backend (translated) ===


def test_anthropic_sdk_plain_on_gemini(claude, upstream):
    msg = claude.messages.create(
        model="gemini",
        max_tokens=100,
        system="You are a test.",
        messages=[{"role": "user", "content": "Say something."}],
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.model == "gemini-mock"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == mock_text()
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens == MOCK_CHUNKS
    body = only(upstream, GEMINI_GENERATE)["body"]
    assert body["systemInstruction"] == {"parts": [{"text": "You are a test."}]}
    assert body["generationConfig"] == {"maxOutputTokens": 100}


def test_anthropic_sdk_stream_on_gemini(claude, upstream):
    with claude.messages.stream(
        model="gemini", max_tokens=100, messages=[{"role": "user", "content": "Stream, please."}],
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start"
    assert "content_block_delta" in events and events[-1] == "message_stop"
    assert final.content[0].text == mock_text()
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == MOCK_CHUNKS
    assert only(upstream, GEMINI_STREAM)["query"] == "alt=sse"


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_tool_round_trip_on_gemini(claude, upstream, stream):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    kwargs = dict(model="gemini", max_tokens=200, tools=[WEATHER_TOOL_ANTHROPIC])
    if stream:
        with claude.messages.stream(messages=messages, **kwargs) as s:
            list(s)
            first = s.get_final_message()
    else:
        first = claude.messages.create(messages=messages, **kwargs)
    assert first.stop_reason == "tool_use"
    [call] = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.input == MOCK_ARGS

    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": '{"temp_c": 18}'},
        ]},
    ]
    upstream.clear()
    final = claude.messages.create(messages=messages, **kwargs)
    assert final.stop_reason == "end_turn" and final.content[0].text == mock_text()
    sent = only(upstream, GEMINI_GENERATE)["body"]
    # A tool that answered with a JSON object reaches Gemini as that object.
    assert sent["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"temp_c": 18}}}]}


# === OpenAI SDK → gateway → azure-openai backend ===


def test_openai_sdk_on_azure(oai, upstream):
    resp = oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=50)
    assert resp.choices[0].message.content == mock_text()
    assert resp.usage.completion_tokens == MOCK_CHUNKS
    rec = only(upstream, AZURE_CHAT)
    assert rec["query"] == "api-version=2025-04-01-preview"
    h = rec["headers"]
    assert h.get("api-key") == UPSTREAM_KEY
    assert "authorization" not in h
    assert CALLER_KEY not in json.dumps(h)
    # The OpenAI body passes through byte for byte but for the model.
    assert rec["body"] == {"model": "gpt-4o-prod", "messages": [{"role": "user", "content": "hi"}],
                           "max_tokens": 50}


def test_openai_sdk_stream_on_azure(oai, upstream):
    text, chunks = collect_chat_stream(oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert text == mock_text()
    # The caller did not ask for usage: the chunk the gateway asked for does not reach it.
    assert not any(c.usage for c in chunks)
    rec = only(upstream, AZURE_CHAT)
    assert rec["body"]["stream_options"] == {"include_usage": True}


def test_openai_sdk_tool_round_trip_on_azure(oai, upstream):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    resp = oai.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL_OPENAI])
    tc = resp.choices[0].message.tool_calls[0]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert json.loads(tc.function.arguments) == MOCK_ARGS
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [tc.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": tc.id, "content": "18°C, sunny"},
    ]
    final = oai.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL_OPENAI])
    assert final.choices[0].message.content == mock_text()


def test_anthropic_sdk_on_azure(claude, upstream):
    msg = claude.messages.create(
        model="gpt-4o", max_tokens=100, messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text == mock_text() and msg.stop_reason == "end_turn"
    rec = only(upstream, AZURE_CHAT)
    # Azure serves OpenAI's models, with OpenAI's parameter names.
    assert rec["body"]["max_completion_tokens"] == 100
    assert rec["headers"].get("api-key") == UPSTREAM_KEY
