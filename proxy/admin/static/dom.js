// Tiny DOM helpers: every text goes in through textContent, never innerHTML (bodies are untrusted input).

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function row(cells, attrs = {}) {
  return el("tr", attrs, cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))));
}

export function emptyRow(table, text) {
  const cols = table.tHead.rows[0].cells.length;
  table.tBodies[0].replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: cols, text })));
}

export const swatch = (colour) => el("span", { class: "swatch", style: { background: colour } });
