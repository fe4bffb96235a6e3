"""The real-SDK client matrix: the SDKs people point at a gateway, unchanged, through the
gateway to an OpenAI backend, an Anthropic backend and two translated ones (Gemini, Bedrock).

* The Vercel AI SDK (`ai` + `@ai-sdk/openai` chat and responses models, `@ai-sdk/anthropic`),
  run by `tests/clients/ai_sdk.mjs` under Node.
* LangChain: `langchain-openai`'s ChatOpenAI on Chat Completions and with
  `use_responses_api=True`, `langchain-anthropic`'s ChatAnthropic.
* `openai-agents` (the Agents SDK) on its default Responses model and its Chat Completions
  model, with a function tool.
* The `litellm` SDK as a client: `litellm.completion` with the gateway as its
  `openai/` and `anthropic/` base.

Each client runs a plain turn, a streamed turn and a tool round trip (the model calls
`get_weather`, the client runs it and sends the result back, the final answer arrives). Each
cell checks what the client parsed (text, tool name and arguments, usage where the client
reports it), what reached `switchyard-mock` (the backend's own path, one call per model turn,
streaming asked for upstream, the tool result in the backend's dialect) and what the gateway
counted (the mock's output tokens for the route).

Versions: `tests/clients/package.json` (npm, exact) and `tests/python/requirements.txt`
(`==`). Everything stays on loopback: any other address goes to a proxy that is not there,
LangSmith tracing, the Agents SDK's tracing and litellm's telemetry and cost-map download are
off.
"""

from __future__ import annotations

import asyncio
import functools
import json
import operator
import os
import subprocess
from pathlib import Path

import pytest

from conftest import (
    MOCK_CHUNKS,
    UPSTREAM_SECRETS,
    child_env,
    start_gateway,
)

CLIENTS = Path(__file__).resolve().parents[1] / "clients"
AI_SDK = CLIENTS / "ai_sdk.mjs"
NODE_TIMEOUT_S = 30
BLACKHOLE_PROXY = "http://127.0.0.1:9"
CALLER_KEY = "caller-key"

# The mock's text reply starts with this (the same words in every dialect).
REPLY = "Mock reply from switchyard"
PROMPT = "Say hello."
TOOL_PROMPT = "What is the weather in Paris?"
# What the mock calls the tool with (x-mock-tool-args), and what the tool answers.
TOOL_ARGS = {"city": "Paris"}
TOOL_MARK = "weather-7f3a"


def weather(city: str) -> str:
    return f"{TOOL_MARK} in {city}: sunny, 21 C"


# Route suffix → (provider, upstream model).
BACKENDS = {
    "openai": ("openai", "gpt-4.1-mock"),
    "anthropic": ("anthropic", "claude-mock"),
    "gemini": ("gemini", "gemini-mock"),
    "bedrock": ("bedrock", "anthropic.claude-opus-4-6-v1:0"),
}

# Where each backend is called (a path prefix; Gemini and Bedrock name the stream in the
# path), how its streaming call differs, and how a tool result looks in its dialect.
CHAT_UPSTREAM = {
    "openai": ("/v1/chat/completions", None, '"role": "tool"'),
    "anthropic": ("/v1/messages", None, '"type": "tool_result"'),
    "gemini": ("/v1beta/models/gemini-mock:", ":streamGenerateContent", '"functionResponse"'),
    "bedrock": ("/model/anthropic.claude-opus-4-6-v1%3A0/", "/converse-stream", '"toolResult"'),
}
# A Responses client's requests pass through to an OpenAI backend's own Responses API.
RESPONSES_UPSTREAM = {
    **CHAT_UPSTREAM,
    "openai": ("/v1/responses", None, '"type": "function_call_output"'),
}


def config(mock_addr: str) -> str:
    docs = [UPSTREAM_SECRETS]
    headers = json.dumps({"x-mock-tool-args": json.dumps(TOOL_ARGS)})
    for short, (provider, model) in BACKENDS.items():
        endpoint = f"http://{mock_addr}" + ("/v1" if provider == "openai" else "")
        auth = {
            "bedrock": "auth: {awsSecretRef: {name: aws}}\n  bedrock: {region: us-east-1}",
        }.get(provider, "auth: {secretRef: {name: upstream-key, key: apiKey}}")
        docs.append(f"""\
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: sdk-{short}}}
spec:
  provider: {provider}
  endpoint: {endpoint}
  {auth}
  models: [{{name: "{model}", pricing: {{inputPerMillion: "1", outputPerMillion: "2"}}}}]
  headers: {{set: {headers}}}
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: sdk-{short}}}
spec:
  match: {{models: ["sdk-{short}"]}}
  backends: [{{backendRef: {{name: sdk-{short}}}, model: "{model}"}}]
""")
    return "".join(docs)


