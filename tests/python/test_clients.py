"""Requests shaped like real agent clients' (`tests/fixtures/clients/`, hand-written from the
issue until the CLI matrix captures real ones) through the gateway to every backend:

* Claude Code on `/v1/messages?beta=true`: a `system` turn after the user turn, adaptive
  thinking, `output_config.effort`, `context_management`, `cache_control`, `metadata.user_id`,
  20 tools; and `/v1/messages/count_tokens`.
* Codex CLI on `/v1/responses`: a `namespace` tool, `web_search`, function calls (one
  namespaced), reasoning, `include`, `store: false`, `prompt_cache_key`; the model's call of a
  namespaced tool comes back under the caller's namespace and name, plain and streamed. To an
  `openai` backend it passes through to `/v1/responses` unchanged but for the model; to the
  others it is translated.

`switchyard-mock` plays every backend; its request log shows what the gateway sent.
"""

from __future__ import annotations

import copy
import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import CALLER_KEY, UPSTREAM_SECRETS, start_gateway

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "clients"
CLAUDE_CODE = json.loads((FIXTURES / "claude-code-messages.json").read_text())
CODEX = json.loads((FIXTURES / "codex-responses.json").read_text())
BETAS = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,mid-conversation-system-2026-04-07"
MID_SYSTEM = "The user switched the permission mode to 'acceptEdits'"
# The backends' mock calls this tool whenever the request offers it.
NAMESPACED = "multi_agent_v1__wait"

# Route → the upstream path of a plain and of a streamed call.
BACKENDS = {
    "cli-openai": ("/v1/chat/completions", "/v1/chat/completions"),
    "cli-compatible": ("/v1/chat/completions", "/v1/chat/completions"),
    "cli-anthropic": ("/v1/messages", "/v1/messages"),
    "cli-gemini": (
        "/v1beta/models/gemini-mock:generateContent",
        "/v1beta/models/gemini-mock:streamGenerateContent",
    ),
    "cli-bedrock": (
        "/model/anthropic.claude-opus-4-6-v1%3A0/converse",
        "/model/anthropic.claude-opus-4-6-v1%3A0/converse-stream",
    ),
}
TRANSLATED_FOR_CLAUDE = ["cli-openai", "cli-compatible", "cli-gemini", "cli-bedrock"]
# Codex's route → its upstream paths: an `openai` backend serves the Responses API itself.
CODEX_BACKENDS = {**BACKENDS, "cli-openai": ("/v1/responses", "/v1/responses")}


def backend(name: str, provider: str, endpoint: str, model: str, extra: str = "") -> str:
    auth = (
        "auth: {awsSecretRef: {name: aws}}\n  bedrock: {region: us-east-1}"
        if provider == "bedrock"
        else "auth: {secretRef: {name: upstream-key, key: apiKey}}"
    )
    return f"""\
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: {name}}}
spec:
  provider: {provider}
  endpoint: {endpoint}
  {auth}
  models: [{{name: "{model}"}}]
  headers: {{set: {{x-mock-tool-call: {NAMESPACED}}}}}
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}{extra}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: cli-{name}}}
spec:
  match: {{models: ["cli-{name}"]}}
  backends: [{{backendRef: {{name: {name}}}, model: "{model}"}}]
"""


def config(mock_addr: str) -> str:
    return UPSTREAM_SECRETS + "".join([
        backend("openai", "openai", f"http://{mock_addr}/v1", "gpt-5.1-codex"),
        backend("compatible", "openai-compatible", f"http://{mock_addr}/v1", "qwen3-coder"),
        backend("anthropic", "anthropic", f"http://{mock_addr}", "claude-mock"),
        backend("gemini", "gemini", f"http://{mock_addr}", "gemini-mock"),
        backend("bedrock", "bedrock", f"http://{mock_addr}", "anthropic.claude-opus-4-6-v1:0"),
    ]) + """\
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: cli-strict}
spec:
  match: {models: ["cli-strict"]}
  unsupportedTools: reject
  # A translating target: a Responses passthrough (the `openai` backend) would keep the
  # hosted tools, as unsupportedTools is decided per target (test_web_search.py).
  backends: [{backendRef: {name: compatible}, model: "qwen3-coder"}]
"""


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    g = start_gateway(tmp_path_factory.mktemp("clients"), config(mock.addr), name="clients-gw")
    yield g
    g.proc.stop()


