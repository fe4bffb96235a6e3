"""The OpenAI Responses API (`POST /v1/responses`) through the official OpenAI Python SDK.

Backends that serve the Responses API themselves (`openai`, `azure-openai`) get the request
passed through to their `/responses` (see test_responses_passthrough.py for what that keeps);
every other backend serves it, statelessly, from its chat API. Each test runs against an
`openai`, an `openai-compatible`, an `azure-openai`, an `anthropic`, a `gemini` and a `bedrock`
backend, all played by `switchyard-mock`, whose request log shows
what the gateway actually sent: plain, streaming (raw events and the SDK's `responses.stream`
helper) and a function-call round trip; then the errors, in OpenAI's shape.
"""

from __future__ import annotations

import json
import secrets
import time

import openai
import pytest

from conftest import (
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    CALLER_KEY,
    MOCK_CHUNKS,
    UPSTREAM_KEY,
    start_gateway,
)
from test_anthropic import MOCK_ARGS, WEATHER_TOOL_ANTHROPIC, mock_text, only

# The Responses function tool is flat: no `function` wrapper.
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": WEATHER_TOOL_ANTHROPIC["input_schema"],
}

# Route (the model the caller names) → the upstream path of a plain and of a streamed call.
BACKENDS = {
    "resp-openai": ("/v1/chat/completions", "/v1/chat/completions"),
    # provider `openai`: passed through to its own Responses API
    "resp-openai-native": ("/v1/responses", "/v1/responses"),
    # Azure's v1 Responses API: the deployment travels in the body's `model`
    "resp-azure": ("/openai/v1/responses", "/openai/v1/responses"),
    "resp-anthropic": ("/v1/messages", "/v1/messages"),
    "resp-gemini": (
        "/v1beta/models/gemini-mock:generateContent",
        "/v1beta/models/gemini-mock:streamGenerateContent",
    ),
    "resp-bedrock": (
        "/model/amazon.nova-lite-v1%3A0/converse",
        "/model/amazon.nova-lite-v1%3A0/converse-stream",
    ),
}


def config(mock_addr: str) -> str:
    return f"""\
apiVersion: v1
kind: Secret
metadata: {{name: upstream-key}}
stringData: {{apiKey: "{UPSTREAM_KEY}"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: aws}}
stringData: {{accessKeyId: "{AWS_ACCESS_KEY_ID}", secretAccessKey: "{AWS_SECRET_ACCESS_KEY}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: bedrock}}
spec:
  provider: bedrock
  endpoint: http://{mock_addr}
  bedrock: {{region: us-east-1}}
  auth: {{awsSecretRef: {{name: aws}}}}
  models: [{{name: "amazon.nova-lite-v1:0"}}]
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: resp-bedrock}}
spec:
  match: {{models: ["resp-bedrock"]}}
  backends: [{{backendRef: {{name: bedrock}}, model: "amazon.nova-lite-v1:0"}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: oai-native}}
spec:
  provider: openai
  endpoint: http://{mock_addr}/v1
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models: [{{name: mock-model}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: resp-openai-native}}
spec:
  match: {{models: ["resp-openai-native"]}}
  backends: [{{backendRef: {{name: oai-native}}, model: mock-model}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: oai}}
spec:
  provider: openai-compatible
  endpoint: http://{mock_addr}/v1
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models: [{{name: mock-model}}]
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: claude}}
spec:
  provider: anthropic
  endpoint: http://{mock_addr}
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models: [{{name: claude-mock}}]
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: gemini}}
spec:
  provider: gemini
  endpoint: http://{mock_addr}
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models: [{{name: gemini-mock}}]
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
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
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: resp-azure}}
spec:
  match: {{models: ["resp-azure"]}}
  backends: [{{backendRef: {{name: azure}}, model: gpt-4o-prod}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: resp-openai}}
spec:
  match: {{models: ["resp-openai"]}}
  backends: [{{backendRef: {{name: oai}}, model: mock-model}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: resp-anthropic}}
spec:
  match: {{models: ["resp-anthropic"]}}
  backends: [{{backendRef: {{name: claude}}, model: claude-mock}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: resp-gemini}}
spec:
  match: {{models: ["resp-gemini"]}}
  backends: [{{backendRef: {{name: gemini}}, model: gemini-mock}}]
"""


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    g = start_gateway(tmp_path_factory.mktemp("responses"), config(mock.addr), name="responses-gw")
    yield g
    g.proc.stop()


