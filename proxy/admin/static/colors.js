// Model colours, stable across filters and reloads. Each model's colour derives from its name (a hash into
// the palette); collisions are settled over the catalogue of every model ever recorded, first seen first
// (GET /_proxy/models, unfiltered), so a model keeps its colour whatever the view shows and a new model
// never takes an existing one's. The first 20 models so get distinct fixed colours; any later one takes its
// hashed colour, or the next one no other series in that chart uses. A chart shows at most 20 series: the
// smallest models beyond 19 are grouped as "other", in grey (not in the palette).

// Sasha Trubetskoy's 20 distinct colours, with beige (invisible on white) swapped for dark slate; the grey
// is kept for "other".
export const PALETTE = [
  "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4",
  "#469990", "#dcbeff", "#9a6324", "#2f4f4f", "#800000", "#aaffc3", "#808000", "#ffd8b1", "#000075", "#000000",
];
export const OTHER = "#a9a9a9";
export const OTHER_LABEL = "other";
export const MAX_SERIES = PALETTE.length;

// FNV-1a over the name's UTF-8 bytes: the same slot in every browser.
export function hash(name) {
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(name)) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

function take(name, used) {
  let i = hash(name) % PALETTE.length;
  while (used.has(i)) i = (i + 1) % PALETTE.length;
  used.add(i);
  return i;
}

// catalogue: model names, first seen first -> Map(name -> palette index) for the first 20.
export function fixedSlots(catalogue) {
  const used = new Set();
  const slots = new Map();
  for (const name of catalogue) {
    if (used.size === PALETTE.length) break;
    if (!slots.has(name)) slots.set(name, take(name, used));
  }
  return slots;
}

// names: one chart's series (at most MAX_SERIES, OTHER_LABEL aside) -> Map(name -> colour), no repeats.
export function seriesColors(names, fixed) {
  const used = new Set();
  const out = new Map();
  for (const name of names) {
    if (fixed.has(name) && !used.has(fixed.get(name))) {
      used.add(fixed.get(name));
      out.set(name, PALETTE[fixed.get(name)]);
    }
  }
  for (const name of names) {
    if (name === OTHER_LABEL) out.set(name, OTHER);
    else if (!out.has(name)) out.set(name, PALETTE[take(name, used)]);
  }
  return out;
}

// totals: Map(name -> size) -> the names to chart on their own; the rest go to "other".
export function keptSeries(totals) {
  const names = [...totals.keys()];
  if (names.length <= MAX_SERIES) return new Set(names);
  const ranked = names.sort((a, b) => totals.get(b) - totals.get(a) || (a < b ? -1 : 1));
  return new Set(ranked.slice(0, MAX_SERIES - 1));
}
