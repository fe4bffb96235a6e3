"""Fixtures for the OpenAI SDK end-to-end suite.

One `switchyard-mock` (the fake OpenAI upstream) and one `switchyard` gateway in front of it
are started per test session, as subprocesses on loopback ephemeral ports. Readiness is awaited
with bounded timeouts and both processes are always stopped at teardown.

Binaries come from `$SWITCHYARD_BIN_DIR`, else `<repo>/target/debug/`.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Callable, Optional

import anthropic
import openai
import pytest

REPO = Path(__file__).resolve().parents[2]

# The key the gateway sends upstream (the mock requires it) and the one the SDK presents to
# the gateway. The gateway runs without AIConsumers and with --require-auth=false, so it
# ignores the caller's key.
UPSTREAM_KEY = "sk-upstream-e2e-3f9c1a"
CALLER_KEY = "caller-key"
# The AWS credentials the mock verifies Bedrock SigV4 signatures with (AWS's documented
# example key pair, never a real one).
AWS_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
# The Secrets a config through every provider starts with: the upstream API key, and the AWS
# credentials the Bedrock backend signs with.
UPSTREAM_SECRETS = f"""\
apiVersion: v1
kind: Secret
metadata: {{name: upstream-key}}
stringData: {{apiKey: "{UPSTREAM_KEY}"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: aws}}
stringData: {{accessKeyId: "{AWS_ACCESS_KEY_ID}", secretAccessKey: "{AWS_SECRET_ACCESS_KEY}"}}
"""

# Content chunks per reply: streamed and non-streamed replies carry the same text.
MOCK_CHUNKS = 6
RATE_LIMIT_RETRY_AFTER = "7"

# Exact model names the routes match; /v1/models must list exactly these.
ROUTE_MODELS = {
    "gpt-4o-mini",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "rate-limited-model",
}

STARTUP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 3.0

# Never send loopback traffic through a proxy configured in the environment.
for _var in ("NO_PROXY", "no_proxy"):
    _hosts = [h for h in os.environ.get(_var, "").split(",") if h]
    for _h in ("127.0.0.1", "localhost"):
        if _h not in _hosts:
            _hosts.append(_h)
    os.environ[_var] = ",".join(_hosts)

_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# === HTTP helpers (stdlib only, for the mock's and the admin port's plain endpoints) ===


def http(method: str, url: str, timeout: float = 5.0) -> tuple[int, str]:
    """One plain HTTP request; returns (status, body text) without raising on 4xx/5xx."""
    req = urllib.request.Request(url, method=method)
    try:
        with _LOCAL.open(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


# === Subprocess handling ===


def bin_dir() -> Path:
    env = os.environ.get("SWITCHYARD_BIN_DIR")
    return Path(env) if env else REPO / "target" / "debug"


def binary(name: str) -> Path:
    path = bin_dir() / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{name} not found at {path}: run `cargo build --workspace --bins` first "
            "(or point $SWITCHYARD_BIN_DIR at the folder holding the binaries)",
            pytrace=False,
        )
    return path


class Proc:
    """A child process whose combined output goes to a log file that can be polled."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str]):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, find: Callable[[str], Optional[object]], what: str, timeout: float):
        """Polls the output until `find` returns a value for some line; bounded by `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.output().splitlines():
                found = find(line)
                if found is not None:
                    return found
            if self.popen.poll() is not None:
                pytest.fail(
                    f"{self.name} exited with {self.popen.returncode} before {what}:\n"
                    f"{self.output()}",
                    pytrace=False,
                )
            if time.monotonic() >= deadline:
                pytest.fail(
                    f"{self.name} did not report {what} within {timeout}s:\n{self.output()}",
                    pytrace=False,
                )
            time.sleep(0.02)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=STOP_TIMEOUT_S)
        self._log.close()


def child_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SWITCHYARD_", "MOCK_")) and k != "RUST_LOG"
    }
    env.update(extra)
    return env


# === Mock upstream ===


@dataclass
class Mock:
    proc: Proc
    addr: str  # host:port

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def clear(self) -> None:
        status, body = http("DELETE", f"{self.url}/mock/requests")
        assert status in (200, 204), f"clearing mock requests: {status} {body}"

    def requests(self, path: Optional[str] = None) -> list[dict]:
        status, body = http("GET", f"{self.url}/mock/requests")
        assert status == 200, f"reading mock requests: {status} {body}"
        recs = json.loads(body)
        if path is not None:
            recs = [r for r in recs if r["path"] == path]
        return recs


def start_mock(logs: Path, args: Sequence[str], **env: str) -> Mock:
    """Starts `switchyard-mock` on 127.0.0.1:0 with `args` and waits for its address. The
    caller stops it with `mock.proc.stop()`."""
    proc = Proc(
        "switchyard-mock",
        [binary("switchyard-mock"), "--listen", "127.0.0.1:0", *args],
        logs / "mock.log",
        child_env(RUST_LOG="warn", **env),
    )
    prefix = "switchyard-mock listening on http://"

    def find(line: str) -> Optional[str]:
        i = line.find(prefix)
        return line[i + len(prefix):].strip() if i >= 0 else None

    try:
        return Mock(proc, proc.wait_for(find, "its listening address", STARTUP_TIMEOUT_S))
    except BaseException:
        proc.stop()
        raise


@pytest.fixture(scope="session")
def mock(tmp_path_factory) -> Mock:
    m = start_mock(
        tmp_path_factory.mktemp("mock"),
        [
            "--api-key", UPSTREAM_KEY,
            "--chunks", str(MOCK_CHUNKS),
            "--models", "mock-model,mock-instruct,mock-embed",
            "--aws-access-key-id", AWS_ACCESS_KEY_ID,
        ],
        MOCK_AWS_SECRET_ACCESS_KEY=AWS_SECRET_ACCESS_KEY,
    )
    try:
        yield m
    finally:
        m.proc.stop()


# === Gateway ===


def gateway_config(mock_addr: str) -> str:
    endpoint = f"http://{mock_addr}/v1"
    return f"""\
