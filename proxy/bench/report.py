"""Turn rounds into medians, check them against the targets, and write JSON and Markdown.

Invariants:
- Every figure in a summary is the median over repeats of a per-round figure; an "added" figure is
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
            summary: dict[str, Any] = {k: _median(m.get(k) for m in ms) for k in keys}
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


def check_targets(sections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and pass/fail (None when not measured)."""
    if not sections:
        return []
    s = sections[0]["summary"]
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, *, at_least: bool = False, unit: str = "ms") -> None:
        ok = None if value is None else (value >= limit if at_least else value <= limit)
        checks.append({"target": name, "value": value, "limit": limit, "unit": unit, "pass": ok})

    add("added latency p50, non-streamed c=1", _get(s, "nonstream-c1", PROXY, "added_p50_ms"), 0.5)
    add("added latency p99, non-streamed c=1", _get(s, "nonstream-c1", PROXY, "added_p99_ms"), 2.0)
    add("proxy CPU per non-streamed request, c=1", _get(s, "nonstream-c1", PROXY, "cpu_ms_per_request"), 0.5)
    add("proxy CPU per non-streamed request, c=32", _get(s, "nonstream-c32", PROXY, "cpu_ms_per_request"), 0.5)
    add("proxy CPU per 50-event stream", _get(s, "paced-50ev-c32", PROXY, "cpu_ms_per_request"), 2.5)
    add("throughput c=32 vs direct", _get(s, "nonstream-c32", PROXY, "x_direct"), 0.3, at_least=True, unit="x")
    for scenario in ("paced-c500",):
        added = _get(s, scenario, PROXY, "added_ttfe_p50_ms")
        noise = _get(s, scenario, CONTROL, "added_ttfe_p50_ms")
        if added is not None and noise is not None:
            # Within the control's noise: no further from direct than direct-again is (1 ms floor).
            add(f"added TTFE p50, {scenario} (limit = control's |difference|)", added, max(abs(noise), 1.0))
        add(f"peak RSS, {scenario}", _get(s, scenario, PROXY, "peak_rss_mb"), 150.0, unit="MB")
    lost = 0
    measured = False
    for section in sections:
        for targets in section["summary"].values():
            for t in targets.values():
                if "records" in t:
                    measured = True
                    lost += t["records"]["lost"]
    complete = all(
        t["records"]["complete"]
        for section in sections
        for targets in section["summary"].values()
        for t in targets.values()
        if "records" in t
    )
    checks.append(
        {
            "target": "lost records, every scenario and database",
            "value": lost if measured else None,
            "limit": 0,
            "unit": "rows",
            "pass": (lost == 0 and complete) if measured else None,
        }
    )
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
    return [*lines, ""]


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


def markdown(report: dict[str, Any]) -> str:
    lines = _head(report)
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
