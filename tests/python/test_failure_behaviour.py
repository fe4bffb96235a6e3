"""What the official SDKs see when a provider fails in ways a status code does not say: a
stream that stops early, a 200 whose body is not JSON, an error message quoting the
gateway's key. The mock injects each fault (`x-mock-fault`, set per backend in
`spec.headers`); the gateway's own log (access log included) is checked too.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Optional

import anthropic
import openai
import pytest

from conftest import CALLER_KEY, UPSTREAM_KEY, Gateway, Mock, openai_client, start_gateway

MESSAGES = [{"role": "user", "content": "Tell me something"}]


def config(mock: Mock) -> str:
    """Per fault, an OpenAI-compatible and an Anthropic backend on the mock, and a route to
    each: `<fault>` and `claude-<fault>`."""
    docs = [
        f"""\
apiVersion: v1
kind: Secret
metadata: {{name: upstream-key}}
stringData: {{apiKey: "{UPSTREAM_KEY}"}}
"""
    ]
    faults = {
        "truncated": {"x-mock-fault": "truncate-stream", "x-mock-reset-after": "5"},
        "malformed": {"x-mock-fault": "malformed-json"},
        "echo": {"x-mock-fault": "echo-key", "x-mock-status": "400"},
    }
    for name, headers in faults.items():
        set_headers = ", ".join(f'{k}: "{v}"' for k, v in headers.items())
        for provider, endpoint, model, prefix in (
            ("openai-compatible", f"{mock.url}/v1", "mock-model", ""),
            ("anthropic", mock.url, "claude-mock", "claude-"),
        ):
            docs.append(
                f"""\
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: {prefix}{name}}}
spec:
  provider: {provider}
  endpoint: {endpoint}
  auth: {{secretRef: {{name: upstream-key, key: apiKey}}}}
  models: [{{name: {model}}}]
  headers: {{set: {{{set_headers}}}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: {prefix}{name}}}
spec:
  match: {{models: ["{prefix}{name}"]}}
  backends: [{{backendRef: {{name: {prefix}{name}}}, model: {model}}}]
"""
            )
    return "---\n".join(docs)


@pytest.fixture(scope="module")
def gw(mock: Mock, tmp_path_factory) -> Gateway:
    g = start_gateway(tmp_path_factory.mktemp("failures"), config(mock), name="failures")
    yield g
    g.proc.stop()


def access_line(gw: Gateway, rid: str, timeout: float = 10.0) -> dict:
    """The access log line of request `rid` (written when the request ends)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in gw.proc.output().splitlines():
            if rid in line and '"message":"request"' in line.replace(" ", ""):
                return json.loads(line)
        assert time.monotonic() < deadline, f"no access log line for {rid}:\n{gw.proc.output()}"
        time.sleep(0.05)


def rid() -> str:
    return "req-fault-" + secrets.token_hex(4)


@pytest.mark.parametrize("model", ["truncated", "claude-truncated"])
def test_openai_sdk_raises_on_a_stream_cut_short(gw: Gateway, oai: openai.OpenAI, model: str):
    request_id = rid()
    stream = oai.chat.completions.create(
        model=model, messages=MESSAGES, stream=True, extra_headers={"x-request-id": request_id}
    )
    text = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            if chunk.choices:
                text.append(chunk.choices[0].delta.content or "")
    assert "ended before the answer was complete" in str(err.value)
    # What came before the cut was delivered; nothing pretended to finish it.
    assert "".join(text)
    rec = access_line(gw, request_id)
    assert rec["error"] == "upstream_stream_truncated", rec


@pytest.mark.parametrize("model", ["claude-truncated", "truncated"])
def test_anthropic_sdk_raises_on_a_stream_cut_short(
    gw: Gateway, claude: anthropic.Anthropic, model: str
):
    request_id = rid()
    events = []
    with pytest.raises(anthropic.APIError) as err:
        with claude.messages.stream(
            model=model,
            max_tokens=64,
            messages=MESSAGES,
            extra_headers={"x-request-id": request_id},
        ) as stream:
            for event in stream:
                events.append(event.type)
    assert "upstream_stream_truncated" in str(err.value)
    assert "message_stop" not in events, events
    rec = access_line(gw, request_id)
    assert rec["error"] == "upstream_stream_truncated", rec


def test_a_200_that_is_not_json_is_a_502(oai: openai.OpenAI, claude: anthropic.Anthropic):
    with pytest.raises(openai.InternalServerError) as err:
        oai.chat.completions.create(model="malformed", messages=MESSAGES)
    assert err.value.status_code == 502
    body = err.value.body
    assert body["code"] == "upstream_invalid_response", body
    assert body["type"] == "upstream_error", body
    assert "default/malformed" in body["message"], body

    with pytest.raises(anthropic.InternalServerError) as aerr:
        claude.messages.create(model="claude-malformed", max_tokens=64, messages=MESSAGES)
    assert aerr.value.status_code == 502
    assert aerr.value.body["error"]["type"] == "api_error", aerr.value.body
    assert "default/claude-malformed" in aerr.value.body["error"]["message"]


def test_error_messages_never_carry_the_key(
    gw: Gateway, mock: Mock, oai: openai.OpenAI, claude: anthropic.Anthropic
):
    encoded = base64.b64encode(UPSTREAM_KEY.encode()).decode()
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="echo", messages=MESSAGES)
    message = err.value.body["message"]
    assert "[redacted]" in message, message
    with pytest.raises(anthropic.BadRequestError) as aerr:
        claude.messages.create(model="claude-echo", max_tokens=64, messages=MESSAGES)
    amessage = aerr.value.body["error"]["message"]
    assert "[redacted]" in amessage, amessage
    for text in (message, amessage, gw.proc.output()):
        assert UPSTREAM_KEY not in text and encoded not in text
    # The mock did quote it: the gateway took it out.
    assert any(r["headers"].get("x-mock-fault") == "echo-key" for r in mock.requests())
