"""Real third-party servers on the gateway's upstream path.

The mock speaks each provider's dialect, but on the same HTTP stack as the gateway, so it
forgives what real servers refuse (a request line in absolute-form, no Host). Here real servers
stand between the gateway and the mock, and their own logs say what crossed the wire:

* nginx as a provider edge: TLS with a certificate from a private CA (for `localhost` and
  `edge.switchyard.test`, no IP) and HTTP/2 offered by ALPN, in front of the mock. Every
  provider's backend points at it with `spec.tls.caSecretRef`; the official SDKs call through
  it. Also: `spec.tls.sni`, an IP endpoint the certificate does not name, a backend without
  the CA (refused certificates are the upstream's fault, in each caller's error shape).
* nginx as a plain-HTTP origin: HTTP/1.1 in origin-form with the right Host; streaming.
* tinyproxy as a forward proxy: `HTTPS_PROXY` (CONNECT), `HTTP_PROXY` (absolute-form),
  `NO_PROXY`, lower-case variables, and `spec.proxy` with Basic credentials, which wins over
  the environment.
* Hop-by-hop headers from the caller never reach the upstream (nginx logs them if they do).
* nginx's own 400/403 page (the provider never saw the request) is the upstream's failure,
  never the caller's error: a 502 with a short summary in each caller's shape.

nginx and tinyproxy are managed by `edges.py`.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Optional

import anthropic
import openai
import pytest

from conftest import (
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    CALLER_KEY,
    UPSTREAM_KEY,
    Gateway,
    collect_chat_stream,
    openai_client,
    start_gateway,
)
from edges import EDGE_MAX_REQUESTS, REFUSED_STATUSES, Nginx, Pki, Tinyproxy, make_pki
from test_anthropic import mock_text, only

BEDROCK_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
AZURE_API_VERSION = "2025-04-01-preview"
SNI_NAME = "edge.switchyard.test"
PROXY_USER, PROXY_PASSWORD = "switchyard", "e2e-proxy-pass"
# Every proxy variable the gateway might read; each gateway here gets only the ones it names.
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
# The hop-by-hop headers a caller sends (RFC 9110 §7.6.1, plus the Proxy-* ones, which are for
# the gateway's own hop); `X-Secret-Hop` is hop-by-hop because `Connection` names it.
HOP_BY_HOP = {
    "Connection": "x-secret-hop",
    "X-Secret-Hop": "1",
    "Keep-Alive": "timeout=5",
    "Upgrade": "h2c",
    "TE": "gzip",
    "Trailer": "x-checksum",
    "Proxy-Authorization": "Basic Zm9vOmJhcg==",
    "Proxy-Connection": "keep-alive",
}
HI = [{"role": "user", "content": "hi"}]
# Anthropic error types that put the fault on the caller.
ANTHROPIC_CALLER_TYPES = {"invalid_request_error", "authentication_error", "permission_error",
                          "not_found_error", "request_too_large", "rate_limit_error"}


# === Servers ===


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def nginx(mock, pki, tmp_path_factory) -> Iterator[Nginx]:
    n = Nginx(tmp_path_factory.mktemp("nginx"), mock.addr, pki)
    yield n
    n.stop()


@pytest.fixture(scope="module")
def tinyproxy(tmp_path_factory) -> Iterator[Tinyproxy]:
    t = Tinyproxy(tmp_path_factory.mktemp("tinyproxy"))
    yield t
    t.stop()


@pytest.fixture(scope="module")
def tinyproxy_auth(tmp_path_factory) -> Iterator[Tinyproxy]:
    t = Tinyproxy(tmp_path_factory.mktemp("tinyproxy-auth"), (PROXY_USER, PROXY_PASSWORD))
    yield t
    t.stop()


# === Gateway configuration ===


def secrets(pki: Pki) -> str:
    # JSON strings are YAML: the PEM's newlines survive as escapes.
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
apiVersion: v1
kind: Secret
metadata: {{name: edge-ca}}
stringData: {{"ca.crt": {json.dumps(pki.ca_pem)}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: proxy-auth}}
stringData: {{good: "{PROXY_USER}:{PROXY_PASSWORD}", bad: "{PROXY_USER}:not-the-password"}}
"""


CA = "{caSecretRef: {name: edge-ca, key: ca.crt}}"


