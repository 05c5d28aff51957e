"""Turn rounds into medians, check them against the targets, and write JSON and Markdown.

Invariants:
- Every figure in a summary is the median over repeats of a per-round figure (those in ``WORST``, a
  stall, a lag, a queue depth: the maximum); an "added" figure is
  computed within one repeat (target minus that repeat's direct round) before taking the median, so a
  drift between repeats cancels out.
- ``direct-again`` goes through the same arithmetic as every target: its "added" figures are the noise
  floor the others must be read against.
- Targets are checked on the first section (the first ``--db``), the one-worker proxy.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

PROXY = "proxy"
DIRECT = "direct"
CONTROL = "direct-again"


def _median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 4) if vals else None


def _metrics(r: dict[str, Any], direct: dict[str, Any] | None, stream: bool) -> dict[str, float | None]:
    load = r["load"]
    lat = load["latency_ms"]
    ttfe = load.get("ttfe_ms") or {}
    m: dict[str, float | None] = {
        "rps": load["rps"],
        "latency_p50_ms": lat["p50"],
        "latency_p99_ms": lat["p99"],
        "ttfe_p50_ms": ttfe.get("p50"),
        "ttfe_p99_ms": ttfe.get("p99"),
        "events_per_s": load["events_per_s"] if stream else None,
        "cpu_ms_per_request": r["cpu_ms_per_request"],
        "upstream_cpu_ms_per_request": r["upstream_cpu_ms_per_request"],
        "peak_rss_mb": r["peak_rss_mb"],
        "failed": load["failed"],
        **_internals(r),
    }
    if direct is not None:
        dl = direct["load"]
        m["added_p50_ms"] = round(lat["p50"] - dl["latency_ms"]["p50"], 4)
        m["added_p99_ms"] = round(lat["p99"] - dl["latency_ms"]["p99"], 4)
        if stream and ttfe and dl.get("ttfe_ms"):
            m["added_ttfe_p50_ms"] = round(ttfe["p50"] - dl["ttfe_ms"]["p50"], 4)
            m["added_ttfe_p99_ms"] = round(ttfe["p99"] - dl["ttfe_ms"]["p99"], 4)
        base = dl["events_per_s"] if stream else dl["rps"]
        mine = load["events_per_s"] if stream else load["rps"]
        m["x_direct"] = round(mine / base, 3) if base else None
    return m


# Figures where the worst round is the one to read (a stall, a lag, a queue): the maximum over repeats.
WORST = frozenset({"loop_stall_cpu_ms", "loop_stall_wall_ms", "recorder_lag_p99_ms", "queue_max", "drain_s"})


def _internals(r: dict[str, Any]) -> dict[str, float | None]:
    """Our proxy's inside figures: CPU per thread kind, the loop's longest hold, the recorder's lag."""
    stall = r.get("loop_stall") or {}
    rec = r.get("recorder") or {}
    lag = rec.get("lag_ms") or {}
    queue = rec.get("max_queue_depth", rec.get("queue_max_depth"))
    return {
        "serving_cpu_ms": r.get("serving_cpu_ms_per_request"),
        "recording_cpu_ms": r.get("recording_cpu_ms_per_request"),
        "loop_stall_cpu_ms": stall.get("cpu_ms"),
        "loop_stall_wall_ms": stall.get("wall_ms"),
        "recorder_lag_p50_ms": lag.get("p50"),
        "recorder_lag_p99_ms": lag.get("p99"),
        "queue_max": queue,
        "drain_s": (r.get("records") or {}).get("drain_s"),
    }


def _aggregate(key: str, values: Iterable[float | None]) -> float | None:
    if key in WORST:
        vals = [v for v in values if v is not None]
        return max(vals) if vals else None
    return _median(values)


