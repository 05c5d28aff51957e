// Dashboard for the recording proxy: reads only the /_proxy/ JSON routes (the same query layer as the CLI).
// The whole view lives in the URL's query string (filters, tab, page cursor, open session and exchange,
// auto-refresh), so a link shares it and a reload restores it; the back button walks through it.
import { api, saveToken, takeTokenFromFragment } from "./api.js";
import { bucketKeys, clearCharts, lineChart, stackedChart } from "./charts.js";
import { fixedSlots, keptSeries, OTHER_LABEL, seriesColors } from "./colors.js";
import { $, emptyRow } from "./dom.js";
import { closeExchange, openExchange, toggleRaw } from "./exchange.js";
import { renderSession, renderSessionList } from "./sessions.js";
import { renderExchanges, renderModels, renderTotals } from "./tables.js";

const DEFAULT_SINCE = "7d";
const PERIODS = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
const PERIOD_NAMES = { "1h": "last hour", "24h": "last 24 hours", "7d": "last 7 days", "30d": "last 30 days" };
const TEXT_FILTERS = ["model", "key", "session", "user"];
const KEY_PATTERN = /^fp_[0-9a-f]{1,64}$/;
const KEY_MESSAGE = "key must be an API key fingerprint: fp_ and hex digits, as 'proxy usage --by key' shows";
const CHARTS = ["chart-tokens", "chart-cost", "chart-latency", "chart-ttft"];

// --- the view in the URL ---
function readState(search = location.search) {
  const p = new URLSearchParams(search);
  const s = { view: p.get("view") === "sessions" ? "sessions" : "overview" };
  s.since = p.has("since") ? (p.get("since") === "all" ? "" : p.get("since")) : DEFAULT_SINCE;
  for (const name of TEXT_FILTERS) s[name] = p.get(name) || "";
  s.errors = p.get("errors") === "1";
  for (const name of ["before", "after", "exchange", "open", "refresh"]) s[name] = p.get(name) || "";
  return s;
}

function searchOf(s) {
  const p = new URLSearchParams();
  if (s.view === "sessions") p.set("view", "sessions");
  if (s.since !== DEFAULT_SINCE) p.set("since", s.since || "all");
  for (const name of TEXT_FILTERS) if (s[name]) p.set(name, s[name]);
  if (s.errors) p.set("errors", "1");
  for (const name of ["before", "after", "open", "exchange", "refresh"]) if (s[name]) p.set(name, s[name]);
  const text = p.toString();
  return text ? "?" + text : location.pathname;
}

const nav = {
  href: (patch) => searchOf({ ...readState(), ...patch }),
  go(patch, { replace = false } = {}) {
    const url = nav.href(patch);
    history[replace ? "replaceState" : "pushState"](null, "", url);
    render();
  },
};

function apiFilters(s) {
  const p = new URLSearchParams();
  if (s.since) p.set("since", s.since);
  for (const name of TEXT_FILTERS) if (s[name]) p.set(name, s[name]);
  if (s.errors) p.set("errors", "1");
  return p;
}

const query = (s, extra = {}) => {
  const p = apiFilters(s);
  for (const [k, v] of Object.entries(extra)) if (v) p.set(k, v);
  return p.toString();
};

// --- model colours (see colors.js) ---
let catalogue = [];
let fixed = new Map();
let chartColours = new Map();
const colourOf = (name) => chartColours.get(name) || seriesColors([name], fixed).get(name);

async function loadCatalogue() {
  catalogue = (await api("models")).map((m) => m.model);
  fixed = fixedSlots(catalogue);
  $("f-model").replaceChildren(new Option("all", ""), ...catalogue.map((m) => new Option(m, m)));
  choose($("f-model"), readState().model);
}

// Select a value, adding it when the list lacks it (a shared URL may name a model or period it lacks).
function choose(select, value) {
  if (![...select.options].some((o) => o.value === value)) select.add(new Option(value, value));
  select.value = value;
}

