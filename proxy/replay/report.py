"""Comparing a re-sent session with the original: per request and in total, as JSON and Markdown. Pure.

Invariants:
- Inputs are stored exchanges with their bodies (``store.stored.Stored``); nothing here does I/O.
- ``id``, ``created`` and ``system_fingerprint`` never count as differences: they change on every call.
- Content is compared per choice: exactly, with whitespace normalised, and as a similarity score in
  [0, 1] (difflib ratio). Tool calls are compared by position: name, then arguments field by field.
- Unknown numbers (usage not reported, cost not priced) stay None and are left out of totals, never 0.
"""

from __future__ import annotations

import difflib
import statistics
from collections.abc import Sequence
from typing import Any

import msgspec

from proxy.replay.matchkey import differences
from proxy.store.stored import Stored, StoredBody

NOISE = ("id", "created", "system_fingerprint")
_ANY = msgspec.json.Decoder()


class View(msgspec.Struct, kw_only=True):
    """What a comparison reads from one exchange."""

    status: int | None
    error: str | None
    finish: list[str | None]
    contents: list[str | None]
    tool_calls: list[list[dict[str, Any]]]
    usage: dict[str, int | None]
    cost: float | None
    ttft_ms: float | None
    duration_ms: float | None
    other: dict[str, Any]


def view_of(stored: Stored) -> View:
    body = stored.body or StoredBody()
    raw = body.assembled if stored.stream and body.assembled else body.response_body
    obj: Any = None
    if raw is not None:
        try:
            obj = _ANY.decode(raw.encode() if isinstance(raw, str) else bytes(raw))
        except (msgspec.DecodeError, UnicodeDecodeError):
            obj = None
    obj = obj if isinstance(obj, dict) else {}
    choices = [c for c in obj.get("choices") or () if isinstance(c, dict)]
    messages = [c.get("message") or {} for c in choices]
    usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
    cost = stored.cost_usd
    if cost is None and isinstance(usage.get("cost"), int | float):
        cost = float(usage["cost"])
    return View(
        status=stored.status,
        error=stored.error,
        finish=[c.get("finish_reason") for c in choices],
        contents=[
            m.get("content") if "message" in c else c.get("text") for c, m in zip(choices, messages, strict=True)
        ],
        tool_calls=[list(m.get("tool_calls") or ()) for m in messages],
        usage={k: getattr(stored.usage, k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
        cost=cost,
        ttft_ms=stored.ttft_ms,
        duration_ms=stored.duration_ms,
        other={k: v for k, v in obj.items() if k not in (*NOISE, "choices", "usage", "object")},
    )


def _normalised(text: str | None) -> str:
    return " ".join((text or "").split())


def similarity(a: str | None, b: str | None) -> float:
    if (a or "") == (b or ""):
        return 1.0
    return round(difflib.SequenceMatcher(None, a or "", b or "", autojunk=False).ratio(), 4)


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 6)


def _triple(a: float | None, b: float | None) -> dict[str, float | None]:
    return {"original": a, "new": b, "delta": _delta(a, b)}


def _tool_differences(old: list[list[dict[str, Any]]], new: list[list[dict[str, Any]]]) -> list[str]:
    notes: list[str] = []
    for choice in range(max(len(old), len(new))):
        a = old[choice] if choice < len(old) else []
        b = new[choice] if choice < len(new) else []
        for i in range(max(len(a), len(b))):
            where = f"choice {choice} call {i}"
            if i >= len(a):
                notes.append(f"{where} added: {_call_text(b[i])}")
                continue
            if i >= len(b):
                notes.append(f"{where} removed: {_call_text(a[i])}")
                continue
            fa, fb = a[i].get("function") or {}, b[i].get("function") or {}
            if fa.get("name") != fb.get("name"):
                notes.append(f"{where} name: {fb.get('name')!r} (was {fa.get('name')!r})")
            notes.extend(f"{where} ({fb.get('name')}) arguments {d}" for d in _argument_differences(fa, fb))
    return notes


def _call_text(call: dict[str, Any]) -> str:
    fn = call.get("function") or {}
    return f"{fn.get('name')}({fn.get('arguments') or ''})"


def _argument_differences(fa: dict[str, Any], fb: dict[str, Any]) -> list[str]:
    raw_a, raw_b = fa.get("arguments") or "", fb.get("arguments") or ""
    if raw_a == raw_b:
        return []
    try:
        parsed_a, parsed_b = _ANY.decode(raw_a.encode()), _ANY.decode(raw_b.encode())
    except msgspec.DecodeError:
        return [f"{raw_b!r} (was {raw_a!r})"]
    return [d.describe().replace("(recorded ", "(was ") for d in differences(parsed_b, parsed_a)]


def failed(original_status: int | None, new_status: int | None, answered: bool) -> bool:
    """A re-send failed: the target never answered, or answered an error where the original succeeded (an
    error replayed as an error is no failure). The progress bar and the totals both count with this."""
    return not answered or (new_status or 0) >= 400 > (original_status or 0)


def compare(index: int, original: Stored, new: Stored | None, send_error: str | None) -> dict[str, Any]:
    """One request's comparison; ``new`` is None when the re-send failed before a record was made."""
    a = view_of(original)
    entry: dict[str, Any] = {
        "index": index,
        "original_id": original.id,
        "new_id": new.id if new else None,
        "path": original.path,
        "model": {"original": original.model, "new": new.model if new else None},
    }
    if new is None:  # a failure, not a change
        entry.update(answered=False, failed=True, changed=False, error=send_error or "no response")
        return entry
    b = view_of(new)
    contents = [
        {
            "choice": i,
            "exact": (x or "") == (y or ""),
            "normalised": _normalised(x) == _normalised(y),
            "similarity": similarity(x, y),
        }
        for i, (x, y) in enumerate(_padded(a.contents, b.contents))
    ]
    tools = _tool_differences(a.tool_calls, b.tool_calls)
    other = [d.describe().replace("(recorded ", "(was ") for d in differences(b.other, a.other)]
    entry.update(
        status={"original": a.status, "new": b.status},
        finish_reason={"original": a.finish, "new": b.finish},
        content=contents,
        content_changed=not all(c["exact"] for c in contents),
        tool_calls=tools,
        other=other,
        tokens={k: _triple(a.usage[k], b.usage[k]) for k in a.usage},
        cost_usd=_triple(a.cost, b.cost),
        ttft_ms=_triple(a.ttft_ms, b.ttft_ms),
        duration_ms=_triple(a.duration_ms, b.duration_ms),
        error=b.error if (b.status or 0) >= 400 else None,
        answered=new.upstream_status is not None,
        failed=failed(a.status, b.status, answered=new.upstream_status is not None),
    )
    differs = a.status != b.status or a.finish != b.finish or entry["content_changed"] or tools or other
    entry["changed"] = bool(differs) and not entry["failed"]
    return entry


def _padded(a: Sequence[str | None], b: Sequence[str | None]) -> list[tuple[str | None, str | None]]:
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else None, b[i] if i < len(b) else None) for i in range(n)]


def _sum(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known), 6) if known else None


