// One exchange read like a conversation: the facts, a timing bar with TTFT, usage and cost, the request's
// messages, the answer (text, reasoning, tool calls) and the raw JSON a click away. Knows the shapes of
// chat completions, Anthropic messages and the Responses API; anything else is shown as JSON.
import { api } from "./api.js";
import { $, el, swatch } from "./dom.js";
import { fmtCost, fmtInt, fmtMs, fmtTime, toNum } from "./format.js";

const pretty = (v) => (typeof v === "string" ? v : JSON.stringify(v, null, 2));

function argumentsText(args) {
  if (typeof args !== "string") return pretty(args);
  try {
    return JSON.stringify(JSON.parse(args), null, 2);
  } catch {
    return args;
  }
}

function toolCall(name, args, id) {
  return el("div", { class: "toolcall" }, "→ ", el("code", {}, name || "(unnamed tool)"), id ? el("span", { class: "muted" }, "  " + id) : null,
    el("pre", {}, argumentsText(args)));
}

// A content value: a string, or a list of parts (text, images, tool use and results).
function parts(content) {
  if (content == null) return [];
  if (typeof content === "string") return [content];
  if (!Array.isArray(content)) return [el("pre", {}, pretty(content))];
  return content.map((p) => {
    if (typeof p === "string") return p;
    if (p.text != null && /text$/.test(p.type || "text")) return p.text;
    if (p.type === "image_url" || p.type === "image" || p.type === "input_image") return el("span", { class: "muted" }, "[image]");
    if (p.type === "tool_use") return toolCall(p.name, p.input, p.id);
    if (p.type === "tool_result") return el("div", {}, el("span", { class: "muted" }, `result of ${p.tool_use_id}: `), ...parts(p.content));
    if (p.type === "function_call") return toolCall(p.name, p.arguments, p.call_id);
    return el("pre", {}, pretty(p));
  });
}

function bubble(kind, label, ...body) {
  return el("div", { class: "msg " + kind }, el("b", {}, label), ...body);
}

function messageView(m) {
  if (!m || typeof m !== "object") return bubble("", "message", pretty(m));
  const role = m.role || m.type || "message";
  const label = role === "tool" && m.tool_call_id ? `tool · ${m.tool_call_id}` : m.name ? `${role} · ${m.name}` : role;
  const calls = (m.tool_calls || []).map((c) => toolCall((c.function || {}).name, (c.function || {}).arguments, c.id));
  const body = m.type === "function_call" ? parts([m]) : parts(m.content);
  return bubble(role, label, ...body, ...calls);
}

function requestItems(req) {
  if (req == null) return [bubble("", "request", el("span", { class: "muted" }, "(no request body stored)"))];
  if (typeof req !== "object") return [bubble("", "request", String(req))];
  const items = [];
  if (req.system) items.push(bubble("system", "system", ...parts(req.system)));
  if (req.instructions) items.push(bubble("system", "instructions", ...parts(req.instructions)));
  if (Array.isArray(req.messages)) items.push(...req.messages.map(messageView));
  else if (typeof req.input === "string") items.push(bubble("user", "input", req.input));
  else if (Array.isArray(req.input)) items.push(...req.input.map(messageView));
  else if (req.prompt != null) items.push(bubble("user", "prompt", ...parts(req.prompt)));
  else items.push(bubble("", "request", el("pre", {}, pretty(req))));
  return items;
}

function answerItems(ex) {
  const resp = ex.response.assembled || ex.response.body;
  const failed = ex.error || (resp && resp.error && (resp.error.message || pretty(resp.error)));
  if (resp && Array.isArray(resp.choices) && resp.choices.length) {
    return resp.choices.flatMap((c, i) => {
      const m = c.message || {};
      const label = (resp.choices.length > 1 ? `answer · choice ${c.index ?? i}` : "answer") + (c.finish_reason ? ` · ${c.finish_reason}` : "");
      const out = [];
      const reasoning = m.reasoning ?? m.reasoning_content;
      if (reasoning) out.push(bubble("reasoning", "reasoning", reasoning));
      const calls = (m.tool_calls || []).map((t) => toolCall((t.function || {}).name, (t.function || {}).arguments, t.id));
      const text = m.content ?? c.text;
      out.push(bubble("answer", label, ...parts(text), m.refusal ? `refusal: ${m.refusal}` : null, ...calls));
      return out;
    });
  }
  if (resp && Array.isArray(resp.content)) return [bubble("answer", "answer" + (resp.stop_reason ? ` · ${resp.stop_reason}` : ""), ...parts(resp.content))];
  if (resp && Array.isArray(resp.output)) return resp.output.map((item) => bubble("answer", item.type || "output", ...parts(item.content || [item])));
  if (failed) return [bubble("err", `error · ${ex.status ?? "no status"} · ${ex.outcome}`, failed)];
  if (resp != null) return [bubble("answer", "response", el("pre", {}, pretty(resp)))];
  return [bubble("err", ex.outcome, el("span", { class: "muted" }, "no response body stored"))];
}