def backend(name: str, provider: str, endpoint: str, model: str, extra: str = "") -> str:
    """A ModelBackend and an AIRoute matching the model `name` to it."""
    auth = ("{awsSecretRef: {name: aws}}" if provider == "bedrock"
            else "{secretRef: {name: upstream-key, key: apiKey}}")
    return f"""\
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: {name}}}
spec:
  provider: {provider}
  endpoint: {endpoint}
  auth: {auth}
  models: [{{name: "{model}"}}]
  timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
{extra}---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: {name}}}
spec:
  match: {{models: ["{name}"]}}
  backends: [{{backendRef: {{name: {name}}}, model: "{model}"}}]
"""


def edge_config(nginx: Nginx, pki: Pki) -> str:
    edge = f"https://localhost:{nginx.edge_port}"
    edge_ip = f"https://127.0.0.1:{nginx.edge_port}"
    origin = f"http://127.0.0.1:{nginx.origin_port}"
    return secrets(pki) + "".join([
        backend("edge-openai", "openai", f"{edge}/v1", "mock-model", f"  tls: {CA}\n"),
        backend("edge-anthropic", "anthropic", edge, "claude-mock", f"  tls: {CA}\n"),
        backend("edge-gemini", "gemini", edge, "gemini-mock", f"  tls: {CA}\n"),
        backend("edge-azure", "azure-openai", edge, "gpt-4o-prod",
                f"  tls: {CA}\n  azure: {{apiVersion: {AZURE_API_VERSION}}}\n"),
        backend("edge-bedrock", "bedrock", edge, BEDROCK_MODEL,
                f"  tls: {CA}\n  bedrock: {{region: us-east-1}}\n"),
        # The certificate names no IP: the name to verify comes from `sni`.
        backend("edge-sni", "openai", f"{edge_ip}/v1", "mock-model",
                f"  tls: {{caSecretRef: {{name: edge-ca, key: ca.crt}}, sni: {SNI_NAME}}}\n"),
        backend("edge-ip", "openai", f"{edge_ip}/v1", "mock-model", f"  tls: {CA}\n"),
        # The public roots do not know the private CA.
        backend("edge-no-ca", "openai", f"{edge}/v1", "mock-model"),
        backend("origin", "openai", f"{origin}/v1", "mock-model"),
    ])


def proxy_config(nginx: Nginx, pki: Pki, proxy: Tinyproxy) -> str:
    """Backends on the edge that name their proxy in `spec.proxy`."""
    edge = f"https://localhost:{nginx.edge_port}/v1"

    def via(secret_key: Optional[str]) -> str:
        auth = (f", basicAuthSecretRef: {{name: proxy-auth, key: {secret_key}}}"
                if secret_key else "")
        return f"  tls: {CA}\n  proxy: {{url: \"{proxy.url}\"{auth}}}\n"

    return secrets(pki) + "".join([
        backend("proxied", "openai", edge, "mock-model", via("good")),
        backend("proxied-no-credentials", "openai", edge, "mock-model", via(None)),
        backend("proxied-bad-credentials", "openai", edge, "mock-model", via("bad")),
    ])


def start_with_proxy_env(work: Path, name: str, config: str, **env: str) -> Gateway:
    """A gateway whose environment holds exactly the proxy variables in `env` (the test
    process's own, including conftest's NO_PROXY, are left out)."""
    with pytest.MonkeyPatch.context() as mp:
        for k in list(os.environ):
            if k.upper() in PROXY_VARS:
                mp.delenv(k)
        return start_gateway(work, config, extra_env=env, name=name)


@pytest.fixture(scope="module")
def gw(nginx, pki, tmp_path_factory) -> Iterator[Gateway]:
    """The gateway without any proxy."""
    g = start_with_proxy_env(tmp_path_factory.mktemp("edge-gw"), "edge-gw",
                             edge_config(nginx, pki))
    yield g
    g.proc.stop()


@pytest.fixture(scope="module")
def gw_env_proxy(nginx, pki, tinyproxy, tmp_path_factory) -> Iterator[Gateway]:
    """Upper-case proxy variables, nothing exempt."""
    g = start_with_proxy_env(tmp_path_factory.mktemp("env-proxy-gw"), "env-proxy-gw",
                             edge_config(nginx, pki), HTTPS_PROXY=tinyproxy.url,
                             HTTP_PROXY=tinyproxy.url, NO_PROXY="")
    yield g
    g.proc.stop()