def totals(entries: list[dict[str, Any]]) -> dict[str, Any]:
    done = [e for e in entries if e.get("new_id")]
    # What changed is counted over the re-sends that did not fail: a failure is not a change.
    compared = [e for e in done if not e["failed"]]
    sims = [c["similarity"] for e in compared for c in e["content"]]
    out: dict[str, Any] = {
        "requests": len(entries),
        "answered": sum(1 for e in entries if e["answered"]),
        "failed": sum(1 for e in entries if e["failed"]),
        "changed": sum(1 for e in entries if e["changed"]),
        "status_changed": sum(1 for e in compared if e["status"]["original"] != e["status"]["new"]),
        "finish_reason_changed": sum(
            1 for e in compared if e["finish_reason"]["original"] != e["finish_reason"]["new"]
        ),
        "content_changed": sum(1 for e in compared if e["content_changed"]),
        "content_changed_beyond_whitespace": sum(
            1 for e in compared if not all(c["normalised"] for c in e["content"])
        ),
        "tool_calls_changed": sum(1 for e in compared if e["tool_calls"]),
        "mean_similarity": round(statistics.fmean(sims), 4) if sims else None,
    }
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        old = _sum([e["tokens"][name]["original"] for e in done])
        new = _sum([e["tokens"][name]["new"] for e in done])
        out[name] = _triple(old, new)
    old_cost, new_cost = _sum([e["cost_usd"]["original"] for e in done]), _sum([e["cost_usd"]["new"] for e in done])
    out["cost_usd"] = _triple(old_cost, new_cost)
    for name in ("ttft_ms", "duration_ms"):
        deltas = [e[name]["delta"] for e in done if e[name]["delta"] is not None]
        out[f"median_{name}_delta"] = round(statistics.median(deltas), 3) if deltas else None
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _signed(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:+.1f}{unit}" if unit == " ms" else f"{value:+.6g}{unit}"


def markdown(report: dict[str, Any]) -> str:
    t = report["totals"]
    lines = [
        f"# Re-send of session `{report['source_session']}` as `{report['session']}`",
        "",
        f"Target: {report['target']}" + (f", model override `{report['model']}`" if report.get("model") else ""),
        "",
        "| requests | answered | failed | changed | content changed | beyond whitespace | tool calls changed "
        "| mean similarity |",
        "|---|---|---|---|---|---|---|---|",
        f"| {t['requests']} | {t['answered']} | {t['failed']} | {t['changed']} | {t['content_changed']} "
        f"| {t['content_changed_beyond_whitespace']} | {t['tool_calls_changed']} | {_fmt(t['mean_similarity'])} |",
        "",
        "| | original | new | delta |",
        "|---|---|---|---|",
    ]
    for name in ("prompt_tokens", "completion_tokens", "total_tokens", "cost_usd"):
        v = t[name]
        lines.append(f"| {name} | {_fmt(v['original'])} | {_fmt(v['new'])} | {_signed(v['delta'])} |")
    lines += [
        f"| median TTFT delta | | | {_signed(t['median_ttft_ms_delta'], ' ms')} |",
        f"| median duration delta | | | {_signed(t['median_duration_ms_delta'], ' ms')} |",
        "",
        "| # | status | finish | content | similarity | tool calls | tokens Δ | cost Δ | TTFT Δ | duration Δ |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in report["requests"]:
        if not e.get("new_id"):
            lines.append(f"| {e['index']} | failed: {e.get('error')} | | | | | | | | |")
            continue
        old_status, new_status = e["status"]["original"], e["status"]["new"]
        status = f"{old_status}→{new_status}" if old_status != new_status else str(new_status)
        finish = ",".join(str(f) for f in e["finish_reason"]["new"])
        if e["finish_reason"]["original"] != e["finish_reason"]["new"]:
            finish = ",".join(str(f) for f in e["finish_reason"]["original"]) + "→" + finish
        content = (
            "same"
            if not e["content_changed"]
            else ("whitespace only" if all(c["normalised"] for c in e["content"]) else "changed")
        )
        sim = min((c["similarity"] for c in e["content"]), default=1.0)
        lines.append(
            f"| {e['index']} | {status} | {finish} | {content} | {sim:.2f} | {len(e['tool_calls']) or 'same'} "
            f"| {_signed(e['tokens']['total_tokens']['delta'])} | {_signed(e['cost_usd']['delta'])} "
            f"| {_signed(e['ttft_ms']['delta'], ' ms')} | {_signed(e['duration_ms']['delta'], ' ms')} |"
        )
    details = [e for e in report["requests"] if e.get("tool_calls") or e.get("other") or e.get("error")]
    if details:
        lines += ["", "## Differences", ""]
        for e in details:
            for note in [*e.get("tool_calls", []), *e.get("other", []), *([e["error"]] if e.get("error") else [])]:
                lines.append(f"- request {e['index']} (`{e['original_id']}` → `{e.get('new_id')}`): {note}")
    return "\n".join(lines) + "\n"