// --- loading ---
async function loadOverview(s) {
  const unit = s.since === "1h" || s.since === "24h" ? "hour" : "day";
  const [totals, series, timeline, models] = await Promise.all([
    api("usage?" + query(s)),
    api("usage?" + query(s, { by: unit + ",model" })),
    api("usage?" + query(s, { by: unit })),
    api("usage?" + query(s, { by: "model" })),
  ]);
  const t = renderTotals(totals);
  const sizes = new Map(models.map((r) => [r.model || "(no model)", r.total_tokens ?? r.requests]));
  const kept = keptSeries(sizes);
  const names = [...sizes.keys()].filter((n) => kept.has(n));
  if (names.length < sizes.size) names.push(OTHER_LABEL);
  chartColours = seriesColors(names, fixed);
  renderModels(models, colourOf);
  $("empty").hidden = t.requests > 0;
  $("charts").hidden = !t.requests;
  if (!t.requests) {
    const period = s.since ? ` in the ${PERIOD_NAMES[s.since] || "period since " + s.since}` : "";
    $("empty").textContent = `No exchanges match these filters${period}. Widen the period or clear the filters.`;
    clearCharts(CHARTS, "no data");
    return;
  }
  const keys = bucketKeys([...series, ...timeline], unit, PERIODS[s.since]);
  const common = { rows: series, keys, unit, colours: chartColours, kept };
  stackedChart("chart-tokens", { ...common, field: "total_tokens", yTitle: "tokens" });
  stackedChart("chart-cost", { ...common, field: "cost_usd", yTitle: "USD", money: true });
  const lat = { rows: timeline, keys, unit };
  lineChart("chart-latency", { ...lat, emptyText: "No latency recorded",
    lines: [["latency_p50_ms", "p50", "#2456a6", false], ["latency_p95_ms", "p95", "#c62828", true]] });
  lineChart("chart-ttft", { ...lat, emptyText: "No streamed responses in this view: no time to first token",
    lines: [["ttft_p50_ms", "TTFT p50", "#2a9d8f", false], ["ttft_p95_ms", "TTFT p95", "#e76f51", true]] });
}

async function loadExchanges(s) {
  const page = await api("exchanges?" + query(s, { limit: "50", before: s.before, after: s.after }));
  if (s.after && !page.newer) {
    // "Newer" reached the newest rows: this is the first page, so say so in the URL.
    history.replaceState(null, "", nav.href({ after: null }));
    loaded.page = query(s) + s.before;
  }
  renderExchanges(page, readState(), nav, colourOf);
}

async function loadSessions(s) {
  if (s.open) renderSession(await api("sessions/" + encodeURIComponent(s.open)), nav, colourOf);
  else renderSessionList(await api("sessions?" + query(s)), nav, colourOf);
}

// --- rendering the state ---
let loaded = {};
let renders = 0;

function syncForm(s) {
  choose($("f-since"), s.since);
  for (const name of TEXT_FILTERS) if (name !== "model") $("f-" + name).value = s[name];
  choose($("f-model"), s.model);
  $("f-errors").checked = s.errors;
  choose($("f-refresh"), s.refresh);
  $("f-key").removeAttribute("aria-invalid");
  $("overview").hidden = s.view !== "overview";
  $("sessions").hidden = s.view !== "sessions";
  $("tab-overview").setAttribute("href", nav.href({ view: "overview", open: null, exchange: null }));
  $("tab-sessions").setAttribute("href", nav.href({ view: "sessions", before: null, after: null, exchange: null }));
  for (const tab of ["overview", "sessions"]) {
    if (s.view === tab) $("tab-" + tab).setAttribute("aria-current", "page");
    else $("tab-" + tab).removeAttribute("aria-current");
  }
}

function showError(err) {
  $("error").textContent = err.message;
  $("error").hidden = false;
  if (/^key\b/.test(err.message)) $("f-key").setAttribute("aria-invalid", "true");
  if (err.status === 401) $("token-box").hidden = false;
}

// Renders run one after another, each for the URL as it is when it starts: a slow answer for an old view
// never paints over a newer one.
let queue = Promise.resolve();
const render = (options) => (queue = queue.then(() => renderNow(options)));