@pytest.fixture(scope="module")
def gw_no_proxy_upper(nginx, pki, tinyproxy, tmp_path_factory) -> Iterator[Gateway]:
    """Upper-case proxy variables; `localhost` is exempt (127.0.0.1 is not: NO_PROXY matches
    host names as written)."""
    g = start_with_proxy_env(tmp_path_factory.mktemp("no-proxy-gw"), "no-proxy-gw",
                             edge_config(nginx, pki), HTTPS_PROXY=tinyproxy.url,
                             HTTP_PROXY=tinyproxy.url, NO_PROXY="localhost")
    yield g
    g.proc.stop()


@pytest.fixture(scope="module")
def gw_no_proxy_lower(nginx, pki, tinyproxy, tmp_path_factory) -> Iterator[Gateway]:
    """The same in lower case."""
    g = start_with_proxy_env(tmp_path_factory.mktemp("no-proxy-lower-gw"), "no-proxy-lower-gw",
                             edge_config(nginx, pki), https_proxy=tinyproxy.url,
                             http_proxy=tinyproxy.url, no_proxy="localhost")
    yield g
    g.proc.stop()


@pytest.fixture(scope="module")
def gw_spec_proxy(nginx, pki, tinyproxy, tinyproxy_auth, tmp_path_factory) -> Iterator[Gateway]:
    """Backends with `spec.proxy` (the authenticating tinyproxy), in a gateway whose
    environment names the other tinyproxy: the backend's setting must win."""
    g = start_with_proxy_env(tmp_path_factory.mktemp("spec-proxy-gw"), "spec-proxy-gw",
                             proxy_config(nginx, pki, tinyproxy_auth),
                             HTTPS_PROXY=tinyproxy.url, HTTP_PROXY=tinyproxy.url, NO_PROXY="")
    yield g
    g.proc.stop()


# === Helpers ===


def post(gw: Gateway, path: str, body: dict, headers: Optional[dict] = None) -> tuple[int, dict]:
    """One POST to the gateway with exactly these headers (besides Host, Content-Type,
    Content-Length and the caller's key); returns (status, JSON body)."""
    host, port = gw.listen.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        payload = json.dumps(body).encode()
        conn.putrequest("POST", path, skip_accept_encoding=True)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(payload)))
        conn.putheader("Authorization", f"Bearer {CALLER_KEY}")
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders(payload)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            pytest.fail(f"{path}: {resp.status} with a body that is not JSON: {raw!r}")
    finally:
        conn.close()


def chat(gw: Gateway, model: str, headers: Optional[dict] = None) -> tuple[int, dict]:
    return post(gw, "/v1/chat/completions", {"model": model, "messages": HI}, headers)


def assert_certificate_refused(status: int, body: dict) -> None:
    """The OpenAI shape of a refused upstream certificate: the upstream's fault, not the
    caller's, and the message says why."""
    assert status == 502, body
    err = body["error"]
    assert err["type"] == "upstream_error", body
    message = err["message"].lower()
    assert "certificate" in message and "refused" in message, body
    assert err.get("param") is None, body


def assert_edge(entry: dict, nginx: Nginx, request: str, sni: str = "localhost",
                host: str = "localhost") -> None:
    """One request as the TLS edge received it: origin-form over HTTP/2, SNI `sni`, and
    :authority the endpoint's `host` with its (non-default) port."""
    assert entry["request"] == f"{request} HTTP/2.0", entry
    assert "://" not in entry["request"], entry
    assert entry["server_protocol"] == "HTTP/2.0", entry
    assert entry["ssl_server_name"] == sni, entry
    assert entry["ssl_protocol"].startswith("TLSv1."), entry
    assert entry["status"] == "200", entry
    assert entry["host"] == host, entry
    assert entry["http_host"] == f"{host}:{nginx.edge_port}", entry


def assert_origin(entry: dict, nginx: Nginx, request: str) -> None:
    """One request as the plain origin received it: origin-form HTTP/1.1 with Host."""
    assert entry["request"] == f"{request} HTTP/1.1", entry
    assert entry["server_protocol"] == "HTTP/1.1", entry
    assert entry["http_host"] == f"127.0.0.1:{nginx.origin_port}", entry
    assert entry["status"] == "200", entry


def assert_no_hop_by_hop(entry: dict) -> None:
    for field in ("http_x_secret_hop", "http_keep_alive", "http_upgrade", "http_trailer",
                  "http_proxy_authorization", "http_proxy_connection"):
        assert entry[field] == "", (field, entry)
    assert "gzip" not in entry["http_te"], entry
    connection = entry["http_connection"].lower()
    assert "x-secret-hop" not in connection and "upgrade" not in connection, entry


# === 1. The TLS + HTTP/2 provider edge, every provider, through the official SDKs ===


def test_openai_sdk_through_the_edge(oai, nginx, upstream):
    mark = nginx.edge_log.mark()
    resp = oai.chat.completions.create(model="edge-openai", messages=HI)
    assert resp.choices[0].message.content == mock_text()
    [entry] = nginx.edge_log.wait_entries(mark, 1)
    assert_edge(entry, nginx, "POST /v1/chat/completions")
    # nginx passed on what the gateway sent, credentials included.
    rec = only(upstream, "/v1/chat/completions")
    assert rec["headers"].get("authorization") == f"Bearer {UPSTREAM_KEY}"


def test_openai_sdk_stream_through_the_edge(oai, nginx, upstream):
    mark = nginx.edge_log.mark()
    text, _ = collect_chat_stream(
        oai.chat.completions.create(model="edge-openai", messages=HI, stream=True))
    assert text == mock_text()
    [entry] = nginx.edge_log.wait_entries(mark, 1)
    assert_edge(entry, nginx, "POST /v1/chat/completions")


@pytest.mark.parametrize("model, request_line", [
    ("edge-anthropic", "POST /v1/messages"),
    ("edge-openai", "POST /v1/chat/completions"),
])
def test_anthropic_sdk_through_the_edge(claude, nginx, upstream, model, request_line):
    mark = nginx.edge_log.mark()
    msg = claude.messages.create(model=model, max_tokens=100, messages=HI)
    assert msg.content[0].text == mock_text()
    [entry] = nginx.edge_log.wait_entries(mark, 1)
    assert_edge(entry, nginx, request_line)


@pytest.mark.parametrize("model, request_line", [
    ("edge-anthropic", "POST /v1/messages"),
    ("edge-openai", "POST /v1/chat/completions"),
])
def test_anthropic_sdk_stream_through_the_edge(claude, nginx, upstream, model, request_line):
    mark = nginx.edge_log.mark()
    with claude.messages.stream(model=model, max_tokens=100, messages=HI) as s:
        text = "".join(s.text_stream)
    assert text == mock_text()
    [entry] = nginx.edge_log.wait_entries(mark, 1)
    assert_edge(entry, nginx, request_line)


@pytest.mark.parametrize("model, request_line", [
    ("edge-gemini", "POST /v1beta/models/gemini-mock:generateContent"),
    ("edge-azure",
     f"POST /openai/deployments/gpt-4o-prod/chat/completions?api-version={AZURE_API_VERSION}"),
    # The SigV4 signature the mock checks covers the Host the edge passed on.
    ("edge-bedrock", "POST /model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"),
])
def test_other_providers_through_the_edge(oai, nginx, upstream, model, request_line):
    mark = nginx.edge_log.mark()
    resp = oai.chat.completions.create(model=model, messages=HI)
    assert resp.choices[0].message.content == mock_text()
    [entry] = nginx.edge_log.wait_entries(mark, 1)
    assert_edge(entry, nginx, request_line)


# === 2. SNI ===


def test_sni_names_the_server_when_the_endpoint_is_an_ip(oai, nginx, upstream):
    mark = nginx.edge_log.mark()
    resp = oai.chat.completions.create(model="edge-sni", messages=HI)
    assert resp.choices[0].message.content == mock_text()
    [entry] = nginx.edge_log.wait_entries(mark, 1)
    # `sni` changes the name in TLS only: :authority is still the endpoint's.
    assert_edge(entry, nginx, "POST /v1/chat/completions", sni=SNI_NAME, host="127.0.0.1")


def test_ip_endpoint_the_certificate_does_not_name_is_refused(gw, nginx, upstream):
    mark = nginx.edge_log.mark()
    assert_certificate_refused(*chat(gw, "edge-ip"))
    assert nginx.edge_log.entries(mark) == [], "no request may follow a refused handshake"
    assert upstream.requests() == []


# === 3. A certificate the gateway does not trust ===


def test_untrusted_certificate_is_an_upstream_error(gw, nginx, upstream):
    mark = nginx.edge_log.mark()
    assert_certificate_refused(*chat(gw, "edge-no-ca"))
    assert nginx.edge_log.entries(mark) == [], "no request may follow a refused handshake"
    assert upstream.requests() == []


def test_untrusted_certificate_in_anthropic_shape(gw, claude, upstream):
    status, body = post(gw, "/v1/messages",
                        {"model": "edge-no-ca", "max_tokens": 10, "messages": HI},
                        {"anthropic-version": "2023-06-01"})
    assert status == 502, body
    assert body["type"] == "error", body
    assert body["error"]["type"] == "api_error", body
    assert body["error"]["type"] not in ANTHROPIC_CALLER_TYPES
    message = body["error"]["message"].lower()
    assert "certificate" in message and "refused" in message, body
    # The SDK sees a server-side failure.
    with pytest.raises(anthropic.APIStatusError) as e:
        claude.messages.create(model="edge-no-ca", max_tokens=10, messages=HI)
    assert e.value.status_code == 502


# === 4. A plain-HTTP origin ===


def test_plain_origin_gets_origin_form_http1(oai, nginx, upstream):
    mark = nginx.origin_log.mark()
    resp = oai.chat.completions.create(model="origin", messages=HI)
    assert resp.choices[0].message.content == mock_text()
    [entry] = nginx.origin_log.wait_entries(mark, 1)
    assert_origin(entry, nginx, "POST /v1/chat/completions")
    assert entry["ssl_server_name"] == "" and entry["http_via"] == "", entry


def test_plain_origin_streams(oai, nginx, upstream):
    mark = nginx.origin_log.mark()
    text, chunks = collect_chat_stream(
        oai.chat.completions.create(model="origin", messages=HI, stream=True))
    assert text == mock_text() and len(chunks) > 1
    [entry] = nginx.origin_log.wait_entries(mark, 1)
    assert_origin(entry, nginx, "POST /v1/chat/completions")


@pytest.mark.parametrize("model, log", [("origin", "origin_log"), ("edge-openai", "edge_log")])
def test_an_agent_sized_body_arrives_whole_with_its_exact_length(gw, nginx, upstream, model, log):
    # A passthrough sends the caller's body as slices around the rewritten model: nginx (the
    # plain HTTP/1.1 origin, and the TLS edge over h2) must see a Content-Length equal to
    # those bytes, no chunked framing, and pass on a body that parses to the caller's with
    # only the model changed.
    body = json.loads((Path(__file__).parents[2] / "bench/bodies/openai-70k-model-last.json")
                      .read_text())
    body.pop("stream", None)
    body.pop("stream_options", None)
    body["model"] = model
    payload_len = len(json.dumps(body).encode())
    assert payload_len > 60_000
    mark = getattr(nginx, log).mark()
    status, resp = post(gw, "/v1/chat/completions", body)
    assert status == 200, resp
    [entry] = getattr(nginx, log).wait_entries(mark, 1)
    assert entry["status"] == "200", entry
    assert entry["http_transfer_encoding"] == "", entry
    rec = only(upstream, "/v1/chat/completions")
    assert rec["body"] == {**body, "model": "mock-model"}
    # json.dumps wrote the caller's body; every byte but the model's value is passed on.
    assert int(entry["content_length"]) == payload_len - len(model) + len("mock-model"), entry


# === 1b. One multiplexed h2 connection, and the edge's GOAWAY ===


def test_concurrent_requests_share_one_h2_connection(oai, nginx, upstream):
    # Whatever connections earlier tests left, a fresh one is open after this request.
    oai.chat.completions.create(model="edge-openai", messages=HI)
    mark = nginx.edge_log.mark()
    n = 8  # fewer than the edge allows on one connection (EDGE_MAX_REQUESTS)
    with ThreadPoolExecutor(n) as pool:
        texts = list(pool.map(
            lambda _: oai.chat.completions.create(
                model="edge-openai", messages=HI).choices[0].message.content, range(n)))
    assert texts == [mock_text()] * n
    entries = nginx.edge_log.wait_entries(mark, n)
    # Counted from the edge's own log: at most two connections (the one in use, and one more
    # if the edge's GOAWAY fell inside the burst).
    assert len({e["connection"] for e in entries}) <= 2, entries
    assert all(e["server_protocol"] == "HTTP/2.0" for e in entries), entries


def test_requests_outlive_the_edges_goaway(oai, nginx, upstream):
    mark = nginx.edge_log.mark()
    total, wave = 3 * EDGE_MAX_REQUESTS, 6

    def one(i: int) -> str:
        if i % 2:
            text, _ = collect_chat_stream(oai.chat.completions.create(
                model="edge-openai", messages=HI, stream=True))
            return text
        return oai.chat.completions.create(model="edge-openai", messages=HI).choices[0].message.content

    with ThreadPoolExecutor(wave) as pool:
        texts = list(pool.map(one, range(total)))
    assert texts == [mock_text()] * total
    entries = nginx.edge_log.wait_entries(mark, total)
    ok = [e for e in entries if e["status"] == "200"]
    assert len(ok) == total, entries
    # The edge closed its connections along the way (GOAWAY every EDGE_MAX_REQUESTS), and the
    # gateway moved on to new ones without a failed request.
    assert len({e["connection"] for e in ok}) >= 3, ok
    assert max(int(e["connection_requests"]) for e in ok) <= EDGE_MAX_REQUESTS


