#!/usr/bin/env python3
"""Writes the agentic benchmark bodies beside this file (run it again after changing it):

- `openai-70k-model-last.json`: a ~70 KB Chat Completions request shaped like an agent's
  turn through openai-python (which serialises `model` after `messages`): a long system
  prompt, 16 function tools with JSON-schema parameters, and a history of user turns,
  assistant tool calls and tool results; `model` is the last key.
- `claude-code.json`: the captured Claude Code request
  (`tests/fixtures/clients/claude-code-2.1.332.json`) compacted as the CLI sends it.
- `codex.json`: the captured Codex CLI Responses request, compacted.

Deterministic: the same bytes every run."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent.parent / "tests" / "fixtures" / "clients"


def openai_agent_body(target_bytes: int = 70_000) -> dict:
    system = " ".join(
        f"Rule {i}: when the user asks about files, read them with the tools before answering; "
        f"quote paths exactly, never invent output, and keep answers short and specific."
        for i in range(40))
    tools = []
    for i in range(16):
        tools.append({"type": "function", "function": {
            "name": f"tool_{i:02d}",
            "description": f"Tool {i}: " + "Runs a step of the agent's plan and returns its output. " * 6,
            "parameters": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Absolute path of the file."},
                    "pattern": {"type": "string", "description": "A regular expression."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 2000},
                    "options": {"type": "object", "properties": {
                        "recursive": {"type": "boolean"},
                        "include": {"type": "array", "items": {"type": "string"}}}},
                },
                "required": ["path"],
                "additionalProperties": False,
            },
        }})
    messages = [{"role": "system", "content": system}]
    turn = 0
    body = {"messages": messages, "tools": tools, "tool_choice": "auto", "temperature": 0.2,
            "stream": False, "model": "gpt-4o-mini"}
    while len(json.dumps(body, separators=(",", ":"))) < target_bytes:
        call = f"call_{turn:04d}"
        messages.append({"role": "user",
                         "content": f"Step {turn}: look at src/module_{turn}.py and tell me "
                                    f"what the function handle_{turn} returns on error."})
        messages.append({"role": "assistant", "content": None, "tool_calls": [{
            "id": call, "type": "function", "function": {
                "name": f"tool_{turn % 16:02d}",
                "arguments": json.dumps({"path": f"/repo/src/module_{turn}.py", "limit": 200})}}]})
        messages.append({"role": "tool", "tool_call_id": call,
                         "content": "\n".join(f"{n:4d}  def handle_{turn}_{n}(x):\\n    return x + {n}"
                                              for n in range(12))})
        turn += 1
    # openai-python puts the model after the messages; keep it the very last key.
    return body


def compact(path: Path) -> bytes:
    return json.dumps(json.loads(path.read_text()), separators=(",", ":"),
                      ensure_ascii=False).encode()


def main() -> None:
    (HERE / "openai-70k-model-last.json").write_bytes(
        json.dumps(openai_agent_body(), separators=(",", ":")).encode())
    (HERE / "claude-code.json").write_bytes(compact(FIXTURES / "claude-code-2.1.332.json"))
    (HERE / "codex.json").write_bytes(compact(FIXTURES / "codex-0.171.0.json"))


if __name__ == "__main__":
    main()
