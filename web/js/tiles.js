// The tile view, virtualised: only the tiles on (or one screen around) the viewport exist in the DOM.
//
// The list is as tall as every matching tile would be; visible tiles are absolutely placed list items taken from a
// small pool and rebound to whichever host scrolls into their slot. A value written to an off-screen host costs
// nothing; a tile shows its host's current state the moment it is bound.

import { formatAge, formatValue } from "./format.js";
import { createSparkline, drawSparkline } from "./sparkline.js";
import { levelStyle } from "./levels.js";
import { isShown } from "./schedule.js";

const MIN_TILE_WIDTH = 158;
const TILE_HEIGHT = 112;
const GAP = 8;

// Replaces a text node's data in place: no node swap, so less layout invalidation than textContent.
export function setText(el, text) {
  const node = el.firstChild;
  if (node && node.nodeType === 3 && !node.nextSibling) {
    if (node.data !== text) node.data = text;
  }
  else if (el.textContent !== text) el.textContent = text;
}

export class TileGrid {
  /**
   * @param {object} o
   * @param {HTMLElement} o.list        the <ul> the tiles live in
   * @param {() => object} o.view       the schema's measure specs, headline names and spark metric
   * @param {() => void} o.onInvalid    asks the owner for a frame
   */
  constructor({ list, view, onInvalid }) {
    this.list = list;
    this.view = view;
    this.onInvalid = onInvalid;
    this.hosts = [];
    this.bound = new Map();   // host -> tile
    this.pool = [];
    this.columns = 1;
    this.tileWidth = MIN_TILE_WIDTH;
    this.layoutDirty = true;
    this.screenFirst = true; // the next layout binds the screen first (see _layout)
    this.template = this._template();
    window.addEventListener("scroll", () => this._moved(), { passive: true });
    window.addEventListener("resize", () => this._moved(), { passive: true });
    new ResizeObserver(() => this._moved()).observe(list.parentElement);
  }

  /** The matching hosts in display order; none when the view goes out, which lets go of its tiles at once (a hidden
   * view is not laid out, so it would keep them in the DOM until it came back). */
  setHosts(hosts) {
    this.hosts = hosts;
    if (!hosts.length) {
      for (const tile of this.bound.values()) {
        tile.li.remove();
        this.pool.push(tile);
      }
      this.bound.clear();
      this.screenFirst = true;
    }
    this.layoutDirty = true;
    this.onInvalid();
  }

  /** Tiles bound to a host right now (the DOM's tiles). */
  get shown() {
    return this.bound.size;
  }

  /** Binds the tiles in reach of the viewport and writes the dirty ones; called from the owner's animation frame. */
  draw(dirty, now) {
    if (!isShown(this.list)) return;
    if (this.layoutDirty) this._layout();
    for (const host of dirty) {
      const tile = this.bound.get(host);
      if (tile) this._write(tile, host, now);
    }
  }

  /** Rewrites the age of every bound tile (once a second). */
  tick(now) {
    for (const [host, tile] of this.bound) this._writeAge(tile, host, now);
  }

  /** Scrolls a host's tile into view and focuses its link. */
  focusHost(host) {
    const index = this.hosts.indexOf(host);
    if (index < 0) return false;
    const top = this.list.getBoundingClientRect().top + window.scrollY + Math.floor(index / this.columns) * (TILE_HEIGHT + GAP);
    window.scrollTo({ top: Math.max(0, top - window.innerHeight / 3) });
    this._layout();
    this.bound.get(host)?.link.focus({ preventScroll: true });
    return true;
  }

  // -- layout ------------------------------------------------------------------------------------
  _moved() {
    this.layoutDirty = true;
    // Without hosts (the map is shown, and its canvas resizes the container) no tile waits for it: setHosts lays
    // the tiles out when they come back.
    if (this.hosts.length) this.onInvalid();
  }

