"""Summary, verdicts against the limits, and the printed table."""

from __future__ import annotations

import statistics
from typing import Any, Callable, Optional

from .settings import BUSY, LIMITS, TARGETS, TLS_TARGETS, MiB
from .workloads import AGENTIC, AGENTIC_REF


# === Summary and table ===


def med(values: list) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def pick(runs: list[dict], *path: str) -> Optional[float]:
    vals = []
    for r in runs:
        v: Any = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        vals.append(v)
    return med(vals)


def summarize(res: dict) -> dict:
    """Medians across rounds per workload and target, plus ratios and the target verdicts."""
    w = res.get("workloads", {})
    summ: dict[str, dict] = {}
    for name, per_target in w.items():
        summ[name] = {}
        for t, runs in per_target.items():
            summ[name][t] = {
                "rps": pick(runs, "rps"),
                "p50_us": pick(runs, "latency_us", "p50"),
                "p99_us": pick(runs, "latency_us", "p99"),
                "ttfb_p50_us": pick(runs, "ttfb_us", "p50"),
                "ttfb_p99_us": pick(runs, "ttfb_us", "p99"),
                "errors": sum(r.get("error_total", 0) for r in runs),
                "ok": sum(r.get("ok", 0) for r in runs),
                "cpu_us_per_req": pick(runs, "proxy_cpu_us_per_req"),
                "cpu_pct": pick(runs, "proxy_cpu_pct"),
                "rss_peak_bytes": pick(runs, "proxy_rss_peak_bytes"),
                "max_open": pick(runs, "max_open"),
                "edge_cpu_pct": pick(runs, "edge_cpu_pct"),
                "log_writer_ns_per_req": pick(runs, "log_writer_ns_per_req"),
            }
    return summ


def tls_ratios(summ: dict) -> dict:
    """The TLS-upstream set against its references: throughput ratios to nginx-tls and to
    direct-tls, latency added over direct-tls, and each proxy's CPU per request with a TLS
    upstream against its own with the plain one (workloads 1 and 2)."""
    out: dict[str, dict] = {}
    for name, row in summ.items():
        if not name.startswith("tls_"):
            continue
        g = lambda t, k: row.get(t, {}).get(k)  # noqa: E731
        r: dict[str, Any] = {}
        if not name.startswith("tls_paced_"):  # a paced run's rate is the one asked for
            r.update({
                "throughput switchyard-tls/nginx-tls": ratio(g("switchyard-tls", "rps"),
                                                             g("nginx-tls", "rps")),
                "throughput switchyard-tls/direct-tls": ratio(g("switchyard-tls", "rps"),
                                                              g("direct-tls", "rps")),
                "throughput nginx-tls/direct-tls": ratio(g("nginx-tls", "rps"),
                                                         g("direct-tls", "rps")),
            })
        for key in ("p50_us", "p99_us"):
            for t in ("switchyard-tls", "nginx-tls"):
                a, d = g(t, key), g("direct-tls", key)
                r[f"{key[:3]} added over direct-tls, us: {t}"] = (
                    a - d if a is not None and d is not None else None)
        plain = {"tls_chat": "chat", "tls_stream": "stream"}.get(name)
        if plain:
            for t in ("switchyard", "nginx"):
                r[f"proxy CPU per request, TLS/plain upstream: {t}"] = ratio(
                    g(f"{t}-tls", "cpu_us_per_req"),
                    summ.get(plain, {}).get(t, {}).get("cpu_us_per_req"))
        out[name] = r
    return out


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b not in (None, 0) else None


def added(summ: dict, name: str, target: str, key: str) -> Optional[float]:
    row = summ.get(name, {})
    a, d = row.get(target, {}).get(key), row.get("direct", {}).get(key)
    return a - d if a is not None and d is not None else None


