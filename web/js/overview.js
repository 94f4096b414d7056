// The overview: the fleet model fed by nerve.snapshot and nerve.digest, its filter and order, the header counts,
// and the two views of it (the canvas fleet map and the virtualised tiles), drawn in animation frames.

import { FleetMap } from "./fleetmap.js";
import { formatAge, formatValue, naturalCompare } from "./format.js";
import { ALWAYS_COUNTED, STALE, ensureLevelStyle, hostLevelRank, installLevelStyles, levelKey,
  levelStyle } from "./levels.js";
import { frameScheduler, isShown } from "./schedule.js";
import { Ring, SPARK_POINTS } from "./sparkline.js";
import { TileGrid, setText } from "./tiles.js";

// The metric each tile draws as its sparkline; nerve.snapshot backfills its recent values.
export const SPARK_METRIC = "cpu";
const SNAPSHOT_TABLE = { table: true };
export const SNAPSHOT_OPTIONS = { ...SNAPSHOT_TABLE, recent: SPARK_POINTS, metric: SPARK_METRIC };

/**
 * nerve.snapshot for this page, as a table (field names once, a row per host): first without history, then, for a
 * fleet small enough to open on tiles, again with the sparklines' recent values (the map has no sparklines to fill).
 */
export async function fetchSnapshot(session) {
  const snapshot = await session.call("nerve.snapshot", [], SNAPSHOT_TABLE);
  if (Object.keys(snapshot.hosts ?? {}).length > TILES_UP_TO) return snapshot;
  return session.call("nerve.snapshot", [], SNAPSHOT_OPTIONS);
}

// A host's entry in a snapshot or a digest: a table's row under its field names, or the entry itself.
function entryOf(fields, value) {
  if (!fields) return value;
  const entry = {};
  for (let i = 0; i < fields.length; i += 1) entry[fields[i]] = value[i];
  return entry;
}

// "auto" shows tiles up to TILES_UP_TO matching hosts and the map past it; it goes back to tiles only below
// TILES_BACK_BELOW, so a filter whose count hovers around the limit does not flip views every second.
export const TILES_UP_TO = 300;
const TILES_BACK_BELOW = 240;

const MIN_STALE_SECONDS = 5;
// One missed digest tick must not flip a healthy host to stale.
const STALE_GRACE_SECONDS = 1.5;
// Hosts moving around while one reads them is worse than a position a second late: re-sorts are throttled,
// except right after the user changed the sort or filter, or a host appeared.
const VALUE_SORT_EVERY_MS = 2000;
const LEVEL_SORT_EVERY_MS = 1000;
const TICK_MS = 1000;
// Longer than the digest's tick (0.25 s): what comes between two digests rides the next digest's frame, and waits
// at most this long only while no digest comes. A gap of one tick raced the next digest for a frame of its own.
const FRAME_GAP_MS = 400;

const PROBLEM_RANK = hostLevelRank("MEDIUM");

// Tie-breaks compare a precomputed name rank: one collator pass per new host set, not one per comparison.
const SORTS = {
  level: (a, b) => b.rank - a.rank || a.nameRank - b.nameRank,
  name: (a, b) => a.nameRank - b.nameRank,
  cpu: (a, b) => (b.values.cpu ?? -1) - (a.values.cpu ?? -1) || a.nameRank - b.nameRank,
  mem: (a, b) => (b.values.mem ?? -1) - (a.values.mem ?? -1) || a.nameRank - b.nameRank,
  age: (a, b) => (b.ageAt ?? 0) - (a.ageAt ?? 0) || a.nameRank - b.nameRank,
};

// Named filters; any other value of the level control is a level key ("HIGH", "DOWN", "none", ...).
const FILTERS = {
  all: () => true,
  problems: (host) => host.rank >= PROBLEM_RANK,
  stale: (host) => host.stale,
};

class Host {
  constructor(id) {
    this.id = id;
    this.hostname = id;
    this.search = id.toLowerCase();
    this.digestKey = "none";   // the level key the digest said: what the header counts
    this.levelKey = "none";    // the level key drawn: the digest's, raised early by an alert
    this.rank = hostLevelRank("none");
    this.values = {};
    this.seq = null;
    this.ts = null;
    this.serverStale = false;
    this.left = false;
    this.stale = false;
    this.interval = null;
    this.serverNow = null;
    this.receivedAt = 0;
    this.ring = new Ring();
    this.sparkDirty = true;
    this.nameRank = 0;
    this.ageAt = null;
  }

  setLevel(key) {
    this.levelKey = key;
    this.rank = hostLevelRank(key);
  }

  // Seconds since the measurement, on the orchestrator's clock plus time elapsed here since its report.
  age(now) {
    if (this.ts === null || this.serverNow === null) return null;
    return this.serverNow - this.ts + (now - this.receivedAt) / 1000;
  }

  staleAfter() {
    return Math.max(MIN_STALE_SECONDS, 3 * (this.interval ?? 1)) + STALE_GRACE_SECONDS;
  }
}

/** The overview: fleet model, controls, header counts, and the map or the tiles. */
export class Overview {
  constructor({ list, map, card, summary, count, empty, filterForm, open } = {}) {
    installLevelStyles();
    this.list = list;
    this.summary = summary;
    this.countEl = count;
    this.emptyEl = empty;
    this.hosts = new Map();
    this.schema = null;
    this.headline = ["cpu", "mem"];
    this.dirty = new Set();
    this.namesDirty = false;
    this.sort = "level";
    this.filter = "all";
    this.query = "";
    this.viewChoice = "auto";
    this.mode = "tiles";
    this.ordered = [];
    this.orderDirty = true;
    this.forceOrder = true;
    this.lastReorder = 0;
    this.paintDirty = false;
    this.online = false;
    this.snapshotApplied = false;
    this.firstFullOverviewMs = null;
    this.lastDigestAt = null;
    this.drawnHosts = 0;
    this.agesDue = false;     // a second passed: rewrite the ages on screen      // hosts in the active view as of the last frame (the map's cells, or tiles to scroll)
    this.counts = {};
    this.summaryKeys = "";
    this.frames = frameScheduler(() => this.render(), FRAME_GAP_MS);
    // Hover, scroll, resize: the user is looking. A view that invalidates itself while this frame draws it is
    // drawn by this frame, not by one more.
    const invalid = () => { if (!this.rendering) this.scheduleRender({ now: true }); };
    this.rendering = false;
    this.tiles = new TileGrid({ list, onInvalid: invalid, view: () => this._tileView() });
    this.mapRoot = map.parentElement;
    this.map = new FleetMap({ canvas: map, card, onInvalid: invalid, describe: (host) => this.describe(host),
                              open: (host) => open(host.id) });
    if (filterForm) this._bindControls(filterForm);
    this._showMode();
    this.ticker = setInterval(() => this._tick(), TICK_MS);
  }

  /** The measurement schema: headline metrics, their labels and units. */
  setSchema(schema) {
    this.schema = schema;
    const measure = schema?.measure ?? {};
    const headline = Object.keys(measure).filter((name) => measure[name].headline);
    if (headline.length) this.headline = headline.slice(0, 2);
    for (const host of this.hosts.values()) this.dirty.add(host);
    this.scheduleRender();
  }

  /** Connected or not: views are drawn dashed or greyed while the values are frozen. */
  setOnline(online) {
    this.online = online;
    this.list.classList.toggle("offline", !online);
    this.mapRoot.classList.toggle("offline", !online);
  }

  // -- input ----------------------------------------------------------------------------
  /** nerve.snapshot's answer (or fetchSnapshot's schema-only fallback): every host the orchestrator knows. */
  applySnapshot(snapshot) {
    const now = performance.now();
    if (snapshot.schema) this.setSchema(snapshot.schema);
    const seen = new Set();
    for (const [id, value] of Object.entries(snapshot.hosts ?? {})) {
      const entry = entryOf(snapshot.fields, value);
      seen.add(id);
      this._update(id, entry, snapshot.ts, now);
      if (Array.isArray(entry.recent)) this._backfill(this.hosts.get(id), entry.recent);
    }
    // The snapshot is the orchestrator's whole truth: a host it no longer knows goes (a schema-only one says nothing).
    if (snapshot.hosts) for (const id of [...this.hosts.keys()]) if (!seen.has(id)) this._remove(id);
    this.lastDigestAt = now;
    this.snapshotApplied = true;
    this.orderDirty = this.forceOrder = true;
    this.scheduleRender({ now: true });
  }

  // The snapshot's recent values replace the ring: they include the latest one and any missed while away.
  _backfill(host, values) {
    host.ring.clear();
    for (const value of values) if (typeof value === "number") host.ring.push(value);
    host.sparkDirty = true;
  }

  /** One nerve.digest event: the hosts that changed since the last tick, each a row under the digest's fields. */
  applyDigest(digest) {
    const now = performance.now();
    for (const id in digest.hosts) this._update(id, entryOf(digest.fields, digest.hosts[id]), digest.ts, now);
    this.lastDigestAt = now;
    this.scheduleRender({ now: true });
  }

  // A level change reaches us as an alert before the next digest: draw it at once; the digest settles it (and the
  // header keeps counting the digest's levels meanwhile).
  applyAlert(alert) {
    if (alert.kind !== "level") return;
    const host = this.hosts.get(alert.hostId);
    if (!host || !alert.level) return;
    const key = levelKey(alert.level);
    if (hostLevelRank(key) > host.rank) {
      host.setLevel(key);
      this._markDirty(host, true);
      this.scheduleRender();
    }
  }

  // A tracker (authid = host id) or the simulator (sim-*) left the router (left = true) or joined it again (false).
  // Only a join clears it: analysis of measurements published just before the leave still arrives after it.
  markLeft(predicate, left = true) {
    for (const host of this.hosts.values()) {
      if (host.left !== left && predicate(host.id)) {
        host.left = left;
        this.dirty.add(host);
      }
    }
    this._evaluateStale(performance.now());
    this.scheduleRender();
  }

  _update(id, entry, serverNow, now) {
    let host = this.hosts.get(id);
    if (!host) {
      host = new Host(id);
      this.hosts.set(id, host);
      // A new host is drawn on the next frame, not at the next throttled re-sort.
      this.namesDirty = this.orderDirty = this.forceOrder = true;
    }
    if (entry.hostname && entry.hostname !== host.hostname) {
      host.hostname = entry.hostname;
      host.search = `${id} ${entry.hostname}`.toLowerCase();
    }
    const newMeasurement = entry.ts !== host.ts || entry.seq !== host.seq;
    if (newMeasurement && entry.ts !== null && entry.ts !== undefined) {
      if (host.ts !== null && entry.ts > host.ts && entry.seq === host.seq + 1) {
        const step = entry.ts - host.ts;
        host.interval = host.interval === null ? step : host.interval * 0.7 + step * 0.3;
      }
      if (typeof entry[SPARK_METRIC] === "number") host.ring.push(entry[SPARK_METRIC]);
      host.sparkDirty = true;
    }
    const key = levelKey(entry.level);
    const levelChanged = host.levelKey !== key || host.digestKey !== key;
    if (levelChanged) {
      ensureLevelStyle(key);
      host.digestKey = key;
      host.setLevel(key);
    }
    host.seq = entry.seq;
    host.ts = entry.ts;
    host.serverStale = Boolean(entry.stale);
    host.serverNow = serverNow;
    host.receivedAt = now;
    for (const name of this.headline) host.values[name] = entry[name];
    this._markDirty(host, levelChanged);
  }

  _remove(id) {
    const host = this.hosts.get(id);
    if (!host) return;
    this.hosts.delete(id);
    this.dirty.delete(host);
    this.orderDirty = this.forceOrder = true;
  }

  _markDirty(host, colourChanged) {
    this.dirty.add(host);
    if (colourChanged) {
      this.paintDirty = true;
      this.orderDirty = true;
    }
    if (this.sort === "cpu" || this.sort === "mem") this.orderDirty = true;
  }

  // -- controls -------------------------------------------------------------------------
  _bindControls(form) {
    form.addEventListener("submit", (event) => event.preventDefault());
    const apply = () => {
      const data = new FormData(form);
      this.setView({ query: String(data.get("q") ?? "").trim(), filter: String(data.get("level") ?? "all"),
                     sort: String(data.get("sort") ?? "level"), view: String(data.get("view") ?? "auto") });
    };
    form.addEventListener("input", apply);
    form.addEventListener("change", apply);
  }

  /** Changes sort, filter, query or view ("auto" | "map" | "tiles"); redrawn on the next frame. */
  setView({ sort, filter, query, view } = {}) {
    if (sort) this.sort = sort;
    if (filter) this.filter = filter;
    if (query !== undefined) this.query = query.toLowerCase();
    if (view) this.viewChoice = view;
    this.orderDirty = this.forceOrder = true;
    this.scheduleRender({ now: true });
  }

  // -- rendering ------------------------------------------------------------------------
  /** Asks for one animation frame (several asks, one frame): the next one for a digest or the user's input
   * (`now`), else (alerts, ticks, re-sorts) at most one per FRAME_GAP_MS, so a storm of alerts between two digests
   * costs the page a few frames, not one per alert. */
  scheduleRender({ now = false } = {}) {
    this.frames({ now });
  }

  /** One frame: staleness, order (throttled), the active view, the header counts. */
  render() {
    this.rendering = true;
    try {
      this._render(performance.now());
    } finally {
      this.rendering = false;
    }
  }

  _render(now) {
    if (this.namesDirty) this._rankNames();
    this._evaluateStale(now);
    const valueSort = this.sort === "cpu" || this.sort === "mem" || this.sort === "age";
    const every = valueSort ? VALUE_SORT_EVERY_MS : LEVEL_SORT_EVERY_MS;
    if (this.orderDirty && (this.forceOrder || now - this.lastReorder >= every)) {
      this._order(now);
    } else if (this.orderDirty) {
      clearTimeout(this.reorderTimer);
      this.reorderTimer = setTimeout(() => this.scheduleRender(), every - (now - this.lastReorder));
    }
    this._draw(now);
    this._renderSummary();
  }

  // Draws the active view: the map's changed cells and its card, or the bound tiles of changed hosts.
  _draw(now) {
    const visible = isShown(this.list.parentElement);
    if (!visible) return; // the host detail is open: the dirty set waits for the way back
    if (this.mode === "map") {
      if (this.paintDirty) this.map.invalidatePaint();
      if (this.agesDue) this.map.refreshCard(this.map.hover ?? this.map.focus);
      for (const host of this.dirty) this.map.refreshCard(host);
      this.map.draw();
      this.drawnHosts = this.map.shown;
    } else {
      if (this.agesDue) this.tiles.tick(now);
      this.tiles.draw(this.dirty, now);
      this.drawnHosts = this.tiles.hosts.length;
    }
    this.agesDue = false;
    this.paintDirty = false;
    this.dirty.clear();
    // The first frame after the snapshot that drew every matching host: what a page opening on the fleet waits for.
    if (this.snapshotApplied && this.firstFullOverviewMs === null && !this.orderDirty) {
      this.firstFullOverviewMs = now;
      performance.mark("nerve:overview-complete");
    }
  }

  _rankNames() {
    this.namesDirty = false;
    const sorted = [...this.hosts.values()].sort((a, b) => naturalCompare(a.id, b.id));
    sorted.forEach((host, index) => { host.nameRank = index; });
  }

  _order(now) {
    this.orderDirty = this.forceOrder = false;
    this.lastReorder = now;
    if (this.sort === "age") for (const host of this.hosts.values()) host.ageAt = host.age(now);
    const accept = FILTERS[this.filter] ?? ((host) => host.levelKey === this.filter);
    const query = this.query;
    const ordered = [];
    for (const host of this.hosts.values()) {
      if (accept(host) && (!query || host.search.includes(query))) ordered.push(host);
    }
    ordered.sort(SORTS[this.sort] ?? SORTS.level);
    this.ordered = ordered;
    this._chooseMode(ordered.length);
    if (this.mode === "map") this.map.setGroups(this._groups(ordered));
    else this.tiles.setHosts(ordered);
    this._renderEmpty();
  }

  // Sorted by level, the map shows one labelled block per level; other sorts are one block.
  _groups(ordered) {
    if (this.sort !== "level") return [{ key: "all", label: "", hosts: ordered }];
    const groups = [];
    for (const host of ordered) {
      const last = groups[groups.length - 1];
      if (last && last.key === host.levelKey) last.hosts.push(host);
      else groups.push({ key: host.levelKey, hosts: [host] });
    }
    for (const group of groups) group.label = `${levelStyle(group.key).label} · ${group.hosts.length}`;
    return groups;
  }

  _chooseMode(matching) {
    let mode = this.viewChoice;
    if (mode === "auto") {
      if (matching > TILES_UP_TO) mode = "map";
      else if (matching < TILES_BACK_BELOW || this.mode === "tiles") mode = "tiles";
      else mode = this.mode;
    }
    if (mode === this.mode) return;
    this.mode = mode;
    this._showMode();
    // The view coming in gets the current order, the one going out lets go of its hosts.
    if (mode === "map") this.tiles.setHosts([]);
    else this.map.setGroups([]);
    for (const host of this.hosts.values()) this.dirty.add(host);
  }

  _showMode() {
    this.mapRoot.hidden = this.mode !== "map";
    this.list.hidden = this.mode !== "tiles";
    this.list.parentElement.dataset.mode = this.mode;
  }

  _renderEmpty() {
    if (!this.emptyEl) return;
    const shown = this.ordered.length;
    const text = this.hosts.size ? "No host matches the filter." : "No host has reported yet.";
    if (this.emptyEl.hidden !== shown > 0) this.emptyEl.hidden = shown > 0;
    if (this.emptyEl.textContent !== text) this.emptyEl.textContent = text;
  }

  /** The hover card's text: the host's headline values, level and age. */
  describe(host) {
    const measure = this.schema?.measure ?? {};
    const name = host.hostname !== host.id ? `${host.id} (${host.hostname})` : host.id;
    const level = levelStyle(host.levelKey).label + (host.stale ? ` · ${host.left ? "stale, tracker left" : "stale"}` : "");
    const values = this.headline.map((metric) => `${measure[metric]?.label ?? metric} ${formatValue(host.values[metric],
      measure[metric]?.unit ?? "", { digits: 1 })}`).join(" · ");
    return `${name}\n${level}\n${values}\nmeasured ${formatAge(host.age(performance.now()))}`;
  }

  _tileView() {
    return { measure: this.schema?.measure ?? {}, headline: this.headline, sparkMetric: SPARK_METRIC };
  }

  _evaluateStale(now) {
    for (const host of this.hosts.values()) {
      const age = host.age(now);
      const stale = host.serverStale || host.left || (age !== null && age > host.staleAfter());
      if (stale !== host.stale) {
        host.stale = stale;
        this.dirty.add(host);
        this.paintDirty = true;
        if (this.filter === "stale") this.orderDirty = true;
      }
    }
  }

  // Counts the digest's level of every host under its own key: a level the orchestrator starts sending appears.
  _countLevels() {
    const counts = { total: this.hosts.size, stale: 0 };
    for (const key of ALWAYS_COUNTED) counts[key] = 0;
    for (const host of this.hosts.values()) {
      counts[host.digestKey] = (counts[host.digestKey] ?? 0) + 1;
      if (host.stale) counts.stale += 1;
    }
    return counts;
  }

  _renderSummary() {
    const counts = this._countLevels();
    this.counts = counts;
    const shown = this.ordered.length;
    if (this.countEl) setText(this.countEl, shown === counts.total ? `${counts.total}` : `${shown} of ${counts.total}`);
    if (!this.summary) return;
    const keys = Object.keys(counts).filter((key) => key !== "total" && key !== "stale")
      .sort((a, b) => hostLevelRank(b) - hostLevelRank(a));
    const layout = keys.join(" ");
    if (layout !== this.summaryKeys) {
      this.summaryKeys = layout;
      this.summaryCounts = new Map();
      this.summary.replaceChildren(...["total", ...keys, STALE.key].map((key) => this._summaryItem(key)));
    }
    for (const [key, el] of this.summaryCounts) setText(el, String(counts[key]));
  }

  _summaryItem(key) {
    const li = document.createElement("li");
    li.dataset.level = key;
    const badge = document.createElement("span");
    badge.className = key === "total" ? "summary-label" : "badge";
    badge.dataset.level = key;
    const style = key === STALE.key ? STALE : key === "total" ? { label: "Hosts", title: "hosts the orchestrator knows" }
      : levelStyle(key);
    badge.textContent = style.label;
    li.title = style.title ?? "";
    const count = document.createElement("span");
    count.dataset.count = key;
    count.textContent = "0";
    this.summaryCounts.set(key, count);
    li.append(badge, " ", count);
    return li;
  }

  // Ages tick between digests (written in the next frame); staleness is re-judged for every host.
  _tick() {
    this.agesDue = true;
    this.scheduleRender();
  }

  /** Seconds since the last digest or snapshot, or null before the first. */
  digestAge() {
    return this.lastDigestAt === null ? null : (performance.now() - this.lastDigestAt) / 1000;
  }

  /** The model of one host (id, hostname, levelKey, values, age(), stale ...), or undefined. */
  host(id) {
    return this.hosts.get(id);
  }

  /** Brings a host's tile or map cell into view and focuses it (back from its detail). */
  focusHost(id) {
    const host = this.hosts.get(id);
    if (!host) return false;
    return this.mode === "map" ? this.map.focusHost(host) : this.tiles.focusHost(host);
  }
}
