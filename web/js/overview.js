// The overview: one keyed tile per host, fed by nerve.snapshot and nerve.digest, rendered in animation frames.

import { formatAge, formatValue, levelRank, levelText, naturalCompare } from "./format.js";
import { Ring, SPARK_POINTS, createSparkline, drawSparkline } from "./sparkline.js";

// The metric each tile draws as its sparkline; nerve.snapshot backfills its recent values.
export const SPARK_METRIC = "cpu";
export const SNAPSHOT_OPTIONS = { recent: SPARK_POINTS, metric: SPARK_METRIC };

const MIN_STALE_SECONDS = 5;
// One missed digest tick must not flip a healthy host to stale.
const STALE_GRACE_SECONDS = 1.5;
const VALUE_SORT_EVERY_MS = 2000;
const LEVEL_SORT_EVERY_MS = 1000;
// Ages tick once a second; a digest re-renders a tile anyway, so the ticker skips tiles drawn since.
const TICK_MS = 1000;

const SORTS = {
  level: (a, b) => rankOf(b) - rankOf(a) || naturalCompare(a.id, b.id),
  name: (a, b) => naturalCompare(a.id, b.id),
  cpu: (a, b) => (b.values.cpu ?? -1) - (a.values.cpu ?? -1) || naturalCompare(a.id, b.id),
  mem: (a, b) => (b.values.mem ?? -1) - (a.values.mem ?? -1) || naturalCompare(a.id, b.id),
  age: (a, b) => (b.ageAt ?? 0) - (a.ageAt ?? 0) || naturalCompare(a.id, b.id),
};

function rankOf(host) {
  return levelRank(host.level);
}

const FILTERS = {
  all: () => true,
  HIGH: (host) => host.level === "HIGH",
  problems: (host) => host.level === "HIGH" || host.level === "MEDIUM",
  MEDIUM: (host) => host.level === "MEDIUM",
  LOW: (host) => host.level === "LOW",
  none: (host) => !host.level,
  stale: (host) => host.stale,
};

// Marks the members of one longest strictly increasing subsequence of `values` (patience sorting).
function longestIncreasing(values) {
  const tails = [];
  const previous = new Array(values.length).fill(-1);
  for (let i = 0; i < values.length; i += 1) {
    if (values[i] < 0) continue;
    let low = 0;
    let high = tails.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (values[tails[mid]] < values[i]) low = mid + 1;
      else high = mid;
    }
    if (low > 0) previous[i] = tails[low - 1];
    tails[low] = i;
  }
  const keep = new Array(values.length).fill(false);
  for (let i = tails.length ? tails[tails.length - 1] : -1; i >= 0; i = previous[i]) keep[i] = true;
  return keep;
}

// Replaces a text node's data in place: no node swap, so less layout invalidation than textContent.
function setText(el, text) {
  const node = el.firstChild;
  if (node && node.nodeType === 3 && !node.nextSibling) node.data = text;
  else el.textContent = text;
}

class Host {
  constructor(id) {
    this.id = id;
    this.hostname = id;
    this.level = null;
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
    this.el = null;
    this.refs = null;
    this.shown = {};
    this.visible = false;
    this.sparkDirty = true;
    this.matches = true;
    this.renderedAt = 0;
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

export class Overview {
  constructor({ list, summary, count, empty, filterForm, onCounts } = {}) {
    this.list = list;
    this.summary = summary;
    this.countEl = count;
    this.emptyEl = empty;
    this.onCounts = onCounts;
    this.hosts = new Map();
    this.schema = null;
    this.headline = ["cpu", "mem"];
    this.dirty = new Set();
    this.created = [];
    this.removed = [];
    this.frame = 0;
    this.sort = "level";
    this.filter = "all";
    this.query = "";
    this.orderDirty = true;
    this.filterDirty = true;
    this.lastReorder = 0;
    this.forceOrder = true;
    this.online = false;
    this.snapshotApplied = false;
    this.firstFullOverviewMs = null;
    this.lastDigestAt = null;
    this.renders = 0;
    this.template = this._template();
    // content-visibility: auto already tracks which tiles are near the viewport; its state change event
    // tells us which tiles to keep drawing, with no IntersectionObserver of our own over 500 targets.
    this.list.addEventListener("contentvisibilityautostatechange", (event) => this._onVisibility(event), true);
    if (filterForm) this._bindControls(filterForm);
    this.ticker = setInterval(() => this._tick(), TICK_MS);
  }

  setSchema(schema) {
    this.schema = schema;
    const measure = schema?.measure ?? {};
    const headline = Object.keys(measure).filter((name) => measure[name].headline);
    if (headline.length) this.headline = headline.slice(0, 2);
    // Tiles made from a digest that beat the snapshot still carry raw names: give them the schema's labels.
    for (const host of this.hosts.values()) {
      if (!host.refs) continue;
      this.headline.forEach((name, index) => setText(host.refs.keys[index], measure[name]?.label ?? name));
    }
  }

  setOnline(online) {
    this.online = online;
    this.list.classList.toggle("offline", !online);
  }

  // -- input ----------------------------------------------------------------------------
  applySnapshot(snapshot) {
    const now = performance.now();
    if (snapshot.schema) this.setSchema(snapshot.schema);
    const seen = new Set();
    for (const [id, entry] of Object.entries(snapshot.hosts ?? {})) {
      seen.add(id);
      this._update(id, entry, snapshot.ts, now);
      if (Array.isArray(entry.recent)) this._backfill(this.hosts.get(id), entry.recent);
    }
    // The snapshot is the orchestrator's whole truth: a host it no longer knows goes.
    for (const id of this.hosts.keys()) if (!seen.has(id)) this._remove(id);
    this.lastDigestAt = now;
    this.snapshotApplied = true;
    this.orderDirty = this.filterDirty = this.forceOrder = true;
    this.scheduleRender();
  }

  // The snapshot's recent values replace the ring: they include the latest one and any missed while away.
  _backfill(host, values) {
    host.ring.clear();
    for (const value of values) if (typeof value === "number") host.ring.push(value);
    host.sparkDirty = true;
  }

  applyDigest(digest) {
    const now = performance.now();
    for (const id in digest.hosts) this._update(id, digest.hosts[id], digest.ts, now);
    this.lastDigestAt = now;
    this.scheduleRender();
  }

  // A level change reaches us as an alert before the next digest: raise the tile at once, the digest settles it.
  applyAlert(alert) {
    if (alert.kind !== "level") return;
    const host = this.hosts.get(alert.hostId);
    if (!host || !alert.level) return;
    if (levelRank(alert.level) > levelRank(host.level)) {
      host.level = alert.level;
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
        this._markDirty(host, false);
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
      this.created.push(host);
      this.orderDirty = true;
    }
    if (entry.hostname) host.hostname = entry.hostname;
    const newMeasurement = entry.ts !== host.ts || entry.seq !== host.seq;
    if (newMeasurement && entry.ts !== null && entry.ts !== undefined) {
      if (host.ts !== null && entry.ts > host.ts && entry.seq === host.seq + 1) {
        const step = entry.ts - host.ts;
        host.interval = host.interval === null ? step : host.interval * 0.7 + step * 0.3;
      }
      if (typeof entry[SPARK_METRIC] === "number") host.ring.push(entry[SPARK_METRIC]);
      host.sparkDirty = true;
    }
    const levelChanged = host.level !== (entry.level ?? null);
    host.level = entry.level ?? null;
    host.seq = entry.seq;
    host.ts = entry.ts;
    host.serverStale = Boolean(entry.stale);
    host.serverNow = serverNow;
    host.receivedAt = now;
    for (const name of this.headline) host.values[name] = entry[name];
    if (newMeasurement || levelChanged || host.shownStale !== host.serverStale) this._markDirty(host, levelChanged);
  }

  _remove(id) {
    const host = this.hosts.get(id);
    if (!host) return;
    this.hosts.delete(id);
    this.dirty.delete(host);
    this.removed.push(host);
  }

  _markDirty(host, affectsOrder) {
    this.dirty.add(host);
    if (affectsOrder) {
      this.orderDirty = true;
      this.filterDirty = true;
    }
    if (this.sort === "cpu" || this.sort === "mem") this.orderDirty = true;
  }

  // -- controls -------------------------------------------------------------------------
  _bindControls(form) {
    form.addEventListener("submit", (event) => event.preventDefault());
    const apply = () => {
      const data = new FormData(form);
      this.query = String(data.get("q") ?? "").trim().toLowerCase();
      this.filter = String(data.get("level") ?? "all");
      this.sort = String(data.get("sort") ?? "level");
      this.filterDirty = this.orderDirty = this.forceOrder = true;
      this.scheduleRender();
    };
    form.addEventListener("input", apply);
    form.addEventListener("change", apply);
  }

  setView({ sort, filter, query } = {}) {
    if (sort) this.sort = sort;
    if (filter) this.filter = filter;
    if (query !== undefined) this.query = query.toLowerCase();
    this.filterDirty = this.orderDirty = this.forceOrder = true;
    this.scheduleRender();
  }

  // -- rendering ------------------------------------------------------------------------
  scheduleRender() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  render() {
    this.frame = 0;
    this.renders += 1;
    const now = performance.now();
    if (this.created.length) this._createTiles();
    if (this.removed.length) this._removeTiles();
    this._evaluateStale(now);
    for (const host of this.dirty) this._renderTile(host, now);
    this.dirty.clear();
    if (this.filterDirty) this._applyFilter();
    // Tiles jumping around while one reads them is worse than a position a second late: reorders are
    // throttled, except right after the user changed the sort or filter.
    const valueSort = this.sort === "cpu" || this.sort === "mem" || this.sort === "age";
    const every = valueSort ? VALUE_SORT_EVERY_MS : LEVEL_SORT_EVERY_MS;
    if (this.orderDirty && (this.forceOrder || now - this.lastReorder >= every)) {
      this._reorder();
      this.lastReorder = now;
    } else if (this.orderDirty) {
      clearTimeout(this.reorderTimer);
      this.reorderTimer = setTimeout(() => this.scheduleRender(), every - (now - this.lastReorder));
    }
    this._renderSummary();
    if (this.snapshotApplied && this.firstFullOverviewMs === null) {
      this.firstFullOverviewMs = now;
      performance.mark("nerve:overview-complete");
    }
  }

  _template() {
    const template = document.createElement("template");
    template.innerHTML = `<li class="tile-item"><a class="tile">
      <span class="tile-head"><span class="tile-name"></span><span class="badge"></span></span>
      <span class="tile-values"><span class="kv"><span class="k"></span><span class="v"></span></span><span class="kv"><span class="k"></span><span class="v"></span></span></span>
      <span class="tile-spark"></span>
      <span class="tile-foot"><span class="age"></span><span class="stale-note"></span></span>
    </a></li>`;
    return template.content.firstElementChild;
  }

  _createTiles() {
    const fragment = document.createDocumentFragment();
    const measure = this.schema?.measure ?? {};
    for (const host of this.created) {
      if (!this.hosts.has(host.id) || host.el) continue;
      const li = this.template.cloneNode(true);
      const link = li.firstElementChild;
      link.href = `#/host/${encodeURIComponent(host.id)}`;
      li.dataset.host = host.id;
      const [head, values, sparkHolder, foot] = link.children;
      const kvs = values.children;
      const spark = createSparkline();
      sparkHolder.append(spark.svg);
      host.refs = {
        link, name: head.firstElementChild, badge: head.lastElementChild,
        keys: [kvs[0].firstElementChild, kvs[1].firstElementChild],
        values: [kvs[0].lastElementChild, kvs[1].lastElementChild],
        spark, age: foot.firstElementChild, staleNote: foot.lastElementChild,
      };
      host.refs.name.textContent = host.id;
      this.headline.forEach((name, index) => {
        host.refs.keys[index].textContent = measure[name]?.label ?? name;
      });
      host.el = li;
      this.dirty.add(host);
      fragment.append(li);
    }
    this.created = [];
    this.list.append(fragment);
    this.orderDirty = this.filterDirty = true;
  }

  _removeTiles() {
    for (const host of this.removed) {
      if (host.el) host.el.remove();
    }
    this.removed = [];
  }

  _renderTile(host, now) {
    const refs = host.refs;
    if (!refs) return;
    const shown = host.shown;
    const measure = this.schema?.measure ?? {};
    const level = levelText(host.level);
    if (shown.level !== level) {
      shown.level = level;
      host.el.dataset.level = level;
      setText(refs.badge, level);
    }
    if (shown.hostname !== host.hostname) {
      shown.hostname = host.hostname;
      refs.link.title = host.hostname !== host.id ? `${host.id} on ${host.hostname}` : host.id;
    }
    if (shown.stale !== host.stale || shown.left !== host.left) {
      shown.stale = host.stale;
      shown.left = host.left;
      host.el.dataset.stale = host.stale ? "true" : "false";
      refs.staleNote.textContent = host.stale ? (host.left ? "stale · tracker left" : "stale") : "";
    }
    host.shownStale = host.serverStale;
    // Numbers, age and sparkline are written only while the tile is on (or near) the screen: touching
    // the text of 500 off-screen tiles each second costs a full layout. They catch up on scrolling in.
    if (!host.visible) return;
    this.headline.forEach((name, index) => {
      const text = formatValue(host.values[name], measure[name]?.unit ?? "", { digits: 1 });
      if (shown[name] !== text) {
        shown[name] = text;
        setText(refs.values[index], text);
      }
    });
    this._renderAge(host, now);
    if (host.sparkDirty) {
      host.sparkDirty = false;
      const spec = measure[SPARK_METRIC] ?? { min: 0, max: 100 };
      drawSparkline(refs.spark, host.ring, spec.min ?? 0, spec.max ?? 100);
    }
  }

  _renderAge(host, now) {
    host.renderedAt = now;
    const age = host.age(now);
    host.ageAt = age;
    const text = formatAge(age);
    if (host.shown.age !== text && host.refs) {
      host.shown.age = text;
      setText(host.refs.age, text);
    }
  }

  _evaluateStale(now) {
    for (const host of this.hosts.values()) {
      const age = host.age(now);
      const stale = host.serverStale || host.left || (age !== null && age > host.staleAfter());
      if (stale !== host.stale) {
        host.stale = stale;
        this.dirty.add(host);
        this.filterDirty = true;
        if (this.sort === "level") this.orderDirty = true;
      }
    }
  }

  _applyFilter() {
    this.filterDirty = false;
    const accept = FILTERS[this.filter] ?? FILTERS.all;
    const query = this.query;
    let shownCount = 0;
    for (const host of this.hosts.values()) {
      const matches = accept(host) && (!query || host.id.includes(query) || host.hostname.toLowerCase().includes(query));
      if (matches) shownCount += 1;
      if (matches !== host.matches || host.el?.hidden === matches) {
        host.matches = matches;
        if (host.el) host.el.hidden = !matches;
      }
    }
    this.shownCount = shownCount;
    if (this.emptyEl) {
      const text = this.hosts.size ? "No host matches the filter." : "No host has reported yet.";
      if (this.emptyEl.hidden !== shownCount > 0) this.emptyEl.hidden = shownCount > 0;
      if (this.emptyEl.textContent !== text) this.emptyEl.textContent = text;
    }
  }

  // Moves only the tiles outside the longest run already in order: one host changing level moves one tile.
  _reorder() {
    this.orderDirty = false;
    this.forceOrder = false;
    if (this.sort === "age") {
      const now = performance.now();
      for (const host of this.hosts.values()) host.ageAt = host.age(now);
    }
    const sorted = [...this.hosts.values()].filter((host) => host.el).sort(SORTS[this.sort] ?? SORTS.level);
    const position = new Map();
    let index = 0;
    for (const el of this.list.children) position.set(el, index++);
    const keep = longestIncreasing(sorted.map((host) => position.get(host.el) ?? -1));
    for (let i = sorted.length - 1; i >= 0; i -= 1) {
      if (!keep[i]) this.list.insertBefore(sorted[i].el, i + 1 < sorted.length ? sorted[i + 1].el : null);
    }
  }

  _renderSummary() {
    const counts = { HIGH: 0, MEDIUM: 0, LOW: 0, none: 0, stale: 0, total: this.hosts.size };
    for (const host of this.hosts.values()) {
      if (host.level && counts[host.level] !== undefined) counts[host.level] += 1;
      else counts.none += 1;
      if (host.stale) counts.stale += 1;
    }
    const key = JSON.stringify(counts) + this.shownCount;
    if (key === this.summaryKey) return;
    this.summaryKey = key;
    this.counts = counts;
    if (this.countEl) {
      this.countEl.textContent = this.shownCount === counts.total ? `${counts.total}` : `${this.shownCount} of ${counts.total}`;
    }
    if (this.summary) {
      for (const name of ["HIGH", "MEDIUM", "LOW", "stale"]) {
        const el = this.summary.querySelector(`[data-count="${name}"]`);
        if (el) el.textContent = String(counts[name]);
      }
    }
    this.onCounts?.(counts);
  }

  _onVisibility(event) {
    const host = this.hosts.get(event.target.dataset?.host);
    if (!host) return;
    host.visible = !event.skipped;
    if (host.visible) {
      this.dirty.add(host);
      this.scheduleRender();
    }
  }

  // Ages tick on screen between digests; staleness is re-judged for every host.
  _tick() {
    const now = performance.now();
    let any = false;
    for (const host of this.hosts.values()) {
      if (host.visible && host.refs && now - host.renderedAt > TICK_MS * 0.9) {
        this.dirty.add(host);
        any = true;
      }
    }
    const before = this.dirty.size;
    this._evaluateStale(now);
    if (any || this.dirty.size !== before || this.filterDirty || this.orderDirty) this.scheduleRender();
  }

  digestAge() {
    return this.lastDigestAt === null ? null : (performance.now() - this.lastDigestAt) / 1000;
  }

  host(id) {
    return this.hosts.get(id);
  }
}
