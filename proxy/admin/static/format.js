// Number and time formatting. Costs may arrive as numbers or as exact decimal strings ("0.0000051"):
// every formatter takes either. Times are shown in UTC, like the buckets the reports group by.

export const toNum = (v) => {
  if (v == null || v === "") return null;
  const n = typeof v === "number" ? v : Number(v);
  return Number.isFinite(n) ? n : null;
};

const INT = new Intl.NumberFormat("en-US");
const COMPACT = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });

export const fmtInt = (v) => (toNum(v) == null ? "–" : INT.format(toNum(v)));
export const fmtCompact = (v) => (toNum(v) == null ? "–" : COMPACT.format(toNum(v)));

// Two significant digits below a cent, so $0.0000051 never reads as $0.0000.
export function fmtCost(v) {
  const n = toNum(v);
  if (n == null) return "–";
  if (n === 0) return "$0";
  const abs = Math.abs(n);
  if (abs >= 1) return "$" + n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  if (abs >= 0.01) return "$" + n.toFixed(4);
  const digits = Math.min(12, 1 - Math.floor(Math.log10(abs)));
  return "$" + n.toFixed(digits).replace(/0+$/, "");
}

export function fmtMs(v) {
  const n = toNum(v);
  if (n == null) return "–";
  if (Math.abs(n) < 10) return n.toFixed(1) + " ms";
  if (Math.abs(n) < 1000) return Math.round(n) + " ms";
  if (Math.abs(n) < 60000) return (n / 1000).toFixed(2) + " s";
  return (n / 60000).toFixed(1) + " min";
}

export const fmtPct = (part, whole) => (whole ? ((100 * part) / whole).toFixed(1) + "%" : "–");

export function fmtSigned(v, fmt) {
  const n = toNum(v);
  if (n == null) return "–";
  return (n > 0 ? "+" : n < 0 ? "−" : "±") + fmt(Math.abs(n));
}

// "2026-03-01T14:02:03.123456+00:00" -> "2026-03-01 14:02:03"
export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toISOString().slice(0, 19).replace("T", " ");
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const dayLabel = (d) => MONTHS[d.getUTCMonth()] + " " + d.getUTCDate();

// Chart labels for bucket keys: "Mar 1" for days; "14:00" for hours, with the day under the first hour
// shown and under each midnight, so a 24-hour axis reads without the repeated date.
export function bucketLabels(keys, unit) {
  return keys.map((key, i) => {
    const d = new Date(unit === "day" ? key + "T00:00:00Z" : key);
    if (unit === "day") return dayLabel(d);
    const hour = String(d.getUTCHours()).padStart(2, "0") + ":00";
    return i === 0 || d.getUTCHours() === 0 ? [hour, dayLabel(d)] : hour;
  });
}