function blankOverview() {
  renderTotals([{}]); // every figure unknown: "–", not 0
  clearCharts(CHARTS, "–");
  for (const id of ["models", "recent"]) emptyRow($(id), "–");
}

async function renderNow({ force = false } = {}) {
  document.body.dataset.busy = "1";
  const s = readState();
  syncForm(s);
  const filters = query(s);
  const changed = (name, value) => force || loaded[name] !== value;
  const tasks = [];
  if (changed("catalogue", "once")) tasks.push(loadCatalogue());
  if (s.view === "overview") {
    if (changed("overview", filters)) tasks.push(loadOverview(s));
    if (changed("page", filters + s.before + s.after)) tasks.push(loadExchanges(s));
  } else if (changed("sessions", filters + "|" + s.open)) {
    tasks.push(loadSessions(s));
  }
  if (loaded.exchange !== s.exchange) tasks.push(s.exchange ? openExchange(s.exchange, nav, colourOf) : closeExchange());
  loaded = { catalogue: "once", exchange: s.exchange };
  if (s.view === "overview") Object.assign(loaded, { overview: filters, page: filters + s.before + s.after });
  else loaded.sessions = filters + "|" + s.open;
  $("error").hidden = true;
  const results = await Promise.allSettled(tasks);
  const failure = results.find((r) => r.status === "rejected");
  if (failure) {
    showError(failure.reason);
    if (s.view === "overview") blankOverview();
    loaded = { catalogue: loaded.catalogue }; // retry everything on the next render
  }
  $("updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
  document.body.dataset.rendered = String(++renders);
  document.body.dataset.loaded = "1";
  delete document.body.dataset.busy;
  scheduleRefresh(s.refresh);
}

// --- auto-refresh: reloads the data in view, never the open panels; paused while the tab is hidden ---
let timer = null;
let timerPeriod = "";
function scheduleRefresh(seconds) {
  if (seconds === timerPeriod) return;
  clearInterval(timer);
  timerPeriod = seconds;
  timer = seconds ? setInterval(() => document.hidden || refreshData(), Number(seconds) * 1000) : null;
}

function refreshData() {
  const exchange = loaded.exchange;
  loaded = { exchange }; // everything but the open exchange reloads
  render();
}

// --- events ---
function formFilters() {
  const patch = { since: $("f-since").value, errors: $("f-errors").checked };
  for (const name of TEXT_FILTERS) patch[name] = $("f-" + name).value.trim();
  return patch;
}

function applyFilters() {
  const patch = formFilters();
  if (patch.key && !KEY_PATTERN.test(patch.key)) {
    // Checked here too, so a pasted API key never reaches the URL, the history or a server log.
    showError(new Error(KEY_MESSAGE));
    return;
  }
  // New filters: back to the first page, detail panels closed.
  nav.go({ ...patch, before: null, after: null, exchange: null, open: null });
}

$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  applyFilters();
});
for (const id of ["f-since", "f-model", "f-errors"]) $(id).addEventListener("change", applyFilters);
$("f-refresh").addEventListener("change", () => nav.go({ refresh: $("f-refresh").value }, { replace: true }));
$("detail-close").addEventListener("click", () => nav.go({ exchange: null }));
$("raw-toggle").addEventListener("click", () => toggleRaw().catch(showError));
$("raw-copy").addEventListener("click", () => navigator.clipboard?.writeText($("raw-json").textContent).catch(() => {}));
document.addEventListener("keydown", (e) => e.key === "Escape" && !$("drawer").hidden && nav.go({ exchange: null }));
document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-nav]");
  if (!a || !a.getAttribute("href") || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  history.pushState(null, "", a.getAttribute("href"));
  render();
});
window.addEventListener("popstate", () => render());
$("token-save").addEventListener("click", () => {
  saveToken($("token-input").value);
  $("token-box").hidden = true;
  loaded = {};
  render();
});

takeTokenFromFragment();
render();