@pytest.fixture(scope="module")
def offline():
    """No address but loopback is reachable from the SDKs in this process, and nothing they
    would send home is on."""
    with pytest.MonkeyPatch.context() as mp:
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                  "all_proxy"):
            mp.setenv(k, BLACKHOLE_PROXY)
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        mp.setenv("no_proxy", "127.0.0.1,localhost")
        for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                  "LANGCHAIN_TRACING_V2", "LANGSMITH_TRACING", "LANGCHAIN_API_KEY",
                  "LANGSMITH_API_KEY"):
            mp.delenv(k, raising=False)
        mp.setenv("LANGSMITH_TRACING", "false")
        mp.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
        # litellm: the bundled model cost map instead of a download, no telemetry.
        mp.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        mp.setenv("LITELLM_TELEMETRY", "False")
        yield


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory, offline):
    g = start_gateway(tmp_path_factory.mktemp("sdk-clients"), config(mock.addr),
                      name="sdk-clients-gw")
    yield g
    g.proc.stop()


# === What a client saw ===


class Turn:
    """What one client turn produced, in the terms every client shares."""

    def __init__(self, text: str, tool_calls: list[tuple[str, dict]] = (),
                 tool_results: list[str] = (), output_tokens: int | None = None,
                 parts: int = 0):
        self.text = text
        self.tool_calls = list(tool_calls)
        self.tool_results = list(tool_results)
        self.output_tokens = output_tokens
        self.parts = parts

    def __repr__(self) -> str:
        return repr(self.__dict__)


# === The Vercel AI SDK (Node) ===


def ai_sdk(kind: str):
    def run(gw, model: str, mode: str, home: Path) -> Turn:
        home.mkdir(parents=True, exist_ok=True)
        env = child_env(HOME=str(home), NO_PROXY="127.0.0.1,localhost",
                        no_proxy="127.0.0.1,localhost")
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
            env[k] = BLACKHOLE_PROXY
        for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                  "AI_GATEWAY_API_KEY"):
            env.pop(k, None)
        prompt = TOOL_PROMPT if mode == "tool" else PROMPT
        try:
            r = subprocess.run(["node", str(AI_SDK), f"http://{gw.listen}", kind, model, mode,
                                prompt], env=env, cwd=home, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=NODE_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"ai_sdk.mjs did not finish in {NODE_TIMEOUT_S}s: {e.stderr}",
                        pytrace=False)
        assert r.returncode == 0, f"ai_sdk.mjs {kind} {mode}: {r.stderr[-4000:]}"
        out = json.loads(r.stdout.strip().splitlines()[-1])
        if mode == "tool":
            # The SDK ran the tool itself: its result is the tool's own answer.
            assert all(t["output"] == weather(TOOL_ARGS["city"]) for t in out["toolResults"]), out
        return Turn(out["text"], [(c["name"], c["input"]) for c in out["toolCalls"]],
                    [t["output"] for t in out["toolResults"]],
                    (out.get("usage") or {}).get("outputTokens"), out["parts"])
    return run


# === LangChain ===


def lc_text(msg) -> str:
    # A property in langchain-core 1.x (a str that is still callable, deprecated).
    return str(msg.text)


