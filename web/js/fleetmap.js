// The fleet map: every host as one cell of a canvas, coloured by level, in the overview's order.
//
// One canvas instead of a DOM node per host: 5,000 hosts cost one bitmap, and the map is repainted only when a
// colour, the order or the size changed (values alone never repaint it; the hover card shows them).

import { STALE, levelColor } from "./levels.js";
import { isShown } from "./schedule.js";

const MIN_CELL = 7;
const MAX_CELL = 18;
const GAP = 1;
const GROUP_HEAD = 18;
const GROUP_GAP = 6;
const FONT = "600 12px system-ui, sans-serif";
const MARK = "\u0000"; // separates a cell's level key from its marks (stale, hover, focus)

export class FleetMap {
  /**
   * @param {object} o
   * @param {HTMLCanvasElement} o.canvas  the map
   * @param {HTMLElement} o.card          the hover card (one element, moved and rewritten)
   * @param {(host) => string} o.describe the card's text for a host
   * @param {(host) => void} o.open       opens a host's detail
   * @param {() => void} o.onInvalid      asks the owner for a frame
   */
  constructor({ canvas, card, describe, open, onInvalid }) {
    this.canvas = canvas;
    this.card = card;
    this.describe = describe;
    this.open = open;
    this.onInvalid = onInvalid;
    this.ctx = canvas.getContext("2d", { alpha: false });
    this.groups = [];
    this.groupTops = [];      // per group: its top, first cell index, count and columns (for hit testing)
    this.cells = [];          // index -> host, in drawing order
    this.index = new Map();   // host -> index
    this.rects = new Float32Array(0);
    this.width = 0;
    this.observedWidth = null; // the container's content width the last resize reported
    this.height = 0;
    this.dpr = 1;
    this.cell = MAX_CELL;
    this.hover = null;
    this.focus = null;
    this.focused = false;
    this.cardText = "";
    this.layoutDirty = true;
    this.paintDirty = true;
    this.fullPaint = true;
    this.painted = [];        // index -> what its cell shows now (colour key and outline): repaint only what differs
    this.paints = 0;
    this.background = getComputedStyle(document.documentElement).getPropertyValue("--bg").trim() || "#0d1117";
    this.muted = getComputedStyle(document.documentElement).getPropertyValue("--muted").trim() || "#a3adb8";
    this.focusColor = getComputedStyle(document.documentElement).getPropertyValue("--focus").trim() || "#ffd33d";
    // The layout reads the container's width and the window's height. The container's height follows the canvas,
    // so a new layout that changes it (a group grew a row) must not lay the map out again in one more frame.
    new ResizeObserver((entries) => {
      const width = entries[entries.length - 1].contentRect.width;
      if (width !== this.observedWidth) {
        this.observedWidth = width;
        this._resized();
      }
    }).observe(canvas.parentElement);
    window.addEventListener("resize", () => this._resized());
    matchMedia(`(resolution: ${window.devicePixelRatio}dppx)`).addEventListener?.("change", () => this._resized());
    canvas.addEventListener("pointermove", (event) => this._pointer(event));
    canvas.addEventListener("pointerleave", () => this._setHover(null));
    canvas.addEventListener("click", (event) => {
      const host = this.hostAt(event.offsetX, event.offsetY);
      if (host) this.open(host);
    });
    canvas.addEventListener("keydown", (event) => this._key(event));
    canvas.addEventListener("focus", () => {
      this.focused = true;
      if (!this.focus && this.cells.length) this._setFocus(this.cells[0]);
      else this._showCard(this.focus);
      this.invalidatePaint();
    });
    canvas.addEventListener("blur", () => {
      this.focused = false;
      this._showCard(this.hover);
      this.invalidatePaint();
    });
  }

  /** Sets the hosts to draw: groups of {key, label, hosts} in order (one group when not grouped). */
  setGroups(groups) {
    this.groups = groups;
    this.layoutDirty = true;
    this.onInvalid();
  }

  /** A host's colour or staleness changed: repaint on the next frame. */
  invalidatePaint() {
    this.paintDirty = true;
    this.onInvalid();
  }

  /** The host under the card changed values: rewrite the card. */
  refreshCard(host) {
    if (host && (host === this.hover || host === this.focus)) this._showCard(host);
  }

  /** Hosts drawn as of the last layout. */
  get shown() {
    return this.cells.length;
  }

  /** Lays out and paints if anything changed since the last call; called from the owner's animation frame. */
  draw() {
    if (!isShown(this.canvas)) return false;
    if (this.layoutDirty) this._layout();
    if (!this.paintDirty) return false;
    this.paintDirty = false;
    if (this.fullPaint) this._paint();
    else this._repaint();
    return true;
  }

  /** The host under a point in CSS pixels of the canvas, or null. */
  hostAt(x, y) {
    const rects = this.rects;
    const step = this.cell + GAP;
    for (let g = 0; g < this.groupTops.length; g += 1) {
      const { top, first, count, columns } = this.groupTops[g];
      const row = Math.floor((y - top) / step);
      const column = Math.floor(x / step);
      if (row < 0 || column < 0 || column >= columns) continue;
      const index = first + row * columns + column;
      if (index >= first + count) continue;
      const rx = rects[index * 2];
      const ry = rects[index * 2 + 1];
      if (x >= rx && x < rx + this.cell && y >= ry && y < ry + this.cell) return this.cells[index];
    }
    return null;
  }

  /** A host's cell in CSS pixels relative to the canvas ({x, y, size}), or null if it is not drawn. */
  cellOf(host) {
    const index = this.index.get(host);
    if (index === undefined) return null;
    return { x: this.rects[index * 2], y: this.rects[index * 2 + 1], size: this.cell };
  }

  /** Gives the map the keyboard focus on a host's cell (false if it is not drawn). */
  focusHost(host) {
    if (!this.index.has(host)) return false;
    this._setFocus(host);
    this.canvas.focus({ preventScroll: false });
    return true;
  }

  // -- layout and paint ---------------------------------------------------------------------
  _resized() {
    this.layoutDirty = true;
    this.onInvalid();
  }

  _layout() {
    this.layoutDirty = false;
    this.paintDirty = this.fullPaint = true;
    const width = Math.max(120, Math.floor(this.canvas.parentElement.clientWidth));
    const total = this.groups.reduce((sum, group) => sum + group.hosts.length, 0);
    const headed = this.groups.length > 1 || this.groups[0]?.label;
    // Cells shrink with the fleet so it fits about one screen: 5,000 hosts in ~900 x 550 px.
    const budget = Math.max(320, window.innerHeight - 260) * width;
    this.cell = Math.max(MIN_CELL, Math.min(MAX_CELL, Math.floor(Math.sqrt(budget / Math.max(1, total))) - GAP));
    const step = this.cell + GAP;
    const columns = Math.max(1, Math.floor((width + GAP) / step));
    this.cells = new Array(total);
    this.index = new Map();
    this.rects = new Float32Array(total * 2);
    this.groupTops = [];
    let y = 0;
    let i = 0;
    for (const group of this.groups) {
      if (headed) y += GROUP_HEAD;
      const top = y;
      this.groupTops.push({ top, first: i, count: group.hosts.length, columns, label: group.label, y: top - 4 });
      for (let k = 0; k < group.hosts.length; k += 1, i += 1) {
        const host = group.hosts[k];
        this.cells[i] = host;
        this.index.set(host, i);
        this.rects[i * 2] = (k % columns) * step;
        this.rects[i * 2 + 1] = top + Math.floor(k / columns) * step;
      }
      y = top + Math.ceil(group.hosts.length / columns) * step + (headed ? GROUP_GAP : 0);
    }
    const height = Math.max(step, y);
    const dpr = window.devicePixelRatio || 1;
    if (width !== this.width || height !== this.height || dpr !== this.dpr) {
      this.width = width;
      this.height = height;
      this.dpr = dpr;
      // The backing store in device pixels, the element in CSS pixels: crisp on HiDPI screens.
      this.canvas.width = Math.round(width * dpr);
      this.canvas.height = Math.round(height * dpr);
      this.canvas.style.width = `${width}px`;
      this.canvas.style.height = `${height}px`;
    }
    // The card follows its host to its new cell (or goes with it).
    if (this.hover && !this.index.has(this.hover)) this._setHover(null);
    if (this.focus && !this.index.has(this.focus)) this.focus = null;
    this._showCard(this.hover ?? (this.focused ? this.focus : null));
    this.canvas.setAttribute("aria-label", `Fleet map of ${total} hosts: arrow keys move, Enter opens the host`);
  }

  // What a cell shows: its level's colour, dimmed when stale, and an outline when hovered or focused.
  _look(host) {
    let look = host.stale ? host.levelKey + MARK + "stale" : host.levelKey;
    if (host === this.hover) look += `${MARK}hover`;
    if (host === this.focus && this.focused) look += `${MARK}focus`;
    return look;
  }

  _paint() {
    this.paints += 1;
    this.fullPaint = false;
    const ctx = this.ctx;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.fillStyle = this.background;
    ctx.fillRect(0, 0, this.width, this.height);
    ctx.font = FONT;
    ctx.textBaseline = "alphabetic";
    for (const group of this.groupTops) {
      if (!group.label) continue;
      ctx.fillStyle = this.muted;
      ctx.fillText(group.label, 0, group.y);
    }
    // Cells batched by look: one fillStyle per level instead of one per cell.
    const buckets = new Map();
    this.painted = new Array(this.cells.length);
    for (let i = 0; i < this.cells.length; i += 1) {
      const look = this._look(this.cells[i]);
      this.painted[i] = look;
      let bucket = buckets.get(look);
      if (!bucket) buckets.set(look, (bucket = []));
      bucket.push(i);
    }
    const size = this.cell;
    for (const [look, indices] of buckets) {
      const [key, ...marks] = look.split(MARK);
      if (marks.some((mark) => mark !== "stale")) {
        for (const i of indices) this._cell(i, look, false);
        continue;
      }
      ctx.globalAlpha = marks.length ? STALE.alpha : 1;
      ctx.fillStyle = levelColor(key);
      for (const i of indices) ctx.fillRect(this.rects[i * 2], this.rects[i * 2 + 1], size, size);
    }
    ctx.globalAlpha = 1;
  }

  // Only the cells whose look changed since the last paint: a level change repaints one cell, not the fleet.
  _repaint() {
    this.paints += 1;
    this.ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    for (let i = 0; i < this.cells.length; i += 1) {
      const look = this._look(this.cells[i]);
      if (look !== this.painted[i]) {
        this.painted[i] = look;
        this._cell(i, look, true);
      }
    }
    this.ctx.globalAlpha = 1;
  }

  _cell(i, look, clear) {
    const ctx = this.ctx;
    const x = this.rects[i * 2];
    const y = this.rects[i * 2 + 1];
    const size = this.cell;
    const [key, ...marks] = look.split(MARK);
    if (clear || marks.length) {
      ctx.globalAlpha = 1;
      ctx.fillStyle = this.background;
      ctx.fillRect(x, y, size, size);
    }
    ctx.globalAlpha = marks.includes("stale") ? STALE.alpha : 1;
    ctx.fillStyle = levelColor(key);
    ctx.fillRect(x, y, size, size);
    // Outlines stay inside the cell, so repainting the cell alone removes them.
    const outline = marks.includes("focus") ? this.focusColor : marks.includes("hover") ? "#ffffff" : null;
    if (outline) {
      ctx.globalAlpha = 1;
      ctx.strokeStyle = outline;
      ctx.lineWidth = 2;
      ctx.strokeRect(x + 1, y + 1, size - 2, size - 2);
    }
  }

  // -- pointer, keyboard, card ----------------------------------------------------------------
  _pointer(event) {
    this._setHover(this.hostAt(event.offsetX, event.offsetY));
  }

  _setHover(host) {
    if (host === this.hover) return;
    this.hover = host;
    this.canvas.style.cursor = host ? "pointer" : "";
    this._showCard(host ?? (this.focused ? this.focus : null));
    this.invalidatePaint();
  }

  _setFocus(host) {
    this.focus = host;
    this._showCard(host);
    this.invalidatePaint();
  }

  _key(event) {
    if (!this.cells.length) return;
    const current = this.index.get(this.focus) ?? 0;
    const columns = this.groupTops[0]?.columns ?? 1;
    const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns, ArrowDown: columns, Home: -Infinity, End: Infinity };
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      if (this.focus) this.open(this.focus);
      return;
    }
    if (!(event.key in moves)) return;
    event.preventDefault();
    const next = Math.max(0, Math.min(this.cells.length - 1, current + moves[event.key]));
    this._setFocus(this.cells[next]);
  }

  _showCard(host) {
    const card = this.card;
    if (!host) {
      card.hidden = true;
      return;
    }
    const cell = this.cellOf(host);
    if (!cell) {
      card.hidden = true;
      return;
    }
    const text = this.describe(host);
    if (text !== this.cardText) {
      this.cardText = text;
      card.textContent = text;
    }
    card.dataset.host = host.id;
    card.dataset.level = host.levelKey;
    card.hidden = false;
    // Beside the cell, flipped to its left near the right edge; the canvas's parent is the positioning box.
    const left = cell.x + cell.size + 8;
    const flip = left + card.offsetWidth > this.width;
    card.style.transform = `translate(${Math.round(flip ? cell.x - 8 - card.offsetWidth : left)}px, ${Math.round(cell.y)}px)`;
  }
}