def verdicts(res: dict) -> list[dict]:
    summ, idle, micro = res["summary"], res.get("idle", {}), res.get("micro", {})
    out = []

    def v(name: str, value: Optional[float], limit: str, met: Optional[bool], note: str = ""):
        out.append({"target": name, "value": value, "limit": limit,
                    "met": met, "note": note})

    for wl, label in (("chat", "non-streaming throughput"), ("stream", "streaming throughput")):
        r = ratio(summ.get(wl, {}).get("switchyard", {}).get("rps"),
                  summ.get(wl, {}).get("nginx", {}).get("rps"))
        v(f"{label} switchyard/nginx", r, f">= {LIMITS['throughput_ratio_min']}",
          None if r is None else r >= LIMITS["throughput_ratio_min"])
    rate = next((k for k in summ if k.startswith("open_500")), None) or next(
        (k for k in summ if k.startswith("open_")), None)
    if rate:
        a50 = added(summ, rate, "switchyard", "p50_us")
        v(f"added p50 at {rate[5:]}/s (switchyard - direct), us", a50,
          f"<= {LIMITS['added_p50_us_max']:g}",
          None if a50 is None else a50 <= LIMITS["added_p50_us_max"])
        b50 = added(summ, rate, BUSY, "p50_us")
        if b50 is not None:
            bp = res["meta"]["settings"].get("busy_poll")
            v(f"  the same with --busy-poll {bp} (not the default), us", b50,
              f"<= {LIMITS['added_p50_us_max']:g}", b50 <= LIMITS["added_p50_us_max"],
              f"p99 {added(summ, rate, BUSY, 'p99_us'):.0f} us added; "
              f"CPU {summ[rate][BUSY].get('cpu_pct') or 0:.0f}% of a core at {rate[5:]}/s")
        s99, n99 = added(summ, rate, "switchyard", "p99_us"), added(summ, rate, "nginx", "p99_us")
        if s99 is None or n99 is None:
            v(f"added p99 at {rate[5:]}/s vs nginx's", None, "<= 1.5x nginx", None, "no nginx")
        elif n99 <= 0:
            v(f"added p99 at {rate[5:]}/s vs nginx's", s99, "<= 1.5x nginx",
              s99 <= 0, f"nginx adds {n99:.0f} us (noise): ratio undefined")
        else:
            v(f"added p99 at {rate[5:]}/s vs nginx's (ratio)", s99 / n99,
              f"<= {LIMITS['added_p99_vs_nginx_max']}",
              s99 / n99 <= LIMITS["added_p99_vs_nginx_max"], f"{s99:.0f} us vs {n99:.0f} us")
    if "switchyard_rss_bytes" in idle:
        m = idle["switchyard_rss_bytes"] / MiB
        v("idle RSS, MiB", m, f"<= {LIMITS['idle_rss_mib_max']:g}",
          m <= LIMITS["idle_rss_mib_max"])
    holds = res.get("workloads", {}).get("hold", {}).get("switchyard", [])
    peaks = [r.get("proxy_rss_peak_bytes") or 0 for r in holds]
    if any(peaks):
        # The worst round counts: memory kept from earlier rounds is part of the footprint.
        n = summ["hold"]["switchyard"].get("max_open")
        m = max(peaks) / MiB
        v(f"RSS with {n:.0f} open streams (worst round), MiB", m,
          f"<= {LIMITS['streams_rss_mib_max']:g}", m <= LIMITS["streams_rss_mib_max"],
          "per round: " + ", ".join(f"{p / MiB:.1f}" for p in peaks))
    # RSS at the end of each round (every workload done, held streams closed). Round 1 fills
    # the upstream pool (1000 idle connections after the held streams) and the allocator's
    # free lists, so growth counts from the end of round 2 to the end of the last round.
    seq = res.get("rss_rounds", {}).get("after_streams", [])
    label = "RSS growth from round 2 to the last (leak check), MiB"
    if len(seq) >= 3:
        g = (seq[-1] - seq[1]) / MiB
        v(label, g, f"<= {LIMITS['rss_growth_mib_max']:g}", g <= LIMITS["rss_growth_mib_max"],
          "end of each round: " + ", ".join(f"{x / MiB:.1f}" for x in seq))
    elif seq:
        v(label, None, f"<= {LIMITS['rss_growth_mib_max']:g}", None,
          "needs 3 rounds or more; end of each round: " + ", ".join(f"{x / MiB:.1f}" for x in seq))
    e10, e10k = (micro.get(f"router/lookup/exact/{n}", {}).get("median_ns") for n in (10, 10000))
    if e10 and e10k:
        v("exact route lookup 10k/10 routes (O(1))", e10k / e10,
          f"<= {LIMITS['lookup_growth_max']}", e10k / e10 <= LIMITS["lookup_growth_max"],
          f"{e10:.0f} ns vs {e10k:.0f} ns")
    c10k = micro.get("router/compile/routes/10000", {}).get("median_ns")
    if c10k:
        ms = c10k / 1e6
        v("compile 10 000 routes, ms", ms, f"< {LIMITS['compile_10k_ms_max']:g}",
          ms < LIMITS["compile_10k_ms_max"])
    # Issue 21.
    g = lambda wl, t, k: summ.get(wl, {}).get(t, {}).get(k)  # noqa: E731
    for wl, label in (("chat", "non-streaming"), ("stream", "streaming, burst"),
                      ("stream_sep", "streaming, chunks one at a time")):
        r = ratio(g(wl, "switchyard", "rps"), g(wl, "nginx", "rps"))
        if r is not None:
            v(f"#21 throughput {label} switchyard/nginx", r,
              f">= {LIMITS['throughput_vs_nginx_min']}", r >= LIMITS["throughput_vs_nginx_min"])
    on, off = g("chat", "switchyard", "cpu_us_per_req"), g("chat", "switchyard-nolog",
                                                            "cpu_us_per_req")
    # Measured directly: the line formatted and queued on the request path (criterion) plus
    # the writer thread's CPU per request (its schedstat over the non-streaming run).
    line = micro.get("telemetry/access_log/log", {}).get("median_ns")
    writer = g("chat", "switchyard", "log_writer_ns_per_req")
    if line is not None and writer is not None:
        us = (line + writer) / 1e3
        v("#21 access log CPU per request (line + writer thread), us", us,
          f"<= {LIMITS['access_log_cpu_us_max']}", us <= LIMITS["access_log_cpu_us_max"],
          f"line {line:.0f} ns on the request path + writer {writer:.0f} ns")
    else:
        v("#21 access log CPU per request (line + writer thread), us", None,
          f"<= {LIMITS['access_log_cpu_us_max']}", None,
          "writer thread " + ("-" if writer is None else f"{writer:.0f} ns")
          + "; the per-line cost needs the criterion row telemetry/access_log/log")
    if on is not None and off is not None:
        v("#21 access log cross-check: CPU log on - log off, us", on - off,
          f"<= {LIMITS['access_log_cpu_us_max']}", None,
          f"{on:.1f} vs {off:.1f} us; a difference of two noisy measurements, not judged")
    r = ratio(g("stream_sep", "switchyard", "cpu_us_per_req"),
              g("stream_sep", "nginx", "cpu_us_per_req"))
    if r is not None:
        v("#21 per-chunk relay CPU, chunks one at a time, switchyard/nginx", r,
          f"<= {LIMITS['sep_chunk_cpu_vs_nginx_max']}", r <= LIMITS["sep_chunk_cpu_vs_nginx_max"])
    for wl in ("agent_openai_pass", "agent_openai_pass_stream", "agent_claude_pass",
               "agent_claude_pass_stream"):
        r = ratio(g(wl, "switchyard", "cpu_us_per_req"), g(wl, "nginx", "cpu_us_per_req"))
        if r is not None:
            v(f"#21 passthrough CPU {wl[6:]} switchyard/nginx", r,
              f"<= {LIMITS['agentic_passthrough_cpu_vs_nginx_max']}",
              r <= LIMITS["agentic_passthrough_cpu_vs_nginx_max"])
    for key in ("claude_code_to_openai", "claude_code_to_gemini", "claude_code_to_bedrock",
                "openai_70k_to_anthropic", "codex_responses_to_chat"):
        m = micro.get(f"agentic/request/{key}", {}).get("median_ns")
        if m:
            v(f"#21 translation {key} (criterion), us", m / 1e3,
              f"<= {LIMITS['translation_us_max']:g}", m / 1e3 <= LIMITS["translation_us_max"])
    for key in ("anthropic_to_openai", "openai_to_anthropic", "anthropic_to_responses",
                "openai_to_responses"):
        m = micro.get(f"agentic/stream_event/{key}", {}).get("median_ns")
        if m:
            v(f"#21 stream translation {key}, ns per event", m,
              f"<= {LIMITS['stream_event_ns_max']:g}", m <= LIMITS["stream_event_ns_max"])
    # Issue 22: what affinity and the budget reservation add to a request (local; with Redis
    # the reservation is one script round trip, shared with the rate windows).
    mg = lambda k: micro.get(k, {}).get("median_ns")  # noqa: E731
    aff = [mg("router/affinity/key_from_prefix"), mg("router/affinity/plan_and_key"),
           mg("router/affinity/plan_and_key_without_affinity")]
    res_ns = [mg("gateway/reservation/reserve_and_settle"), mg("gateway/reservation/block_on_ready"),
              mg("gateway/reservation/max_cost")]
    if all(x is not None for x in aff):
        extra = aff[0] + aff[1] - aff[2]
        v("#22 affinity per request (key + rendezvous plan - plain plan), us", extra / 1e3,
          f"< {LIMITS['cost_control_us_max']:g}", extra / 1e3 < LIMITS["cost_control_us_max"],
          f"key {aff[0]:.0f} ns, plan+key {aff[1]:.0f} ns vs {aff[2]:.0f} ns")
    if all(x is not None for x in res_ns):
        cost = res_ns[0] - res_ns[1]
        v("#22 budget reserve + settle per request, local, us", cost / 1e3,
          f"< {LIMITS['cost_control_us_max']:g}", cost / 1e3 < LIMITS["cost_control_us_max"],
          f"{res_ns[0]:.0f} ns less block_on {res_ns[1]:.0f} ns; own + shared budget, rpm, tpm")
    r = ratio(g("hold", "switchyard", "rss_peak_bytes"), g("hold", "nginx", "rss_peak_bytes"))
    if r is not None:
        v("#21 RSS with 1000 open streams switchyard/nginx", r,
          f"<= {LIMITS['streams_rss_vs_nginx_max']}", r <= LIMITS["streams_rss_vs_nginx_max"])
    big = summ.get("hold_big", {}).get("switchyard", {})
    if big:
        v(f"#21 RSS with {big.get('max_open') or 0:.0f} open streams (reported), MiB",
          (big.get("rss_peak_bytes") or 0) / MiB, "(none set)", None,
          f"nginx {(g('hold_big', 'nginx', 'rss_peak_bytes') or 0) / MiB:.1f} MiB")
    cp = res.get("control_plane") or {}
    a2l = cp.get("apply_to_live_ms", {})
    if a2l.get("count"):
        v("control plane apply-to-live p99, ms", a2l["p99"], "(none set)", None,
          f"p50 {a2l['p50']:.0f} ms over {a2l['count']} creates; "
          f"{cp.get('failed', 0)} never went live")
    else:
        v("control plane apply-to-live", None, "(none set)", None,
          "not measured: " + (cp.get("skipped") or cp.get("error") or "--no-kube"))
    sc = res.get("control_plane_scale") or {}
    n = sc.get("routes")
    if sc.get("rss_converged_bytes"):
        rss = sc["rss_converged_bytes"] / MiB
        v(f"#21 RSS with {n} AIRoutes + {sc['backends']} ModelBackends, MiB", rss,
          f"<= {LIMITS['scale_rss_mib_max']:g}", rss <= LIMITS["scale_rss_mib_max"],
          f"at ready {sc.get('rss_ready_bytes', 0) / MiB:.1f}, end {sc.get('rss_end_bytes', 0) / MiB:.1f}; "
          f"ready {sc.get('start_to_ready_s', 0):.1f} s after start")
        t = sc.get("start_to_all_status_s")
        v(f"#21 every status written after start, {n} routes, s", t,
          f"<= {LIMITS['scale_status_s_max']:g}", t is not None and t <= LIMITS["scale_status_s_max"],
          f"{sc.get('statuses_written')} of {sc.get('statuses_total')} Accepted")
        a2l = sc.get("apply_to_live_ms", {})
        if a2l.get("count"):
            v(f"#21 apply-to-live p99 at {n} routes, ms", a2l["p99"],
              f"<= {LIMITS['scale_apply_ms_max']:g}", a2l["p99"] <= LIMITS["scale_apply_ms_max"],
              f"p50 {a2l['p50']:.0f} ms over {a2l['count']}; {sc.get('apply_to_live_failed')} never")
    elif sc:
        v("#21 control plane at scale", None, "(see issue)", None,
          "not measured: " + (sc.get("skipped") or sc.get("error") or "?"))
    return out