def langchain(kind: str):
    def run(gw, model: str, mode: str, home: Path) -> Turn:
        from langchain_core.messages import HumanMessage
        from langchain_core.tools import tool

        if kind == "anthropic":
            from langchain_anthropic import ChatAnthropic
            llm = ChatAnthropic(model=model, base_url=f"http://{gw.listen}", api_key=CALLER_KEY,
                                max_retries=0, max_tokens=256)
        else:
            from langchain_openai import ChatOpenAI
            llm = ChatOpenAI(model=model, base_url=f"http://{gw.listen}/v1", api_key=CALLER_KEY,
                             max_retries=0, use_responses_api=(kind == "responses"),
                             stream_usage=True)

        def tokens(msg) -> int | None:
            return (msg.usage_metadata or {}).get("output_tokens")

        if mode == "plain":
            msg = llm.invoke(PROMPT)
            return Turn(lc_text(msg), output_tokens=tokens(msg))
        if mode == "stream":
            chunks = list(llm.stream(PROMPT))
            msg = functools.reduce(operator.add, chunks)
            return Turn(lc_text(msg), output_tokens=tokens(msg),
                        parts=sum(1 for c in chunks if lc_text(c)))

        @tool
        def get_weather(city: str) -> str:
            """The current weather in a city."""
            return weather(city)

        bound = llm.bind_tools([get_weather])
        history = [HumanMessage(TOOL_PROMPT)]
        first = bound.invoke(history)
        history.append(first)
        results = []
        for call in first.tool_calls:
            result = get_weather.invoke(call)
            results.append(result.content)
            history.append(result)
        final = bound.invoke(history)
        return Turn(lc_text(final), [(c["name"], c["args"]) for c in first.tool_calls], results,
                    tokens(final))
    return run


# === openai-agents ===


def agents(kind: str):
    def run(gw, model: str, mode: str, home: Path) -> Turn:
        from agents import (Agent, ModelSettings, OpenAIChatCompletionsModel,
                            OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled)
        from agents.items import ToolCallItem, ToolCallOutputItem
        from openai import AsyncOpenAI

        set_tracing_disabled(True)

        @function_tool
        def get_weather(city: str) -> str:
            """The current weather in a city."""
            return weather(city)

        async def go() -> Turn:
            client = AsyncOpenAI(base_url=f"http://{gw.listen}/v1", api_key=CALLER_KEY,
                                 max_retries=0)
            m = (OpenAIResponsesModel(model=model, openai_client=client) if kind == "responses"
                 else OpenAIChatCompletionsModel(model=model, openai_client=client))
            # On Chat Completions the SDK asks for the stream's usage chunk only when told to.
            agent = Agent(name="switchyard-e2e", instructions="Answer briefly.", model=m,
                          tools=[get_weather] if mode == "tool" else [],
                          model_settings=ModelSettings(include_usage=True))
            parts = 0
            try:
                if mode == "stream":
                    result = Runner.run_streamed(agent, PROMPT)
                    async for ev in result.stream_events():
                        if ev.type == "raw_response_event" and getattr(
                                ev.data, "type", "") in ("response.output_text.delta",):
                            parts += 1
                else:
                    result = await Runner.run(agent, TOOL_PROMPT if mode == "tool" else PROMPT)
            finally:
                await client.close()
            calls, results = [], []
            for item in result.new_items:
                if isinstance(item, ToolCallItem):
                    raw = item.raw_item
                    calls.append((raw.name, json.loads(raw.arguments)))
                elif isinstance(item, ToolCallOutputItem):
                    results.append(str(item.output))
            usage = result.context_wrapper.usage
            return Turn(str(result.final_output), calls, results, usage.output_tokens, parts)

        return asyncio.run(go())
    return run


# === litellm ===


