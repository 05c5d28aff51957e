// The overview's totals, per-model table and the exchanges table with its pager.
import { $, el, emptyRow, row, swatch } from "./dom.js";
import { fmtCost, fmtInt, fmtMs, fmtPct, fmtTime } from "./format.js";

export const isError = (r) => (r.status != null && r.status >= 400) || r.outcome !== "complete";

export function renderTotals(rows) {
  const t = rows[0] || { requests: 0, errors: 0, total_tokens: null, cost_usd: null, unknown_cost: 0 };
  const set = (id, text, value) => {
    $(id).textContent = text;
    $(id).dataset.value = value == null ? "" : value;
  };
  set("total-requests", fmtInt(t.requests), t.requests);
  set("total-tokens", fmtInt(t.total_tokens), t.total_tokens);
  set("total-cost", fmtCost(t.cost_usd), t.cost_usd);
  set("total-error-rate", fmtPct(t.errors, t.requests), t.errors);
  set("total-unknown", fmtInt(t.unknown_cost), t.unknown_cost);
  set("total-latency", t.requests ? `${fmtMs(t.latency_p50_ms)} / ${fmtMs(t.latency_p95_ms)}` : "–", t.latency_p50_ms);
  return t;
}

const num = (text) => el("td", { class: "num" }, text);

export function renderModels(rows, colourOf) {
  const table = $("models");
  if (!rows.length) return emptyRow(table, "No exchanges match these filters.");
  table.tBodies[0].replaceChildren(
    ...rows.map((r) => {
      const name = r.model || "(no model)";
      return row([
        el("td", { "data-model": name }, swatch(colourOf(name)), name),
        num(fmtInt(r.requests)), num(fmtInt(r.errors)), num(fmtInt(r.prompt_tokens)),
        num(fmtInt(r.completion_tokens)), num(fmtInt(r.cached_tokens)), num(fmtCost(r.cost_usd)),
        num(fmtMs(r.latency_p50_ms)), num(fmtMs(r.latency_p95_ms)), num(fmtMs(r.latency_p99_ms)),
        num(fmtMs(r.ttft_p50_ms)), num(fmtMs(r.ttft_p95_ms)),
      ]);
    }),
  );
}

// nav.href(patch) -> a link into this page; nav.go(patch) follows it.
export function exchangeRow(r, nav, colourOf) {
  const model = r.model || r.model_requested || "(no model)";
  const tokens = r.prompt_tokens == null ? "–" : `${fmtInt(r.prompt_tokens)} → ${fmtInt(r.completion_tokens)}`;
  const session = r.session_id
    ? el("a", { href: nav.href({ view: "sessions", open: r.session_id }), "data-nav": true }, r.session_id)
    : "";
  const tr = row(
    [
      el("a", { href: nav.href({ exchange: r.id }), "data-nav": true }, fmtTime(r.started_at)),
      el("td", {}, swatch(colourOf(model)), model),
      r.status ?? "–", r.outcome, num(tokens), num(fmtCost(r.cost_usd)), num(fmtMs(r.duration_ms)),
      num(fmtMs(r.ttft_ms)), session,
    ],
    { class: "clickable" + (isError(r) ? " error" : ""), "data-id": r.id },
  );
  tr.addEventListener("click", (event) => {
    if (!event.target.closest("a")) nav.go({ exchange: r.id });
  });
  return tr;
}

export function renderExchanges(page, state, nav, colourOf) {
  const table = $("recent");
  if (!page.data.length) emptyRow(table, state.before || state.after ? "No exchanges on this page." : "No exchanges match these filters.");
  else table.tBodies[0].replaceChildren(...page.data.map((r) => exchangeRow(r, nav, colourOf)));
  const first = state.before || state.after;
  const link = (id, patch) => {
    if (patch) $(id).setAttribute("href", nav.href({ before: null, after: null, exchange: null, ...patch }));
    else $(id).removeAttribute("href");
  };
  link("page-newest", first ? {} : null);
  link("page-newer", page.newer ? { after: page.newer } : null);
  link("page-older", page.older ? { before: page.older } : null);
  const rows = page.data;
  $("page-info").textContent = rows.length
    ? `${rows.length} shown, ${fmtTime(rows[0].started_at)} back to ${fmtTime(rows[rows.length - 1].started_at)}${page.older ? "" : " (the oldest)"}`
    : "";
}
