// Host levels as data: the order and wording of every level the overview shows, in one place (their colours are
// the --level-<LEVEL> custom properties of nerve.css).
//
// The orchestrator's digest says a host's `level`: "LOW" / "MEDIUM" / "HIGH" from the analysis, "DOWN" (its tracker's
// session was lost) or "OFFLINE" (its tracker said goodbye), or null before the first analysis. Any other level a
// future orchestrator sends is counted and drawn too, in --level-unknown. Staleness is drawn over the level.

// Worst first: the order of the header counts, of the map's groups and of the "level" sort.
export const HOST_LEVELS = [
  { key: "DOWN", label: "DOWN", title: "the tracker's session was lost", presence: true },
  { key: "HIGH", label: "HIGH", title: "a metric is at HIGH" },
  { key: "MEDIUM", label: "MEDIUM", title: "a metric is at MEDIUM" },
  { key: "LOW", label: "LOW", title: "every metric is LOW" },
  { key: "OFFLINE", label: "OFFLINE", title: "the tracker said goodbye", presence: true },
  { key: "none", label: "N/A", title: "not analysed yet" },
];

// Stale hosts keep their level's hue: dimmed to `alpha` on the map, striped on tiles.
export const STALE = { key: "stale", label: "STALE", alpha: 0.35, title: "no fresh measurement" };

// Levels shown in the header even at zero; others appear once a host has them.
export const ALWAYS_COUNTED = ["HIGH", "MEDIUM", "LOW"];

const BY_KEY = new Map(HOST_LEVELS.map((level, index) => [level.key, { ...level, rank: HOST_LEVELS.length - index }]));
// A level this page does not know sorts just below DOWN: news from the orchestrator is worth a look.
const UNKNOWN_RANK = HOST_LEVELS.length - 0.5;

// The key a host's digest level is counted and drawn under: the level itself, or "none" before the first analysis.
export function levelKey(level) {
  return level === null || level === undefined || level === "" ? "none" : String(level);
}

// Label, title and rank of a level key; an unknown level is labelled with its own name.
export function levelStyle(key) {
  return BY_KEY.get(key) ?? { key, label: key, title: "a level this page does not know", rank: UNKNOWN_RANK };
}

// Whether a level says the host's tracker is gone (DOWN, OFFLINE) rather than what its analysis found.
export function isPresenceLevel(key) {
  return Boolean(BY_KEY.get(key)?.presence);
}

// Higher is worse.
export function hostLevelRank(key) {
  return levelStyle(key).rank;
}

const colours = new Map();

// The colour of a level key as a CSS colour string (for the canvas), from nerve.css.
export function levelColor(key) {
  let colour = colours.get(key);
  if (!colour) {
    const root = getComputedStyle(document.documentElement);
    colour = (BY_KEY.has(key) && root.getPropertyValue(`--level-${key}`).trim())
      || root.getPropertyValue("--level-unknown").trim() || "#a371f7";
    colours.set(key, colour);
  }
  return colour;
}

function levelRules(key) {
  const sel = `[data-level="${key}"]`;
  const colour = BY_KEY.has(key) ? `var(--level-${key})` : "var(--level-unknown)";
  // A lone "none" badge (a metric without thresholds in the host detail) keeps nerve.css's quiet look.
  const badges = key === "none" ? `.tile-item${sel} .badge` : `.badge${sel}, ${sel} > .badge, .tile-item${sel} .badge`;
  return [
    `${badges} { background: ${colour}; }`,
    `.tile-item${sel} .tile, .map-card${sel} { border-left-color: ${colour}; }`,
    `.tile-item${sel} .spark-line { stroke: ${colour}; }`,
    `.tile-item${sel} .spark-area { fill: ${colour}; }`,
  ];
}

const styled = new Set();
let sheet = null;

// Installs the per-level rules of every known level once; `ensureLevelStyle` adds those of a level first seen later.
export function installLevelStyles(doc = document) {
  if (sheet) return;
  sheet = new doc.defaultView.CSSStyleSheet();
  doc.adoptedStyleSheets = [...doc.adoptedStyleSheets, sheet];
  for (const level of HOST_LEVELS) ensureLevelStyle(level.key);
}

export function ensureLevelStyle(key) {
  if (!sheet || styled.has(key) || !/^[\w-]+$/.test(key)) return;
  styled.add(key);
  for (const rule of levelRules(key)) sheet.insertRule(rule, sheet.cssRules.length);
}
