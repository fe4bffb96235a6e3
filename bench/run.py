#!/usr/bin/env python3
"""`make bench`: Switchyard against a direct call to the mock upstream and against nginx.

One run starts `switchyard-mock` (the upstream), Switchyard in front of it, and nginx as a
plain reverse proxy to the same mock, then runs every workload against all three targets,
interleaved round by round, and prints one table with ratios. Raw figures go to
`bench/results/latest.json`.

Pinning (`taskset`): the load generator and the mock share one core, the proxy under test
(Switchyard or nginx) gets the other, so both proxies have the same one-core budget. nginx runs
`worker_processes 1`; Switchyard's tokio runtime sees one CPU and so runs one worker thread.

Load: `wrk` (Debian) for closed-loop throughput and latency; `switchyard-loadgen`
(bench/loadgen) for time to first byte, open-loop fixed-rate latency and held slow streams.

TLS upstream (on by default, `--no-tls-upstream` skips it): a second, smaller workload set in
every round, through an nginx "provider edge" (TLS, h2 offered by ALPN, certificate from a
throwaway CA made with openssl) in front of the same mock and pinned with it: `direct-tls`
(wrk -> edge), `switchyard-tls` (wrk -> Switchyard -> edge over h2, the backend trusting the CA
through `spec.tls.caSecretRef`) and `nginx-tls` (wrk -> nginx -> edge; nginx 1.22 proxies over
HTTP/1.1 only). The protocol each client spoke to the edge is read from the edge's access log
during one warm-up request each; the load then runs with that log off.

Everything listens on 127.0.0.1, every load loop is bounded in time and in count, and every
child process is stopped on exit. Standard library only.

    python3 bench/run.py                 # the full run (`make bench`)
    python3 bench/run.py --duration 3 --rounds 1 --no-micro   # a quick look
    python3 bench/run.py --no-tls-upstream                     # without the TLS-upstream set
    python3 bench/run.py --smoke --bin-dir target/debug --out /tmp/b.json   # harness check
    python3 bench/run.py --table-from bench/results/latest.json            # reprint a table
"""

from __future__ import annotations

import sys
from pathlib import Path

# The package next to this file, wherever this is run from (or loaded by a test).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from switchyard_bench.cli import main  # noqa: E402
from switchyard_bench.loadgen import parse_loadgen, parse_wrk  # noqa: E402
from switchyard_bench.procs import BenchError, Proc  # noqa: E402

__all__ = ["BenchError", "main", "parse_loadgen", "parse_wrk"]


if __name__ == "__main__":
    try:
        sys.exit(main(description=__doc__.split("\n\n")[0]))
    except BenchError as e:
        Proc.stop_all()
        print(f"bench: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        Proc.stop_all()
        print("bench: interrupted", file=sys.stderr)
        sys.exit(130)
