// Formatting shared by every view: numbers with schema units, ages, clock times, levels.

export const LEVELS = ["LOW", "MEDIUM", "HIGH"];

// One collator for every sort: localeCompare with options builds a new one per call, 20 ms for 500 tiles.
const collator = new Intl.Collator(undefined, { numeric: true });
export const naturalCompare = collator.compare;

// Higher is worse; a host without a level yet sorts below LOW so real problems stay on top.
export function levelRank(level) {
  return LEVELS.indexOf(level);
}

export function levelText(level) {
  return LEVELS.includes(level) ? level : "N/A";
}

const BYTE_STEPS = [["GB", 1e9], ["MB", 1e6], ["kB", 1e3]];

// Units come from nerve.schema; only their spelling decides the scaling (B/s gets k/M/G).
export function formatValue(value, unit = "", { digits } = {}) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (unit && unit.startsWith("B")) {
    const rest = unit.slice(1);
    for (const [prefix, size] of BYTE_STEPS) {
      if (Math.abs(value) >= size) return `${trimNumber(value / size, digits ?? 1)} ${prefix}${rest}`;
    }
    return `${trimNumber(value, 0)} ${unit}`;
  }
  const text = trimNumber(value, digits ?? defaultDigits(value, unit));
  if (!unit) return text;
  return unit === "%" ? `${text}%` : `${text} ${unit}`;
}

function defaultDigits(value, unit) {
  if (Number.isInteger(value)) return 0;
  if (unit === "%") return 1;
  const magnitude = Math.abs(value);
  if (magnitude >= 100) return 0;
  if (magnitude >= 10) return 1;
  return 2;
}

function trimNumber(value, digits) {
  return value.toFixed(digits);
}

// Signed, for trends (units per minute) and anomaly scores.
export function formatSigned(value, unit = "", digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const text = formatValue(Math.abs(value), unit, { digits });
  // A value that rounds to zero gets no sign ("0.0", never "−0.0").
  if (!/[1-9]/.test(text.replace(/[^0-9.]/g, ""))) return text;
  return (value < 0 ? "−" : "+") + text;
}

export function formatAge(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "never";
  const s = Math.max(0, seconds);
  if (s < 10) return `${s.toFixed(1)} s ago`;
  if (s < 120) return `${Math.round(s)} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

// One formatter for every clock time: toLocaleTimeString builds a new one per call, the alert feed's largest cost.
const CLOCK = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

export function formatClock(epochSeconds) {
  return epochSeconds ? CLOCK.format(new Date(epochSeconds * 1000)) : "–";
}

export function isoTime(epochSeconds) {
  return epochSeconds ? new Date(epochSeconds * 1000).toISOString() : "";
}

// "wamp.error.no_such_procedure: no analyzer is connected ..." from an autobahn.Error or anything thrown.
export function errorText(error) {
  if (!error) return "unknown error";
  if (error.error) {
    const message = Array.isArray(error.args) && error.args.length ? String(error.args[0]) : "";
    return message ? `${message} (${error.error})` : error.error;
  }
  if (error instanceof Error) return error.message;
  return String(error);
}

// A metric name is a schema family or family.instance ("cpu_core.3", "disk_used.root").
export function familyOf(metric) {
  const dot = metric.indexOf(".");
  return dot < 0 ? metric : metric.slice(0, dot);
}

export function instanceOf(metric) {
  const dot = metric.indexOf(".");
  return dot < 0 ? null : metric.slice(dot + 1);
}

export function metricLabel(metric, schema) {
  const spec = schema?.[familyOf(metric)];
  const instance = instanceOf(metric);
  const base = spec?.label ?? familyOf(metric);
  if (instance === null) return base;
  return spec?.per ? `${base} ${instance}` : `${base} (${instance})`;
}

// Natural order: schema order of families first, then instances numerically ("core 2" before "core 10").
export function compareMetrics(a, b, schema) {
  const families = schema ? Object.keys(schema) : [];
  const fa = families.indexOf(familyOf(a));
  const fb = families.indexOf(familyOf(b));
  const ra = fa < 0 ? families.length : fa;
  const rb = fb < 0 ? families.length : fb;
  if (ra !== rb) return ra - rb;
  return naturalCompare(a, b);
}
