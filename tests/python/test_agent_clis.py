"""The real agent CLIs, unchanged, through the gateway to every backend their format reaches.

* Claude Code (`@anthropic-ai/claude-code`, `claude -p`) with `ANTHROPIC_BASE_URL` at the
  gateway: `/v1/messages` to anthropic (passthrough), openai, openai-compatible, gemini,
  azure-openai and bedrock.
* Codex CLI (`@openai/codex`, `codex exec`) with a model provider whose `base_url` is the
  gateway's `/v1` and `wire_api = "responses"`: `/v1/responses` to openai and azure-openai
  (passthrough to their own Responses API), openai-compatible, anthropic, gemini and bedrock.

The CLIs are the versions pinned in `tests/clients/package.json` (`npm ci --prefix
tests/clients`). Each runs with a temporary HOME, telemetry, auto-update and other
non-essential traffic off, and only loopback addresses to talk to.

`switchyard-mock` plays every backend. The backends' `x-mock-tool-call` header makes the mock
answer text (a tool name no client offers) or call the client's file/shell tool, with
arguments from `x-mock-tool-args`, so the client runs the tool itself and sends the result back.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import (
    MOCK_CHUNKS,
    UPSTREAM_SECRETS,
    child_env,
    start_gateway,
)

CLIENTS = Path(__file__).resolve().parents[1] / "clients"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "clients"
# The versions package.json pins; the captured requests are named after them.
PINNED = json.loads((CLIENTS / "package.json").read_text())["dependencies"]
CLAUDE_VERSION = PINNED["@anthropic-ai/claude-code"]
CODEX_VERSION = PINNED["@openai/codex"]
CLAUDE = CLIENTS / "node_modules" / ".bin" / "claude"
CODEX = CLIENTS / "node_modules" / ".bin" / "codex"
CLI_TIMEOUT_S = 60
BLACKHOLE_PROXY = "http://127.0.0.1:9"

# The mock's text reply starts with this (`piece` in crates/mock/src/openai.rs: the same words
# in every dialect).
REPLY = "Mock reply from switchyard"
# A tool name no client offers: the mock answers text.
NO_TOOL = "no-such-tool"
# What the file the Claude Code tool turn reads holds.
SECRET = "switchyard-cli-e2e-7d41"

PROVIDERS = ["openai", "compatible", "anthropic", "gemini", "azure", "bedrock"]
# Route suffix → backend provider and upstream model.
MODELS = {
    "openai": ("openai", "gpt-5.1-codex"),
    "compatible": ("openai-compatible", "qwen3-coder"),
    "anthropic": ("anthropic", "claude-mock"),
    "gemini": ("gemini", "gemini-mock"),
    "azure": ("azure-openai", "gpt-4o-prod"),
    "bedrock": ("bedrock", "anthropic.claude-opus-4-6-v1:0"),
}


def backend(name: str, provider: str, endpoint: str, model: str, tool: str,
            args: dict | None) -> str:
    auth = {
        "bedrock": "auth: {awsSecretRef: {name: aws}}\n  bedrock: {region: us-east-1}",
        "azure-openai": "auth: {secretRef: {name: upstream-key, key: apiKey}}\n"
                        "  azure: {apiVersion: 2025-04-01-preview}",
    }.get(provider, "auth: {secretRef: {name: upstream-key, key: apiKey}}")
    headers = {"x-mock-tool-call": tool}
    if args is not None:
        headers["x-mock-tool-args"] = json.dumps(args)
    return f"""\
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: {name}}}
spec:
  provider: {provider}
  endpoint: {endpoint}
  {auth}
  models: [{{name: "{model}", pricing: {{inputPerMillion: "1", outputPerMillion: "2"}}}}]
  headers: {{set: {json.dumps(headers)}}}
  timeouts: {{connect: 2s, firstByte: 20s, idle: 20s}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: {name}}}
spec:
  match: {{models: ["{name}"]}}
  backends: [{{backendRef: {{name: {name}}}, model: "{model}"}}]
