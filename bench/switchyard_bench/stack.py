"""The processes under test for a whole run: the mock, Switchyard (and its log-off and
busy-polling twins), nginx and the TLS edge."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

from harness import child_env, free_port, start_mock, start_serve, tcp_open, wait_until

from .configs import EDGE_CONF, NGINX_CONF, NGINX_TLS_SERVER, gateway_config, make_pki
from .procs import BenchError, Meter, Proc, children, pinned
from .settings import (
    ANTHROPIC_HEADERS, BUSY, CALLER_AUTH, MODEL, TARGETS, TLS_MODEL, TLS_TARGETS, UPSTREAM_KEY,
    Settings, hold_big_streams,
)


class Stack:
    """The mock, Switchyard and (when installed) nginx, started once for the whole run; with
    `edge_nginx` also the TLS edge in front of the mock, Switchyard's `bench-tls` route to it
    and nginx's server proxying to it (the TLS-upstream set)."""

    def __init__(self, bins: dict[str, Path], nginx: Optional[str], s: Settings,
                 work: Path, load_cpu: Optional[int], proxy_cpu: Optional[int],
                 edge_nginx: Optional[str] = None):
        self.bins = bins
        self.s = s
        self.work = work
        self.load_cpu = load_cpu
        self.proxy_cpu = proxy_cpu
        env = child_env()
        self.env = env

        mock = start_mock(work / "mock.log", [
            "--api-key", UPSTREAM_KEY, "--chunks", str(s.chunks), "--models", MODEL,
        ], exe=bins["switchyard-mock"], prefix=pinned(load_cpu, []), proc_type=Proc)
        self.mock_proc, self.mock = mock.proc, mock.addr

        self.edge_proc: Optional[Proc] = None
        self.edge: Optional[str] = None
        self.nginx_tls: Optional[str] = None
        if edge_nginx:
            self._start_edge(edge_nginx)

        config = work / "config"
        config.mkdir()
        # The access log (one JSON line per request, to the log file here) is on, as nginx's
        # is: both proxies are measured doing the same work. --no-access-log turns both off;
        # the log-off rows run a second Switchyard without it either way.
        help_text = subprocess.run([bins["switchyard"], "serve", "--help"],
                                   capture_output=True, text=True).stdout
        no_log = ["--no-access-log"] if "--no-access-log" in help_text else []
        serve_flags = [] if s.access_log else list(no_log)
        # The bench config has no AIConsumer: a gateway that requires a key by default is
        # told to serve without one, as nginx does (and as gateways before that default did).
        if "--require-auth[=" in help_text:
            serve_flags.append("--require-auth=false")
        # Room for the larger held-stream workload: a stream is a request in flight (and a
        # connection) until its last byte, and the defaults (4096, 10 000) would shed them.
        big = hold_big_streams(s)
        if big and "--max-in-flight" in help_text:
            serve_flags += ["--max-in-flight", str(max(4096, big + 1024)),
                            "--max-connections", str(max(10_000, big + 1024))]
        # Extra `switchyard serve` flags from --gateway-arg (e.g. --upstream-http2=false).
        serve_flags.extend(s.gateway_args)
        self.serve_flags = serve_flags
        (config / "bench.yaml").write_text(gateway_config(
            self.mock, s, (self.edge, self.pki["ca"].read_text()) if self.edge else None))

        def start_gateway(name: str, extra: list) -> tuple[Proc, str, str]:
            """A `switchyard serve` on the bench config, once it says it is ready."""
            # Its access log (stdout) goes to a file of its own, emptied between workloads.
            gw = start_serve(config, work / f"{name}.log", [*serve_flags, *extra], name=name,
                             exe=bins["switchyard"], env=dict(env, RUST_LOG="info"),
                             stdout=work / f"{name}.access.log", prefix=pinned(proxy_cpu, []),
                             proc_type=Proc)
            return gw.proc, gw.listen, gw.admin

        self.gw_proc, self.gateway, self.admin = start_gateway("switchyard", [])
        self.gw_started = time.monotonic()
        # The log-off twin, for workloads 1 and 2.
        self.nolog_proc: Optional[Proc] = None
        self.gateway_nolog: Optional[str] = None
        if no_log:
            self.nolog_proc, self.gateway_nolog, _ = start_gateway(
                "switchyard-nolog", [] if no_log[0] in serve_flags else no_log)

        # The same gateway with busy polling, for the open-loop latency workloads. It sleeps
        # (costs nothing) except for its window after each of its own requests.
        self.busy_proc: Optional[Proc] = None
        self.gateway_busy: Optional[str] = None
        if s.busy_poll and s.busy_poll not in ("0", "0s") and "--busy-poll" in help_text:
            self.busy_proc, self.gateway_busy, _ = start_gateway(
                "switchyard-busy-poll", ["--busy-poll", s.busy_poll])

        self.nginx_proc: Optional[Proc] = None
        self.nginx_version = None
        if nginx:
            port, slow_port = free_port(), free_port()
            nolog_port, sep_port = free_port(), free_port()
            tls_port = free_port() if self.edge else None
            nprefix = work / "nginx"
            nprefix.mkdir()
            conf = nprefix / "nginx.conf"
            conf.write_text(NGINX_CONF.format(
                prefix=nprefix, mock=self.mock, key=UPSTREAM_KEY, port=port,
                nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                slow_port=slow_port, slow_chunks=s.slow_chunks, slow_delay_ms=s.slow_delay_ms,
                nolog_port=nolog_port, sep_port=sep_port, sep_delay_ms=s.sep_delay_ms,
                worker_connections=max(4096, 2 * max(s.hold_streams, s.hold_streams_big) + 256),
                access_log=f"{nprefix}/access.log combined buffer=64k flush=1s" if s.access_log
                else "off",
                tls=NGINX_TLS_SERVER.format(edge=self.edge, port=tls_port, ca=self.pki["ca"])
                if self.edge else ""))
            self.nginx_version = subprocess.run(
                [nginx, "-v"], capture_output=True, text=True).stderr.strip()
            self.nginx_proc = Proc("nginx", pinned(proxy_cpu, [
                nginx, "-p", nprefix, "-e", nprefix / "error.log", "-c", conf,
                "-g", "daemon off;",
            ]), work / "nginx.log")
            self.nginx = f"127.0.0.1:{port}"
            self.nginx_slow = f"127.0.0.1:{slow_port}"
            self.nginx_nolog = f"127.0.0.1:{nolog_port}"
            self.nginx_sep = f"127.0.0.1:{sep_port}"
            self.nginx_tls = f"127.0.0.1:{tls_port}" if tls_port else None
            wait_until(lambda: tcp_open(self.nginx) and tcp_open(self.nginx_slow) and tcp_open(
                self.nginx_nolog) and tcp_open(self.nginx_sep) and (
                not self.nginx_tls or tcp_open(self.nginx_tls)),
                       "nginx listening", self.nginx_proc)
            self.nginx_started = time.monotonic()

    def _start_edge(self, nginx: str) -> None:
        """The TLS edge, on the load CPU with the mock, its access log on (for the warm-up
        requests of `tls_probe`, which turns it off)."""
        self.pki = make_pki(self.work / "pki")
        prefix = self.work / "edge"
        prefix.mkdir()
        self.edge_prefix = prefix
        self.edge_port = free_port()
        self.edge_log = prefix / "probe.access.log"
        self._write_edge_conf(access_log=True)
        self.edge_proc = Proc("nginx-edge", pinned(self.load_cpu, [
            nginx, "-p", prefix, "-e", prefix / "error.log", "-c", prefix / "nginx.conf",
            "-g", "daemon off;",
        ]), self.work / "nginx-edge.log")
        self.edge = f"127.0.0.1:{self.edge_port}"
        wait_until(lambda: tcp_open(self.edge), "the TLS edge listening", self.edge_proc)

    def _write_edge_conf(self, access_log: bool) -> None:
        (self.edge_prefix / "nginx.conf").write_text(EDGE_CONF.format(
            prefix=self.edge_prefix, mock=self.mock, port=self.edge_port,
            nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            cert=self.pki["cert"], key=self.pki["key"],
            access_log=f"{self.edge_log} proto" if access_log else "off"))

    def edge_log_off(self) -> None:
        """Rewrites the edge's config with its access log off and reloads it (SIGHUP), then
        waits until the old worker (and so every connection it held) is gone."""
        assert self.edge_proc
        old = set(children(self.edge_proc.pid))
        self._write_edge_conf(access_log=False)
        os.kill(self.edge_proc.pid, signal.SIGHUP)

        if not old:  # no /proc/<pid>/task/*/children here: give the reload a moment
            time.sleep(1.0)
            return

        def reloaded() -> bool:
            now = set(children(self.edge_proc.pid))
            return bool(now) and not (now & old)

        wait_until(reloaded, "the TLS edge's reload (access log off)", self.edge_proc)

    def edge_log_lines(self) -> int:
        try:
            return len(self.edge_log.read_text().splitlines())
        except OSError:
            return 0

    def targets(self) -> list[str]:
        return [t for t in TARGETS if t != "nginx" or self.nginx_proc]

    def log_off_targets(self) -> list[str]:
        """The proxies with their access log off (workloads 1 and 2)."""
        return [t for t, up in (("nginx-nolog", self.nginx_proc),
                                ("switchyard-nolog", self.nolog_proc)) if up]

    def tls_targets(self) -> list[str]:
        """Targets of the TLS-upstream set (none without the edge)."""
        if not self.edge:
            return []
        return [t for t in TLS_TARGETS if t != "nginx-tls" or self.nginx_tls]

    def model(self, target: str) -> str:
        return TLS_MODEL if target == "switchyard-tls" else MODEL

    def latency_targets(self) -> list[str]:
        """Targets of the open-loop workloads: also the busy-polling gateway, when started."""
        return self.targets() + ([BUSY] if self.busy_proc else [])

    def url(self, target: str, slow: bool = False, sep: bool = False,
            path: str = "/v1/chat/completions") -> str:
        if target == "direct-tls":
            # wrk verifies no certificate: the address is enough.
            return f"https://{self.edge}{path}"
        nginx = "nginx_slow" if slow else "nginx_sep" if sep else "nginx"
        host = {"direct": self.mock, "switchyard": self.gateway,
                BUSY: self.gateway_busy, "switchyard-tls": self.gateway,
                "switchyard-nolog": self.gateway_nolog,
                "nginx-tls": self.nginx_tls, "nginx-nolog": getattr(self, "nginx_nolog", None),
                "nginx": getattr(self, nginx, None)}[target]
        return f"http://{host}{path}"

    def headers(self, target: str, slow: bool = False, sep: bool = False,
                anthropic: bool = False) -> list[str]:
        """Direct calls present the upstream key (and, for slow or separate-chunk streams, the
        mock knobs) themselves; through a proxy the caller presents its own key, which the
        proxy replaces."""
        extra = ANTHROPIC_HEADERS if anthropic else []
        if target not in ("direct", "direct-tls"):
            return [CALLER_AUTH, *extra]
        h = [f"Authorization: Bearer {UPSTREAM_KEY}", *extra]
        if anthropic:
            h.append(f"x-api-key: {UPSTREAM_KEY}")
        if slow:
            h += [f"x-mock-chunks: {self.s.slow_chunks}",
                  f"x-mock-chunk-delay-ms: {self.s.slow_delay_ms}"]
        if sep:
            h.append(f"x-mock-chunk-delay-ms: {self.s.sep_delay_ms}")
        return h

    def meter(self, target: str) -> Optional[Meter]:
        if target in ("switchyard", "switchyard-tls"):
            return Meter(self.gw_proc.pid, with_children=False)
        if target == BUSY and self.busy_proc:
            return Meter(self.busy_proc.pid, with_children=False)
        if target == "switchyard-nolog" and self.nolog_proc:
            return Meter(self.nolog_proc.pid, with_children=False)
        if target in ("nginx", "nginx-tls", "nginx-nolog") and self.nginx_proc:
            return Meter(self.nginx_proc.pid, with_children=True)
        return None

    def truncate_logs(self) -> None:
        """Empties the proxies' access logs between workloads (both append, so this is safe
        under them): a full run writes a few GB of lines otherwise."""
        for p in (self.gw_proc, self.nolog_proc, self.busy_proc):
            if p:
                p.truncate_stdout()
        if self.nginx_proc:
            try:
                os.truncate(self.work / "nginx" / "access.log", 0)
            except OSError:
                pass

    def check_alive(self) -> None:
        for p in (self.mock_proc, self.gw_proc, self.nginx_proc, self.busy_proc,
                  self.edge_proc, self.nolog_proc):
            if p and p.popen.poll() is not None:
                raise BenchError(f"{p.name} exited ({p.popen.returncode}):\n{p.output()[-3000:]}")
