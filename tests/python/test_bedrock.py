"""Amazon Bedrock (Converse / ConverseStream) backends, through the official SDKs.

* The official OpenAI Python SDK against a `bedrock` backend (translated): plain, streaming,
  tool-call round trips (plain and streamed), refused image URLs, errors.
* The official Anthropic Python SDK against it: plain and streaming.

The upstream is `switchyard-mock`, which speaks Converse, answers ConverseStream in AWS
event-stream framing and verifies the SigV4 signature of every Bedrock request with the same
credentials the gateway reads from its Secret; its request log shows what the gateway sent.
"""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from conftest import (
    collect_chat_stream,
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    CALLER_KEY,
    MOCK_CHUNKS,
    UPSTREAM_KEY,
    start_gateway,
)
from test_anthropic import MOCK_ARGS, WEATHER_TOOL_ANTHROPIC, WEATHER_TOOL_OPENAI, mock_text, only

MODEL_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"
# The model id is one percent-encoded path segment, as AWS's SDKs send (and sign) it.
CONVERSE = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
CONVERSE_STREAM = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream"


def config(mock_addr: str) -> str:
    return f"""\
apiVersion: v1
kind: Secret
metadata: {{name: aws}}
stringData: {{accessKeyId: "{AWS_ACCESS_KEY_ID}", secretAccessKey: "{AWS_SECRET_ACCESS_KEY}"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: aws-wrong}}
stringData: {{accessKeyId: "{AWS_ACCESS_KEY_ID}", secretAccessKey: "not-the-secret"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: bedrock}}
spec:
  provider: bedrock
  endpoint: http://{mock_addr}
  bedrock: {{region: us-east-1}}
  auth: {{awsSecretRef: {{name: aws}}}}
  models:
  - name: "{MODEL_ID}"
    pricing: {{inputPerMillion: "0.8", outputPerMillion: "4"}}
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: bedrock-throttled}}
spec:
  provider: bedrock
  endpoint: http://{mock_addr}
  bedrock: {{region: us-east-1}}
  auth: {{awsSecretRef: {{name: aws}}}}
  models: [{{name: "{MODEL_ID}"}}]
  headers: {{set: {{x-mock-status: "429"}}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: bedrock-bad-secret}}
spec:
  provider: bedrock
  endpoint: http://{mock_addr}
  bedrock: {{region: us-east-1}}
  auth: {{awsSecretRef: {{name: aws-wrong}}}}
  models: [{{name: "{MODEL_ID}"}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: bedrock}}
spec:
  match: {{models: ["claude-bedrock"]}}
  backends: [{{backendRef: {{name: bedrock}}, model: "{MODEL_ID}"}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: bedrock-throttled}}
spec:
  match: {{models: ["bedrock-throttled"]}}
  backends: [{{backendRef: {{name: bedrock-throttled}}, model: "{MODEL_ID}"}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: bedrock-bad-secret}}
spec:
  match: {{models: ["bedrock-bad-secret"]}}
  backends: [{{backendRef: {{name: bedrock-bad-secret}}, model: "{MODEL_ID}"}}]
"""


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    g = start_gateway(tmp_path_factory.mktemp("bedrock"), config(mock.addr), name="bedrock-gw")
    yield g
    g.proc.stop()


def signed_headers(rec: dict) -> None:
    h = rec["headers"]
    auth = h.get("authorization", "")
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={AWS_ACCESS_KEY_ID}/")
    assert "/us-east-1/bedrock/aws4_request" in auth
    assert "x-amz-date" in h
    dump = json.dumps(h)
    assert CALLER_KEY not in dump and UPSTREAM_KEY not in dump
    assert AWS_SECRET_ACCESS_KEY not in dump


# === OpenAI SDK → gateway → bedrock backend (translated) ===