@dataclass
class Reply:
    status_code: int
    headers: dict
    text: str

    def json(self):
        return json.loads(self.text)


@dataclass
class Web:
    """Raw JSON POSTs to the gateway (no SDK in between, so every field the gateway writes is
    seen as it is)."""

    base: str
    # No proxy from the environment: the gateway is on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def post(self, path: str, json: dict, headers: dict) -> Reply:
        req = urllib.request.Request(
            self.base + path, data=_dumps(json), method="POST",
            headers={"content-type": "application/json", **headers})
        try:
            with self.opener.open(req, timeout=10.0) as r:
                return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode())
        except urllib.error.HTTPError as e:
            return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode())


def _dumps(body: dict) -> bytes:
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def web(gw):
    return Web(f"http://{gw.listen}")


def one(upstream, path: str) -> dict:
    recs = upstream.requests(path)
    assert len(recs) == 1, f"expected one upstream request to {path}, got {recs!r}"
    return recs[0]


def claude_code(web: Web, route: str, body: dict, path: str = "/v1/messages?beta=true"):
    return web.post(path, json={**body, "model": route}, headers={
        "x-api-key": CALLER_KEY, "anthropic-version": "2023-06-01", "anthropic-beta": BETAS})


def sse_events(text: str) -> list[dict]:
    return [json.loads(line[len("data: "):]) for line in text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


# === Claude Code ===


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("route", TRANSLATED_FOR_CLAUDE)
def test_claude_code_request_on_every_other_backend(web, upstream, route, stream):
    r = claude_code(web, route, {**CLAUDE_CODE, "stream": stream})
    assert r.status_code == 200, r.text
    if stream:
        events = sse_events(r.text)
        assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    else:
        assert r.json()["type"] == "message" and r.json()["stop_reason"] == "end_turn"
    rec = one(upstream, BACKENDS[route][stream])
    sent = json.dumps(rec["body"])
    assert MID_SYSTEM in sent
    for gone in ("cache_control", "context_management", "output_config", "adaptive"):
        assert gone not in sent, gone
    # Anthropic's headers reach Anthropic backends only.
    assert not any(h.startswith("anthropic-") for h in rec["headers"])
    body = rec["body"]
    if route in ("cli-openai", "cli-compatible"):
        assert body["user"].startswith("user_5f1c0a9e")
        assert len(body["tools"]) == 20
        systems = [m for m in body["messages"] if m["role"] == "system"]
        # OpenAI keeps the system turn in place; servers in its dialect get one system message.
        assert len(systems) == (2 if route == "cli-openai" else 1)
        assert body.get("reasoning_effort") == ("high" if route == "cli-openai" else None)
    elif route == "cli-gemini":
        assert body["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 4096
        assert MID_SYSTEM in json.dumps(body["systemInstruction"])
    else:
        assert body["additionalModelRequestFields"]["thinking"] == {"type": "enabled", "budget_tokens": 4096}
        assert MID_SYSTEM in json.dumps(body["system"])


def test_claude_code_on_an_anthropic_backend_passes_through(web, upstream):
    body = copy.deepcopy(CLAUDE_CODE)
    body["stream"] = False
    # The mock, like Anthropic, accepts only thinking it signed.
    for m in body["messages"]:
        for b in m["content"] if isinstance(m["content"], list) else []:
            if b.get("type") == "thinking":
                b["signature"] = "mock-signature-0"
    r = claude_code(web, "cli-anthropic", body)
    assert r.status_code == 200, r.text
    rec = one(upstream, "/v1/messages")
    assert rec["headers"]["anthropic-beta"] == BETAS
    assert rec["body"] == {**body, "model": "claude-mock"}


def test_claude_code_counts_tokens_on_every_backend(web, upstream):
    body = {k: v for k, v in CLAUDE_CODE.items() if k not in ("stream", "max_tokens")}
    for route in TRANSLATED_FOR_CLAUDE:
        r = claude_code(web, route, body, "/v1/messages/count_tokens?beta=true")
        assert r.status_code == 200, r.text
        assert r.headers["x-switchyard-token-estimate"] == "true"
        assert r.json()["input_tokens"] > 5000
    assert upstream.requests() == []


# === Codex ===


def codex(web: Web, route: str, body: dict) -> Reply:
    return web.post("/v1/responses", json={**body, "model": route},
                    headers={"authorization": f"Bearer {CALLER_KEY}"})


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("route", list(BACKENDS))
def test_codex_request_on_every_backend(web, upstream, route, stream):
    r = codex(web, route, {**CODEX, "stream": stream})
    assert r.status_code == 200, r.text
    if stream:
        events = sse_events(r.text)
        assert events[-1]["type"] == "response.completed"
        tools = events[-1]["response"]["tools"]
    else:
        assert r.json()["status"] == "completed"
        tools = r.json()["tools"]
    # The response echoes the caller's own tools.
    assert [t["type"] for t in tools] == [t["type"] for t in CODEX["tools"]]
    body = one(upstream, CODEX_BACKENDS[route][stream])["body"]
    if route == "cli-openai":
        # Passed through: Codex's request whole, hosted tool and all, only the model renamed.
        assert body == {**CODEX, "stream": stream, "model": "gpt-5.1-codex"}
        return
    sent = json.dumps(body)
    assert "web_search" not in sent
    assert "multi_agent_v1__spawn_agent" in sent and "<collaboration_mode>" in sent
    assert "prompt_cache_key" not in sent


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("route", list(BACKENDS))
def test_codex_sees_its_own_namespace_and_name(web, upstream, route, stream):
    body = {**CODEX, "stream": stream,
            "input": [{"type": "message", "role": "user", "content": "Wait for the sub-agent."}]}
    r = codex(web, route, body)
    assert r.status_code == 200, r.text
    if stream:
        events = sse_events(r.text)
        items = [e["item"] for e in events
                 if e["type"] in ("response.output_item.added", "response.output_item.done")
                 and e["item"]["type"] == "function_call"]
        assert len(items) == 2
        output = events[-1]["response"]["output"]
    else:
        items = []
        output = r.json()["output"]
    calls = [o for o in output if o["type"] == "function_call"] + items
    assert calls
    for call in calls:
        assert (call["namespace"], call["name"]) == ("multi_agent_v1", "wait"), call
    # What the model called went upstream under the flat name (passed through: as Codex
    # declared it, in its namespace).
    sent = one(upstream, CODEX_BACKENDS[route][stream])["body"]
    if route == "cli-openai":
        assert sent["tools"] == CODEX["tools"]
    else:
        assert NAMESPACED in json.dumps(sent)

    # Codex sends the call back with its output: the backend sees the flat name again.
    upstream.clear()
    call = {k: v for k, v in calls[0].items() if k not in ("id", "status")}
    body["input"] = body["input"] + [call, {"type": "function_call_output", "call_id": call["call_id"], "output": "{}"}]
    body["stream"] = False
    r = codex(web, route, body)
    assert r.status_code == 200, r.text
    assert r.json()["output"][-1]["type"] == "message"
    sent = one(upstream, CODEX_BACKENDS[route][0])["body"]
    if route == "cli-openai":
        assert sent["input"] == body["input"]
    else:
        assert json.dumps(sent).count(NAMESPACED) >= 2


def test_hosted_tools_are_named_not_called_built_in(web, upstream):
    # `web_search` is left out (the default policy); a tool the client runs but cannot be
    # translated is refused without being called built-in.
    r = codex(web, "cli-compatible", {"input": "hi", "tools": [{"type": "local_shell"}]})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "tools[0].type"
    assert "built-in" not in err["message"] and "OpenAI's servers" not in err["message"]
    assert upstream.requests() == []


# === What translation dropped ===


def access_line(gw, request_id: str) -> dict:
    """The access log line of the request with this id (written when the request ends)."""

    def find(line: str):
        try:
            rec = json.loads(line)
        except ValueError:
            return None
        if isinstance(rec, dict) and rec.get("message") == "request" and rec.get("request_id") == request_id:
            return rec
        return None

    return gw.proc.wait_for(find, f"the access log line of {request_id}", 10.0)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("route", ["cli-compatible", "cli-anthropic"])
def test_codex_is_told_what_was_dropped(gw, web, upstream, route, stream):
    rid = "req-dropped-" + secrets.token_hex(4)
    r = web.post("/v1/responses", json={**CODEX, "model": route, "stream": stream},
                 headers={"authorization": f"Bearer {CALLER_KEY}", "x-request-id": rid})
    assert r.status_code == 200, r.text
    dropped = r.headers["x-switchyard-dropped"]
    names = dropped.split(", ")
    assert "tools[5](web_search)" in names and "prompt_cache_key" in names, dropped
    # Settings the gateway honours itself are not listed.
    assert not any(n.startswith(("store", "include", "reasoning")) for n in names), dropped
    assert access_line(gw, rid)["dropped"] == dropped


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_codex_passed_through_has_nothing_dropped(gw, web, upstream, stream):
    rid = "req-dropped-" + secrets.token_hex(4)
    r = web.post("/v1/responses", json={**CODEX, "model": "cli-openai", "stream": stream},
                 headers={"authorization": f"Bearer {CALLER_KEY}", "x-request-id": rid})
    assert r.status_code == 200, r.text
    assert "x-switchyard-dropped" not in r.headers
    assert not access_line(gw, rid).get("dropped")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_claude_code_translated_is_told_what_was_dropped(gw, web, upstream, stream):
    rid = "req-dropped-" + secrets.token_hex(4)
    r = web.post("/v1/messages?beta=true", json={**CLAUDE_CODE, "model": "cli-openai", "stream": stream},
                 headers={"x-api-key": CALLER_KEY, "anthropic-version": "2023-06-01",
                          "anthropic-beta": BETAS, "x-request-id": rid})
    assert r.status_code == 200, r.text
    names = r.headers["x-switchyard-dropped"].split(", ")
    assert "context_management" in names and "cache_control" in names, names
    assert access_line(gw, rid)["dropped"] == r.headers["x-switchyard-dropped"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_passthrough_drops_nothing(gw, web, upstream, stream):
    body = copy.deepcopy(CLAUDE_CODE)
    body["stream"] = stream
    for m in body["messages"]:
        for b in m["content"] if isinstance(m["content"], list) else []:
            if b.get("type") == "thinking":
                b["signature"] = "mock-signature-0"
    rid = "req-dropped-" + secrets.token_hex(4)
    r = web.post("/v1/messages?beta=true", json={**body, "model": "cli-anthropic"},
                 headers={"x-api-key": CALLER_KEY, "anthropic-version": "2023-06-01",
                          "anthropic-beta": BETAS, "x-request-id": rid})
    assert r.status_code == 200, r.text
    # The Anthropic backend got every field the caller sent (context_management included).
    assert "x-switchyard-dropped" not in r.headers
    assert "context_management" in one(upstream, "/v1/messages")["body"]
    assert "dropped" not in access_line(gw, rid)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_route_that_rejects_hosted_tools_says_which(web, upstream, stream):
    r = codex(web, "cli-strict", {**CODEX, "stream": stream})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "tools[5].type", err
    assert "unsupportedTools" in err["message"], err
    assert "x-switchyard-dropped" not in r.headers
    assert upstream.requests() == []
    # Without hosted tools the same route serves the request.
    tools = [t for t in CODEX["tools"] if t["type"] != "web_search"]
    r = codex(web, "cli-strict", {**CODEX, "tools": tools, "stream": False})
    assert r.status_code == 200, r.text
