"""OpenTelemetry export (spans and GenAI metrics over OTLP/HTTP) and the JSON access log,
checked against a real OTLP receiver that decodes the wire protobufs."""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from conftest import UPSTREAM_KEY, Gateway, Mock, gateway_config, start_gateway


class Receiver:
    """A minimal OTLP/HTTP receiver: keeps every decoded export request."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    if self.path == "/v1/traces":
                        req = ExportTraceServiceRequest.FromString(body)
                        for rs in req.resource_spans:
                            for ss in rs.scope_spans:
                                receiver.spans.extend(ss.spans)
                    elif self.path == "/v1/metrics":
                        receiver.metrics.append(ExportMetricsServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def metric_points(self, name: str) -> list:
        points = []
        with self.lock:
            for req in self.metrics:
                for rm in req.resource_metrics:
                    for sm in rm.scope_metrics:
                        for m in sm.metrics:
                            if m.name == name:
                                points.extend(m.histogram.data_points or m.sum.data_points)
        return points


def attrs(kvs) -> dict:
    out = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        if kind == "array_value":
            out[kv.key] = [x.string_value for x in v.array_value.values]
        else:
            out[kv.key] = getattr(v, kind)
    return out


def wait_until(cond, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}", pytrace=False)


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def otel_gateway(mock: Mock, receiver: Receiver, tmp_path_factory):
    gw = start_gateway(
        tmp_path_factory.mktemp("otel-gateway"),
        gateway_config(mock.addr),
        extra_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "switchyard-test",
            "OTEL_METRIC_EXPORT_INTERVAL": "300",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    yield gw
    gw.proc.stop()


def post(gw: Gateway, body: dict, headers: dict) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(
        f"{gw.base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **headers},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as resp:
        return resp.status, resp.read(), dict(resp.headers)


MESSAGES = [{"role": "user", "content": "Tell me something."}]


def test_spans_continue_the_callers_trace_and_carry_genai_attributes(otel_gateway, receiver, mock):
    mock.clear()
    trace_id = secrets.token_hex(16)
    parent_id = secrets.token_hex(8)
    status, _, _ = post(
        otel_gateway,
        {"model": "gpt-4o-mini", "messages": MESSAGES},
        {"traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    assert status == 200

    def ours():
        spans = [s for s in receiver.spans if s.trace_id.hex() == trace_id]
        servers = [s for s in spans if s.kind == Span.SPAN_KIND_SERVER]
        clients = [s for s in spans if s.kind == Span.SPAN_KIND_CLIENT]
        return (servers, clients) if servers and clients else None

    servers, clients = wait_until(ours, "the request's spans")
    server = servers[0]
    assert server.parent_span_id.hex() == parent_id, "the caller's traceparent was not continued"
    a = attrs(server.attributes)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == "mock-model"
    assert a["gen_ai.usage.input_tokens"] > 0
    assert a["gen_ai.usage.output_tokens"] > 0
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["switchyard.route"] == "default/chat"
    assert a["http.response.status_code"] == 200
    client = clients[0]
    assert client.parent_span_id == server.span_id
    ca = attrs(client.attributes)
    assert ca["gen_ai.request.model"] == "mock-model"
    assert ca["switchyard.attempt"] == 1
    # The attempt's context went upstream.
    seen = mock.requests("/v1/chat/completions")[-1]["headers"]
    assert seen["traceparent"].split("-")[1] == trace_id
    assert seen["traceparent"].split("-")[2] == client.span_id.hex()
    # The access log line links the request to its trace.
    log_line = wait_until(
        lambda: next(
            (json.loads(l) for l in otel_gateway.proc.output().splitlines() if trace_id in l and '"message":"request"' in l),
            None,
        ),
        "the access log line with the trace id",
    )
    assert log_line["trace_id"] == trace_id
    # Content is never exported.
    for s in servers + clients:
        assert "Tell me something" not in str(attrs(s.attributes))


def test_genai_metrics_are_exported(otel_gateway, receiver):
    status, body, _ = post(
        otel_gateway,
        {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
        {},
    )
    assert status == 200 and body.rstrip().endswith(b"data: [DONE]")

    def points():
        usage = receiver.metric_points("gen_ai.client.token.usage")
        types = {attrs(p.attributes).get("gen_ai.token.type") for p in usage}
        ttfc = receiver.metric_points("gen_ai.client.operation.time_to_first_chunk")
        dur = receiver.metric_points("gen_ai.client.operation.duration")
        return (usage, ttfc, dur) if {"input", "output"} <= types and ttfc and dur else None

    usage, ttfc, dur = wait_until(points, "GenAI metrics")
    a = attrs(dur[-1].attributes)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert list(dur[-1].explicit_bounds)[:3] == [0.01, 0.02, 0.04]
    assert list(usage[-1].explicit_bounds)[:3] == [1.0, 4.0, 16.0]


def test_metric_attributes_use_configured_model_names_not_the_clients(otel_gateway, receiver):
    """Anyone can put any string in `model`: metrics carry the route's configured name (the
    Prometheus `model` label's value), so their cardinality stays bounded; spans keep the raw one."""
    made_up = f"gpt-{secrets.token_hex(6)}"  # matched by the `gpt-*` route
    unknown = f"nope-{secrets.token_hex(6)}"  # matched by none
    status, _, _ = post(otel_gateway, {"model": made_up, "messages": MESSAGES}, {})
    assert status == 200
    with pytest.raises(urllib.error.HTTPError) as e:
        post(otel_gateway, {"model": unknown, "messages": MESSAGES}, {})
    assert e.value.code == 404

    def ours():
        spans = [s for s in receiver.spans if s.kind == Span.SPAN_KIND_SERVER
                 and attrs(s.attributes).get("gen_ai.request.model") in (made_up, unknown)]
        points = receiver.metric_points("gen_ai.client.operation.duration")
        glob = [p for p in points if attrs(p.attributes).get("gen_ai.request.model") == "gpt-*"]
        not_found = [p for p in points if attrs(p.attributes).get("error.type") == "model_not_found"]
        return (spans, glob, not_found) if len(spans) == 2 and glob and not_found else None

    spans, _, not_found = wait_until(ours, "the requests' spans and metric points")
    assert all("gen_ai.request.model" not in attrs(p.attributes) for p in not_found)
    with receiver.lock:
        exported = "\n".join(str(m) for m in receiver.metrics)
    for raw in (made_up, unknown):
        assert raw not in exported, f"the client's model string {raw!r} became a metric attribute"
    # Spans may carry it: they are per request, not series.
    assert {attrs(s.attributes)["gen_ai.request.model"] for s in spans} == {made_up, unknown}


def test_failed_requests_carry_a_real_error_type(otel_gateway, receiver):
    status_code = None
    try:
        post(otel_gateway, {"model": "rate-limited-model", "messages": MESSAGES}, {})
    except urllib.error.HTTPError as e:
        status_code = e.code
    assert status_code == 429

    def errored():
        return [
            s for s in receiver.spans
            if s.kind == Span.SPAN_KIND_SERVER and attrs(s.attributes).get("error.type")
            and attrs(s.attributes).get("gen_ai.request.model") == "rate-limited-model"
        ]

    span = wait_until(errored, "a span with error.type")[-1]
    assert attrs(span.attributes)["error.type"] in ("rate_limit_exceeded", "upstream_keys_exhausted")


def test_admin_token_guards_debug_but_not_probes_or_metrics(mock, tmp_path_factory):
    token = "adm-" + secrets.token_hex(8)
    gw = start_gateway(
        tmp_path_factory.mktemp("admin-token"),
        gateway_config(mock.addr),
        extra_env={"SWITCHYARD_ADMIN_TOKEN": token},
        name="admin-token",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(path: str, auth: str | None = None) -> int:
        req = urllib.request.Request(f"{gw.admin_url}{path}")
        if auth is not None:
            req.add_header("authorization", auth)
        try:
            with opener.open(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code

    try:
        for path in ("/debug/routes", "/debug/spend"):
            assert get(path) == 401, path
            assert get(path, "Bearer wrong") == 401, path
            assert get(path, f"Basic {token}") == 401, path
            assert get(path, f"Bearer {token}") == 200, path
        for path in ("/metrics", "/healthz", "/readyz"):
            assert get(path) == 200, path
        assert token not in gw.proc.output(), "the admin token was logged"
    finally:
        gw.proc.stop()


def test_access_log_is_one_json_line_per_request(gateway, upstream):
    rid = "req-access-log-" + secrets.token_hex(4)
    status, _, _ = post(gateway, {"model": "gpt-4o-mini", "messages": MESSAGES}, {"x-request-id": rid})
    assert status == 200

    def line():
        for l in gateway.proc.output().splitlines():
            if rid in l:
                return json.loads(l)
        return None

    rec = wait_until(line, "the access log line")
    assert rec["message"] == "request"
    for field in (
        "timestamp", "request_id", "consumer", "route", "requested_model", "upstream_model",
        "backend", "attempts", "status", "input_tokens", "output_tokens", "cost_usd",
        "duration_ms",
    ):
        assert field in rec, f"{field} missing from {rec}"
    assert rec["route"] == "default/chat"
    assert rec["requested_model"] == "gpt-4o-mini"
    assert rec["upstream_model"] == "mock-model"
    assert rec["status"] == 200 and rec["attempts"] == 1
    assert rec["output_tokens"] > 0
    log = gateway.proc.output()
    assert UPSTREAM_KEY not in log, "the upstream key leaked into the logs"
    assert "Tell me something" not in log, "prompt content leaked into the logs"


def _concurrently(n: int, fn, workers: int = 8) -> list:
    """Runs fn(i) for i in range(n) on a few threads; returns the results in order."""
    out: list = [None] * n
    nxt = iter(range(n))
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            out[i] = fn(i)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_access_log_writes_every_line_by_shutdown(mock, tmp_path_factory):
    """Lines are batched off the request path; SIGTERM's drain still writes every one of them,
    including those of requests that ended a moment before the signal."""
    gw = start_gateway(tmp_path_factory.mktemp("access-flush"), gateway_config(mock.addr))
    prefix = "req-flush-" + secrets.token_hex(4)
    n = 300
    try:
        statuses = _concurrently(n, lambda i: post(
            gw, {"model": "gpt-4o-mini", "messages": MESSAGES}, {"x-request-id": f"{prefix}-{i}"})[0])
        assert statuses == [200] * n
    finally:
        gw.proc.stop()
    assert gw.proc.popen.returncode == 0, gw.proc.output()
    ids = []
    for line in gw.proc.output().splitlines():
        if prefix in line:
            ids.append(json.loads(line)["request_id"])
    assert sorted(ids) == sorted(f"{prefix}-{i}" for i in range(n))


def test_access_log_drops_and_counts_lines_when_stdout_blocks(mock, tmp_path_factory):
    """stdout a pipe nobody reads: requests are still served at once, and the lines that do not
    fit the buffer are dropped and counted in switchyard_access_log_dropped_total."""
    import subprocess

    from conftest import binary, child_env

    work = tmp_path_factory.mktemp("access-blocked")
    (work / "config").mkdir()
    (work / "config" / "switchyard.yaml").write_text(gateway_config(mock.addr))
    errlog = work / "stderr.log"
    with open(errlog, "wb") as err:
        proc = subprocess.Popen(
            [str(binary("switchyard")), "serve", "--config", str(work / "config"),
             "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
             "--drain-timeout", "1s", "--log-format", "json", "--require-auth=false",
             "--access-log-buffer-bytes", "65536"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
            env=child_env(RUST_LOG="info"),
        )
    try:
        def serving():
            for line in errlog.read_text(errors="replace").splitlines():
                try:
                    f = json.loads(line).get("fields", {})
                except ValueError:
                    continue
                if f.get("message") == "switchyard serving":
                    return f["listen"], f["admin"]
            assert proc.poll() is None, errlog.read_text()
            return None

        listen, admin = wait_until(serving, "switchyard serving")
        gw = Gateway(None, listen, admin)
        wait_until(lambda: urllib.request.urlopen(f"{gw.admin_url}/readyz", timeout=2).status == 200,
                   "ready")
        n = 1500
        started = time.monotonic()
        statuses = _concurrently(n, lambda i: post(
            gw, {"model": "gpt-4o-mini", "messages": MESSAGES}, {"x-request-id": f"blocked-{i}"})[0])
        took = time.monotonic() - started
        assert statuses == [200] * n
        # 1500 lines are ~700 KB: the 64 KiB pipe and the 64 KiB buffer hold a fraction.
        metrics = urllib.request.urlopen(f"{gw.admin_url}/metrics", timeout=5).read().decode()
        dropped = [float(l.split()[-1]) for l in metrics.splitlines()
                   if l.startswith("switchyard_access_log_dropped_total")]
        assert dropped and dropped[0] >= n / 2, (dropped, took)
        assert dropped[0] < n
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # The writer thread is stuck on the full pipe: the process may only exit once
            # someone reads it.
            proc.stdout.read()
            proc.wait(timeout=10)
        proc.stdout.close()
