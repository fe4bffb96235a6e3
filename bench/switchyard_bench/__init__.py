"""The benchmark behind `make bench`, whose entry point is bench/run.py (its docstring says
what one run does).

    settings   constants (targets, models, keys, limits) and the run's `Settings`
    procs      child processes, /proc readings (RSS, CPU), loopback probes
    tools      nginx and wrk (installed when missing), the release build, the binaries
    configs    gateway configs, nginx configs (proxy, TLS edge) and the edge's PKI
    stack      the processes under test for a whole run (mock, Switchyard, nginx, edge)
    loadgen    wrk and switchyard-loadgen, and the parsing of their reports
    workloads  the workloads round by round, idle figures, TLS probe, preflight
    kube       the control plane against the envtest API server (apply-to-live, at scale)
    micro      the criterion micro-benchmarks
    report     summary, verdicts and the printed table
    cli        the command line and one run from start to the results file
"""

import sys
from pathlib import Path

# The process harness shared with the Python tests (tests/python/harness.py: starting the
# mock and the gateway, waiting until they are ready, stopping them).
_TESTS = str(Path(__file__).resolve().parents[2] / "tests" / "python")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