def fmt(v: Optional[float], unit: str = "") -> str:
    if v is None:
        return "-"
    if unit == "us":
        return f"{v:,.0f}"
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "MiB":
        return f"{v / MiB:.1f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}"


def signed(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:+,.0f}"


def table(res: dict) -> str:
    """The one table `make bench` prints (also reprinted by --table-from)."""
    summ, meta, idle, micro = res["summary"], res["meta"], res.get("idle", {}), res.get("micro", {})
    rows: list[tuple[str, ...]] = []
    head = ("workload / metric", "direct", "nginx", "switchyard", "switchyard vs nginx")

    def row(label: str, key: str, unit: str, name: str, cmp: str = "",
            cols: tuple = TARGETS, scale: float = 1.0, ref: Optional[str] = None) -> None:
        """One row: `cols` name the targets shown as direct, nginx and switchyard (the
        log-off rows show the log-off twins); `cmp` adds switchyard vs nginx; `ref` takes
        the direct and nginx columns from another workload (a translated row's passthrough)."""
        r = summ.get(name, {})
        vals = [r.get(t, {}).get(key) if t else None for t in cols]
        if ref:
            vals[0], vals[1] = (summ.get(ref, {}).get(t, {}).get(key) for t in cols[:2])
        vals = [None if x is None else x / scale for x in vals]
        if all(x is None for x in vals):
            return
        extra = ""
        if cmp == "ratio":
            extra = fmt(ratio(vals[2], vals[1]), "x")
        elif cmp == "added":
            s_add, n_add = added(summ, name, cols[2], key), added(summ, name, cols[1], key)
            extra = f"{signed(s_add)} vs {signed(n_add)} us added"
        elif cmp == "ratios":  # vs nginx and vs direct
            extra = (f"{fmt(ratio(vals[2], vals[1]), 'x')} nginx, "
                     f"{fmt(ratio(vals[2], vals[0]), 'x')} direct")
        rows.append((label, *(fmt(x, unit) for x in vals), extra))

    log_on = meta["settings"].get("access_log", False)
    logs = ("access log on (nginx: buffer=64k flush=1s)" if log_on else "access log off")
    off_cols = (None, "nginx-nolog", "switchyard-nolog")

    def section(title: str) -> None:
        rows.append((title, "", "", "", ""))

    conns = meta["settings"]["connections"]
    if "chat" in summ:
        tool = next(iter(res["workloads"]["chat"].values()))[0].get("tool", "loadgen")
        section(f"1 chat, non-streaming, {conns} connections ({tool}), {logs}")
        row("  throughput, req/s", "rps", "", "chat", "ratios")
        row("  latency p50, us", "p50_us", "us", "chat", "added")
        row("  latency p99, us", "p99_us", "us", "chat", "added")
        row("  proxy CPU per request, us", "cpu_us_per_req", "", "chat", "ratio")
        row("  access log off: throughput, req/s", "rps", "", "chat", "ratio", off_cols)
        row("  access-log writer thread CPU per request, ns", "log_writer_ns_per_req", "",
            "chat")
        row("  access log off: proxy CPU per request, us", "cpu_us_per_req", "", "chat",
            "ratio", off_cols)
    if "stream" in summ:
        section(f"2 chat, streaming {meta['settings']['chunks']} chunks in one write (burst), "
                f"{conns} connections, {logs}")
        row("  throughput, streams/s", "rps", "", "stream", "ratios")
        row("  full stream p50, us", "p50_us", "us", "stream", "added")
        row("  full stream p99, us", "p99_us", "us", "stream", "added")
        row("  proxy CPU per stream, us", "cpu_us_per_req", "", "stream", "ratio")
        row("  access log off: throughput, streams/s", "rps", "", "stream", "ratio", off_cols)
        row("  access log off: proxy CPU per stream, us", "cpu_us_per_req", "", "stream",
            "ratio", off_cols)
    if "stream_sep" in summ:
        st = meta["settings"]
        section(f"2 chat, streaming {st['chunks']} chunks written one at a time "
                f"{st.get('sep_delay_ms')} ms apart, {conns} connections, {logs}")
        row("  throughput, streams/s", "rps", "", "stream_sep", "ratios")
        row("  full stream p50, us", "p50_us", "us", "stream_sep", "added")
        row("  proxy CPU per stream, us", "cpu_us_per_req", "", "stream_sep", "ratio")
        row("  proxy CPU per chunk, us", "cpu_us_per_req", "", "stream_sep", "ratio",
            scale=float(st["chunks"]))
    if "stream_ttfb" in summ:
        section(f"2 streaming at {meta['settings']['ttfb_rate']:g}/s open loop (loadgen)")
        row("  time to first byte p50, us", "ttfb_p50_us", "us", "stream_ttfb", "added")
        row("  time to first byte p99, us", "ttfb_p99_us", "us", "stream_ttfb", "added")
        row("  full stream p50, us", "p50_us", "us", "stream_ttfb", "added")
        row("  full stream p99, us", "p99_us", "us", "stream_ttfb", "added")
    for name in sorted((k for k in summ if k.startswith("open_")), key=lambda k: float(k[5:])):
        section(f"3 open loop {name[5:]} req/s, non-streaming (loadgen)")
        row("  achieved, req/s", "rps", "", name)
        row("  latency p50, us", "p50_us", "us", name, "added")
        row("  latency p99, us", "p99_us", "us", name, "added")
        row("  proxy CPU, % of its core", "cpu_pct", "", name, "ratio")
        b = summ[name].get(BUSY)
        if b:
            bp = meta["settings"].get("busy_poll")
            for key, lab in (("p50_us", "p50"), ("p99_us", "p99")):
                rows.append((f"  switchyard --busy-poll {bp}: {lab}, us", "", "",
                             fmt(b.get(key), "us"),
                             f"{signed(added(summ, name, BUSY, key))} us added"))
            rows.append((f"  switchyard --busy-poll {bp}: CPU, % of its core", "", "",
                         fmt(b.get("cpu_pct")), ""))
    if "hold" in summ:
        st = meta["settings"]
        section(f"4 {st['hold_streams']} slow streams held open "
                f"({st['slow_chunks']} chunks x {st['slow_delay_ms']} ms)")
        row("  streams open at once", "max_open", "", "hold")
        row("  proxy peak RSS, MiB", "rss_peak_bytes", "MiB", "hold", "ratio")
        row("  proxy CPU, % of its core", "cpu_pct", "", "hold", "ratio")
    if "hold_big" in summ:
        st = meta["settings"]
        section(f"4 {st.get('hold_streams_big')} slow streams asked for "
                f"({st['slow_chunks']} chunks x {st['slow_delay_ms']} ms, chunks one at a time), "
                f"{logs}")
        row("  streams open at once", "max_open", "", "hold_big")
        row("  proxy peak RSS, MiB", "rss_peak_bytes", "MiB", "hold_big", "ratio")
        row("  proxy CPU, % of its core", "cpu_pct", "", "hold_big", "ratio")
        row("  failed streams", "errors", "", "hold_big")
    agentic = [a for a in AGENTIC if a[0] in summ or a[0] + "_stream" in summ]
    if agentic:
        section(f"9 agentic bodies, {conns} connections, {logs}; translated rows: switchyard "
                "translates, nginx and direct pass the same body through")
        for name, label, *_ in agentic:
            for wl, shape in ((name, "non-streaming"), (name + "_stream",
                                                        "streaming, one write")):
                if wl not in summ:
                    continue
                # A translated row's direct and nginx columns: the same body passed through.
                ref = wl.replace(name, AGENTIC_REF[name]) if name in AGENTIC_REF else None
                row(f"  {label}, {shape}: req/s", "rps", "", wl, "ratios", ref=ref)
                row(f"  {label}, {shape}: proxy CPU per request, us", "cpu_us_per_req", "",
                    wl, "ratio", ref=ref)
    if idle:
        section("5 idle, after start-up")
        rows.append(("  RSS, MiB", "", fmt(idle.get("nginx_rss_bytes"), "MiB"),
                     fmt(idle.get("switchyard_rss_bytes"), "MiB"), ""))
        size = idle.get("switchyard_binary_bytes")
        stripped = idle.get("switchyard_binary_stripped_bytes")
        rows.append(("  binary size, MiB", "", fmt(idle.get("nginx_binary_bytes"), "MiB"),
                     fmt(size, "MiB"), f"{fmt(stripped, 'MiB')} MiB stripped" if stripped else ""))
    if micro:
        section("6 micro-benchmarks (criterion, median per iteration)")
        for key, label in (
                ("router/lookup/exact/{n}", "  route lookup, exact, {n} routes, ns"),
                ("router/lookup/glob/{n}", "  route lookup, glob, {n} routes, ns"),
                ("router/compile/routes/{n}", "  compile {n} routes, us"),
                ("router/compile/routes_backends/{n}", "  compile {n} routes + {m} backends, us")):
            for n in (10, 1000, 10000):
                m = micro.get(key.format(n=n))
                if m:
                    scale = 1e3 if "compile" in key else 1.0
                    rows.append((label.format(n=n, m=max(1, n // 10)), "", "",
                                 fmt(m["median_ns"] / scale), ""))
        for key, label in (
                ("openai/request/decode_encode/small", "  OpenAI request decode+encode, small, ns"),
                ("openai/request/decode_encode/large_stream",
                 "  OpenAI request decode+encode, 4 KiB, ns"),
                ("sse/parse_inspect/chunk", "  SSE parse + inspect one chunk, ns"),
                ("sse/parse_inspect/stream_20_chunks", "  SSE parse + inspect 20-chunk stream, ns"),
                ("translate/request/openai_to_anthropic",
                 "  request translation OpenAI -> Anthropic, ns"),
                ("translate/request/anthropic_to_openai",
                 "  request translation Anthropic -> OpenAI, ns"),
                ("translate/stream/openai_to_anthropic",
                 "  stream translation OpenAI -> Anthropic, ns per event"),
                ("translate/stream/anthropic_to_openai",
                 "  stream translation Anthropic -> OpenAI, ns per event"),
                ("telemetry/record/request", "  metrics per request, ns"),
                ("telemetry/record/stream", "  metrics per stream, ns"),
                ("telemetry/access_log/format", "  access log line, formatting, ns"),
                ("telemetry/access_log/log", "  access log line, format + queue, ns"),
                ("agentic/scan/openai_70k_model_last", "  scan 70 KB OpenAI body for model, ns"),
                ("agentic/request/claude_code_to_openai",
                 "  Claude Code request -> OpenAI, ns"),
                ("agentic/request/claude_code_to_gemini",
                 "  Claude Code request -> Gemini, ns"),
                ("agentic/request/claude_code_to_bedrock",
                 "  Claude Code request -> Bedrock, ns"),
                ("agentic/request/openai_70k_to_anthropic",
                 "  OpenAI 70 KB request -> Anthropic, ns"),
                ("agentic/request/codex_responses_to_chat", "  Codex request -> chat, ns"),
                ("agentic/stream_event/anthropic_to_openai",
                 "  stream event Anthropic -> OpenAI, ns per event"),
                ("agentic/stream_event/openai_to_anthropic",
                 "  stream event OpenAI -> Anthropic, ns per event"),
                ("agentic/stream_event/openai_to_responses",
                 "  stream event OpenAI -> Responses, ns per event"),
                ("router/affinity/key_from_prefix", "  affinity key from a chat body's prefix, ns"),
                ("router/affinity/plan_and_key", "  affinity plan + key (3:1 split, 4 keys), ns"),
                ("router/affinity/plan_and_key_without_affinity",
                 "  weighted plan + key, no affinity, ns"),
                ("gateway/reservation/max_cost", "  budget reservation: max cost, ns"),
                ("gateway/reservation/reserve_and_settle",
                 "  budget reserve + settle, local (incl. block_on), ns"),
                ("gateway/reservation/block_on_ready", "  (block_on of a ready future, ns)")):
            m = micro.get(key)
            if m:
                per = (m.get("throughput") or {}).get("Elements") if "per event" in label else 1
                rows.append((label, "", "", fmt(m["median_ns"] / (per or 1)), ""))
    cp = res.get("control_plane") or {}
    if cp.get("apply_to_live_ms", {}).get("count"):
        section(f"7 control plane: {cp['changes']} route changes via kube-apiserver")
        for key, label in (("apply_to_live_ms", "  create -> first routed request"),
                           ("delete_to_gone_ms", "  delete -> first 404"),
                           ("api_write_ms", "  API server write alone")):
            m = cp.get(key, {})
            if m.get("count"):
                rows.append((f"{label} p50 / p99, ms", "", "",
                             f"{m['p50']:.0f} / {m['p99']:.0f}", ""))
    else:
        section("7 control plane apply-to-live")
        reason = cp.get("skipped") or cp.get("error") or "skipped (--no-kube)"
        rows.append((f"  not measured: {reason[:70]}", "", "", "-", ""))
    tls_section(res, rows, section)

    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]

    def line(r: tuple) -> str:
        return "  ".join(c.ljust(widths[i]) if i == 0 or i == 4 else c.rjust(widths[i])
                         for i, c in enumerate(r)).rstrip()

    rule = "-" * len(line(head))
    out = [header_text(meta), rule, line(head), rule]
    out += [line(r) for r in rows]
    tls = res.get("tls_upstream") or {}
    if any(k.startswith("tls_") for k in summ):
        versions = "/".join(sorted(set(tls.get("edge_tls_versions", {}).values()))) or "TLS"
        out += [rule,
                f"8: an nginx TLS edge ({versions}, h2 by ALPN, throwaway CA) in front of the "
                "mock, pinned with it on the load CPU;",
                "   direct-tls = wrk -> edge; nginx-tls = wrk -> nginx -> edge (HTTP/1.1, "
                "verified, keep-alive); switchyard-tls =",
                "   wrk -> Switchyard -> edge (h2, spec.tls.caSecretRef). Paced: wrk with "
                "exponential pauses (a Poisson stream;",
                "   loadgen speaks plain HTTP only), timed from each request's sending. Latency "
                "added over direct-tls."]
    out += [rule, "targets (issue 9; #21: issue 21):"]
    for t in res.get("targets", []):
        mark = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        val = "-" if t["value"] is None else (f"{t['value']:.2f}" if abs(t["value"]) < 100
                                               else f"{t['value']:,.0f}")
        note = f"  ({t['note']})" if t["note"] else ""
        out.append(f"  [{mark:>6}] {t['target']}: {val} (limit {t['limit']}){note}")
    return "\n".join(out)


def tls_section(res: dict, rows: list, section: Callable[[str], None]) -> None:
    """Section 8 of the table: the TLS-upstream set, its own targets in the three columns."""
    summ, tls = res["summary"], res.get("tls_upstream") or {}
    names = [k for k in summ if k.startswith("tls_")]
    st = res["meta"]["settings"]
    if not names:
        if tls.get("skipped"):
            section("8 TLS upstream (h2 via edge)")
            rows.append((f"  not measured: {tls['skipped'][:70]}", "", "", "-", ""))
        return
    section(f"8 TLS upstream (h2 via edge), {st['tls_duration']:g} s per run (see below)")
    rows.append(("  target", "direct-tls", "nginx-tls", "switchyard-tls",
                 "vs nginx-tls / vs direct-tls"))
    p = tls.get("edge_protocols", {})
    rows.append(("  protocol to the edge (edge log, warm-up)", p.get("direct-tls", "-"),
                 p.get("nginx-tls", "-"), p.get("switchyard-tls", "-"),
                 "nginx 1.22 proxies over HTTP/1.1 only"))
    plain_cpu = {w: [summ.get(w, {}).get(t, {}).get("cpu_us_per_req")
                     for t in ("nginx", "switchyard")] for w in ("chat", "stream")}

    def trow(label: str, key: str, unit: str, name: str, cmp: str = "") -> None:
        r = summ.get(name, {})
        vals = [r.get(t, {}).get(key) for t in TLS_TARGETS]
        if all(x is None for x in vals):
            return
        extra = ""
        if cmp == "ratio":
            extra = f"{fmt(ratio(vals[2], vals[1]), 'x')} / {fmt(ratio(vals[2], vals[0]), 'x')}"
        elif cmp == "cpu":
            extra = f"{fmt(ratio(vals[2], vals[1]), 'x')} nginx-tls"
        elif cmp == "added":
            s_add = vals[2] - vals[0] if None not in (vals[2], vals[0]) else None
            n_add = vals[1] - vals[0] if None not in (vals[1], vals[0]) else None
            extra = f"{signed(s_add)} vs {signed(n_add)} us added"
        rows.append((label, *(fmt(x, unit) for x in vals), extra))

    conns = st["connections"]
    if "tls_chat" in summ:
        trow(f"  chat, non-streaming, {conns} conns: req/s", "rps", "", "tls_chat", "ratio")
        trow("    latency p50, us", "p50_us", "us", "tls_chat", "added")
        trow("    latency p99, us", "p99_us", "us", "tls_chat", "added")
        trow("    proxy CPU per request, us", "cpu_us_per_req", "", "tls_chat", "cpu")
        n, sw = plain_cpu["chat"]
        if n is not None or sw is not None:
            rows.append(("    the same, plain upstream (section 1), us", "", fmt(n), fmt(sw),
                         f"{fmt(ratio(sw, n), 'x')} nginx"))
        trow("    edge CPU, % of a core", "edge_cpu_pct", "", "tls_chat")
    if "tls_stream" in summ:
        trow(f"  streaming {st['chunks']} chunks, {conns} conns: streams/s", "rps", "",
             "tls_stream", "ratio")
        trow("    full stream p50, us", "p50_us", "us", "tls_stream", "added")
        trow("    proxy CPU per stream, us", "cpu_us_per_req", "", "tls_stream", "cpu")
        n, sw = plain_cpu["stream"]
        if n is not None or sw is not None:
            rows.append(("    the same, plain upstream (section 2), us", "", fmt(n), fmt(sw),
                         f"{fmt(ratio(sw, n), 'x')} nginx"))
        trow("    edge CPU, % of a core", "edge_cpu_pct", "", "tls_stream")
    for name in sorted((k for k in names if k.startswith("tls_paced_")),
                       key=lambda k: float(k[len("tls_paced_"):])):
        trow(f"  {name[len('tls_paced_'):]}/s non-streaming, wrk paced: achieved",
             "rps", "", name)
        trow("    latency p50, us", "p50_us", "us", name, "added")
        trow("    latency p99, us", "p99_us", "us", name, "added")
        trow("    proxy CPU, % of its core", "cpu_pct", "", name, "cpu")
    if tls.get("edge_log_lines_during_load"):
        rows.append((f"  warning: the edge logged {tls['edge_log_lines_during_load']} lines "
                     "during the load", "", "", "", ""))


def header_text(meta: dict) -> str:
    st = meta["settings"]
    pin = meta["pinning"]
    lines = [
        f"Switchyard benchmark  {meta['started']}  git {meta.get('git', '?')}"
        f"{'  (SMOKE: figures meaningless)' if st['smoke'] else ''}",
        f"machine: {meta['cpus']} CPUs ({meta['cpu_model']}), load average at start "
        f"{meta['loadavg_start']:.2f}; {st['rounds']} round(s) x {st['duration']:g} s per "
        f"workload and target, medians across rounds",
        f"pinning: {pin}",
        f"switchyard build: {meta.get('build', 'release')}",
        f"nginx: {meta.get('nginx') or 'not installed (skipped)'}; closed loop: "
        f"{meta.get('closed_loop_tool')}; access logs: {'on' if st.get('access_log') else 'off'}"
        f" (both proxies)",
    ]
    if meta["loadavg_start"] > 0.5:
        lines.append("warning: the machine was busy at start: take final figures on a quiet one")
    return "\n".join(lines)
