"""Real third-party servers for the gateway's upstream path: nginx and tinyproxy.

* `make_pki` issues, with the openssl CLI, a throwaway CA and a server certificate for
  `localhost` and `edge.switchyard.test` (deliberately no IP SAN).
* `Nginx` runs one nginx with two servers in front of `switchyard-mock`: a TLS + HTTP/2
  "provider edge" and a plain-HTTP "origin". Each writes one JSON object per request to its own
  access log, with what crossed the wire (request line, Host, SNI, protocol, hop-by-hop headers).
  Under `/refuse/<status>/` both answer with nginx's own HTML refusal instead of the mock.
* `Tinyproxy` runs a forward proxy (optionally with Basic auth) whose log shows each request
  line it received (`CONNECT host:port` or an absolute-form target).

Everything listens on 127.0.0.1 with ephemeral ports, every wait is bounded and the processes
are stopped by `stop()`; the fixtures in the test modules call it at teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest

from conftest import STARTUP_TIMEOUT_S, Proc
from harness import free_port

# The names the edge certificate is valid for; 127.0.0.1 is not among them.
EDGE_DNS_NAMES = ("localhost", "edge.switchyard.test")
# Attempts at binding a port picked as free (another process may take it in between).
PORT_ATTEMPTS = 3
# How long a server may take to write the log line of a request the client already saw end.
LOG_WAIT_S = 3.0


# === Processes and ports ===


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def find_exe(name: str, *fallbacks: str) -> str:
    path = shutil.which(name) or next((p for p in fallbacks if os.access(p, os.X_OK)), None)
    if not path:
        pytest.fail(f"{name} is not installed (.ci/run installs it with apt-get)", pytrace=False)
    return path


def _start(name: str, launch: Callable[[], tuple[Proc, Callable[[], bool], LogFile]]) -> Proc:
    """Runs `launch` (which starts a server on fresh ports and says how to tell it is ready,
    and which log it reports to) until the server is ready, within STARTUP_TIMEOUT_S per
    attempt. A server that exits because one of its ports was taken meanwhile is started again
    on other ports. (A port that accepts connections is not proof enough: it may be the other
    process's.)"""
    for attempt in range(PORT_ATTEMPTS):
        proc, ready, log = launch()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.popen.poll() is None and ready():
                return proc
            if proc.popen.poll() is not None:
                out = proc.output() + "\n".join(log.lines())
                proc.stop()
                if "in use" in out or "listening sockets" in out:
                    if attempt + 1 < PORT_ATTEMPTS:
                        break
                pytest.fail(f"{name} exited with {proc.popen.returncode}:\n{out}", pytrace=False)
            if time.monotonic() >= deadline:
                out = proc.output() + "\n".join(log.lines())
                proc.stop()
                pytest.fail(f"{name} was not ready within {STARTUP_TIMEOUT_S}s:\n{out}",
                            pytrace=False)
            time.sleep(0.02)
    raise AssertionError("unreachable")


def _children(pid: int) -> list[int]:
    """The ids of the processes whose parent is `pid` (from /proc; empty elsewhere)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # `pid (comm) state ppid …`; comm may hold spaces, so split after its ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1:2] == [str(pid)]:
            out.append(int(stat.parent.name))
    return out


def _bare_env() -> dict[str, str]:
    """The environment of nginx and tinyproxy: no proxy settings of the test process."""
    return {k: v for k, v in os.environ.items()
            if not k.lower().endswith("_proxy") and not k.startswith(("SWITCHYARD_", "MOCK_"))}


# === Logs ===


class LogFile:
    """A log file appended to by a server; tests take a mark before acting and read after it."""

    def __init__(self, path: Path):
        self.path = path

    def mark(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def lines(self, since: int = 0) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(since)
                data = f.read()
        except FileNotFoundError:
            return []
        # A line still being written is left for the next read.
        complete = data[: data.rfind(b"\n") + 1]
        return complete.decode("utf-8", "replace").splitlines()

    def wait(self, since: int, ready: Callable[[list[str]], bool], what: str,
             timeout: float = LOG_WAIT_S) -> list[str]:
        """The lines after `since` once `ready(lines)` holds; fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines(since)
            if ready(lines):
                return lines
            if time.monotonic() >= deadline:
                pytest.fail(f"{self.path.name}: no {what} within {timeout}s; lines since the "
                            f"mark:\n" + "\n".join(lines), pytrace=False)
            time.sleep(0.02)


class AccessLog(LogFile):
    """An nginx access log in the `wire` format: one JSON object per request."""

    def entries(self, since: int = 0) -> list[dict]:
        return [json.loads(line) for line in self.lines(since) if line.strip()]

    def wait_entries(self, since: int, count: int, timeout: float = LOG_WAIT_S) -> list[dict]:
        """The entries after `since` once there are at least `count` of them."""
        self.wait(since, lambda lines: sum(1 for line in lines if line.strip()) >= count,
                  f"{count} access log entries", timeout)
        return self.entries(since)


# === Certificates ===


@dataclass
class Pki:
    ca: Path  # PEM CA certificate (what a backend's caSecretRef holds)
    cert: Path  # PEM server certificate, for EDGE_DNS_NAMES
    key: Path  # its private key

    @property
    def ca_pem(self) -> str:
        return self.ca.read_text()


def make_pki(work: Path) -> Pki:
    """A CA and a server certificate issued by it, with the openssl CLI (P-256, valid a day)."""
    openssl = find_exe("openssl")
    work.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        r = subprocess.run([openssl, *args], cwd=work, capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            pytest.fail(f"openssl {' '.join(args)} failed:\n{r.stdout}{r.stderr}", pytrace=False)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=Switchyard e2e test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", "edge.key", "-out", "edge.csr", "-subj", "/CN=localhost")
    (work / "edge.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
        "subjectAltName=" + ",".join(f"DNS:{n}" for n in EDGE_DNS_NAMES) + "\n")
    run("x509", "-req", "-in", "edge.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-sha256", "-extfile", "edge.ext", "-out", "edge.pem")
    return Pki(ca=work / "ca.pem", cert=work / "edge.pem", key=work / "edge.key")


# === nginx ===

# Every field of the access log is what nginx received from its client (the gateway):
# `$request` is the request line as sent (origin-form or not), `$server_protocol` the HTTP
# version spoken, `$http_*` the request headers (empty when absent), `$ssl_server_name` the SNI.
NGINX_CONF = """\
{user}
worker_processes 1;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format wire escape=json '{{'
        '"request":"$request","method":"$request_method","uri":"$request_uri",'
        '"server_protocol":"$server_protocol","http_host":"$http_host","host":"$host",'
        '"ssl_server_name":"$ssl_server_name","ssl_protocol":"$ssl_protocol",'
        '"status":"$status","http_connection":"$http_connection",'
        '"http_keep_alive":"$http_keep_alive","http_upgrade":"$http_upgrade",'
        '"http_te":"$http_te","http_trailer":"$http_trailer",'
        '"http_proxy_authorization":"$http_proxy_authorization",'
        '"http_proxy_connection":"$http_proxy_connection",'
        '"http_x_secret_hop":"$http_x_secret_hop","http_via":"$http_via",'
        '"content_type":"$content_type","content_length":"$content_length",'
        '"http_transfer_encoding":"$http_transfer_encoding","connection":"$connection",'
        '"connection_requests":"$connection_requests"'
        '}}';
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 16m;

    upstream mock {{
        server {mock};
        keepalive 8;
    }}
    proxy_http_version 1.1;
    proxy_buffering off;
    proxy_request_buffering on;
    proxy_read_timeout 30s;
    proxy_set_header Connection "";
    # The Host the gateway sent (with its port) goes on to the mock: Bedrock's SigV4
    # signature covers it.
    proxy_set_header Host $http_host;

    # The provider edge: TLS (certificate for localhost and edge.switchyard.test) with h2
    # offered by ALPN, as public provider APIs are.
    server {{
        listen 127.0.0.1:{edge_port} ssl http2;
        server_name localhost edge.switchyard.test;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        # Every EDGE_MAX_REQUESTS requests the edge ends its h2 connection with a GOAWAY, as
        # provider edges do: requests in flight then must finish or be sent again.
        keepalive_requests {edge_max_requests};
        access_log {prefix}/edge.access.log wire;
        location / {{ proxy_pass http://mock; }}
{refusals}
    }}

    # A plain-HTTP origin (HTTP/1.1 only).
    server {{
        listen 127.0.0.1:{origin_port};
        access_log {prefix}/origin.access.log wire;
        location / {{ proxy_pass http://mock; }}
{refusals}
    }}
}}
"""


# nginx's own refusals, as an edge, proxy or WAF answers before any provider sees the request:
# under `/refuse/<status>/` each server answers that status with nginx's built-in HTML page.
REFUSED_STATUSES = (400, 403)

# Requests per h2 connection to the edge before nginx sends GOAWAY (`keepalive_requests`).
EDGE_MAX_REQUESTS = 20
REFUSALS = "\n".join(f"        location /refuse/{status}/ {{ return {status}; }}"
                     for status in REFUSED_STATUSES)


class Nginx:
    """One nginx: `edge_port` (TLS + h2) and `origin_port` (plain HTTP), both in front of the
    mock at `mock_addr`, except under `/refuse/<status>/` (see REFUSED_STATUSES)."""

    def __init__(self, work: Path, mock_addr: str, pki: Pki):
        self.exe = find_exe("nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx")
        self.prefix = work
        work.mkdir(parents=True, exist_ok=True)
        self.edge_log = AccessLog(work / "edge.access.log")
        self.origin_log = AccessLog(work / "origin.access.log")
        self.error_log = LogFile(work / "error.log")
        self.edge_port = self.origin_port = 0

        def launch() -> tuple[Proc, Callable[[], bool], LogFile]:
            self.edge_port, self.origin_port = free_port(), free_port()
            mark = self.error_log.mark()
            conf = work / "nginx.conf"
            conf.write_text(NGINX_CONF.format(
                # As root, nginx's workers would otherwise run as `nobody`, who cannot reach
                # the test's private temporary folder.
                user="user root;" if os.geteuid() == 0 else "",
                prefix=work, mock=mock_addr, cert=pki.cert, key=pki.key,
                edge_port=self.edge_port, origin_port=self.origin_port, refusals=REFUSALS,
                edge_max_requests=EDGE_MAX_REQUESTS))
            proc = Proc("nginx", [
                self.exe, "-p", work, "-e", work / "error.log", "-c", conf,
                "-g", f"daemon off; pid {work}/nginx.pid;",
            ], work / "nginx.out", _bare_env())

            def ready() -> bool:
                # The master logs this once it has bound every listener, as it forks a worker.
                return (any("start worker process" in line
                            for line in self.error_log.lines(mark))
                        and tcp_open(self.edge_port) and tcp_open(self.origin_port))

            return proc, ready, self.error_log

        self.proc = _start("nginx", launch)

    def stop(self) -> None:
        # SIGTERM to the master stops its workers too; should the master need SIGKILL, its
        # workers (which would keep serving) are killed by their ids.
        workers = _children(self.proc.popen.pid)
        self.proc.stop()
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# === tinyproxy ===

TINYPROXY_CONF = """\
Listen 127.0.0.1
Port {port}
Timeout 30
MaxClients 32
LogFile "{log}"
LogLevel Info
Allow 127.0.0.1
{auth}
"""


class Tinyproxy:
    """A tinyproxy on `port`; with `basic_auth=(user, password)` it requires those
    credentials (Proxy-Authorization) on every request, CONNECT included. No ConnectPort
    line: CONNECT to any port is allowed."""

    def __init__(self, work: Path, basic_auth: Optional[tuple[str, str]] = None):
        self.exe = find_exe("tinyproxy", "/usr/bin/tinyproxy", "/usr/sbin/tinyproxy")
        work.mkdir(parents=True, exist_ok=True)
        self.log = LogFile(work / "tinyproxy.log")
        self.port = 0

        def launch() -> tuple[Proc, Callable[[], bool], LogFile]:
            self.port = free_port()
            mark = self.log.mark()
            conf = work / "tinyproxy.conf"
            conf.write_text(TINYPROXY_CONF.format(
                port=self.port, log=self.log.path,
                auth=f"BasicAuth {basic_auth[0]} {basic_auth[1]}" if basic_auth else ""))
            proc = Proc("tinyproxy", [self.exe, "-d", "-c", conf], work / "tinyproxy.out",
                        _bare_env())

            def ready() -> bool:
                # Logged once it listens (a taken port makes it exit at once instead).
                return (any("Accepting connections" in line for line in self.log.lines(mark))
                        and tcp_open(self.port))

            return proc, ready, self.log

        self.proc = _start("tinyproxy", launch)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, since: int = 0) -> list[str]:
        """The request lines tinyproxy received after `since`, e.g. `CONNECT localhost:443
        HTTP/1.1` or `POST http://127.0.0.1:8080/v1/chat/completions HTTP/1.1`."""
        marker = "]: Request (file descriptor "
        out = []
        for line in self.log.lines(since):
            i = line.find(marker)
            if i >= 0:
                out.append(line[line.index("): ", i) + 3:].strip())
        return out

    def opened(self, since: int = 0) -> list[str]:
        """The host:port targets tinyproxy connected to after `since` (a request it refused,
        e.g. for missing credentials, opens none)."""
        marker = "opensock: opening connection to "
        return [line[line.index(marker) + len(marker):].strip()
                for line in self.log.lines(since) if marker in line]

    def stop(self) -> None:
        self.proc.stop()