apiVersion: v1
kind: Secret
metadata:
  name: upstream-key
type: Opaque
stringData:
  apiKey: "{UPSTREAM_KEY}"
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata:
  name: mock
spec:
  provider: openai-compatible
  endpoint: {endpoint}
  auth:
    secretRef: {{name: upstream-key, key: apiKey}}
  models:
  - name: mock-model
    pricing: {{inputPerMillion: "0.15", outputPerMillion: "0.60"}}
  - name: mock-instruct
    pricing: {{inputPerMillion: "1.50", outputPerMillion: "2.00"}}
  - name: mock-embed
    pricing: {{inputPerMillion: "0.02"}}
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
---
# Same upstream, but every request asks the mock to answer 429 with Retry-After.
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata:
  name: mock-429
spec:
  provider: openai-compatible
  endpoint: {endpoint}
  auth:
    secretRef: {{name: upstream-key, key: apiKey}}
  models:
  - name: mock-model
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
  headers:
    set:
      x-mock-status: "429"
      x-mock-retry-after: "{RATE_LIMIT_RETRY_AFTER}"
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata:
  name: chat
spec:
  match:
    models: ["gpt-4o-mini"]
  backends:
  - backendRef: {{name: mock}}
    model: mock-model
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata:
  name: gpt-family
spec:
  match:
    models: ["gpt-*"]
  backends:
  - backendRef: {{name: mock}}
    model: mock-model
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata:
  name: instruct
spec:
  match:
    models: ["gpt-3.5-turbo-instruct"]
  backends:
  - backendRef: {{name: mock}}
    model: mock-instruct
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata:
  name: embeddings
spec:
  match:
    models: ["text-embedding-3-small"]
  backends:
  - backendRef: {{name: mock}}
    model: mock-embed
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata:
  name: rate-limited
spec:
  match:
    models: ["rate-limited-model"]
  backends:
  - backendRef: {{name: mock-429}}
    model: mock-model
