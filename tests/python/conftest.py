"""Fixtures for the OpenAI SDK end-to-end suite.

One `switchyard-mock` (the fake OpenAI upstream) and one `switchyard` gateway in front of it
are started per test session, as subprocesses on loopback ephemeral ports. Readiness is awaited
with bounded timeouts and both processes are always stopped at teardown.

Binaries come from `$SWITCHYARD_BIN_DIR`, else `<repo>/target/debug/`. Starting and stopping
processes is harness.py's, shared with the benchmark; its names are re-exported here, where
the test modules import them from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import anthropic
import openai
import pytest

from harness import (  # noqa: F401 - re-exported for the test modules
    REPO,
    STARTUP_TIMEOUT_S,
    STOP_TIMEOUT_S,
    Gateway,
    HarnessError,
    Mock,
    Proc,
    bin_dir,
    binary,
    child_env,
    free_port,
    http,
    start_serve,
)
from harness import start_mock as _start_mock

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

# Never send loopback traffic through a proxy configured in the environment.
for _var in ("NO_PROXY", "no_proxy"):
    _hosts = [h for h in os.environ.get(_var, "").split(",") if h]
    for _h in ("127.0.0.1", "localhost"):
        if _h not in _hosts:
            _hosts.append(_h)
    os.environ[_var] = ",".join(_hosts)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A child that exited or never got ready (`HarnessError`) is reported by its message
    and output alone, as `pytest.fail(..., pytrace=False)` would."""
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance(HarnessError):
        report.longrepr = str(call.excinfo.value)


# === Mock upstream ===


def start_mock(logs: Path, args: Sequence[str], **env: str) -> Mock:
    """Starts `switchyard-mock` on 127.0.0.1:0 with `args` and waits for its address (log
    `<logs>/mock.log`). The caller stops it with `mock.proc.stop()`."""
    return _start_mock(logs / "mock.log", args, **env)


def mock_with_keys(tmp_path_factory, name: str, keys: Sequence[str], chunks: int):
    """A module's own mock that accepts each of `keys` (a key pool's and the others a test
    tells apart in its request log), answering in `chunks` chunks: a generator for a
    module-scoped fixture (`yield from`), yielding the mock's address."""
    args = ["--chunks", str(chunks)]
    for k in keys:
        args += ["--api-key", k]
    m = start_mock(tmp_path_factory.mktemp(name), args)
    try:
        yield m.addr
    finally:
        m.proc.stop()


def keys_secret_data(keys: Sequence[str]) -> str:
    """The `stringData` lines of a Secret holding `keys` as k0, k1, ... (indented two spaces)."""
    return "\n".join(f'  k{i}: "{k}"' for i, k in enumerate(keys))


def key_pool_refs(n: int, secret: str = "keys") -> str:
    """An `auth.keys` list of the first `n` keys of `keys_secret_data` (indented four spaces)."""
    return "\n".join(f"    - secretRef: {{name: {secret}, key: k{i}}}" for i in range(n))


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


@pytest.fixture(scope="session")
def gateway(mock: Mock, tmp_path_factory) -> Gateway:
    gw = start_gateway(tmp_path_factory.mktemp("gateway"), gateway_config(mock.addr))
    try:
        yield gw
    finally:
        gw.proc.stop()


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
    return start_serve(config_dir, work / f"{name}.log", [
        "--drain-timeout", "1s",
        *([] if require_auth is None else [f"--require-auth={str(require_auth).lower()}"]),
        *extra_args,
    ], name=name, env=child_env(RUST_LOG="info", **(extra_env or {})))


def collect_chat_stream(stream) -> tuple[str, list]:
    """Reads an OpenAI SDK chat stream to its end: the text of the first choice, and the chunks."""
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks
