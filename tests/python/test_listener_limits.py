"""Hostile clients against the real binary's API listener: callers who may not call are refused
before their body is read; slow heads, slow bodies and idle connections are cut; connections
and requests in flight are capped (refused, shed with 503 in the caller's format); h2 limits
are advertised and dead h2 peers found by PING; a client stalled inside the h2c preface costs
no CPU while it waits and is closed after the bound.

Every client here is a raw socket, so what the gateway answers (or whether it closes) is seen
byte for byte. "Before the body was complete" is shown by sending part of a body and reading
a whole answer; which limit fired is read from `switchyard_listener_timeouts_total{phase}`,
not from how long something took.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import threading
import time
from typing import Optional

import pytest

from conftest import UPSTREAM_KEY, Gateway, Mock, http, start_gateway

KEY = "sk-listener-team-7d31"
# Generous bounds for reads that must end: a failing gateway shows as a timeout here, never
# a passing test that merely waited long enough.
ANSWER_WITHIN_S = 15.0


def config(mock: Mock, consumer: bool) -> str:
    docs = f"""\
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
  endpoint: http://{mock.addr}/v1
  auth: {{secretRef: {{name: upstream, key: apiKey}}}}
  models: [{{name: mock-model}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: chat}}
spec:
  match: {{models: [gpt-4o-mini]}}
  backends: [{{backendRef: {{name: mock}}, model: mock-model}}]
"""
    if consumer:
        docs += f"""\
---
apiVersion: v1
kind: Secret
metadata: {{name: consumer-key}}
stringData: {{key: "{KEY}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {{name: team}}
spec:
  keySecretRef: {{name: consumer-key, key: key}}
"""
    return docs


def gateway(mock: Mock, tmp_path_factory, name: str, args: list[str], consumer: bool = False):
    work = tmp_path_factory.mktemp(name)
    return start_gateway(work, config(mock, consumer), args, name=name)


# === Raw HTTP/1.1 ===


def host_port(gw: Gateway) -> tuple[str, int]:
    host, port = gw.listen.rsplit(":", 1)
    return host, int(port)


def connect(gw: Gateway) -> socket.socket:
    s = socket.create_connection(host_port(gw), timeout=ANSWER_WITHIN_S)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def head(method: str, path: str, headers: dict[str, str], content_length: Optional[int]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: switchyard"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if content_length is not None:
        lines += ["content-type: application/json", f"content-length: {content_length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(s: socket.socket) -> Optional[tuple[int, dict[str, str], bytes]]:
    """One HTTP/1.1 response with a Content-Length; None if the connection closed first."""
    s.settimeout(ANSWER_WITHIN_S)
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        buf += chunk
    raw_head, rest = buf.split(b"\r\n\r\n", 1)
    lines = raw_head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def closed_by_peer(s: socket.socket) -> bool:
    """Waits (bounded) for the gateway to close `s`, reading and discarding what comes."""
    s.settimeout(ANSWER_WITHIN_S)
    try:
        while s.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def still_open(s: socket.socket) -> bool:
    """Whether `s` is open with nothing to read, without waiting."""
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        s.setblocking(True)


CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
MESSAGES = json.dumps(
    {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
).encode()


def counter(gw: Gateway, name: str, labels: str = "") -> float:
    pattern = re.compile(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", re.M)
    m = pattern.search(gw.metrics())
    return float(m.group(1)) if m else 0.0


def timeouts(gw: Gateway, phase: str) -> float:
    return counter(gw, "switchyard_listener_timeouts_total", f'{{phase="{phase}"}}')


def wait_until(check, what: str, timeout: float = ANSWER_WITHIN_S):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)


# === Item 8: authenticate before reading the body ===


@pytest.fixture(scope="module")
def gw_auth(mock: Mock, tmp_path_factory):
    gw = gateway(mock, tmp_path_factory, "auth-first", [], consumer=True)
    yield gw
    gw.proc.stop()


@pytest.mark.parametrize(
    "path, headers, shape",
    [
        ("/v1/chat/completions", {}, "openai"),
        ("/v1/chat/completions", {"authorization": "Bearer sk-not-a-key"}, "openai"),
        ("/v1/chat/completions", {"x-api-key": "sk-not-a-key"}, "openai"),
        ("/v1/messages", {"anthropic-version": "2023-06-01"}, "anthropic"),
        ("/v1/messages", {"x-api-key": "sk-not-a-key", "anthropic-version": "2023-06-01"}, "anthropic"),
        ("/v1/responses", {"authorization": "Bearer sk-not-a-key"}, "openai"),
    ],
)
def test_an_unauthenticated_caller_is_refused_before_its_body_is_read(gw_auth, path, headers, shape):
    """8 MB announced, one byte sent: the 401 comes back while the body is still owed, in the
    format of the endpoint called; the body is never read (the connection is closed after)."""
    s = connect(gw_auth)
    try:
        s.sendall(head("POST", path, headers, content_length=8_000_000) + b"{")
        answer = read_response(s)
        assert answer is not None, "closed without an answer"
        status, resp_headers, body = answer
        assert status == 401, body
        err = json.loads(body)
        code = "invalid_api_key" if headers.get("authorization") or headers.get("x-api-key") else "missing_api_key"
        if shape == "openai":
            assert err["error"]["code"] == code, err
        else:
            assert err["type"] == "error" and err["error"]["type"] == "authentication_error", err
        assert resp_headers.get("x-request-id")
        # The rest of the body is not waited for: the gateway closes the connection.
        assert closed_by_peer(s)
    finally:
        s.close()


@pytest.mark.parametrize(
    "path, headers, body",
    [
        ("/v1/chat/completions", {"authorization": f"Bearer {KEY}"}, CHAT),
        ("/v1/chat/completions", {"x-api-key": KEY}, CHAT),
        ("/v1/messages", {"x-api-key": KEY, "anthropic-version": "2023-06-01"}, MESSAGES),
        ("/v1/messages", {"authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}, MESSAGES),
    ],
)
def test_a_valid_caller_gets_its_slow_body_read_as_before(gw_auth, path, headers, body):
    s = connect(gw_auth)
    try:
        s.sendall(head("POST", path, headers, content_length=len(body)) + body[:5])
        time.sleep(0.3)
        s.sendall(body[5:])
        answer = read_response(s)
        assert answer is not None
        status, _, resp = answer
        assert status == 200, resp
    finally:
        s.close()


def test_a_valid_caller_still_hears_about_a_bad_or_oversized_body(gw_auth):
    s = connect(gw_auth)
    try:
        s.sendall(head("POST", "/v1/chat/completions", {"authorization": f"Bearer {KEY}"}, 9) + b"{\"model\":")
        status, _, body = read_response(s)
        assert status == 400 and json.loads(body)["error"]["code"] == "invalid_json", body
    finally:
        s.close()
    s = connect(gw_auth)
    try:
        s.sendall(head("POST", "/v1/chat/completions", {"authorization": f"Bearer {KEY}"}, 9_000_000) + b"{")
        status, _, body = read_response(s)
        assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large", body
    finally:
        s.close()


# === Item 9: timeouts on the listener ===

HEADER_S, BODY_S, REQUEST_S, IDLE_S = 3, 4, 5, 5


@pytest.fixture(scope="module")
def gw_slow(mock: Mock, tmp_path_factory):
    gw = gateway(mock, tmp_path_factory, "timeouts", [
        "--header-read-timeout", f"{HEADER_S}s",
        "--body-read-timeout", f"{BODY_S}s",
        "--request-read-timeout", f"{REQUEST_S}s",
        "--idle-timeout", f"{IDLE_S}s",
    ])
    yield gw
    gw.proc.stop()


class Trickle(threading.Thread):
    """Sends `data` one byte every `every` seconds until done or the socket fails."""

    def __init__(self, s: socket.socket, data: bytes, every: float):
        super().__init__(daemon=True)
        self.s, self.data, self.every = s, data, every
        self.sent = 0
        self.stop = threading.Event()

    def run(self):
        for b in self.data:
            if self.stop.wait(self.every):
                return
            try:
                self.s.send(bytes([b]))
            except OSError:
                return
            self.sent += 1


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_body_sent_a_byte_a_second_is_cut_with_408(gw_slow, path):
    before = timeouts(gw_slow, "body")
    s = connect(gw_slow)
    body = CHAT if path == "/v1/chat/completions" else MESSAGES
    trickle = Trickle(s, body[1:], every=1.0)
    try:
        s.sendall(head("POST", path, {"anthropic-version": "2023-06-01"}, len(body)) + body[:1])
        trickle.start()
        answer = read_response(s)
        trickle.stop.set()
        assert trickle.sent < len(body) - 1, "the whole body was sent: nothing was cut"
        assert answer is not None, "expected a 408 before the close"
        status, _, resp = answer
        assert status == 408, resp
        err = json.loads(resp)
        if path == "/v1/messages":
            assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error", err
            assert "--body-read-timeout" in err["error"]["message"], err
        else:
            assert err["error"]["code"] == "request_timeout", err
            assert "--body-read-timeout" in err["error"]["message"], err
        assert closed_by_peer(s), "the rest of the body is not read: the connection closes"
    finally:
        trickle.stop.set()
        s.close()
    assert timeouts(gw_slow, "body") == before + 1
    # The access log names the error like any other.
    wait_until(lambda: '"error":"request_timeout"' in gw_slow.proc.output(), "the access log line")


def test_a_whole_request_deadline_spans_the_head_and_the_body(gw_slow):
    """A head within --header-read-timeout and a body within --body-read-timeout of it, but
    together past --request-read-timeout: cut by the request deadline."""
    before_body, before_request = timeouts(gw_slow, "body"), timeouts(gw_slow, "request")
    s = connect(gw_slow)
    lines = head("POST", "/v1/chat/completions", {"x-a": "1", "x-b": "2", "x-c": "3"}, len(CHAT)).split(b"\r\n")
    trickle = Trickle(s, CHAT[1:], every=0.5)
    try:
        # The head in pieces over ~2 s (under HEADER_S), then the body a byte every 0.5 s:
        # the body deadline is ~2 + BODY_S s from the first byte, the request's REQUEST_S.
        for line in lines[:-2]:
            s.sendall(line + b"\r\n")
            time.sleep(2.0 / (len(lines) - 2))
        s.sendall(b"\r\n" + CHAT[:1])
        trickle.start()
        answer = read_response(s)
        trickle.stop.set()
        assert answer is not None
        status, _, resp = answer
        assert status == 408, resp
        assert "--request-read-timeout" in json.loads(resp)["error"]["message"], resp
    finally:
        trickle.stop.set()
        s.close()
    assert timeouts(gw_slow, "request") == before_request + 1
    assert timeouts(gw_slow, "body") == before_body


def test_a_head_sent_a_byte_at_a_time_is_cut(gw_slow):
    before = timeouts(gw_slow, "header")
    s = connect(gw_slow)
    partial = b"POST /v1/chat/completions HTTP/1.1\r\nhost: switchyard\r\n" + b"x-slow: " + b"a" * 200
    trickle = Trickle(s, partial, every=0.2)
    try:
        trickle.start()
        assert closed_by_peer(s), "a head that never ends must be cut"
        assert trickle.sent < len(partial), "cut while the head was still coming"
    finally:
        trickle.stop.set()
        s.close()
    assert timeouts(gw_slow, "header") == before + 1


def test_an_idle_keepalive_connection_is_closed_after_the_idle_timeout(gw_slow):
    """Kept alive past --header-read-timeout (the two are separate), closed after
    --idle-timeout without a request."""
    before = timeouts(gw_slow, "idle")
    s = connect(gw_slow)
    try:
        for _ in range(2):
            s.sendall(head("GET", "/v1/models", {}, None))
            status, headers, _ = read_response(s)
            assert status == 200
            time.sleep(HEADER_S + 0.5)
        assert still_open(s)
        assert closed_by_peer(s)
    finally:
        s.close()
    assert timeouts(gw_slow, "idle") == before + 1


# === Item 9: caps ===


@pytest.fixture(scope="module")
def gw_conns(mock: Mock, tmp_path_factory):
    gw = gateway(mock, tmp_path_factory, "max-connections", ["--max-connections", "4"])
    yield gw
    gw.proc.stop()


def test_connections_beyond_the_cap_are_accepted_and_closed(gw_conns):
    held = []
    try:
        for _ in range(4):
            s = connect(gw_conns)
            s.sendall(head("GET", "/v1/models", {}, None))
            assert read_response(s)[0] == 200
            held.append(s)
        assert counter(gw_conns, "switchyard_connections_open") == 4
        extra = connect(gw_conns)
        try:
            extra.sendall(head("GET", "/v1/models", {}, None))
        except OSError:
            pass
        assert read_response(extra) is None, "the fifth connection must be closed unanswered"
        extra.close()
        assert counter(gw_conns, "switchyard_connections_refused_total") >= 1
        # The ones within the cap are served on as before.
        held[0].sendall(head("GET", "/v1/models", {}, None))
        assert read_response(held[0])[0] == 200
        # A place given back is taken by the next client.
        held.pop().close()
        wait_until(lambda: counter(gw_conns, "switchyard_connections_open") == 3, "the close")
        s = connect(gw_conns)
        held.append(s)
        s.sendall(head("GET", "/v1/models", {}, None))
        assert read_response(s)[0] == 200
        # The admin listener is apart: probes answer while the API listener is full.
        assert http("GET", f"{gw_conns.admin_url}/readyz")[0] == 200
    finally:
        for s in held:
            s.close()


@pytest.fixture(scope="module")
def gw_shed(mock: Mock, tmp_path_factory):
    gw = gateway(mock, tmp_path_factory, "max-in-flight", ["--max-in-flight", "2"])
    yield gw
    gw.proc.stop()


def test_requests_beyond_max_in_flight_are_shed_with_503_in_the_callers_format(gw_shed):
    held = []
    try:
        # Two requests in flight, each waiting for the rest of its body.
        for _ in range(2):
            s = connect(gw_shed)
            s.sendall(head("POST", "/v1/chat/completions", {}, len(CHAT)) + CHAT[:3])
            held.append(s)
        wait_until(lambda: counter(gw_shed, "switchyard_requests_in_flight") == 2, "2 in flight")
        before = counter(gw_shed, "switchyard_requests_shed_total")

        s = connect(gw_shed)
        s.sendall(head("POST", "/v1/chat/completions", {"x-request-id": "req-shed-1"}, len(CHAT)) + CHAT)
        status, headers, body = read_response(s)
        s.close()
        assert status == 503, body
        assert headers["retry-after"] == "1"
        assert headers["x-request-id"] == "req-shed-1"
        err = json.loads(body)["error"]
        assert err["code"] == "gateway_overloaded" and err["type"] == "gateway_error", err

        s = connect(gw_shed)
        s.sendall(head("POST", "/v1/messages", {"anthropic-version": "2023-06-01"}, len(MESSAGES)) + MESSAGES)
        status, headers, body = read_response(s)
        s.close()
        assert status == 503 and headers["retry-after"] == "1", body
        err = json.loads(body)
        assert err["type"] == "error" and err["error"]["type"] == "overloaded_error", err

        assert counter(gw_shed, "switchyard_requests_shed_total") == before + 2
        assert http("GET", f"{gw_shed.admin_url}/readyz")[0] == 200

        # Finishing the held requests gives their places back.
        for s in held:
            s.sendall(CHAT[3:])
            assert read_response(s)[0] == 200
        wait_until(lambda: counter(gw_shed, "switchyard_requests_in_flight") == 0, "0 in flight")
        s = connect(gw_shed)
        s.sendall(head("POST", "/v1/chat/completions", {}, len(CHAT)) + CHAT)
        assert read_response(s)[0] == 200
        s.close()
    finally:
        for s in held:
            s.close()


# === Item 9: h2 ===

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, PING, GOAWAY = 0x4, 0x6, 0x7


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def read_frame(s: socket.socket) -> Optional[tuple[int, int, bytes]]:
    def exactly(n: int) -> Optional[bytes]:
        buf = b""
        while len(buf) < n:
            try:
                chunk = s.recv(n - len(buf))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    h = exactly(9)
    if h is None:
        return None
    length = struct.unpack(">I", b"\0" + h[:3])[0]
    payload = exactly(length) if length else b""
    return (h[3], h[4], payload) if payload is not None else None


@pytest.fixture(scope="module")
def gw_h2(mock: Mock, tmp_path_factory):
    gw = gateway(mock, tmp_path_factory, "h2", [
        "--h2-max-concurrent-streams", "7",
        "--max-header-bytes", "20000",
        "--h2-keepalive-interval", "1s",
        "--h2-keepalive-timeout", "1s",
    ])
    yield gw
    gw.proc.stop()


def test_h2_limits_are_advertised_and_a_peer_that_stops_answering_pings_is_dropped(gw_h2):
    s = connect(gw_h2)
    try:
        s.sendall(H2_PREFACE + frame(SETTINGS, 0, 0))
        kind, flags, payload = read_frame(s)
        assert kind == SETTINGS and not flags & 1
        settings = dict(struct.unpack(">HI", payload[i:i + 6]) for i in range(0, len(payload), 6))
        assert settings[0x3] == 7, settings  # SETTINGS_MAX_CONCURRENT_STREAMS
        assert settings[0x6] == 20000, settings  # SETTINGS_MAX_HEADER_LIST_SIZE
        s.sendall(frame(SETTINGS, 1, 0))
        # Then silence: the gateway pings, and with no answer closes the connection.
        pinged, ended = False, False
        while True:
            got = read_frame(s)
            if got is None:
                ended = True
                break
            kind, flags, _ = got
            if kind == PING and not flags & 1:
                pinged = True
            if kind == GOAWAY:
                ended = True
                break
        assert pinged, "no PING from the gateway"
        assert ended and closed_by_peer(s)
    finally:
        s.close()


# === Item 10: the h2c preface ===

STALLED = 300


@pytest.fixture(scope="module")
def gw_preface(mock: Mock, tmp_path_factory):
    gw = gateway(mock, tmp_path_factory, "preface", ["--header-read-timeout", "6s"])
    yield gw
    gw.proc.stop()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime: fields 14 and 15 of the whole line (11 and 12 after the name).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_clients_stalled_inside_the_h2c_preface_cost_no_cpu_and_are_closed(gw_preface):
    pid = gw_preface.proc.popen.pid
    before = timeouts(gw_preface, "handshake")
    socks = []
    try:
        for _ in range(STALLED):
            s = connect(gw_preface)
            s.sendall(H2_PREFACE[:16])
            socks.append(s)
        wait_until(lambda: counter(gw_preface, "switchyard_connections_open") == STALLED, "all accepted")
        start = cpu_seconds(pid)
        time.sleep(2.0)
        spent = cpu_seconds(pid) - start
        assert all(still_open(s) for s in socks), "closed before the bound"
        # A 1 ms sleep-and-peek loop costs about a third of a core per 1000 such clients
        # (here: some 0.2 s of CPU in these 2 s); waiting for readability costs none.
        assert spent < 0.05, f"{spent:.3f} s of CPU in 2 s for {STALLED} stalled clients"
        for s in socks:
            assert closed_by_peer(s), "a stalled preface must be closed after the bound"
    finally:
        for s in socks:
            s.close()
    assert timeouts(gw_preface, "handshake") == before + STALLED