# Routes whose backend serves the Responses API: the request reaches it unchanged.
PASSTHROUGH = ("resp-openai-native", "resp-azure")


def system_prompt(route: str, body: dict) -> str:
    """The system prompt as the backend's format carries it."""
    if route in PASSTHROUGH:
        return body["instructions"]
    if route == "resp-openai":
        return "".join(m["content"] for m in body["messages"] if m["role"] == "system")
    if route == "resp-anthropic":
        s = body.get("system", "")
        return s if isinstance(s, str) else "".join(b["text"] for b in s)
    if route == "resp-bedrock":
        return "".join(b["text"] for b in body["system"])
    return "".join(p["text"] for p in body["systemInstruction"]["parts"])


def check_events(events: list) -> None:
    """What every Responses stream holds: numbered events, the response first and last."""
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[1].type == "response.in_progress"
    assert events[-1].type == "response.completed"
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1


ROUTES = list(BACKENDS)


@pytest.mark.parametrize("route", ROUTES)
def test_plain(oai, upstream, route):
    resp = oai.responses.create(
        model=route,
        instructions="Be brief.",
        input="hi",
        max_output_tokens=50,
        temperature=0.4,
        store=True,
        metadata={"ticket": "7"},
    )
    assert resp.object == "response"
    assert resp.id.startswith("resp_")
    assert resp.status == "completed" and resp.incomplete_details is None
    assert resp.output_text == mock_text()
    [msg] = resp.output
    assert msg.type == "message" and msg.role == "assistant" and msg.status == "completed"
    assert msg.id.startswith("msg_")
    assert msg.content[0].type == "output_text" and msg.content[0].annotations == []
    assert resp.usage.output_tokens == MOCK_CHUNKS
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    # Translated, nothing is stored, whatever the caller asked; passed through, the provider
    # stores it as asked. The settings are echoed either way.
    assert resp.store is (route in PASSTHROUGH)
    assert resp.instructions == "Be brief."
    assert resp.max_output_tokens == 50 and resp.metadata == {"ticket": "7"}

    rec = only(upstream, BACKENDS[route][0])
    assert system_prompt(route, rec["body"]) == "Be brief."
    assert CALLER_KEY not in json.dumps(rec["headers"])


@pytest.mark.parametrize("route", ROUTES)
def test_stream_events(oai, upstream, route):
    events = list(oai.responses.create(model=route, input="hi", stream=True))
    check_events(events)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == mock_text()
    [done] = [e for e in events if e.type == "response.output_text.done"]
    assert done.text == mock_text()
    final = events[-1].response
    assert final.output_text == mock_text()
    assert final.usage.output_tokens == MOCK_CHUNKS
    only(upstream, BACKENDS[route][1])


@pytest.mark.parametrize("route", ROUTES)
def test_stream_helper(oai, upstream, route):
    with oai.responses.stream(model=route, input="hi", instructions="Be brief.") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == mock_text()
    assert final.output_text == mock_text()
    assert final.status == "completed"