  _layout() {
    this.layoutDirty = false;
    const width = this.list.clientWidth;
    this.columns = Math.max(1, Math.floor((width + GAP) / (MIN_TILE_WIDTH + GAP)));
    this.tileWidth = (width - GAP * (this.columns - 1)) / this.columns;
    const rows = Math.ceil(this.hosts.length / this.columns);
    const rowHeight = TILE_HEIGHT + GAP;
    const height = `${Math.max(0, rows * rowHeight - GAP)}px`;
    // One screen of tiles above and below the viewport, so a scroll or a keyboard Tab lands on a ready tile. Tiles
    // coming in from nothing (the map or an empty filter gave way) bind the screen first and the screens around it
    // a frame later: the user's filter shows at once, not after three screens of tiles.
    const top = this.list.getBoundingClientRect().top;  // read before the writes below: one layout, not two
    if (this.list.style.height !== height) this.list.style.height = height;
    const screen = window.innerHeight;
    // Once per coming in: a screen that holds none of the tiles must not ask for frame after frame.
    const screenFirst = this.screenFirst && this.bound.size === 0 && this.hosts.length > 0;
    const margin = screenFirst ? 0 : screen;
    if (screenFirst) {
      this.screenFirst = false;
      setTimeout(() => this._moved(), 0);
    }
    const firstRow = Math.max(0, Math.floor((-top - margin) / rowHeight));
    const lastRow = Math.min(rows - 1, Math.floor((-top + screen + margin) / rowHeight));
    const first = firstRow * this.columns;
    const last = Math.min(this.hosts.length, (lastRow + 1) * this.columns);
    const wanted = new Set(this.hosts.slice(first, last));
    for (const [host, tile] of this.bound) {
      if (!wanted.has(host)) {
        this.bound.delete(host);
        this.pool.push(tile);
      }
    }
    const now = performance.now();
    const fragment = document.createDocumentFragment();
    for (let i = first; i < last; i += 1) {
      const host = this.hosts[i];
      let tile = this.bound.get(host);
      if (!tile) {
        tile = this.pool.pop() ?? this._create();
        if (!tile.li.parentNode) fragment.append(tile.li);
        this.bound.set(host, tile);
        this._bind(tile, host, now);
      }
      const x = Math.round((i % this.columns) * (this.tileWidth + GAP));
      const y = Math.floor(i / this.columns) * rowHeight;
      const place = `translate(${x}px, ${y}px)`;
      if (tile.place !== place) {
        tile.place = place;
        tile.li.style.transform = place;
      }
      const tileWidth = `${this.tileWidth}px`;
      if (tile.li.style.width !== tileWidth) tile.li.style.width = tileWidth;
    }
    this.list.append(fragment);
    // Tiles left over leave the DOM: the page holds only what is near the screen.
    for (const tile of this.pool) tile.li.remove();
  }

  // -- one tile ----------------------------------------------------------------------------------
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

  _create() {
    const li = this.template.cloneNode(true);
    const link = li.firstElementChild;
    const [head, values, sparkHolder, foot] = link.children;
    const kvs = values.children;
    const spark = createSparkline();
    sparkHolder.append(spark.svg);
    return {
      li, link, name: head.firstElementChild, badge: head.lastElementChild,
      keys: [kvs[0].firstElementChild, kvs[1].firstElementChild],
      values: [kvs[0].lastElementChild, kvs[1].lastElementChild],
      spark, age: foot.firstElementChild, staleNote: foot.lastElementChild, shown: {}, place: "",
    };
  }

  _bind(tile, host, now) {
    tile.shown = {};
    tile.li.dataset.host = host.id;
    tile.link.href = `#/host/${encodeURIComponent(host.id)}`;
    setText(tile.name, host.id);
    host.sparkDirty = true;
    this._write(tile, host, now);
  }

  _write(tile, host, now) {
    const { measure, headline, sparkMetric } = this.view();
    const shown = tile.shown;
    if (shown.level !== host.levelKey) {
      shown.level = host.levelKey;
      tile.li.dataset.level = host.levelKey;
      setText(tile.badge, levelStyle(host.levelKey).label);
    }
    if (shown.hostname !== host.hostname) {
      shown.hostname = host.hostname;
      tile.link.title = host.hostname !== host.id ? `${host.id} on ${host.hostname}` : host.id;
    }
    if (shown.stale !== host.stale || shown.left !== host.left) {
      shown.stale = host.stale;
      shown.left = host.left;
      tile.li.dataset.stale = host.stale ? "true" : "false";
      setText(tile.staleNote, host.stale ? (host.left ? "stale · tracker left" : "stale") : "");
    }
    headline.forEach((name, index) => {
      const label = measure[name]?.label ?? name;
      if (shown[`k${index}`] !== label) {
        shown[`k${index}`] = label;
        setText(tile.keys[index], label);
      }
      const text = formatValue(host.values[name], measure[name]?.unit ?? "", { digits: 1 });
      if (shown[name] !== text) {
        shown[name] = text;
        setText(tile.values[index], text);
      }
    });
    this._writeAge(tile, host, now);
    if (host.sparkDirty) {
      host.sparkDirty = false;
      const spec = measure[sparkMetric] ?? { min: 0, max: 100 };
      drawSparkline(tile.spark, host.ring, spec.min ?? 0, spec.max ?? 100);
    }
  }

  _writeAge(tile, host, now) {
    const text = formatAge(host.age(now));
    if (tile.shown.age !== text) {
      tile.shown.age = text;
      setText(tile.age, text);
    }
  }
}
