// The sessions view: the list with totals, and one session: its totals, the session it re-sends or its
// re-sends with their comparison summaries, and its exchanges in order on a shared timeline.
import { $, el, emptyRow, row, swatch } from "./dom.js";
import { fmtCost, fmtInt, fmtMs, fmtPct, fmtSigned, fmtTime, toNum } from "./format.js";
import { isError } from "./tables.js";

const num = (text) => el("td", { class: "num" }, text);
const span = (a, b) => fmtMs(Date.parse(b) - Date.parse(a));
const sessionLink = (nav, id) => el("a", { href: nav.href({ view: "sessions", open: id, exchange: null }), "data-nav": true }, id);

export function renderSessionList(rows, nav, colourOf) {
  $("session-list").hidden = false;
  $("session-detail").hidden = true;
  const table = $("sessions-table");
  if (!rows.length) return emptyRow(table, "No sessions match these filters. Record one with base URL /s/NAME/v1.");
  table.tBodies[0].replaceChildren(
    ...rows.map((r) => {
      const tr = row([
        sessionLink(nav, r.session), fmtTime(r.first_at), fmtTime(r.last_at), num(span(r.first_at, r.last_at)),
        num(fmtInt(r.requests)), num(fmtInt(r.errors)), num(fmtInt(r.total_tokens)), num(fmtCost(r.cost_usd)),
        r.resent_from ? el("td", {}, "re-send of ", sessionLink(nav, r.resent_from)) : num(r.resends ? fmtInt(r.resends) : ""),
        el("td", { class: "wrap" }, r.models.map((m) => el("span", { class: "model-tag" }, swatch(colourOf(m)), m, " "))),
      ], { class: "clickable", "data-session": r.session });
      tr.addEventListener("click", (e) => e.target.closest("a") || nav.go({ view: "sessions", open: r.session }));
      return tr;
    }),
  );
}

function summaryLine(s) {
  if (!s) return "no report";
  const bits = [
    `${fmtInt(s.requests)} requests`, `${fmtInt(s.failed)} failed`, `${fmtInt(s.changed)} changed`,
    `${fmtInt(s.content_changed)} content`, `${fmtInt(s.tool_calls_changed)} tool calls`,
  ];
  if (s.mean_similarity != null) bits.push(`similarity ${Number(s.mean_similarity).toFixed(2)}`);
  if (s.total_tokens && s.total_tokens.delta != null) bits.push(`tokens ${fmtSigned(s.total_tokens.delta, fmtInt)}`);
  if (s.cost_usd && s.cost_usd.delta != null) bits.push(`cost ${fmtSigned(s.cost_usd.delta, fmtCost)}`);
  if (s.median_duration_ms_delta != null) bits.push(`median latency ${fmtSigned(s.median_duration_ms_delta, fmtMs)}`);
  return bits.join(" · ");
}

function linksBox(d, nav) {
  const out = [];
  if (d.resent_from) {
    const l = d.resent_from;
    out.push(el("div", { class: "card", "data-testid": "resent-from" },
      el("b", {}, "Re-send of "), sessionLink(nav, l.source_session_id),
      ` to ${l.target || "?"}${l.model ? ` as ${l.model}` : ""}, ${fmtTime(l.created_at)}`,
      el("div", { class: "muted" }, summaryLine(l.summary))));
  }
  if (d.resends.length) {
    out.push(el("div", { class: "card", "data-testid": "resends" }, el("b", {}, `Re-sent ${d.resends.length}×`),
      el("div", { class: "scroll" }, el("table", {}, el("thead", {}, row(["session", "when (UTC)", "target", "model", "report"].map((h) => el("th", {}, h)))),
        el("tbody", {}, d.resends.map((l) => row([sessionLink(nav, l.session_id), fmtTime(l.created_at), l.target || "", l.model || "", summaryLine(l.summary)])))))));
  }
  return el("div", { class: "links" }, out);
}

// Each exchange on the session's timeline: where it starts, how long it took, and its TTFT inside it.
function lane(r, t0, total) {
  const start = Date.parse(r.started_at) - t0;
  const dur = toNum(r.duration_ms) || 0;
  const ttft = toNum(r.ttft_ms);
  const pct = (v) => (total > 0 ? Math.min(100, (100 * v) / total) : 0) + "%";
  return el("div", { class: "lane", title: `+${fmtMs(start)}, ${fmtMs(dur)}` },
    el("span", { style: { left: pct(start), width: pct(dur) } }),
    ttft != null ? el("span", { class: "ttft", style: { left: pct(start), width: pct(Math.min(ttft, dur)) } }) : null);
}

function exchangesTable(d, nav, colourOf) {
  const rows = d.exchanges;
  const t0 = rows.length ? Date.parse(rows[0].started_at) : 0;
  const end = Math.max(t0, ...rows.map((r) => Date.parse(r.started_at) + (toNum(r.duration_ms) || 0)));
  const head = ["#", "offset", "timeline", "model", "status", "TTFT", "latency", "tokens in → out", "cost", "repeats"];
  const body = rows.map((r, i) => {
    const model = r.model || r.model_requested || "(no model)";
    const tr = row([
      num(i + 1), num("+" + fmtMs(Date.parse(r.started_at) - t0)), lane(r, t0, end - t0),
      el("td", {}, swatch(colourOf(model)), model), `${r.status ?? "–"} ${r.outcome === "complete" ? "" : r.outcome}`,
      num(fmtMs(r.ttft_ms)), num(fmtMs(r.duration_ms)),
      num(r.prompt_tokens == null ? "–" : `${fmtInt(r.prompt_tokens)} → ${fmtInt(r.completion_tokens)}`), num(fmtCost(r.cost_usd)),
      r.repeats ? el("a", { href: nav.href({ exchange: r.repeats }), "data-nav": true }, "original") : "",
    ], { class: "clickable" + (isError(r) ? " error" : ""), "data-id": r.id });
    tr.addEventListener("click", (e) => e.target.closest("a") || nav.go({ exchange: r.id }));
    return tr;
  });
  return el("div", { class: "scroll" }, el("table", { id: "session-exchanges" },
    el("thead", {}, row(head.map((h) => el("th", {}, h)))), el("tbody", {}, body)));
}

export function renderSession(d, nav, colourOf) {
  $("session-list").hidden = true;
  const box = $("session-detail");
  const card = (label, value) => el("div", {}, el("span", { class: "label" }, label), el("span", {}, value));
  const rows = d.exchanges;
  box.replaceChildren(
    el("p", {}, el("a", { href: nav.href({ open: null, exchange: null }), "data-nav": true }, "← all sessions")),
    el("h2", {}, "Session ", el("code", { id: "session-name" }, d.session)),
    el("section", { class: "totals" },
      card("Requests", fmtInt(d.requests)), card("Error rate", fmtPct(d.errors, d.requests)),
      card("Total tokens", fmtInt(d.total_tokens)), card("Cost (USD)", fmtCost(d.cost_usd)),
      card("Span", rows.length ? span(d.first_at, d.last_at) : "–"), card("Started (UTC)", fmtTime(d.first_at))),
    linksBox(d, nav),
    el("h3", {}, "Exchanges, in order", d.exchanges_truncated ? el("span", { class: "muted" }, ` (the first ${rows.length})`) : ""),
    rows.length ? exchangesTable(d, nav, colourOf) : el("p", { class: "empty-state" }, "No exchanges recorded under this session."),
  );
  box.hidden = false;
}