"""


@dataclass
class Gateway:
    proc: Proc
    listen: str  # host:port of the API listener
    admin: str  # host:port of the admin listener

    @property
    def base_url(self) -> str:
        return f"http://{self.listen}/v1"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin}"

    def metrics(self) -> str:
        status, body = http("GET", f"{self.admin_url}/metrics")
        assert status == 200, f"/metrics: {status} {body}"
        return body


@pytest.fixture(scope="session")
def gateway(mock: Mock, tmp_path_factory) -> Gateway:
    exe = binary("switchyard")
    work = tmp_path_factory.mktemp("gateway")
    config_dir = work / "config"
    config_dir.mkdir()
    (config_dir / "switchyard.yaml").write_text(gateway_config(mock.addr))
    proc = Proc(
        "switchyard",
        [
            exe, "serve",
            "--config", config_dir,
            "--listen", "127.0.0.1:0",
            "--admin-listen", "127.0.0.1:0",
            "--drain-timeout", "1s",
            "--log-format", "json",
            # No AIConsumers in this config: the gateway serves anyone only when told to.
            "--require-auth=false",
        ],
        work / "gateway.log",
        child_env(RUST_LOG="info"),
    )
    try:

        def find(line: str) -> Optional[tuple[str, str]]:
            try:
                rec = json.loads(line)
            except ValueError:
                return None
            fields = rec.get("fields") if isinstance(rec, dict) else None
            if isinstance(fields, dict) and fields.get("message") == "switchyard serving":
                return fields["listen"], fields["admin"]
            return None

        listen, admin = proc.wait_for(find, "'switchyard serving'", STARTUP_TIMEOUT_S)
        gw = Gateway(proc, listen, admin)

        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                status, body = http("GET", f"{gw.admin_url}/readyz", timeout=1.0)
            except OSError as e:
                status, body = None, str(e)
            if status == 200:
                break
            if proc.popen.poll() is not None or time.monotonic() >= deadline:
                pytest.fail(
                    f"switchyard not ready (last /readyz: {status} {body!r}):\n{proc.output()}",
                    pytrace=False,
                )
            time.sleep(0.05)
        yield gw
    finally:
        proc.stop()


def openai_client(gw: Gateway) -> openai.OpenAI:
    """The official OpenAI SDK pointed at `gw` with the caller's key; no SDK retries, so a
    test sees the gateway's first answer."""
    return openai.OpenAI(base_url=gw.base_url, api_key=CALLER_KEY, max_retries=0, timeout=10.0)


@pytest.fixture(scope="session")
def client(gateway: Gateway) -> openai.OpenAI:
    c = openai_client(gateway)
    yield c
    c.close()


# A module with its own gateway defines a `gw` fixture; these are its SDK clients.


@pytest.fixture(scope="module")
def oai(gw: Gateway) -> openai.OpenAI:
    c = openai_client(gw)
    yield c
    c.close()


@pytest.fixture(scope="module")
def claude(gw: Gateway) -> anthropic.Anthropic:
    # The SDK appends /v1/messages to the base URL.
    c = anthropic.Anthropic(
        base_url=f"http://{gw.listen}", api_key=CALLER_KEY, max_retries=0, timeout=10.0
    )
    yield c
    c.close()


@pytest.fixture
def upstream(mock: Mock) -> Mock:
    """The mock, with its request log cleared before the test."""
    mock.clear()
    return mock


# === Starting extra gateways (tests with their own config, flags or environment) ===


def start_gateway(
    work: Path,
    config: str,
    extra_args: Sequence[str] = (),
    extra_env: Optional[dict[str, str]] = None,
    name: str = "switchyard",
    require_auth: Optional[bool] = False,
) -> Gateway:
    """Starts `switchyard serve` on `config` (YAML text) with both ports on 127.0.0.1:0 and
    waits until it serves and is ready. The caller stops it with `gw.proc.stop()`.

    `require_auth` is passed as `--require-auth=…`: off by default, as most test configs have
    no AIConsumer (with one, keys are required regardless); `None` passes no flag, leaving the
    binary's default (closed)."""
    config_dir = work / f"{name}-config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "switchyard.yaml").write_text(config)
    proc = Proc(
        name,
        [
            binary("switchyard"), "serve",
            "--config", config_dir,
            "--listen", "127.0.0.1:0",
            "--admin-listen", "127.0.0.1:0",
            "--drain-timeout", "1s",
            "--log-format", "json",
            *([] if require_auth is None else [f"--require-auth={str(require_auth).lower()}"]),
            *extra_args,
        ],
        work / f"{name}.log",
        child_env(RUST_LOG="info", **(extra_env or {})),
    )

    def find(line: str) -> Optional[tuple[str, str]]:
        try:
            rec = json.loads(line)
        except ValueError:
            return None
        fields = rec.get("fields") if isinstance(rec, dict) else None
        if isinstance(fields, dict) and fields.get("message") == "switchyard serving":
            return fields["listen"], fields["admin"]
        return None

    try:
        listen, admin = proc.wait_for(find, "'switchyard serving'", STARTUP_TIMEOUT_S)
        gw = Gateway(proc, listen, admin)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                status, _ = http("GET", f"{gw.admin_url}/readyz", timeout=1.0)
            except OSError:
                status = None
            if status == 200:
                return gw
            if proc.popen.poll() is not None or time.monotonic() >= deadline:
                pytest.fail(f"{name} not ready:\n{proc.output()}", pytrace=False)
            time.sleep(0.05)
    except BaseException:
        proc.stop()
        raise


def collect_chat_stream(stream) -> tuple[str, list]:
    """Reads an OpenAI SDK chat stream to its end: the text of the first choice, and the chunks."""
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks
