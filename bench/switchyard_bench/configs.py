"""What the targets run on: the gateway configs, nginx's configs (proxy and TLS edge) and the
edge's throwaway PKI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from .procs import BenchError
from .settings import (
    AGENT_ANTHROPIC, AGENT_OPENAI, MODEL, SEP_MODEL, SLOW_MODEL, TLS_MODEL, UPSTREAM_KEY,
    Settings,
)


# === The three targets ===


def gateway_config(mock: str, s: Settings, edge: Optional[tuple[str, str]] = None) -> str:
    """The bench config; with `edge` (its address and the PEM of its CA) also the TLS-upstream
    route: model `bench-tls` to the same mock behind the TLS edge."""
    return f"""\
apiVersion: v1
kind: Secret
metadata: {{name: upstream}}
stringData: {{apiKey: "{UPSTREAM_KEY}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: mock}}
spec:
  provider: openai-compatible
  endpoint: http://{mock}/v1
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models: [{{name: {MODEL}, pricing: {{inputPerMillion: "0.15", outputPerMillion: "0.60"}}}}]
  timeouts: {{connect: 2s, firstByte: 30s, idle: 30s}}
---
# The same mock, asked for slow streams (workload 4) through its request-header knobs.
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: mock-slow}}
spec:
  provider: openai-compatible
  endpoint: http://{mock}/v1
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models: [{{name: {MODEL}}}]
  timeouts: {{connect: 2s, firstByte: 30s, idle: 30s}}
  headers:
    set: {{x-mock-chunks: "{s.slow_chunks}", x-mock-chunk-delay-ms: "{s.slow_delay_ms}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: bench}}
spec:
  match: {{models: ["{MODEL}"]}}
  backends: [{{backendRef: {{name: mock}}, model: {MODEL}}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: bench-slow}}
spec:
  match: {{models: ["{SLOW_MODEL}"]}}
  backends: [{{backendRef: {{name: mock-slow}}, model: {MODEL}}}]
---
# The same mock writing each chunk of a stream on its own, {s.sep_delay_ms} ms apart.
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: mock-sep}}
spec:
  provider: openai-compatible
  endpoint: http://{mock}/v1
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models: [{{name: {MODEL}}}]
  timeouts: {{connect: 2s, firstByte: 30s, idle: 30s}}
  headers:
    set: {{x-mock-chunk-delay-ms: "{s.sep_delay_ms}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: bench-sep}}
spec:
  match: {{models: ["{SEP_MODEL}"]}}
  backends: [{{backendRef: {{name: mock-sep}}, model: {MODEL}}}]
---
# The same mock as an Anthropic backend (its /v1/messages), for the agentic bodies.
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: mock-anthropic}}
spec:
  provider: anthropic
  endpoint: http://{mock}
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models: [{{name: {MODEL}, pricing: {{inputPerMillion: "3", outputPerMillion: "15"}}}}]
  timeouts: {{connect: 2s, firstByte: 30s, idle: 30s}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: agent-openai}}
spec:
  match: {{models: ["{AGENT_OPENAI}"]}}
  backends: [{{backendRef: {{name: mock}}, model: {MODEL}}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: agent-anthropic}}
spec:
  match: {{models: ["{AGENT_ANTHROPIC}"]}}
  backends: [{{backendRef: {{name: mock-anthropic}}, model: {MODEL}}}]
""" + (tls_gateway_config(*edge) if edge else "")


def tls_gateway_config(edge: str, ca_pem: str) -> str:
    port = edge.rsplit(":", 1)[1]
    # A JSON string is YAML: the PEM's newlines survive as escapes.
    return f"""\
---
apiVersion: v1
kind: Secret
metadata: {{name: edge-ca}}
stringData: {{"ca.crt": {json.dumps(ca_pem)}}}
---
# The mock behind the TLS edge: h2 by ALPN, the edge's certificate (for localhost) checked
# against the throwaway CA only.
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: edge-tls}}
spec:
  provider: openai-compatible
  endpoint: https://localhost:{port}/v1
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models: [{{name: {MODEL}, pricing: {{inputPerMillion: "0.15", outputPerMillion: "0.60"}}}}]
  timeouts: {{connect: 2s, firstByte: 30s, idle: 30s}}
  tls: {{caSecretRef: {{name: edge-ca, key: ca.crt}}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: {TLS_MODEL}}}
spec:
  match: {{models: ["{TLS_MODEL}"]}}
  backends: [{{backendRef: {{name: edge-tls}}, model: {MODEL}}}]
"""


NGINX_CONF = """\
# nginx as the floor for a proxy: a plain reverse proxy to the same mock, one worker (the same
# one-core budget as Switchyard), upstream keep-alive, no buffering (streams pass through as
# they come), its access log on and buffered as it is deployed (64 KiB buffer, flushed every
# second; off with --no-access-log, and on the log-off server), request bodies up to 128 KiB
# kept in memory (the default 16 KiB would write agent-sized bodies to a temp file), and
# keep-alive request limits lifted so neither side of nginx closes connections every 1000
# requests.
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
    access_log {access_log};
    client_body_buffer_size 128k;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    upstream mock {{
        server {mock};
        keepalive 256;
        keepalive_requests 10000000;
    }}
    proxy_http_version 1.1;
    proxy_buffering off;
    proxy_set_header Connection "";
    proxy_set_header Authorization "Bearer {key}";
    proxy_set_header x-api-key "{key}";
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ proxy_pass http://mock; }}
    }}
    server {{
        listen 127.0.0.1:{nolog_port} backlog=4096;
        access_log off;
        location / {{ proxy_pass http://mock; }}
    }}
    server {{
        listen 127.0.0.1:{sep_port} backlog=4096;
        location / {{
            proxy_pass http://mock;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {key}";
            proxy_set_header x-mock-chunk-delay-ms "{sep_delay_ms}";
        }}
    }}
    server {{
        listen 127.0.0.1:{slow_port} backlog=4096;
        location / {{
            proxy_pass http://mock;
            # A proxy_set_header here replaces every inherited one, so repeat them.
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {key}";
            proxy_set_header x-mock-chunks "{slow_chunks}";
            proxy_set_header x-mock-chunk-delay-ms "{slow_delay_ms}";
        }}
    }}
{tls}}}
"""

# nginx-tls, added to NGINX_CONF when the TLS-upstream set runs: the same proxy to the TLS
# edge, with upstream keep-alive, verifying the edge's certificate against the throwaway CA as
# Switchyard does. nginx 1.22 cannot proxy over h2: it speaks HTTP/1.1 (over TLS) upstream.
NGINX_TLS_SERVER = """\
    upstream edge {{
        server {edge};
        keepalive 256;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass https://edge;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
        }}
    }}
"""

# The "provider edge" of the TLS-upstream set: TLS with h2 offered by ALPN (as public provider
# APIs are), proxying to the mock over HTTP/1.1 with keep-alive and no buffering. It stands
# for the provider, so it runs pinned with the mock on the load CPU. Its access log (the
# protocol and TLS version each client spoke) is on for the warm-up requests only: the harness
# then rewrites this file with `access_log off` and reloads the edge before any load.
EDGE_CONF = """\
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format proto '$server_protocol|$ssl_protocol|$status|$http_user_agent';
    access_log {access_log};
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    # Since nginx 1.19.7 these also bound the requests and idle time of an h2 connection.
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    upstream mock {{
        server {mock};
        keepalive 64;
        keepalive_requests 10000000;
    }}
    proxy_http_version 1.1;
    proxy_buffering off;
    proxy_set_header Connection "";
    server {{
        listen 127.0.0.1:{port} ssl http2 backlog=4096;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{ proxy_pass http://mock; }}
    }}
}}
"""


def make_pki(work: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for `localhost` (DNS SAN only) issued by it,
    with the openssl CLI: P-256, valid a day (the recipe of tests/python/edges.py)."""
    openssl = shutil.which("openssl")
    if not openssl:
        raise BenchError("openssl not found (needed for the TLS edge; --no-tls-upstream skips it)")
    work.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        r = subprocess.run([openssl, *args], cwd=work, capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise BenchError(f"openssl {' '.join(args)} failed:\n{r.stdout}{r.stderr}")

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=Switchyard bench CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", "edge.key", "-out", "edge.csr", "-subj", "/CN=localhost")
    (work / "edge.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
        "subjectAltName=DNS:localhost\n")
    run("x509", "-req", "-in", "edge.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-sha256", "-extfile", "edge.ext", "-out", "edge.pem")
    return {"ca": work / "ca.pem", "cert": work / "edge.pem", "key": work / "edge.key"}