def test_max_output_tokens_makes_an_incomplete_response(oai, upstream):
    resp = oai.responses.create(model="resp-openai", input="hi", max_output_tokens=2)
    assert resp.status == "incomplete"
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert resp.output_text == mock_text(2)

    events = list(oai.responses.create(model="resp-anthropic", input="hi", max_output_tokens=2, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("route", ROUTES)
def test_function_call_round_trip(oai, upstream, route, stream):
    input_items: list = [{"role": "user", "content": "Weather in Paris?"}]
    kwargs = dict(model=route, tools=[WEATHER_TOOL], tool_choice="required")
    if stream:
        with oai.responses.stream(input=input_items, **kwargs) as s:
            arg_deltas = [e.delta for e in s if e.type == "response.function_call_arguments.delta"]
            first = s.get_final_response()
        assert json.loads("".join(arg_deltas)) == MOCK_ARGS
    else:
        first = oai.responses.create(input=input_items, **kwargs)
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1, first.output
    call = calls[0]
    assert call.name == "get_weather" and json.loads(call.arguments) == MOCK_ARGS
    assert call.id.startswith("fc_") and call.call_id and call.status == "completed"
    assert first.tools[0].name == "get_weather"

    # The caller sends the model's output back with the result for its call_id.
    input_items += [o.model_dump(exclude_none=True) for o in first.output]
    input_items.append({"type": "function_call_output", "call_id": call.call_id, "output": "18°C, sunny"})
    upstream.clear()
    final = oai.responses.create(model=route, input=input_items, tools=[WEATHER_TOOL])
    assert final.output_text == mock_text()
    assert final.status == "completed"

    sent = only(upstream, BACKENDS[route][0])["body"]
    if route in PASSTHROUGH:
        # The caller's items, unchanged: the provider pairs the output with its call.
        assert sent["input"] == json.loads(json.dumps(input_items))
        assert sent["input"][1]["type"] == "function_call"
    elif route == "resp-openai":
        assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.call_id, "content": "18°C, sunny"}
    elif route == "resp-anthropic":
        assert sent["messages"][1]["content"][-1]["id"] == call.call_id
        assert sent["messages"][1]["content"][-1]["input"] == MOCK_ARGS
        assert sent["messages"][2]["content"][0]["tool_use_id"] == call.call_id
    elif route == "resp-bedrock":
        assert sent["messages"][1]["content"][-1]["toolUse"]["toolUseId"] == call.call_id
        assert sent["messages"][1]["content"][-1]["toolUse"]["input"] == MOCK_ARGS
        assert sent["messages"][2]["content"][0]["toolResult"]["toolUseId"] == call.call_id
    else:
        assert sent["contents"][1]["parts"][0]["functionCall"]["args"] == MOCK_ARGS
        assert sent["contents"][2]["parts"][0]["functionResponse"]["name"] == "get_weather"


def test_reasoning_effort_maps_to_each_backends_setting(oai, upstream):
    # Azure serves the Responses API: `reasoning` reaches it as the caller set it.
    oai.responses.create(model="resp-azure", input="hi", reasoning={"effort": "low"}, max_output_tokens=100)
    body = only(upstream, BACKENDS["resp-azure"][0])["body"]
    assert body["reasoning"] == {"effort": "low"} and body["max_output_tokens"] == 100
    assert body["model"] == "gpt-4o-prod" and "thinking" not in body

    upstream.clear()
    resp = oai.responses.create(model="resp-anthropic", input="hi", reasoning={"effort": "low"})
    assert resp.reasoning.effort == "low"
    body = only(upstream, "/v1/messages")["body"]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert body["max_tokens"] > 1024 and "reasoning_effort" not in body

    # A budget Anthropic would refuse beside a changed temperature is not made up.
    upstream.clear()
    oai.responses.create(model="resp-anthropic", input="hi", reasoning={"effort": "low"}, temperature=0.2)
    assert "thinking" not in only(upstream, "/v1/messages")["body"]

    upstream.clear()
    oai.responses.create(model="resp-gemini", input="hi", reasoning={"effort": "high"})
    gen = only(upstream, BACKENDS["resp-gemini"][0])["body"]["generationConfig"]
    assert gen["thinkingConfig"] == {"thinkingBudget": 4096, "includeThoughts": True}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_reasoning_round_trip_keeps_anthropic_signed_thinking(oai, upstream, stream):
    """The mock, like Anthropic, refuses thinking it did not sign, and a tool-calling turn
    handed back without its thinking: the reasoning item must carry both through."""
    kwargs = dict(model="resp-anthropic", tools=[WEATHER_TOOL], reasoning={"effort": "low"})
    input_items: list = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        with oai.responses.stream(input=input_items, **kwargs) as s:
            summary = [e.delta for e in s if e.type == "response.reasoning_summary_text.delta"]
            first = s.get_final_response()
        assert "".join(summary) == "Mock thinking about the request."
    else:
        first = oai.responses.create(input=input_items, **kwargs)
    assert [o.type for o in first.output] == ["reasoning", "function_call"]
    rs, call = first.output
    assert rs.id.startswith("rs_")
    assert rs.summary[0].type == "summary_text"
    assert rs.summary[0].text == "Mock thinking about the request."
    assert rs.encrypted_content.startswith("switchyard:signature:mock-signature-")
    signature = rs.encrypted_content.removeprefix("switchyard:signature:")

    input_items += [o.model_dump(exclude_none=True) for o in first.output]
    input_items.append({"type": "function_call_output", "call_id": call.call_id, "output": "18°C"})
    upstream.clear()
    final = oai.responses.create(input=input_items, **kwargs)
    assert final.output_text == mock_text()
    assert [o.type for o in final.output] == ["reasoning", "message"]
    sent = only(upstream, "/v1/messages")["body"]
    assert sent["messages"][1]["content"][0] == {
        "type": "thinking", "thinking": "Mock thinking about the request.", "signature": signature}

    # Without the reasoning item Anthropic would refuse thinking for the tool-calling turn,
    # so the effort, which only tunes deliberation, does not turn it on.
    without = [i for i in input_items if not (isinstance(i, dict) and i.get("type") == "reasoning")]
    upstream.clear()
    assert oai.responses.create(input=without, **kwargs).output_text == mock_text()
    assert "thinking" not in only(upstream, "/v1/messages")["body"]


# === errors, in OpenAI's shape ===


def test_unknown_model_is_a_404(oai, upstream):
    with pytest.raises(openai.NotFoundError) as e:
        oai.responses.create(model="no-such-model", input="hi")
    err = e.value.body
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert err["type"] == "invalid_request_error"
    assert upstream.requests() == []


def test_previous_response_id_is_refused(oai, upstream):
    with pytest.raises(openai.BadRequestError) as e:
        oai.responses.create(model="resp-openai", input="hi", previous_response_id="resp_123")
    err = e.value.body
    assert err["param"] == "previous_response_id"
    assert err["code"] == "unsupported_parameter"
    assert "previous_response_id" in err["message"]
    assert upstream.requests() == []


def test_hosted_tools_are_left_out(oai, upstream):
    # They run on OpenAI's servers, which no backend call reaches: the model answers without
    # them (the response still echoes the caller's tools).
    resp = oai.responses.create(
        model="resp-anthropic", input="hi", tools=[WEATHER_TOOL, {"type": "web_search"}])
    assert [t.type for t in resp.tools] == ["function", "web_search"]
    assert [t["name"] for t in only(upstream, "/v1/messages")["body"]["tools"]] == ["get_weather"]


def test_tools_the_client_runs_are_not_called_built_in(oai, upstream):
    with pytest.raises(openai.BadRequestError) as e:
        oai.responses.create(
            model="resp-anthropic", input="hi", tools=[WEATHER_TOOL, {"type": "custom", "name": "apply_patch"}])
    assert e.value.body["param"] == "tools[1].type"
    assert "built-in" not in e.value.body["message"]
    assert upstream.requests() == []


def test_access_log_names_the_operation(gw, oai, upstream):
    rid = "req-responses-" + secrets.token_hex(4)
    oai.responses.create(model="resp-openai", input="hi", extra_headers={"x-request-id": rid})
    deadline = time.monotonic() + 5.0
    rec = None
    while rec is None and time.monotonic() < deadline:
        for line in gw.proc.output().splitlines():
            if rid in line and '"request"' in line:
                rec = json.loads(line)
        time.sleep(0.02)
    assert rec is not None, "no access log line for the request"
    assert rec["operation"] == "responses"
    assert rec["route"].endswith("resp-openai") and rec["status"] == 200


def test_json_mode_towards_anthropic_names_text_format(oai, upstream):
    with pytest.raises(openai.BadRequestError) as e:
        oai.responses.create(model="resp-anthropic", input="hi", text={"format": {"type": "json_object"}})
    assert e.value.body["param"] == "text.format"
    assert upstream.requests() == []
