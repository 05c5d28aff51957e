// Dashboard for the recording proxy. Reads only /_proxy/ JSON routes (the same query layer as the CLI).
// The admin token, when the proxy has one, comes from the URL fragment (#token=...) or the token box,
// and is kept in sessionStorage; it is sent as a bearer header and never put in a URL the server sees.
"use strict";

const $ = (id) => document.getElementById(id);
const fmtInt = (v) => (v == null ? "-" : Number(v).toLocaleString("en-US"));
const fmtCost = (v) => (v == null ? "-" : "$" + Number(v).toFixed(4));
const fmtMs = (v) => (v == null ? "-" : Math.round(v).toLocaleString("en-US"));
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
const charts = {};

(function takeTokenFromFragment() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("proxy-admin-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
})();

async function api(path) {
  const headers = {};
  const token = sessionStorage.getItem("proxy-admin-token");
  if (token) headers.Authorization = "Bearer " + token;
  const resp = await fetch("/_proxy/" + path, { headers });
  if (resp.status === 401) {
    $("token-box").hidden = false;
    throw new Error("this proxy needs its admin token");
  }
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error ? body.error.message : "HTTP " + resp.status);
  return body;
}

function filters() {
  const params = new URLSearchParams();
  for (const [name, id] of [["since", "f-since"], ["model", "f-model"], ["key", "f-key"], ["session", "f-session"]]) {
    const value = $(id).value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

function query(extra) {
  const params = filters();
  for (const [k, v] of Object.entries(extra)) params.set(k, v);
  return params.toString();
}

function showError(err) {
  $("error").textContent = err.message;
  $("error").hidden = false;
}

function renderTotals(rows) {
  const t = rows[0] || { requests: 0, errors: 0, total_tokens: null, cost_usd: null, unknown_cost: 0 };
  $("total-requests").textContent = fmtInt(t.requests);
  $("total-tokens").textContent = fmtInt(t.total_tokens);
  $("total-cost").textContent = fmtCost(t.cost_usd);
  $("total-error-rate").textContent = t.requests ? ((100 * t.errors) / t.requests).toFixed(1) + "%" : "-";
  $("total-unknown").textContent = fmtInt(t.unknown_cost);
  $("total-requests").dataset.value = t.requests;
  $("total-tokens").dataset.value = t.total_tokens == null ? "" : t.total_tokens;
  $("total-cost").dataset.value = t.cost_usd == null ? "" : t.cost_usd;
  $("total-error-rate").dataset.value = t.errors;
}

function renderChart(id, rows, bucket, field, label) {
  const buckets = [...new Set(rows.map((r) => r[bucket]))].sort();
  const models = [...new Set(rows.map((r) => r.model || "(none)"))].sort();
  const datasets = models.map((model, i) => ({
    label: model,
    backgroundColor: PALETTE[i % PALETTE.length],
    data: buckets.map((b) => {
      const row = rows.find((r) => r[bucket] === b && (r.model || "(none)") === model);
      return row && row[field] != null ? row[field] : 0;
    }),
  }));
  if (charts[id]) charts[id].destroy();
  charts[id] = new Chart($(id), {
    type: "bar",
    data: { labels: buckets, datasets },
    options: {
      animation: false,
      responsive: true,
      scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: label } } },
      plugins: { legend: { position: "bottom" } },
    },
  });
}

function cell(tr, text) {
  const td = document.createElement("td");
  td.textContent = text;
  tr.appendChild(td);
}

function renderModels(rows) {
  const body = $("models").tBodies[0];
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const v of [r.model || "(none)", fmtInt(r.requests), fmtInt(r.errors), fmtInt(r.prompt_tokens),
      fmtInt(r.completion_tokens), fmtInt(r.cached_tokens), fmtCost(r.cost_usd), fmtMs(r.latency_p50_ms),
      fmtMs(r.latency_p95_ms), fmtMs(r.latency_p99_ms), fmtMs(r.ttft_p50_ms), fmtMs(r.ttft_p95_ms)]) cell(tr, v);
    body.appendChild(tr);
  }
  const select = $("f-model");
  const current = select.value;
  const names = rows.map((r) => r.model).filter((m) => m);
  if (current && !names.includes(current)) names.push(current);
  select.replaceChildren(new Option("all", ""), ...names.map((m) => new Option(m, m)));
  select.value = current;
}

function renderRecent(page) {
  const body = $("recent").tBodies[0];
  body.replaceChildren();
  for (const r of page.data) {
    const tr = document.createElement("tr");
    tr.dataset.id = r.id;
    for (const v of [r.started_at.replace("T", " ").slice(0, 19), r.model || r.model_requested || "-", r.status,
      r.outcome, fmtInt(r.total_tokens), fmtCost(r.cost_usd), fmtMs(r.duration_ms), r.session_id || ""]) cell(tr, v);
    tr.addEventListener("click", () => openExchange(r.id).catch(showError));
    body.appendChild(tr);
  }
}

function messagesOf(request) {
  const body = request && request.body;
  if (body && Array.isArray(body.messages)) return body.messages;
  if (body && body.input !== undefined) return [{ role: "input", content: body.input }];
  return [];
}

async function openExchange(id) {
  const ex = await api("exchanges/" + encodeURIComponent(id));
  $("detail-id").textContent = ex.id;
  const box = $("detail-messages");
  box.replaceChildren();
  for (const m of messagesOf(ex.request)) {
    const div = document.createElement("div");
    div.className = "msg";
    const role = document.createElement("b");
    role.textContent = m.role;
    div.appendChild(role);
    div.appendChild(document.createTextNode(typeof m.content === "string" ? m.content : JSON.stringify(m.content)));
    box.appendChild(div);
  }
  const response = ex.response.assembled || ex.response.body;
  const choice = response && response.choices && response.choices[0];
  const text = choice && choice.message ? choice.message.content : null;
  $("detail-response").textContent = text != null ? text : JSON.stringify(response, null, 2);
  $("detail-usage").textContent = JSON.stringify({ model: ex.model, ...ex.usage, cost: ex.cost }, null, 2);
  $("detail-timing").textContent = JSON.stringify({ ...ex.timing, status: ex.status, outcome: ex.outcome,
    stream: ex.stream, started_at: ex.started_at }, null, 2);
  $("detail").hidden = false;
  $("detail").scrollIntoView();
}

async function refresh() {
  $("error").hidden = true;
  const since = $("f-since").value;
  const bucket = since === "1h" || since === "24h" ? "hour" : "day";
  try {
    const [totals, series, models, recent] = await Promise.all([
      api("usage?" + query({})),
      api("usage?" + query({ by: bucket + ",model" })),
      api("usage?" + query({ by: "model" })),
      api("exchanges?" + query({ limit: "50" })),
    ]);
    renderTotals(totals);
    renderChart("chart-tokens", series, bucket, "total_tokens", "tokens");
    renderChart("chart-cost", series, bucket, "cost_usd", "USD");
    renderModels(models);
    renderRecent(recent);
    document.body.dataset.loaded = "1";
  } catch (err) {
    showError(err);
  }
}

$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  refresh();
});
$("f-since").addEventListener("change", refresh);
$("detail-close").addEventListener("click", () => ($("detail").hidden = true));
$("token-save").addEventListener("click", () => {
  sessionStorage.setItem("proxy-admin-token", $("token-input").value);
  $("token-box").hidden = true;
  refresh();
});
refresh();