function timing(ex) {
  const total = toNum(ex.timing.duration_ms);
  const ttft = toNum(ex.timing.ttft_ms);
  if (total == null) return el("p", { class: "muted" }, "no timing recorded");
  const wait = ttft != null ? Math.min(ttft, total) : total;
  const pct = (v) => (total > 0 ? (100 * v) / total : 0) + "%";
  const legend = ttft != null
    ? [`time to first token ${fmtMs(ttft)}`, `streaming ${fmtMs(total - wait)}`, `total ${fmtMs(total)}`]
    : [`${ex.stream ? "no first token" : "whole response"} ${fmtMs(total)}`];
  return el("div", { class: "timing", "data-testid": "timing" },
    el("div", { class: "bar", title: legend.join(" · ") },
      el("span", { class: "wait", style: { width: pct(wait) } }),
      ttft != null ? el("span", { class: "gen", style: { width: pct(total - wait) } }) : null),
    el("div", { class: "bar-legend" }, legend.map((t) => el("span", {}, t))));
}

const COST_SOURCES = {
  provider: "reported by the provider",
  computed: "tokens × the price entry",
  unknown: "unknown: no price, or no usage reported",
  none: "not billed",
};

function usageTable(ex) {
  const u = ex.usage;
  const line = (label, value, note) => el("tr", {}, el("td", {}, label), el("td", {}, value), el("td", { class: "muted" }, note || ""));
  return el("table", { class: "usage" }, el("tbody", {},
    line("Prompt tokens", fmtInt(u.prompt_tokens), u.cached_tokens ? `${fmtInt(u.cached_tokens)} cached` : ""),
    line("Completion tokens", fmtInt(u.completion_tokens), u.reasoning_tokens ? `${fmtInt(u.reasoning_tokens)} reasoning` : ""),
    line("Total tokens", fmtInt(u.total_tokens), `usage: ${u.source}`),
    line("Cost", fmtCost(ex.cost.usd), [COST_SOURCES[ex.cost.source] || ex.cost.source, ex.cost.price_ref].filter(Boolean).join(" · "))));
}

function facts(ex, nav, colourOf) {
  const model = ex.model || ex.model_requested || "(no model)";
  const bad = (ex.status ?? 0) >= 400 || ex.outcome !== "complete";
  const fact = (label, ...value) => el("span", {}, el("b", {}, label), ...value);
  return el("div", { class: "facts" },
    fact("model", swatch(colourOf(model)), model, ex.model_requested && ex.model && ex.model !== ex.model_requested ? ` (asked ${ex.model_requested})` : ""),
    fact("status", el("span", { class: "chip" + (bad ? " bad" : "") }, `${ex.status ?? "–"} ${ex.outcome}`)),
    fact("", ex.stream ? "streamed" : "not streamed", ex.finish_reason ? ` · ${ex.finish_reason}` : ""),
    fact("started", fmtTime(ex.started_at)),
    fact("", `${ex.method} ${ex.path}`, ` via ${ex.upstream}`),
    ex.session ? fact("session", el("a", { href: nav.href({ view: "sessions", open: ex.session }), "data-nav": true }, ex.session)) : null,
    ex.key_fingerprint ? fact("key", ex.key_fingerprint) : null,
    ex.user ? fact("user", ex.user) : null);
}

let shown = null;

export async function openExchange(id, nav, colourOf) {
  const ex = await api("exchanges/" + encodeURIComponent(id));
  shown = id;
  $("detail-id").textContent = ex.id;
  $("raw-box").hidden = true;
  $("raw-json").textContent = "";
  $("drawer-body").replaceChildren(
    facts(ex, nav, colourOf),
    timing(ex),
    usageTable(ex),
    el("h3", {}, "Conversation"),
    el("div", { id: "detail-messages" }, requestItems(ex.request.body)),
    el("div", { id: "detail-response" }, answerItems(ex)),
  );
  $("drawer").hidden = false;
  document.body.classList.add("drawer-open");
}

export function closeExchange() {
  shown = null;
  $("drawer").hidden = true;
  document.body.classList.remove("drawer-open");
}

export async function toggleRaw() {
  const box = $("raw-box");
  if (!box.hidden) return void (box.hidden = true);
  if (!$("raw-json").textContent && shown) {
    const doc = await api("exchanges/" + encodeURIComponent(shown) + "?raw=1");
    $("raw-json").textContent = JSON.stringify(doc, null, 2);
  }
  box.hidden = false;
  box.scrollIntoView({ block: "nearest" });
}
