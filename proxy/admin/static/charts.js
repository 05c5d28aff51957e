// The four charts (tokens and cost by model, stacked; latency and TTFT percentiles, lines) over a time axis
// with every bucket of the period present, and an explicit message instead of an empty 0..1 axis.
import { OTHER_LABEL } from "./colors.js";
import { bucketLabels, fmtCompact, fmtCost, fmtMs, toNum } from "./format.js";

const charts = {};
const HOUR = 3600e3;
const DAY = 24 * HOUR;

const keyOf = (t, unit) => new Date(t).toISOString().slice(0, unit === "day" ? 10 : 13) + (unit === "day" ? "" : ":00:00Z");
const timeOf = (key, unit) => Date.parse(unit === "day" ? key + "T00:00:00Z" : key);

// Every bucket from the start of the period (or the oldest data) to now (or the newest data).
export function bucketKeys(rows, unit, periodMs) {
  const step = unit === "day" ? DAY : HOUR;
  const times = rows.map((r) => timeOf(r[unit], unit)).filter((t) => !Number.isNaN(t));
  const now = Date.now();
  let start = periodMs ? now - periodMs : Math.min(...times, now);
  let end = Math.max(now, ...times);
  start = Math.floor(start / step) * step;
  end = Math.floor(end / step) * step;
  const keys = [];
  for (let t = start; t <= end && keys.length < 5000; t += step) keys.push(keyOf(t, unit));
  return keys;
}

function place(id, chart, emptyText) {
  const canvas = document.getElementById(id);
  const box = canvas.parentElement;
  const note = box.nextElementSibling;
  if (charts[id]) charts[id].destroy();
  delete charts[id];
  box.hidden = Boolean(emptyText);
  note.hidden = !emptyText;
  note.textContent = emptyText || "";
  if (!emptyText) charts[id] = new Chart(canvas, chart);
}

function options(unit, yTitle, fmt, stacked) {
  return {
    animation: false,
    responsive: true,
    maintainAspectRatio: false,
    interaction: { mode: "index", intersect: false },
    scales: {
      x: { stacked, title: { display: true, text: unit === "day" ? "day (UTC)" : "hour (UTC)" },
        ticks: { maxRotation: 0, autoSkip: true, autoSkipPadding: 14 } },
      y: { stacked, beginAtZero: true, title: { display: true, text: yTitle }, ticks: { callback: (v) => fmt(v) } },
    },
    plugins: {
      legend: { position: "bottom", labels: { boxWidth: 12, usePointStyle: !stacked, pointStyle: "line" } },
      tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${c.raw == null ? "–" : fmt(c.raw)}` } },
    },
  };
}

// rows: usage grouped by (bucket, model); kept: the models charted on their own (others are summed as
// "other"); colours: Map(series -> colour).
export function stackedChart(id, { rows, keys, unit, field, colours, kept, yTitle, money }) {
  const series = new Map();
  for (const r of rows) {
    const value = toNum(r[field]);
    if (value == null) continue;
    const name = kept.has(r.model || "(no model)") ? r.model || "(no model)" : OTHER_LABEL;
    if (!series.has(name)) series.set(name, new Map());
    const byKey = series.get(name);
    byKey.set(r[unit], (byKey.get(r[unit]) || 0) + value);
  }
  if (![...series.values()].some((m) => [...m.values()].some((v) => v !== 0))) {
    place(id, null, money ? "No known cost in this view (no prices for these models)" : "No token usage reported in this view");
    return;
  }
  const names = [...series.keys()].sort((a, b) => (a === OTHER_LABEL) - (b === OTHER_LABEL) || (a < b ? -1 : 1));
  const datasets = names.map((name) => ({
    label: name,
    backgroundColor: colours.get(name),
    data: keys.map((k) => series.get(name).get(k) ?? 0),
  }));
  const fmt = money ? fmtCost : fmtCompact;
  place(id, { type: "bar", data: { labels: bucketLabels(keys, unit), datasets }, options: options(unit, yTitle, fmt, true) });
}

// rows: usage grouped by bucket; lines: [[field, label, colour, dashed]].
export function lineChart(id, { rows, keys, unit, lines, emptyText }) {
  const byKey = new Map(rows.map((r) => [r[unit], r]));
  const datasets = lines.map(([field, label, colour, dashed]) => ({
    label,
    borderColor: colour,
    backgroundColor: colour,
    borderDash: dashed ? [5, 4] : [],
    pointRadius: 2,
    spanGaps: false,
    data: keys.map((k) => toNum((byKey.get(k) || {})[field])),
  }));
  if (!datasets.some((d) => d.data.some((v) => v != null))) {
    place(id, null, emptyText);
    return;
  }
  place(id, { type: "line", data: { labels: bucketLabels(keys, unit), datasets }, options: options(unit, "ms", fmtMs, false) });
}

export function clearCharts(ids, text) {
  for (const id of ids) place(id, null, text);
}