"""


def config(mock_addr: str, read_path: Path) -> str:
    docs = [UPSTREAM_SECRETS]
    for short, (provider, model) in MODELS.items():
        endpoint = f"http://{mock_addr}" + ("/v1" if provider in ("openai", "openai-compatible") else "")
        docs.append(backend(f"cli-{short}", provider, endpoint, model, NO_TOOL, None))
        docs.append(backend(f"cc-tool-{short}", provider, endpoint, model, "Read",
                            {"file_path": str(read_path)}))
        docs.append(backend(f"cx-tool-{short}", provider, endpoint, model, "exec_command",
                            {"cmd": f"cat {read_path.name}"}))
    return "".join(docs)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    if not (CLAUDE.exists() and CODEX.exists()):
        pytest.fail("agent CLIs missing: run `npm ci --prefix tests/clients --no-audit --no-fund`",
                    pytrace=False)
    return tmp_path_factory.mktemp("agent-clis")


@pytest.fixture(scope="module")
def read_path(work: Path) -> Path:
    p = work / "project" / "notes.txt"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"the secret word is {SECRET}\n")
    return p


@pytest.fixture(scope="module")
def gw(mock, work, read_path):
    g = start_gateway(work, config(mock.addr, read_path), name="agent-clis-gw")
    yield g
    g.proc.stop()


# === Running the clients ===


def offline_env(home: Path, **extra: str) -> dict[str, str]:
    """The child environment: a temp HOME, no proxy, nothing phoning home."""
    env = child_env(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        **extra,
    )
    for k in ("ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY", "OPENAI_BASE_URL", "CODEX_HOME"):
        env.pop(k, None)
    # Anything not for loopback goes to a proxy that is not there (the discard port), so a
    # request the flags above missed fails at once instead of leaving the machine.
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[k] = BLACKHOLE_PROXY
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def run(argv: list, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([str(a) for a in argv], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{argv[0]} did not finish within {CLI_TIMEOUT_S}s:\n"
                    f"stdout: {e.stdout}\nstderr: {e.stderr}", pytrace=False)


def claude(gw, home: Path, cwd: Path, model: str, prompt: str, fmt: str,
           extra: list[str] = ()) -> subprocess.CompletedProcess:
    home.mkdir(parents=True, exist_ok=True)
    # Onboarding done, so -p does not stop to ask.
    (home / ".claude.json").write_text(json.dumps({
        "hasCompletedOnboarding": True, "numStartups": 1, "autoUpdates": False,
    }))
    env = offline_env(
        home,
        ANTHROPIC_BASE_URL=f"http://{gw.listen}",
        ANTHROPIC_API_KEY="sk-ant-caller-e2e",
        # The background (haiku) model calls go to the same route.
        ANTHROPIC_SMALL_FAST_MODEL=model,
        ANTHROPIC_DEFAULT_HAIKU_MODEL=model,
        ANTHROPIC_DEFAULT_SONNET_MODEL=model,
        ANTHROPIC_DEFAULT_OPUS_MODEL=model,
        DISABLE_TELEMETRY="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_ERROR_REPORTING="1",
        DISABLE_BUG_COMMAND="1",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        CLAUDE_CODE_DISABLE_TERMINAL_TITLE="1",
    )
    args = [CLAUDE, "-p", prompt, "--model", model, "--output-format", fmt, *extra]
    if fmt == "stream-json":
        args.append("--verbose")
    return run(args, env, cwd)


def codex(gw, home: Path, cwd: Path, model: str, prompt: str) -> subprocess.CompletedProcess:
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(f"""\
model = "{model}"
model_provider = "switchyard"
approval_policy = "never"
sandbox_mode = "read-only"
check_for_update_on_startup = false

[model_providers.switchyard]
name = "Switchyard"
base_url = "http://{gw.listen}/v1"
env_key = "SWITCHYARD_E2E_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0

[analytics]
enabled = false