# === 5. Forward proxies ===


def test_https_proxy_tunnels_with_connect(gw_env_proxy, tinyproxy, nginx, upstream):
    client = openai_client(gw_env_proxy)
    try:
        tp, edge = tinyproxy.log.mark(), nginx.edge_log.mark()
        resp = client.chat.completions.create(model="edge-openai", messages=HI)
        assert resp.choices[0].message.content == mock_text()
        text, _ = collect_chat_stream(
            client.chat.completions.create(model="edge-openai", messages=HI, stream=True))
        assert text == mock_text()
    finally:
        client.close()
    target = f"localhost:{nginx.edge_port}"
    tinyproxy.log.wait(tp, lambda _: tinyproxy.requests(tp), "request line")
    requests = tinyproxy.requests(tp)
    # One tunnel (reused) or one per request, never anything but CONNECT to the edge.
    assert requests and all(r == f"CONNECT {target} HTTP/1.1" for r in requests), requests
    assert set(tinyproxy.opened(tp)) == {target}
    # TLS and h2 end to end through the tunnel.
    for entry in nginx.edge_log.wait_entries(edge, 2):
        assert_edge(entry, nginx, "POST /v1/chat/completions")


def test_http_proxy_gets_absolute_form(gw_env_proxy, tinyproxy, nginx, upstream):
    tp, origin = tinyproxy.log.mark(), nginx.origin_log.mark()
    status, body = chat(gw_env_proxy, "origin")
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == mock_text()
    tinyproxy.log.wait(tp, lambda _: tinyproxy.requests(tp), "request line")
    assert tinyproxy.requests(tp) == [
        f"POST http://127.0.0.1:{nginx.origin_port}/v1/chat/completions HTTP/1.1"]
    # The proxy, not the gateway, spoke to the origin, in origin-form.
    [entry] = nginx.origin_log.wait_entries(origin, 1)
    assert_origin(entry, nginx, "POST /v1/chat/completions")
    assert "tinyproxy" in entry["http_via"], entry


@pytest.mark.parametrize("gateway", ["gw_no_proxy_upper", "gw_no_proxy_lower"])
def test_no_proxy_exempts_only_the_hosts_it_names(request, gateway, tinyproxy, nginx, upstream):
    gw = request.getfixturevalue(gateway)
    tp, edge = tinyproxy.log.mark(), nginx.edge_log.mark()
    status, body = chat(gw, "edge-openai")
    assert status == 200, body
    [entry] = nginx.edge_log.wait_entries(edge, 1)
    assert_edge(entry, nginx, "POST /v1/chat/completions")
    assert tinyproxy.log.lines(tp) == [], "localhost is exempt: the edge is reached directly"

    # 127.0.0.1 is not exempt. HTTPS: a tunnel to the endpoint's address, the SNI inside it.
    status, body = chat(gw, "edge-sni")
    assert status == 200, body
    tinyproxy.log.wait(tp, lambda _: tinyproxy.requests(tp), "request line")
    assert set(tinyproxy.requests(tp)) == {f"CONNECT 127.0.0.1:{nginx.edge_port} HTTP/1.1"}
    [_, entry] = nginx.edge_log.wait_entries(edge, 2)
    assert_edge(entry, nginx, "POST /v1/chat/completions", sni=SNI_NAME, host="127.0.0.1")

    # Plain HTTP: absolute-form to the proxy.
    tp = tinyproxy.log.mark()
    status, body = chat(gw, "origin")
    assert status == 200, body
    tinyproxy.log.wait(tp, lambda _: tinyproxy.requests(tp), "request line")
    assert tinyproxy.requests(tp) == [
        f"POST http://127.0.0.1:{nginx.origin_port}/v1/chat/completions HTTP/1.1"]


