"""Records what the real agent CLIs send, as `tests/fixtures/clients/<client>-<version>.json`.

    .venv/bin/python tests/python/capture_agent_requests.py

Runs each CLI pinned in `tests/clients` (set up exactly as `test_agent_clis.py` runs them:
temp HOME, nothing phoning home) against a loopback server that records the first request
and answers it with an error, so the CLI stops there. The saved body is the client's own,
before any gateway touches it; values that differ per machine or per run (temp paths, device
and session ids, dates) are replaced by fixed placeholders.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_agent_clis import CLIENTS, FIXTURES, claude, codex  # noqa: E402


@dataclass
class Target:
    """Stands in for the gateway in `claude()` / `codex()`: only `listen` is read."""

    listen: str


class Recorder(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        Recorder.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        out = b'{"type":"error","error":{"type":"invalid_request_error","message":"captured"}}'
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):  # noqa: N802
        self.do_POST()

    def log_message(self, *args):
        pass


def version(package: str) -> str:
    return json.loads((CLIENTS / "node_modules" / package / "package.json").read_text())["version"]


def scrub(text: str, tmp: str) -> str:
    text = text.replace(tmp, "/tmp/switchyard-capture")
    text = text.replace(tmp.replace("/", "-"), "-tmp-switchyard-capture")
    text = re.sub(r'\\"device_id\\":\\"[0-9a-f]+\\"', r'\\"device_id\\":\\"0000\\"', text)
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                  "00000000-0000-0000-0000-000000000000", text)
    text = re.sub(r"\b20\d\d-\d\d-\d\d\b", "2026-01-01", text)
    text = text.replace(os.uname().release, "6.0.0-generic")
    text = re.sub(r'(_unix_ms\\?":)\d+', r"\g<1>0", text)
    return text


def capture(name: str, run, want_path: str) -> None:
    Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "project").mkdir()
            run(Target(f"127.0.0.1:{server.server_address[1]}"), work)
            hits = [r for r in Recorder.seen if r["path"].split("?")[0] == want_path]
            if not hits:
                sys.exit(f"{name}: no request on {want_path}; saw {[r['path'] for r in Recorder.seen]}")
            body = scrub(hits[0]["body"].decode(), tmp)
    finally:
        server.shutdown()
    out = FIXTURES / name
    out.write_text(json.dumps(json.loads(body), indent=2, ensure_ascii=False) + "\n")
    print(f"{out}: {hits[0]['path']}, {len(body)} bytes")
    for k, v in sorted(hits[0]["headers"].items()):
        if k.lower() not in ("host", "content-length", "x-api-key", "authorization"):
            print(f"  {k}: {v}")


def main() -> None:
    capture(
        f"claude-code-{version('@anthropic-ai/claude-code')}.json",
        lambda t, w: claude(t, w / "home", w / "project", "claude-sonnet-4-6",
                            "What does notes.txt say?", "json"),
        "/v1/messages",
    )
    capture(
        f"codex-{version('@openai/codex')}.json",
        lambda t, w: codex(t, w / "home", w / "project", "gpt-5.1-codex", "Show me notes.txt."),
        "/v1/responses",
    )


if __name__ == "__main__":
    main()
