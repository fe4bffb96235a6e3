"""Smoke test of the benchmark harness behind `make bench` (bench/run.py).

It runs the harness in `--smoke` mode on the debug binaries: every workload for a fraction of
a second against a direct call, Switchyard and (when installed) nginx, and the TLS-upstream set
through an nginx TLS + h2 edge, then checks that the harness parsed its load generators, wrote
its results file and prints the same table from it. No timing is asserted: speed is measured by
`make bench`, never by a test.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, bin_dir

RUN = REPO / "bench" / "run.py"
SMOKE_TIMEOUT_S = 240
# The agentic workloads the bench runs (each also streaming).
AGENTIC = {"agent_openai_pass", "agent_claude_pass", "agent_claude_to_openai",
           "agent_openai_to_anthropic", "agent_codex_to_chat"}


def load_harness():
    spec = importlib.util.spec_from_file_location("switchyard_bench_run", RUN)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    for name in ("switchyard", "switchyard-mock", "switchyard-loadgen"):
        if not (bin_dir() / name).is_file():
            pytest.fail(f"{name} not found in {bin_dir()}: run `cargo build --workspace --bins`",
                        pytrace=False)
    out = tmp_path_factory.mktemp("bench") / "latest.json"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--bin-dir", str(bin_dir()), "--out", str(out)],
        capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S, check=False,
    )
    assert proc.returncode == 0, f"bench/run.py --smoke failed:\n{proc.stderr}\n{proc.stdout}"
    return proc, out, json.loads(out.read_text())


def test_every_workload_ran_against_every_target(smoke):
    _, _, res = smoke
    targets = ["direct", "switchyard"] + (["nginx"] if res["meta"]["nginx"] else [])
    workloads = res["workloads"]
    assert {"chat", "stream", "stream_sep", "stream_ttfb", "hold", "hold_big"} <= set(workloads)
    assert AGENTIC | {a + "_stream" for a in AGENTIC} <= set(workloads)
    assert any(name.startswith("open_") for name in workloads)
    for name, per_target in workloads.items():
        if name.startswith("tls_"):
            continue  # test_tls_upstream_set_ran_through_the_edge
        expected = [t for t in targets if not (name.startswith("hold") and t == "direct")]
        if name.startswith("open_"):
            # The open-loop workloads also measure a Switchyard started with --busy-poll.
            expected.append("switchyard_busy_poll")
        if name in ("chat", "stream"):
            # ... and these the two proxies with their access log off.
            expected += [f"{t}-nolog" for t in targets if t != "direct"]
        if name.startswith(("agent_claude_to_openai", "agent_openai_to_anthropic")):
            # Translations only Switchyard can do (shown against the passthrough rows).
            expected = ["switchyard"]
        assert sorted(per_target) == sorted(expected), name
        for target, runs in per_target.items():
            for r in runs:
                assert r["ok"] > 0, f"{name} -> {target}: no request succeeded: {r}"
                assert r["error_total"] == 0, f"{name} -> {target}: failed requests: {r}"
                assert r["latency_us"]["p50"] > 0
    hold = workloads["hold"]["switchyard"][0]
    assert hold["max_open"] == res["meta"]["settings"]["hold_streams"], hold
    assert hold["proxy_rss_peak_bytes"] > 0
    assert res["idle"]["switchyard_rss_bytes"] > 0


def test_tls_upstream_set_ran_through_the_edge(smoke):
    _, _, res = smoke
    tls = res["tls_upstream"]
    if not res["meta"]["nginx"]:
        assert tls.get("skipped"), tls
        pytest.skip("nginx is not installed: no TLS edge")
    assert not tls.get("skipped"), tls
    workloads = {k: v for k, v in res["workloads"].items() if k.startswith("tls_")}
    assert {"tls_chat", "tls_stream"} <= set(workloads)
    assert any(name.startswith("tls_paced_") for name in workloads)
    for name, per_target in workloads.items():
        assert sorted(per_target) == ["direct-tls", "nginx-tls", "switchyard-tls"], name
        for target, runs in per_target.items():
            for r in runs:
                assert r["ok"] > 0, f"{name} -> {target}: no request succeeded: {r}"
                assert r["error_total"] == 0, f"{name} -> {target}: failed requests: {r}"
    # What each client spoke to the edge, from the edge's own access log at warm-up; the load
    # ran with that log off.
    assert tls["edge_protocols"] == {"direct-tls": "HTTP/1.1", "nginx-tls": "HTTP/1.1",
                                     "switchyard-tls": "HTTP/2.0"}
    assert tls["edge_log_lines_during_load"] == 0
    assert tls["ratios"]["tls_chat"]["throughput switchyard-tls/nginx-tls"] > 0
    assert "8 TLS upstream (h2 via edge)" in res["table"]


def test_results_carry_a_verdict_per_target(smoke):
    _, _, res = smoke
    names = [t["target"] for t in res["targets"]]
    assert any("non-streaming throughput" in n for n in names)
    assert any("idle RSS" in n for n in names)
    assert any("--busy-poll" in n for n in names)
    assert any("control plane" in n for n in names), "item 7 must stay visible as a TODO"
    assert any(n.startswith("#21 access log CPU") for n in names), names
    assert any(n.startswith("#21 per-chunk relay CPU") for n in names), names
    for t in res["targets"]:
        assert t["met"] in (True, False, None)


def test_printed_table_is_the_table_of_the_results_file(smoke):
    proc, out, res = smoke
    assert res["table"] in proc.stdout
    assert "switchyard vs nginx" in res["table"]
    again = subprocess.run([sys.executable, str(RUN), "--table-from", str(out)],
                           capture_output=True, text=True, timeout=30, check=True)
    assert again.stdout.strip() == res["table"].strip()


def test_parses_wrk_and_loadgen_reports():
    run = load_harness()
    wrk_out = (
        "Running 1s test @ http://127.0.0.1:1/v1/chat/completions\n"
        'WRK_JSON {"requests":1000,"duration_us":2000000,"bytes":500000,'
        '"errors":{"connect":0,"read":0,"write":0,"status":10,"timeout":0},'
        '"latency_us":{"min":50,"mean":120.5,"max":900,"p50":110,"p90":200,"p99":400,"p999":800}}\n'
    )
    r = run.parse_wrk(wrk_out)
    assert r["ok"] == 990 and r["error_total"] == 10
    assert r["rps"] == pytest.approx(495.0)
    assert r["latency_us"]["p99"] == 400.0
    with pytest.raises(run.BenchError):
        run.parse_wrk("wrk: connection refused\n")
    lg = run.parse_loadgen('noise\n{"mode":"open","ok":3,"error_total":0,"latency_us":{"p50":1}}\n')
    assert lg["mode"] == "open"


@pytest.fixture
def pgo():
    sys.path.insert(0, str(REPO / "bench"))
    from switchyard_bench import pgo as module
    return module


def test_pgo_training_drives_every_shape_the_bench_measures(pgo):
    """bench/pgo.py profiles the gateway on its training set: every request shape the bench
    measures must be in it and answered without an error (a profile of error paths would lay
    out the wrong code). Run here on the debug build, uninstrumented, for a moment each."""
    shapes = {name for name, *_ in pgo.training_set()}
    assert {"chat", "stream", "stream_sep"} | AGENTIC | {a + "_stream" for a in AGENTIC} == shapes
    d = bin_dir()
    done = pgo.train(d / "switchyard", d / "switchyard-mock", d / "switchyard-loadgen", 0.2,
                     lambda _msg: None)
    assert set(done) == shapes
    assert all(n > 0 for n in done.values()), done


def test_pgo_profile_is_trained_again_only_for_a_new_instrumented_binary(
        pgo, tmp_path, monkeypatch):
    """Every new profile costs the whole optimised build (~20 min), so `make bench` uses the
    last one again while the instrumented binary it came from is unchanged; a changed binary
    or `retrain` trains anew. The builds, training and merge are stood in for here: what is
    tested is the decision."""
    instrumented = tmp_path / "pgo-generate" / "release" / "switchyard"
    instrumented.parent.mkdir(parents=True)
    instrumented.write_bytes(b"instrumented build 1")
    trained = []

    def cargo_build(out_dir, _flags, _target, _what, _log):
        return instrumented if out_dir.name == "pgo-generate" else out_dir / "release" / "x"

    def train(_gw, _mock, _loadgen, _seconds, _log):
        trained.append(instrumented.read_bytes())
        (tmp_path / "pgo-generate" / "profiles" / "1.profraw").write_bytes(b"counts")
        return {}

    merge_fails = []

    def merge(cmd, *_args, **_kw):
        assert cmd[1] == "merge"
        Path(cmd[3]).write_bytes(b"half a profile" if merge_fails else b"profile")
        if merge_fails:
            raise pgo.BenchError("llvm-profdata merge failed")
        return ""

    monkeypatch.setattr(pgo, "target_dir", lambda: tmp_path)
    monkeypatch.setattr(pgo, "llvm_profdata", lambda _log: Path("llvm-profdata"))
    monkeypatch.setattr(pgo, "_cargo_build", cargo_build)
    monkeypatch.setattr(pgo, "train", train)
    monkeypatch.setattr(pgo, "run_cmd", merge)
    build = lambda **kw: pgo.build(lambda _msg: None, tools=tmp_path, **kw)  # noqa: E731

    build()
    build()
    assert len(trained) == 1, "an unchanged instrumented binary was trained again"
    build(seconds=2.0)
    assert len(trained) == 2, "a longer training load kept the old profile"
    instrumented.write_bytes(b"instrumented build 2")
    build(seconds=2.0)
    assert trained[-1] == b"instrumented build 2" and len(trained) == 3
    build(seconds=2.0, retrain=True)
    assert len(trained) == 4
    # A merge that failed leaves no record, so the next build trains again.
    merge_fails.append(True)
    with pytest.raises(pgo.BenchError):
        build(seconds=2.0, retrain=True)
    assert len(trained) == 5
    merge_fails.clear()
    build(seconds=2.0)
    assert len(trained) == 6
    build(seconds=2.0)
    assert len(trained) == 6