def test_spec_proxy_with_basic_auth_wins_over_the_environment(
        gw_spec_proxy, tinyproxy, tinyproxy_auth, nginx, upstream):
    env_tp, tp, edge = tinyproxy.log.mark(), tinyproxy_auth.log.mark(), nginx.edge_log.mark()
    client = openai_client(gw_spec_proxy)
    try:
        resp = client.chat.completions.create(model="proxied", messages=HI)
    finally:
        client.close()
    assert resp.choices[0].message.content == mock_text()
    target = f"localhost:{nginx.edge_port}"
    tinyproxy_auth.log.wait(tp, lambda _: tinyproxy_auth.opened(tp), "connection")
    assert tinyproxy_auth.requests(tp) == [f"CONNECT {target} HTTP/1.1"]
    assert tinyproxy_auth.opened(tp) == [target]
    [entry] = nginx.edge_log.wait_entries(edge, 1)
    assert_edge(entry, nginx, "POST /v1/chat/completions")
    assert tinyproxy.log.lines(env_tp) == [], "spec.proxy wins over HTTPS_PROXY"


@pytest.mark.parametrize("model", ["proxied-no-credentials", "proxied-bad-credentials"])
def test_proxy_refusing_the_gateway_is_an_upstream_error(
        gw_spec_proxy, tinyproxy, tinyproxy_auth, nginx, upstream, model):
    env_tp, tp, edge = tinyproxy.log.mark(), tinyproxy_auth.log.mark(), nginx.edge_log.mark()
    status, body = chat(gw_spec_proxy, model)
    assert status == 502, body
    assert body["error"]["type"] == "upstream_error", body
    # The proxy saw the CONNECT and answered 407 without opening a connection.
    tinyproxy_auth.log.wait(tp, lambda _: tinyproxy_auth.requests(tp), "request line")
    assert set(tinyproxy_auth.requests(tp)) == {f"CONNECT localhost:{nginx.edge_port} HTTP/1.1"}
    assert tinyproxy_auth.opened(tp) == []
    assert nginx.edge_log.entries(edge) == []
    assert tinyproxy.log.lines(env_tp) == []
    assert upstream.requests() == []


# === 6. Hop-by-hop headers ===


@pytest.mark.parametrize("model, log", [("origin", "origin_log"), ("edge-openai", "edge_log")])
def test_hop_by_hop_headers_stop_at_the_gateway(gw, nginx, upstream, model, log):
    access = getattr(nginx, log)
    mark = access.mark()
    status, body = chat(gw, model, HOP_BY_HOP)
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == mock_text()
    [entry] = access.wait_entries(mark, 1)
    assert_no_hop_by_hop(entry)
    # nginx would have passed these two on to the mock had it received them.
    headers = only(upstream, "/v1/chat/completions")["headers"]
    assert "x-secret-hop" not in headers and "proxy-authorization" not in headers, headers


# === 7. An edge's own refusal ===


@pytest.fixture(scope="module")
def gw_refusing(nginx, pki, tmp_path_factory) -> Iterator[Gateway]:
    """Backends under nginx's `/refuse/<status>/` locations on the TLS edge, where nginx
    itself refuses every request with its HTML page; and per status a route that falls back
    from the refusing backend to the plain origin."""
    edge = f"https://localhost:{nginx.edge_port}"
    config = secrets(pki) + backend("origin", "openai", f"http://127.0.0.1:{nginx.origin_port}/v1",
                                    "mock-model")
    for status in REFUSED_STATUSES:
        config += backend(f"refused-{status}-openai", "openai", f"{edge}/refuse/{status}/v1",
                          "mock-model", f"  tls: {CA}\n")
        config += backend(f"refused-{status}-anthropic", "anthropic", f"{edge}/refuse/{status}",
                          "claude-mock", f"  tls: {CA}\n")
        config += f"""\
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: refused-{status}-fallback}}
spec:
  match: {{models: ["refused-{status}-fallback"]}}
  backends: [{{backendRef: {{name: refused-{status}-openai}}, model: mock-model}}]
  fallbacks: [{{backendRef: {{name: origin}}, model: mock-model}}]
"""
    g = start_with_proxy_env(tmp_path_factory.mktemp("refusing-gw"), "refusing-gw", config)
    yield g
    g.proc.stop()