[otel]
exporter = "none"
""")
    env = offline_env(home, CODEX_HOME=str(codex_home))
    # After child_env, which drops SWITCHYARD_* variables.
    env["SWITCHYARD_E2E_KEY"] = "caller-key"
    return run([CODEX, "exec", "--strict-config", "--skip-git-repo-check",
                "--sandbox", "read-only", "--json", prompt], env, cwd)


def metric(gw, family: str, route: str, extra: str = "") -> float:
    """The sum of `family`'s series for `route` (and carrying `extra`, a `label="value"`)."""
    total = 0.0
    for line in gw.metrics().splitlines():
        if (line.startswith(family + "{") and f'route="default/{route}"' in line
                and extra in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def spend_and_output(gw, route: str) -> tuple[float, float]:
    return (metric(gw, "switchyard_spend_usd_total", route),
            metric(gw, "switchyard_tokens_total", route, 'type="output"'))


# Where each backend's mock is called, and how a tool result looks in its dialect.
UPSTREAM = {
    "openai": ("/v1/chat/completions", '"role": "tool"'),
    "compatible": ("/v1/chat/completions", '"role": "tool"'),
    "anthropic": ("/v1/messages", '"type": "tool_result"'),
    "gemini": ("/v1beta/models/gemini-mock:streamGenerateContent", '"functionResponse"'),
    "azure": ("/openai/deployments/gpt-4o-prod/chat/completions", '"role": "tool"'),
    "bedrock": ("/model/anthropic.claude-opus-4-6-v1%3A0/converse-stream", '"toolResult"'),
}
# Codex's Responses requests pass through to the backends that serve the Responses API
# (Azure's v1 path names the deployment in the body), Codex's own items and all.
CODEX_UPSTREAM = {
    **UPSTREAM,
    "openai": ("/v1/responses", '"type": "function_call_output"'),
    "azure": ("/openai/v1/responses", '"type": "function_call_output"'),
}


def upstream_calls(mock, short: str, paths: dict = UPSTREAM) -> list[dict]:
    path, _ = paths[short]
    recs = mock.requests()
    calls = [r for r in recs if r["path"] == path]
    assert calls, f"no upstream call on {path}; the mock saw {[r['path'] for r in recs]}"
    return calls


def failed(what: str, r: subprocess.CompletedProcess, gw) -> str:
    log = "\n".join(line for line in gw.proc.output().splitlines() if '"request"' in line)
    return (f"{what}: exit {r.returncode}\nstdout: {r.stdout[-4000:]}\nstderr: {r.stderr[-4000:]}"
            f"\ngateway access log:\n{log[-4000:]}")


def claude_result(r: subprocess.CompletedProcess, fmt: str) -> dict:
    if fmt == "json":
        return json.loads(r.stdout)
    events = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    results = [e for e in events if e.get("type") == "result"]
    assert len(results) == 1, events
    return results[0]


def codex_events(r: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


# === Claude Code ===


@pytest.mark.parametrize("fmt", ["json", "stream-json"])
@pytest.mark.parametrize("short", PROVIDERS)
def test_claude_code_plain_turn(gw, upstream, work, short, fmt):
    spend, output = spend_and_output(gw, f"cli-{short}")
    r = claude(gw, work / f"cc-{short}-{fmt}", work / "project", f"cli-{short}",
               "Say hello in five words.", fmt)
    assert r.returncode == 0, failed("claude -p", r, gw)
    out = claude_result(r, fmt)
    assert out["is_error"] is False, failed("claude -p", r, gw)
    assert REPLY in out["result"], failed("claude -p", r, gw)
    assert out["usage"]["output_tokens"] > 0
    calls = upstream_calls(upstream, short)
    assert len(calls) == 1
    if short == "anthropic":
        # Passthrough: Claude Code's own fields and betas reach Anthropic.
        sent = calls[0]["body"]
        for key in ("thinking", "output_config", "context_management", "metadata", "system"):
            assert key in sent, sorted(sent)
        assert "claude-code-20250219" in calls[0]["headers"].get("anthropic-beta", "")
    # The backend's usage was read and priced (6 output tokens: the mock's six chunks).
    now_spend, now_output = spend_and_output(gw, f"cli-{short}")
    assert now_output - output == MOCK_CHUNKS and now_spend > spend


@pytest.mark.parametrize("short", PROVIDERS)
def test_claude_code_reads_a_file(gw, upstream, work, read_path, short):
    r = claude(gw, work / f"cc-tool-{short}", read_path.parent, f"cc-tool-{short}",
               f"What does {read_path.name} say?", "stream-json", ["--allowedTools", "Read"])
    assert r.returncode == 0, failed("claude -p", r, gw)
    events = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    uses = [b for e in events if e.get("type") == "assistant"
            for b in e["message"]["content"] if b.get("type") == "tool_use"]
    assert [(u["name"], u["input"]) for u in uses] == [("Read", {"file_path": str(read_path)})]
    results = [b for e in events if e.get("type") == "user"
               for b in (e["message"]["content"] if isinstance(e["message"]["content"], list) else [])
               if b.get("type") == "tool_result"]
    assert results and SECRET in json.dumps(results), failed("Read did not run", r, gw)
    assert REPLY in claude_result(r, "stream-json")["result"]
    # The tool result reached the backend, in its own dialect.
    calls = upstream_calls(upstream, short)
    assert len(calls) == 2, [c["path"] for c in calls]
    sent = json.dumps(calls[1]["body"])
    assert UPSTREAM[short][1] in sent and SECRET in sent, sent[-3000:]


# === Codex ===


@pytest.mark.parametrize("short", PROVIDERS)
def test_codex_plain_turn(gw, upstream, work, short):
    spend, output = spend_and_output(gw, f"cli-{short}")
    r = codex(gw, work / f"cx-{short}", work / "project", f"cli-{short}", "Say hello in five words.")
    assert r.returncode == 0, failed("codex exec", r, gw)
    events = codex_events(r)
    texts = [e["item"]["text"] for e in events
             if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message"]
    assert texts and REPLY in texts[-1], failed("codex exec", r, gw)
    done = [e for e in events if e.get("type") == "turn.completed"]
    assert done and done[0]["usage"]["output_tokens"] > 0, failed("codex exec", r, gw)
    assert len(upstream_calls(upstream, short, CODEX_UPSTREAM)) == 1
    # The backend's usage was read and priced (6 output tokens: the mock's six chunks).
    now_spend, now_output = spend_and_output(gw, f"cli-{short}")
    assert now_output - output == MOCK_CHUNKS and now_spend > spend


@pytest.mark.parametrize("short", PROVIDERS)
def test_codex_runs_a_command(gw, upstream, work, read_path, short):
    r = codex(gw, work / f"cx-tool-{short}", read_path.parent, f"cx-tool-{short}",
              f"Show me {read_path.name}.")
    assert r.returncode == 0, failed("codex exec", r, gw)
    events = codex_events(r)
    runs = [e["item"] for e in events
            if e.get("type") == "item.completed" and e["item"].get("type") == "command_execution"]
    assert runs and SECRET in runs[0].get("aggregated_output", ""), failed("command", r, gw)
    texts = [e["item"]["text"] for e in events
             if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message"]
    assert texts and REPLY in texts[-1], failed("codex exec", r, gw)
    calls = upstream_calls(upstream, short, CODEX_UPSTREAM)
    assert len(calls) == 2, [c["path"] for c in calls]
    sent = json.dumps(calls[1]["body"])
    assert CODEX_UPSTREAM[short][1] in sent and SECRET in sent, sent[-3000:]


# === The captured requests, replayed ===

# What Claude Code 2.1.332 sent with its capture (`capture_agent_requests.py`).
CLAUDE_BETAS = ("claude-code-20250219,interleaved-thinking-2025-05-14,"
                "context-management-2025-06-27,thinking-token-count-2026-05-13,"
                "advanced-tool-use-2025-11-20,effort-2025-11-24")
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def replay(gw, path: str, body: dict, headers: dict) -> tuple[int, str]:
    req = urllib.request.Request(
        f"http://{gw.listen}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/json", "authorization": "Bearer caller-key",
                 **headers})
    try:
        with _LOOPBACK.open(req, timeout=20) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.parametrize("short", PROVIDERS)
def test_captured_claude_code_request_to_every_backend(gw, upstream, short):
    body = json.loads((FIXTURES / f"claude-code-{CLAUDE_VERSION}.json").read_text())
    body["model"] = f"cli-{short}"
    status, text = replay(gw, "/v1/messages?beta=true", body,
                          {"anthropic-version": "2023-06-01", "anthropic-beta": CLAUDE_BETAS})
    assert status == 200, text
    assert "event: message_stop" in text and "Mock" in text, text[-2000:]
    calls = upstream_calls(upstream, short)
    assert len(calls) == 1
    if short == "anthropic":
        # Passthrough: the body Anthropic gets is Claude Code's, only the model renamed.
        sent = calls[0]["body"]
        assert sent["model"] == "claude-mock"
        sent["model"] = body["model"]
        assert sent == body


@pytest.mark.parametrize("short", PROVIDERS)
def test_captured_codex_request_to_every_backend(gw, upstream, short):
    body = json.loads((FIXTURES / f"codex-{CODEX_VERSION}.json").read_text())
    body["model"] = f"cli-{short}"
    status, text = replay(gw, "/v1/responses", body, {})
    assert status == 200, text
    assert "response.completed" in text and "Mock" in text, text[-2000:]
    calls = upstream_calls(upstream, short, CODEX_UPSTREAM)
    assert len(calls) == 1
    if short in ("openai", "azure"):
        # Passthrough: the body the backend gets is Codex's, only the model renamed.
        sent = calls[0]["body"]
        assert sent["model"] == MODELS[short][1]
        sent["model"] = body["model"]
        assert sent == body