def litellm_client(kind: str):
    def run(gw, model: str, mode: str, home: Path) -> Turn:
        import litellm

        litellm.telemetry = False
        base = f"http://{gw.listen}" + ("/v1" if kind == "openai" else "")
        common = dict(model=f"{kind}/{model}", api_base=base, api_key=CALLER_KEY, max_tokens=256,
                      num_retries=0)
        if mode == "plain":
            r = litellm.completion(messages=[{"role": "user", "content": PROMPT}], **common)
            return Turn(r.choices[0].message.content, output_tokens=r.usage.completion_tokens)
        if mode == "stream":
            chunks = list(litellm.completion(messages=[{"role": "user", "content": PROMPT}],
                                             stream=True,
                                             stream_options={"include_usage": True}, **common))
            deltas = [c.choices[0].delta.content for c in chunks
                      if c.choices and c.choices[0].delta.content]
            usage = [c.usage for c in chunks if getattr(c, "usage", None)]
            return Turn("".join(deltas), output_tokens=usage[-1].completion_tokens if usage
                        else None, parts=len(deltas))
        tools = [{"type": "function", "function": {
            "name": "get_weather", "description": "The current weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}}]
        messages = [{"role": "user", "content": TOOL_PROMPT}]
        first = litellm.completion(messages=messages, tools=tools, **common)
        msg = first.choices[0].message
        calls = [(c.function.name, json.loads(c.function.arguments)) for c in msg.tool_calls or []]
        messages.append(msg.model_dump(exclude_none=True))
        results = []
        for c in msg.tool_calls or []:
            out = weather(**json.loads(c.function.arguments))
            results.append(out)
            messages.append({"role": "tool", "tool_call_id": c.id, "content": out})
        final = litellm.completion(messages=messages, tools=tools, **common)
        return Turn(final.choices[0].message.content, calls, results,
                    final.usage.completion_tokens)
    return run


# Client → (driver, the inbound API it speaks: chat, responses or anthropic).
CLIENTS_UNDER_TEST = {
    "ai-sdk-openai-chat": (ai_sdk("openai-chat"), "chat"),
    "ai-sdk-openai-responses": (ai_sdk("openai-responses"), "responses"),
    "ai-sdk-anthropic": (ai_sdk("anthropic"), "anthropic"),
    "langchain-openai-chat": (langchain("chat"), "chat"),
    "langchain-openai-responses": (langchain("responses"), "responses"),
    "langchain-anthropic": (langchain("anthropic"), "anthropic"),
    "openai-agents-responses": (agents("responses"), "responses"),
    "openai-agents-chat": (agents("chat"), "chat"),
    "litellm-openai": (litellm_client("openai"), "chat"),
    "litellm-anthropic": (litellm_client("anthropic"), "anthropic"),
}


def output_tokens(gw, route: str) -> float:
    total = 0.0
    for line in gw.metrics().splitlines():
        if (line.startswith("switchyard_tokens_total{") and f'route="default/{route}"' in line
                and 'type="output"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("mode", ["plain", "stream", "tool"])
@pytest.mark.parametrize("short", list(BACKENDS))
@pytest.mark.parametrize("client", list(CLIENTS_UNDER_TEST))
def test_sdk_client(gw, upstream, tmp_path, client, short, mode):
    driver, api = CLIENTS_UNDER_TEST[client]
    route = f"sdk-{short}"
    before = output_tokens(gw, route)
    try:
        turn = driver(gw, route, mode, tmp_path / "home")
    except Exception as e:  # the SDK's own error, with what the gateway logged
        log = "\n".join(line for line in gw.proc.output().splitlines() if '"request"' in line)
        pytest.fail(f"{client} {mode} via {short}: {type(e).__name__}: {e}\n"
                    f"gateway access log:\n{log[-3000:]}", pytrace=False)

    # What the client parsed.
    assert REPLY in turn.text, turn
    if mode == "stream":
        assert turn.parts > 1, turn
    if mode == "tool":
        assert turn.tool_calls == [("get_weather", TOOL_ARGS)], turn
        assert turn.tool_results and TOOL_MARK in turn.tool_results[0], turn
    if turn.output_tokens is not None:
        assert turn.output_tokens > 0, turn

    # What reached the backend: its own path, one call per model turn.
    path, stream_path, tool_result = (RESPONSES_UPSTREAM if api == "responses"
                                      else CHAT_UPSTREAM)[short]
    recs = upstream.requests()
    calls = [r for r in recs if r["path"].startswith(path)]
    assert len(calls) == (2 if mode == "tool" else 1), [r["path"] for r in recs]
    if mode == "stream":
        if stream_path:
            assert stream_path in calls[0]["path"], calls[0]["path"]
        else:
            assert calls[0]["body"].get("stream") is True, calls[0]["body"]
    if mode == "tool":
        sent = json.dumps(calls[1]["body"])
        assert tool_result in sent and TOOL_MARK in sent, sent[-2000:]
        # The tool was offered upstream under its own name.
        assert "get_weather" in json.dumps(calls[0]["body"])

    # What the gateway counted: the backend's output tokens for the route.
    counted = output_tokens(gw, route) - before
    if mode == "tool":
        assert counted > MOCK_CHUNKS, counted
    else:
        assert counted == MOCK_CHUNKS, counted