def summarize(rounds: list[dict[str, Any]], streams: dict[str, bool]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{scenario: {target: {metric: median}}}`` plus record completeness per target."""
    by: dict[tuple[str, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rounds:
        by[(r["scenario"], r["repeat"])][r["target"]] = r
    per: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for (scenario, _repeat), targets in by.items():
        direct = targets.get(DIRECT)
        for name, r in targets.items():
            m = _metrics(r, direct, streams.get(scenario, False))
            m["_records"] = r.get("records")  # type: ignore[assignment]
            per[scenario][name].append(m)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for scenario, targets in per.items():
        out[scenario] = {}
        for name, ms in targets.items():
            keys = [k for k in ms[0] if not k.startswith("_")]
            summary: dict[str, Any] = {k: _aggregate(k, (m.get(k) for m in ms)) for k in keys}
            summary["rounds"] = len(ms)
            recs = [m["_records"] for m in ms if m["_records"] is not None]
            if recs:
                summary["records"] = {
                    "requests_sent": sum(x["requests_sent"] for x in recs),
                    "rows": sum(x["rows"] for x in recs),
                    "lost": sum(x["lost"] for x in recs),
                    "tokens_upstream": sum(x["tokens_upstream"] for x in recs),
                    "tokens_db": sum(x["tokens_db"] for x in recs),
                    "complete": all(x["complete"] for x in recs),
                }
            out[scenario][name] = summary
    return out


def _get(summary: dict[str, Any], scenario: str, target: str, key: str) -> float | None:
    return summary.get(scenario, {}).get(target, {}).get(key)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _keeps_up(s: dict[str, Any], key: str) -> float | None:
    """The worst value of ``key`` over every scenario, for the one-worker proxy."""
    vals = [t[PROXY][key] for t in s.values() if PROXY in t and t[PROXY].get(key) is not None]
    return max(vals) if vals else None


def _lost(sections: list[dict[str, Any]]) -> dict[str, Any]:
    recs = [
        t["records"]
        for section in sections
        for targets in section["summary"].values()
        for t in targets.values()
        if "records" in t
    ]
    lost = sum(r["lost"] for r in recs)
    ok = lost == 0 and all(r["complete"] for r in recs)
    return {
        "target": "lost records, every scenario and database",
        "value": lost if recs else None,
        "limit": 0,
        "unit": "rows",
        "pass": ok if recs else None,
    }


def check_targets(sections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The performance issue's targets, each with the measured value and pass/fail (None: not measured).

    Ratios to nginx need the nginx peer in the run (``--peers nginx``); without it they are not measured.
    """
    if not sections:
        return []
    s = sections[0]["summary"]
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float | None, *, at_least: bool = False, unit: str = "x") -> None:
        ok = None if value is None or limit is None else (value >= limit if at_least else value <= limit)
        checks.append({"target": name, "value": value, "limit": limit, "unit": unit, "pass": ok})

    def vs_nginx(scenario: str, key: str) -> float | None:
        return _ratio(_get(s, scenario, PROXY, key), _get(s, scenario, "nginx", key))

    add("CPU per 50-event paced stream vs nginx", vs_nginx("paced-50ev-c32", "cpu_ms_per_request"), 1.5)
    add("CPU per non-streamed request vs nginx, c=1", vs_nginx("nonstream-c1", "cpu_ms_per_request"), 4.0)
    add("CPU per non-streamed request vs nginx, c=32", vs_nginx("nonstream-c32", "cpu_ms_per_request"), 4.0)
    add("throughput c=32 vs direct", _get(s, "nonstream-c32", PROXY, "x_direct"), 0.5, at_least=True)
    nginx_p50 = _get(s, "nonstream-c1", "nginx", "added_p50_ms")
    add(
        "added latency p50, c=1 (limit 0.3 ms or 2x nginx's)",
        _get(s, "nonstream-c1", PROXY, "added_p50_ms"),
        max(0.3, 2 * nginx_p50) if nginx_p50 is not None else 0.3,
        unit="ms",
    )
    add("added latency p99, c=1", _get(s, "nonstream-c1", PROXY, "added_p99_ms"), 1.5, unit="ms")
    for scenario in ("paced-c200", "paced-c500"):
        nginx_ttfe = _get(s, scenario, "nginx", "added_ttfe_p50_ms")
        # 2x nginx's added time, with a 1 ms floor: both are differences of medians and can be ~0 or below.
        limit = max(2 * nginx_ttfe, 1.0) if nginx_ttfe is not None else None
        add(
            f"added TTFE p50, {scenario} (limit 2x nginx's)",
            _get(s, scenario, PROXY, "added_ttfe_p50_ms"),
            limit,
            unit="ms",
        )
        add(f"peak RSS, {scenario}", _get(s, scenario, PROXY, "peak_rss_mb"), 120.0, unit="MB")
    add("recorder queue, highest depth seen", _keeps_up(s, "queue_max"), 1000, unit="records")
    add("recorder lag p99 (response end to commit)", _keeps_up(s, "recorder_lag_p99_ms"), 1000, unit="ms")
    checks.append(_lost(sections))
    return checks


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _signed(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{v:+.{digits}f}"


def _head(report: dict[str, Any]) -> list[str]:
    meta = report["meta"]
    lines = [
        f"# Benchmark {meta['run_id']}",
        "",
        f"- machine: {meta['cpu']} ({meta['cores']} cores), {meta['os']}; Python {meta['python']}, "
        f"aiohttp {meta['aiohttp']}, uvloop {meta.get('uvloop') or 'absent'}",
        f"- load average before {meta['load_before']}, after {meta['load_after']}",
        f"- command: `{meta['command']}`",
        f"- commit: {meta.get('commit') or '?'}; mode: {'quick' if report['options']['quick'] else 'full'}, "
        f"{report['options']['repeats']} repeat(s), client asks for usage: {report['options']['client_usage']}",
    ]
    for name, why in (report.get("skipped_peers") or {}).items():
        lines.append(f"- peer {name} skipped: {why}")
    lines.append("")
    if report.get("targets"):
        lines += ["## Targets (first database, one worker)", "", "| target | measured | limit | |", "|---|---|---|---|"]
        for c in report["targets"]:
            verdict = {True: "pass", False: "**miss**", None: "not measured"}[c["pass"]]
            lines.append(f"| {c['target']} | {_fmt(c['value'])} {c['unit']} | {c['limit']} {c['unit']} | {verdict} |")
        lines.append("")
    return lines


_STREAM_HEAD = (
    "| target | streams/s | events/s | x direct | TTFE p50 | TTFE p99 | +TTFE p50 | +TTFE p99 "
    "| CPU ms/stream | peak RSS MB | records |"
)
_REQUEST_HEAD = (
    "| target | req/s | x direct | p50 ms | p99 ms | +p50 ms | +p99 ms | CPU ms/req | peak RSS MB | records |"
)


def _records(t: dict[str, Any]) -> str:
    rec = t.get("records")
    if rec is None:
        return "-"
    same = "=" if rec["tokens_db"] == rec["tokens_upstream"] else "!="
    verdict = "ok" if rec["complete"] else "**LOST**"
    return f"{rec['rows']}/{rec['requests_sent']} rows, tokens {same} {verdict}"


def _row(name: str, t: dict[str, Any], stream: bool) -> list[str]:
    if stream:
        timing = [
            _fmt(t["rps"], 1),
            _fmt(t["events_per_s"], 0),
            _fmt(t.get("x_direct")),
            _fmt(t["ttfe_p50_ms"]),
            _fmt(t["ttfe_p99_ms"]),
            _signed(t.get("added_ttfe_p50_ms")),
            _signed(t.get("added_ttfe_p99_ms")),
        ]
    else:
        timing = [
            _fmt(t["rps"], 0),
            _fmt(t.get("x_direct")),
            _fmt(t["latency_p50_ms"], 3),
            _fmt(t["latency_p99_ms"], 3),
            _signed(t.get("added_p50_ms"), 3),
            _signed(t.get("added_p99_ms"), 3),
        ]
    return [name, *timing, _fmt(t["cpu_ms_per_request"], 3), _fmt(t["peak_rss_mb"], 1), _records(t)]


def _scenario(scen: dict[str, Any], name: str, targets: dict[str, Any]) -> list[str]:
    head = _STREAM_HEAD if scen["stream"] else _REQUEST_HEAD
    lines = [f"### {scen['title']} (`{name}`)", "", head, "|" + "---|" * (head.count("|") - 1)]
    lines += ["| " + " | ".join(_row(tname, t, scen["stream"])) + " |" for tname, t in targets.items()]
    return [*lines, "", *_internals_table(targets)]


_INTERNALS_HEAD = (
    "| target | CPU ms/req serving thread | CPU ms/req recording (writer process or threads) "
    "| longest loop hold, CPU ms "
    "| longest loop lag, wall ms | recorder lag p50 / p99 ms | recorder queue max | last record in DB after s |"
)


def _internals_table(targets: dict[str, Any]) -> list[str]:
    rows = [
        f"| {name} | {_fmt(t.get('serving_cpu_ms'), 3)} | {_fmt(t.get('recording_cpu_ms'), 3)} "
        f"| {_fmt(t.get('loop_stall_cpu_ms'), 1)} | {_fmt(t.get('loop_stall_wall_ms'), 1)} "
        f"| {_fmt(t.get('recorder_lag_p50_ms'), 1)} / {_fmt(t.get('recorder_lag_p99_ms'), 1)} "
        f"| {_fmt(t.get('queue_max'))} | {_fmt(t.get('drain_s'), 2)} |"
        for name, t in targets.items()
        if t.get("serving_cpu_ms") is not None
    ]
    if not rows:
        return []
    return ["Inside our proxy:", "", _INTERNALS_HEAD, "|" + "---|" * (_INTERNALS_HEAD.count("|") - 1), *rows, ""]


def _write_rate(database: str, w: dict[str, Any]) -> list[str]:
    lines = [
        f"### Database write rate ({database}, batches of {w['batch_size']})",
        "",
        "| records | 1 writer | 2 writers | one recorder (decode + write) |",
        "|---|---|---|---|",
    ]
    for kind, label in (("nonstream", "non-streamed"), ("stream50", "50-event stream")):
        lines.append(
            f"| {label} | {w[f'insert_{kind}_1w']['per_s']}/s | {w[f'insert_{kind}_2w']['per_s']}/s "
            f"| {w[f'recorder_{kind}']['per_s']}/s |"
        )
    return [*lines, ""]


def _profile(name: str, prof: dict[str, Any]) -> list[str]:
    lines = [
        f"### Profile of the proxy, `{name}` (py-spy, {prof['samples']} samples, "
        f"{prof['ms_per_request']:.3f} ms sampled per request)",
        "",
        "| function | self % | ms/request |",
        "|---|---|---|",
    ]
    lines += [f"| `{r['function']}` | {r['percent']:.1f} | {r['ms_per_request']:.4f} |" for r in prof["top_self"][:12]]
    return [*lines, ""]


# The summary table: (row label, scenario, metric, digits, unit, signed).
_HEADLINE: tuple[tuple[str, str, str, int, str, bool], ...] = (
    ("added latency p50, non-streamed, c=1", "nonstream-c1", "added_p50_ms", 2, " ms", True),
    ("added latency p99, non-streamed, c=1", "nonstream-c1", "added_p99_ms", 2, " ms", True),
    ("CPU per non-streamed request, c=1", "nonstream-c1", "cpu_ms_per_request", 2, " ms", False),
    ("CPU per non-streamed request, c=32", "nonstream-c32", "cpu_ms_per_request", 2, " ms", False),
    ("throughput, c=32, vs direct", "nonstream-c32", "x_direct", 2, "x", False),
    ("CPU per 50-event paced stream (c=32)", "paced-50ev-c32", "cpu_ms_per_request", 2, " ms", False),
    ("of which recording (writer process or threads)", "paced-50ev-c32", "recording_cpu_ms", 2, " ms", False),
    ("CPU per 200-event fast stream (c=32)", "fast-streams-c32", "cpu_ms_per_request", 2, " ms", False),
    ("fast streams, events/s vs direct", "fast-streams-c32", "x_direct", 2, "x", False),
    ("200 paced streams, added TTFE p50", "paced-c200", "added_ttfe_p50_ms", 1, " ms", True),
    ("500 paced streams, added TTFE p50", "paced-c500", "added_ttfe_p50_ms", 1, " ms", True),
    ("peak RSS, 500 paced streams", "paced-c500", "peak_rss_mb", 0, " MB", False),
    ("longest serving-loop hold, any scenario", "*", "loop_stall_cpu_ms", 1, " ms", False),
    ("recorder lag p99, any scenario", "*", "recorder_lag_p99_ms", 0, " ms", False),
)


def _columns(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(column title, {scenario: figures}) for our proxy on each database, then the other targets."""
    cols: list[tuple[str, dict[str, Any]]] = []
    for i, section in enumerate(report["sections"]):
        s = section["summary"]
        names = [PROXY] + ([n for t in s.values() for n in t if n not in (PROXY, DIRECT, CONTROL)] if i == 0 else [])
        for name in dict.fromkeys(names):
            title = f"{name}, {section['database']}" if name == PROXY else name
            cols.append((title, {scenario: t[name] for scenario, t in s.items() if name in t}))
    return cols


def _cell(figures: dict[str, Any], scenario: str, key: str, digits: int, unit: str, signed: bool) -> str:
    if scenario == "*":
        vals = [f[key] for f in figures.values() if f.get(key) is not None]
        value = max(vals) if vals else None
    else:
        value = figures.get(scenario, {}).get(key)
    if value is None:
        return ""
    return (f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}") + unit


def headline(report: dict[str, Any]) -> list[str]:
    """One table of the figures the README quotes: each target a column, side by side from one run."""
    cols = _columns(report)
    lines = ["## Summary", "", "| | " + " | ".join(t for t, _ in cols) + " |", "|---|" + "---|" * len(cols)]
    for label, scenario, key, digits, unit, signed in _HEADLINE:
        cells = [_cell(f, scenario, key, digits, unit, signed) for _, f in cols]
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(report: dict[str, Any]) -> str:
    lines = _head(report) + headline(report)
    for section in report["sections"]:
        lines += [f"## {section['database']}", ""]
        for name, targets in section["summary"].items():
            lines += _scenario(report["scenarios"][name], name, targets)
        if section.get("write_rate"):
            lines += _write_rate(section["database"], section["write_rate"])
        if section.get("profiles_skipped"):
            lines += [f"Profiles skipped: {section['profiles_skipped']}", ""]
        for name, prof in (section.get("profiles") or {}).items():
            lines += _profile(name, prof)
    return "\n".join(lines) + "\n"