def test_openai_sdk_plain_on_bedrock(oai, upstream):
    resp = oai.chat.completions.create(
        model="claude-bedrock",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        max_tokens=50,
        temperature=0.4,
        stop=["STOP"],
    )
    assert resp.object == "chat.completion"
    # Converse answers name no model: the gateway names the one it called.
    assert resp.model == MODEL_ID
    assert resp.choices[0].message.content == mock_text()
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == MOCK_CHUNKS
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens

    rec = only(upstream, CONVERSE)
    assert rec["body"] == {
        "system": [{"text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "inferenceConfig": {"maxTokens": 50, "temperature": 0.4, "stopSequences": ["STOP"]},
    }
    signed_headers(rec)


def test_openai_sdk_stream_on_bedrock(oai, upstream):
    stream = oai.chat.completions.create(
        model="claude-bedrock",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, chunks = collect_chat_stream(stream)
    assert text == mock_text()
    assert {c.model for c in chunks} == {MODEL_ID}
    assert [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason] == ["stop"]
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].completion_tokens == MOCK_CHUNKS
    rec = only(upstream, CONVERSE_STREAM)
    assert rec["headers"].get("accept") == "application/vnd.amazon.eventstream"
    signed_headers(rec)


def test_openai_sdk_max_tokens_maps_to_length_on_bedrock(oai, upstream):
    resp = oai.chat.completions.create(
        model="claude-bedrock", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert resp.choices[0].finish_reason == "length"
    assert resp.choices[0].message.content == mock_text(2)


@pytest.mark.parametrize("stream", [False, True])
def test_openai_sdk_tool_round_trip_on_bedrock(oai, upstream, stream):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    kwargs = dict(model="claude-bedrock", tools=[WEATHER_TOOL_OPENAI], tool_choice="required")
    if stream:
        chunks = list(oai.chat.completions.create(messages=messages, stream=True, **kwargs))
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        args = "".join(tc.function.arguments or "" for tc in calls)
        call_id = next(tc.id for tc in calls if tc.id)
        name = next(tc.function.name for tc in calls if tc.function and tc.function.name)
        finish = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
        # The arguments arrive in several pieces, as Bedrock streamed them.
        assert len([tc for tc in calls if tc.function and tc.function.arguments]) > 1
    else:
        resp = oai.chat.completions.create(messages=messages, **kwargs)
        tc = resp.choices[0].message.tool_calls[0]
        call_id, name, args = tc.id, tc.function.name, tc.function.arguments
        finish = [resp.choices[0].finish_reason]
    assert finish == ["tool_calls"]
    assert name == "get_weather" and json.loads(args) == MOCK_ARGS
    assert call_id.startswith("tooluse_")
    first = only(upstream, CONVERSE_STREAM if stream else CONVERSE)["body"]
    assert first["toolConfig"] == {
        "tools": [{"toolSpec": {
            "name": "get_weather", "description": "Current weather for a city.",
            "inputSchema": {"json": WEATHER_TOOL_OPENAI["function"]["parameters"]}}}],
        "toolChoice": {"any": {}},
    }

    messages += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "18°C, sunny"},
    ]
    upstream.clear()
    final = oai.chat.completions.create(
        messages=messages, model="claude-bedrock", tools=[WEATHER_TOOL_OPENAI])
    assert final.choices[0].message.content == mock_text()
    assert final.choices[0].finish_reason == "stop"

    sent = only(upstream, CONVERSE)["body"]
    assert sent["messages"][1] == {"role": "assistant", "content": [
        {"toolUse": {"toolUseId": call_id, "name": "get_weather", "input": MOCK_ARGS}}]}
    assert sent["messages"][2] == {"role": "user", "content": [
        {"toolResult": {"toolUseId": call_id, "content": [{"text": "18°C, sunny"}]}}]}


def test_openai_sdk_images_on_bedrock(oai, upstream):
    # Inline images go as bytes; a URL cannot (Converse does not fetch), and is refused
    # before anything is sent, naming the part.
    oai.chat.completions.create(model="claude-bedrock", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
    sent = only(upstream, CONVERSE)["body"]
    assert sent["messages"][0]["content"][1] == {
        "image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}
    upstream.clear()
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="claude-bedrock", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert e.value.body["param"] == "messages[0].content[0]"
    assert upstream.requests() == []


def test_bedrock_errors_reach_openai_callers_classified(oai, upstream):
    # ThrottlingException: a rate limit, with the exception's name as the code.
    with pytest.raises(openai.RateLimitError) as e:
        oai.chat.completions.create(
            model="bedrock-throttled", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 429
    assert e.value.body["code"] == "ThrottlingException"
    assert e.value.body["type"] == "upstream_error"
    # A signature made with the wrong secret is the gateway's credentials, not the caller.
    with pytest.raises(openai.APIStatusError) as e:
        oai.chat.completions.create(
            model="bedrock-bad-secret", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 502
    assert e.value.body["code"] == "upstream_auth_failed"


# === Anthropic SDK → gateway → bedrock backend (translated) ===


def test_anthropic_sdk_plain_on_bedrock(claude, upstream):
    msg = claude.messages.create(
        model="claude-bedrock",
        max_tokens=100,
        system="You are a test.",
        messages=[{"role": "user", "content": "Say something."}],
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.model == MODEL_ID
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == mock_text()
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens == MOCK_CHUNKS
    body = only(upstream, CONVERSE)["body"]
    assert body["system"] == [{"text": "You are a test."}]
    assert body["inferenceConfig"] == {"maxTokens": 100}


def test_anthropic_sdk_stream_on_bedrock(claude, upstream):
    with claude.messages.stream(
        model="claude-bedrock", max_tokens=100,
        messages=[{"role": "user", "content": "Stream, please."}],
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start"
    assert "content_block_delta" in events and events[-1] == "message_stop"
    assert final.content[0].text == mock_text()
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == MOCK_CHUNKS
    signed_headers(only(upstream, CONVERSE_STREAM))


def test_anthropic_sdk_tool_round_trip_on_bedrock(claude, upstream):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    kwargs = dict(model="claude-bedrock", max_tokens=200, tools=[WEATHER_TOOL_ANTHROPIC])
    with claude.messages.stream(messages=messages, **kwargs) as s:
        list(s)
        first = s.get_final_message()
    assert first.stop_reason == "tool_use"
    [call] = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.input == MOCK_ARGS
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": "18°C"},
        ]},
    ]
    upstream.clear()
    final = claude.messages.create(messages=messages, **kwargs)
    assert final.stop_reason == "end_turn" and final.content[0].text == mock_text()