@pytest.mark.parametrize("status", REFUSED_STATUSES)
def test_edge_refusal_is_not_the_callers_error(gw_refusing, nginx, upstream, status):
    """The request never reached a provider, so its 4xx says nothing about the caller's
    request: each SDK sees a server-side 502 whose message sums the page up in a line, and a
    fallback serves the request."""
    title = f"{status} {http.client.responses[status]}"
    edge = nginx.edge_log.mark()
    oai = openai_client(gw_refusing)
    claude = anthropic.Anthropic(base_url=f"http://{gw_refusing.listen}", api_key=CALLER_KEY,
                                 max_retries=0, timeout=10.0)
    try:
        with pytest.raises(openai.APIStatusError) as e:
            oai.chat.completions.create(model=f"refused-{status}-openai", messages=HI)
        assert e.value.status_code == 502, e.value.body
        err = e.value.body
        assert err["type"] == "upstream_error", err
        message = err["message"]
        assert len(message) < 300 and "<html" not in message.lower(), message
        assert message.startswith(f"upstream default/refused-{status}-openai answered {title} "
                                  "with a body that is not openai's error format (text/html, "
                                  ), message
        assert message.endswith(f'bytes): "{title}"'), message

        with pytest.raises(anthropic.APIStatusError) as e:
            claude.messages.create(model=f"refused-{status}-anthropic", max_tokens=10,
                                   messages=HI)
        assert e.value.status_code == 502, e.value.body
        assert e.value.body["type"] == "error", e.value.body
        err = e.value.body["error"]
        assert err["type"] == "api_error", err
        assert err["type"] not in ANTHROPIC_CALLER_TYPES
        assert len(err["message"]) < 300 and "<html" not in err["message"].lower(), err
        assert "not anthropic's error format" in err["message"], err

        # An upstream failure, not the caller's: the route moves on to its fallback.
        resp = oai.chat.completions.create(model=f"refused-{status}-fallback", messages=HI)
        assert resp.choices[0].message.content == mock_text()
    finally:
        oai.close()
        claude.close()
    # nginx itself answered all three refusals over h2; only the fallback reached the mock.
    entries = nginx.edge_log.wait_entries(edge, 3)
    assert [(x["request"], x["status"]) for x in entries] == [
        (f"POST /refuse/{status}/v1/chat/completions HTTP/2.0", str(status)),
        (f"POST /refuse/{status}/v1/messages HTTP/2.0", str(status)),
        (f"POST /refuse/{status}/v1/chat/completions HTTP/2.0", str(status)),
    ], entries
    assert [r["path"] for r in upstream.requests()] == ["/v1/chat/completions"]


# === 2b. The CA bundle follows its Secret ===


def test_a_changed_ca_secret_is_trusted_without_a_restart(nginx, pki, upstream, tmp_path_factory):
    """The backend starts with another CA in its Secret (refused), the Secret is edited to
    the edge's CA, and the next table trusts it: no restart, no stale connection."""
    other = make_pki(tmp_path_factory.mktemp("other-pki"))
    work = tmp_path_factory.mktemp("ca-rotation-gw")
    endpoint = f"https://localhost:{nginx.edge_port}/v1"

    def config(ca: Pki) -> str:
        return secrets(ca) + backend("rotated", "openai", endpoint, "mock-model", f"  tls: {CA}\n")

    gw = start_gateway(work, config(other), extra_args=["--reload-debounce", "50ms"],
                       name="ca-rotation-gw")
    try:
        status, body = chat(gw, "rotated")
        assert_certificate_refused(status, body)
        assert "caSecretRef" in body["error"]["message"], body
        (work / "ca-rotation-gw-config" / "switchyard.yaml").write_text(config(pki))
        deadline = time.monotonic() + 10
        while True:
            status, body = chat(gw, "rotated")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == mock_text()
    finally:
        gw.proc.stop()


# === 1c. HTTP/1.1 over TLS when h2 is turned off ===


def test_http1_over_tls_when_h2_is_off(nginx, pki, upstream, tmp_path_factory):
    """`--upstream-http2=false`: only HTTP/1.1 is offered by ALPN; the edge then gets
    origin-form HTTP/1.1 with Host, over TLS with the same SNI and certificate check."""
    work = tmp_path_factory.mktemp("h1-tls-gw")
    gw = start_gateway(work, edge_config(nginx, pki), extra_args=["--upstream-http2=false"],
                       name="h1-tls-gw")
    try:
        mark = nginx.edge_log.mark()
        for _ in range(3):
            status, body = chat(gw, "edge-openai")
            assert status == 200, body
        entries = nginx.edge_log.wait_entries(mark, 3)
        for e in entries:
            assert e["request"] == "POST /v1/chat/completions HTTP/1.1", e
            assert e["server_protocol"] == "HTTP/1.1", e
            assert e["http_host"] == f"localhost:{nginx.edge_port}", e
            assert e["ssl_server_name"] == "localhost", e
        # Kept alive: the three went over one connection.
        assert len({e["connection"] for e in entries}) == 1, entries
        status, body = chat(gw, "edge-no-ca")
        assert_certificate_refused(status, body)
    finally:
        gw.proc.stop()
