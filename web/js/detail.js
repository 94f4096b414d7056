// Host detail: per-family uPlot charts backfilled from nerve.history, live from nerve.analysis.<host>, plus Analyze.
// Longer ranges (1 h … 30 d) come from the recorder's nerve.history.range, with a min–max band on coarse steps;
// dragging across a chart zooms into that span.

import { alertItem, normalizeAlert } from "./alerts.js";
import {
  compareMetrics, errorText, familyOf, formatAge, formatSigned, formatValue, instanceOf, levelText, metricLabel,
} from "./format.js";
import { isPresenceLevel } from "./levels.js";

const UPLOT_URL = "/vendor/uplot/dist/uPlot.esm.js";
const MAX_POINTS = 900;
const MAX_HOST_ALERTS = 50;
const ANALYZE_SECONDS = 60;
const ANALYZE_TIMEOUT_MS = 35000;
const PALETTE = ["#58a6ff", "#f778ba", "#3fb950", "#d29922", "#a371f7", "#39c5cf", "#ff7b72", "#c9d1d9"];

const CHART_HEIGHT = 150;
// The time-range picker: key, button text, seconds before now (0: the live window the orchestrator keeps).
const RANGES = [["live", "5 min live", 0], ["1h", "1 h", 3600], ["6h", "6 h", 6 * 3600], ["24h", "24 h", 86400],
  ["7d", "7 d", 7 * 86400], ["30d", "30 d", 30 * 86400]];
const MIN_ZOOM_SECONDS = 10;
const BAND_ALPHA = "33";

function stepText(step) {
  return step >= 3600 ? `${step / 3600} h` : step >= 60 ? `${step / 60} min` : `${step} s`;
}

function axisText(ts, span) {
  // Spans over two days name the day; under ten minutes the second.
  if (span > 2 * 86400) {
    return new Date(ts * 1000).toLocaleString([], { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false });
  }
  return clockText(ts, span < 600);
}

function chartWidth(figure) {
  // The figure's padding is 0.4rem a side; uPlot draws inside it.
  return Math.max(Math.floor(figure.clientWidth - 14), 200);
}

function lastValue(column) {
  for (let i = column.length - 1; i >= 0; i -= 1) if (column[i] !== null && column[i] !== undefined) return column[i];
  return null;
}

function clockText(ts, seconds = true) {
  if (!ts) return "–";
  const options = { hour: "2-digit", minute: "2-digit", hour12: false };
  if (seconds) options.second = "2-digit";
  return new Date(ts * 1000).toLocaleTimeString([], options);
}

let uPlotModule = null;
function loadUPlot() {
  // Only the detail view draws charts, so the overview never pays for uPlot.
  uPlotModule ??= import(UPLOT_URL).then((module) => module.default);
  return uPlotModule;
}

export class HostDetail {
  constructor({ root, overview, getSchema }) {
    this.root = root;
    this.overview = overview;
    this.getSchema = getSchema;
    this.hostId = null;
    this.session = null;
    this.subscription = null;
    this.generation = 0;
    this.times = [];
    this.series = new Map();
    this.lastSeq = null;
    this.lastTs = null;
    this.charts = new Map();
    this.rows = new Map();
    this.analysis = null;
    this.frame = 0;
    this.fillPending = null;
    this.el = (name) => root.querySelector(`[data-detail="${name}"]`);
    this.chartsEl = this.el("charts");
    this.resizeObserver = new ResizeObserver(() => this._resizeCharts());
    this.resizeObserver.observe(this.chartsEl);
    this.el("analyze").addEventListener("click", () => this.analyze());
    this.rangeKey = "live";
    this.view = null; // the nerve.history.range answer drawn instead of the live window, or null
    this.rangeGeneration = 0;
    this._buildRangePicker();
    this.ticker = setInterval(() => this._renderMeta(), 1000);
  }

  get isOpen() {
    return this.hostId !== null;
  }

  async open(hostId) {
    if (this.hostId !== hostId) {
      this._reset();
      this.hostId = hostId;
      this.el("id").textContent = hostId;
      this.el("analyze-result").hidden = true;
      this.el("analyze-result").replaceChildren();
      document.title = `${hostId} · nerve`;
    }
    this.root.hidden = false;
    if (this.session) {
      await this._load(this.session);
      if (this.rangeKey !== "live") this.setRange(this.rangeKey);
    }
  }

  close() {
    this._unsubscribe();
    this._reset();
    this.hostId = null;
    this.root.hidden = true;
    document.title = "nerve";
  }

  async attach(session) {
    this.session = session;
    this.subscription = null;
    this.el("analyze").disabled = false;
    if (this.hostId) {
      await this._load(session);
      if (this.rangeKey !== "live") this.setRange(this.rangeKey);
    }
  }

  detach() {
    this.session = null;
    this.subscription = null;
    this.el("analyze").disabled = true;
  }

  // An alert from the live feed that concerns the open host.
  handleAlert(alert) {
    if (!this.hostId || alert.hostId !== this.hostId) return;
    this._prependAlerts([alert]);
  }

  _reset() {
    this.generation += 1;
    this.rangeGeneration += 1;
    this.view = null;
    this.drawnView = null;
    this.times = [];
    this.series = new Map();
    this.lastSeq = null;
    this.lastTs = null;
    this.analysis = null;
    for (const chart of this.charts.values()) chart.plot?.destroy();
    this.charts = new Map();
    this.chartsEl.replaceChildren();
    this.rows = new Map();
    this.el("metrics").replaceChildren();
    this.el("alerts").replaceChildren();
    this.el("level").textContent = "";
    this.el("level").dataset.level = "";
    this.el("status").textContent = "Loading…";
  }

  async _unsubscribe() {
    const subscription = this.subscription;
    this.subscription = null;
    if (subscription && this.session?.isOpen) {
      try {
        await this.session.unsubscribe(subscription);
      } catch (error) {
        // already gone with the old session
      }
    }
  }

  async _load(session) {
    const generation = ++this.generation;
    const hostId = this.hostId;
    await this._unsubscribe();
    let early = [];
    // Subscribe before reading history so nothing falls between the two; early events are replayed after.
    const subscription = await session.subscribe(`nerve.analysis.${hostId}`, (args) => {
      if (generation !== this.generation) return;
      if (early) early.push(args[0]);
      else this._onAnalysis(args[0]);
    });
    const flush = () => {
      const queued = early;
      early = null;
      for (const event of queued) if (generation === this.generation) this._onAnalysis(event);
    };
    if (generation !== this.generation) {
      session.unsubscribe(subscription).catch(() => {});
      return;
    }
    this.subscription = subscription;
    let history;
    try {
      history = await session.call("nerve.history", [hostId]);
    } catch (error) {
      if (generation !== this.generation) return;
      this.el("status").textContent = error?.error === "nerve.error.not_found"
        ? `No host "${hostId}" has reported to the orchestrator.` : `Could not load history: ${errorText(error)}`;
      this.el("status").dataset.state = "error";
      flush();
      return;
    }
    if (generation !== this.generation) return;
    this.el("status").textContent = "";
    this.el("status").dataset.state = "";
    this.times = [];
    this.series = new Map();
    this.lastSeq = this.lastTs = null;
    this._appendSamples(history.samples ?? []);
    this.hostname = history.hostname;
    if (history.analysis) this._setAnalysis(history.analysis);
    this.el("alerts").replaceChildren();
    const alerts = (history.alerts ?? []).map((alert) => normalizeAlert(alert, `nerve.alert.${hostId}`));
    this._prependAlerts(alerts);
    flush();
    this._scheduleCharts();
  }

  _onAnalysis(event) {
    if (!event || event.host_id !== this.hostId) return;
    this._setAnalysis(event);
    if (this.lastTs !== null && event.ts <= this.lastTs) return;
    const consecutive = this.lastSeq === null || event.seq === this.lastSeq + 1 || event.seq === 1;
    if (consecutive) {
      const metrics = {};
      for (const [name, stats] of Object.entries(event.metrics ?? {})) metrics[name] = stats.value;
      this._appendSamples([{ seq: event.seq, ts: event.ts, metrics }]);
      this._scheduleCharts();
    } else {
      // The orchestrator analysed several samples in one call: fetch the ones in between.
      this._fillGap();
    }
  }

  async _fillGap() {
    if (this.fillPending) return;
    const session = this.session;
    const generation = this.generation;
    this.fillPending = session?.call("nerve.history", [this.hostId, this.lastTs]);
    try {
      const history = await this.fillPending;
      if (generation === this.generation) {
        this._appendSamples(history.samples ?? []);
        this._scheduleCharts();
      }
    } catch (error) {
      console.warn("nerve: history gap fill failed", error);
    } finally {
      this.fillPending = null;
    }
  }

  _appendSamples(samples) {
    for (const sample of samples) {
      if (this.lastTs !== null && sample.ts <= this.lastTs) continue;
      const index = this.times.length;
      this.times.push(sample.ts);
      for (const [name, value] of Object.entries(sample.metrics ?? {})) {
        let column = this.series.get(name);
        if (!column) {
          column = new Array(index).fill(null);
          this.series.set(name, column);
        }
        column.push(value);
      }
      for (const column of this.series.values()) if (column.length <= index) column.push(null);
      this.lastTs = sample.ts;
      this.lastSeq = sample.seq;
    }
    const excess = this.times.length - MAX_POINTS;
    if (excess > 0) {
      this.times.splice(0, excess);
      for (const column of this.series.values()) column.splice(0, excess);
    }
  }

  // -- analysis table ---------------------------------------------------------------------
  _setAnalysis(analysis) {
    this.analysis = analysis;
    this._renderMeta();
    const schema = this.getSchema()?.measure ?? {};
    const tbody = this.el("metrics");
    const names = Object.keys(analysis.metrics ?? {}).sort((a, b) => compareMetrics(a, b, schema));
    let order = false;
    for (const name of names) {
      let row = this.rows.get(name);
      if (!row) {
        row = this._metricRow(name, schema);
        this.rows.set(name, row);
        order = true;
      }
      this._fillRow(row, analysis.metrics[name], schema[familyOf(name)]?.unit ?? "");
    }
    if (order) tbody.replaceChildren(...names.map((name) => this.rows.get(name).tr));
  }

  _metricRow(name, schema) {
    const tr = document.createElement("tr");
    tr.dataset.metric = name;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = metricLabel(name, schema);
    th.title = name;
    const cells = {};
    tr.append(th);
    for (const key of ["value", "level", "mean", "p95", "trend", "anomaly"]) {
      const td = document.createElement("td");
      td.className = key === "level" ? "level" : "num";
      cells[key] = td;
      tr.append(td);
    }
    const badge = document.createElement("span");
    badge.className = "badge small";
    cells.level.append(badge);
    cells.badge = badge;
    return { tr, cells, shown: {} };
  }

  _fillRow(row, stats, unit) {
    const texts = {
      value: formatValue(stats.value, unit),
      mean: formatValue(stats.mean, unit),
      p95: formatValue(stats.p95, unit),
      trend: formatSigned(stats.trend, unit === "%" ? "pt" : unit),
      anomaly: formatSigned(stats.anomaly, "", 1),
    };
    for (const [key, text] of Object.entries(texts)) {
      if (row.shown[key] !== text) {
        row.shown[key] = text;
        row.cells[key].textContent = text;
      }
    }
    const level = stats.level ? levelText(stats.level) : "—";
    if (row.shown.level !== level) {
      row.shown.level = level;
      row.cells.badge.textContent = level;
      row.cells.badge.dataset.level = stats.level ? level : "none";
      row.cells.badge.title = stats.level ? "" : "no thresholds for this metric";
    }
    const unusual = Math.abs(stats.anomaly ?? 0) >= 3;
    row.cells.anomaly.classList.toggle("unusual", unusual);
    row.cells.anomaly.title = unusual ? "unusual: robust z-score of 3 or more" : "";
  }

  _renderMeta() {
    if (!this.hostId) return;
    const host = this.overview.host(this.hostId);
    const parts = [];
    const hostname = host?.hostname ?? this.hostname;
    if (hostname && hostname !== this.hostId) parts.push(`hostname ${hostname}`);
    if (host) {
      parts.push(`measured ${formatAge(host.age(performance.now()))}`);
      if (host.seq !== null) parts.push(`seq ${host.seq}`);
    }
    if (this.analysis?.analyzer) parts.push(`analysed by ${this.analysis.analyzer}`);
    // DOWN or OFFLINE (its tracker is gone) come from the digest; while it reports, its latest analysis says.
    const shown = host && isPresenceLevel(host.digestKey) ? host.digestKey
      : this.analysis ? levelText(this.analysis.level) : "";
    const level = this.el("level");
    if (level.textContent !== shown) {
      level.textContent = shown;
      level.dataset.level = shown;
    }
    const text = parts.join(" · ");
    const meta = this.el("meta");
    if (meta.textContent !== text) meta.textContent = text;
    const stale = this.el("stale");
    const isStale = Boolean(host?.stale);
    if (stale.hidden === isStale) {
      stale.hidden = !isStale;
      stale.textContent = host?.left ? "Stale: the tracker left the router." : "Stale: no recent measurement.";
    }
  }

  _prependAlerts(alerts) {
    const list = this.el("alerts");
    const schema = this.getSchema();
    const fragment = document.createDocumentFragment();
    const newestFirst = [...alerts].sort((a, b) => b.ts - a.ts);
    for (const alert of newestFirst) fragment.append(alertItem(alert, schema, { showHost: false }));
    list.prepend(fragment);
    while (list.childElementCount > MAX_HOST_ALERTS) list.lastElementChild.remove();
    this.el("alerts-empty").hidden = list.childElementCount > 0;
  }

  // -- time ranges ------------------------------------------------------------------------------
  _buildRangePicker() {
    const picker = document.createElement("div");
    picker.className = "range-picker";
    picker.dataset.detail = "range";
    picker.setAttribute("role", "group");
    picker.setAttribute("aria-label", "Time range");
    picker.style.cssText = "display:flex;flex-wrap:wrap;gap:0.35rem;margin:0 0 0.5rem";
    this.rangeButtons = new Map();
    for (const [key, text] of RANGES) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.range = key;
      button.textContent = text;
      button.addEventListener("click", () => this.setRange(key));
      this.rangeButtons.set(key, button);
      picker.append(button);
    }
    this.rangeStatus = document.createElement("p");
    this.rangeStatus.className = "status-line";
    this.rangeStatus.dataset.detail = "range-status";
    this.rangeStatus.setAttribute("role", "status");
    this.chartsEl.before(picker, this.rangeStatus);
    this._markRange();
  }

  _markRange() {
    for (const [key, button] of this.rangeButtons) {
      const active = key === this.rangeKey;
      button.className = active ? "button small" : "button secondary small";
      button.setAttribute("aria-pressed", String(active));
    }
  }

  // Pick a range: the live window, or the last N seconds from the recorder (also resets a zoom).
  setRange(key) {
    const seconds = RANGES.find(([name]) => name === key)?.[2];
    if (seconds === undefined) return;
    this.rangeKey = key;
    this._markRange();
    this.rangeGeneration += 1;
    if (!seconds) {
      this.view = null;
      this.rangeStatus.textContent = "";
      this.rangeStatus.dataset.state = "";
      this._redrawCharts();
      return;
    }
    const now = Date.now() / 1000;
    this._loadRange(now - seconds, now, false);
  }

  async _loadRange(since, until, zoomed) {
    const generation = ++this.rangeGeneration;
    const hostId = this.hostId;
    const status = this.rangeStatus;
    if (!this.session || !hostId) return;
    status.textContent = "Loading history…";
    status.dataset.state = "pending";
    let answer;
    try {
      answer = await this.session.call("nerve.history.range", [hostId, since, until]);
    } catch (error) {
      if (generation !== this.rangeGeneration) return;
      this.view = { step: 1, ts: [], series: {} }; // no charts rather than another range's under this one's button
      this._redrawCharts();
      status.dataset.state = "error";
      status.textContent = error?.error === "wamp.error.no_such_procedure"
        ? "No recorder is running, so only the live 5 minutes exist (start one with `nerve recorder`, or `nerve up`)."
        : error?.error === "nerve.error.not_found"
          ? `The recorder has nothing of ${hostId} yet.` : `Could not load history: ${errorText(error)}`;
      return;
    }
    if (generation !== this.rangeGeneration || hostId !== this.hostId) return;
    this.view = answer;
    const band = answer.min ? " · band: min–max of each step" : "";
    // The span with its day when it is not all today's, to the second when it is short.
    const spanText = (ts) => (until - since > 6 * 3600 || new Date(ts * 1000).toDateString() !== new Date().toDateString()
      ? axisText(ts, Infinity) : clockText(ts, until - since < 600));
    const span = `${spanText(since)} – ${spanText(until)}`;
    status.dataset.state = "";
    status.textContent = `${zoomed ? "Zoomed: " : ""}${span} · ${stepText(answer.step)} steps · ${answer.ts.length} points`
      + `${band} · drag across a chart to zoom${zoomed ? "; pick a range to go back" : ""}`;
    this._redrawCharts();
  }

  _zoom(from, to) {
    if (!(to - from >= MIN_ZOOM_SECONDS)) return;
    this._loadRange(from, to, true);
  }

  _redrawCharts() {
    for (const chart of this.charts.values()) chart.plot.destroy();
    this.charts = new Map();
    this.chartsEl.replaceChildren();
    this._scheduleCharts();
  }

  // -- charts -------------------------------------------------------------------------------
  _scheduleCharts() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this._renderCharts(); });
  }

  async _renderCharts() {
    const generation = this.generation;
    const uPlot = await loadUPlot();
    if (generation !== this.generation || !this.hostId) return;
    const view = this.view;
    if (view && this.drawnView === view && this.charts.size) return; // a recorded range does not move
    this.drawnView = view;
    const times = view ? view.ts : this.times;
    const series = view ? new Map(Object.entries(view.series)) : this.series;
    const mode = view ? (view.min ? "band" : "range") : "live";
    const schema = this.getSchema()?.measure ?? {};
    const families = new Map();
    const names = [...series.keys()].sort((a, b) => compareMetrics(a, b, schema));
    for (const name of names) {
      const family = familyOf(name);
      if (!families.has(family)) families.set(family, []);
      families.get(family).push(name);
    }
    let added = false;
    for (const [family, members] of families) {
      let chart = this.charts.get(family);
      const key = `${mode}:${members.join(",")}`;
      if (chart && chart.key !== key) {
        chart.plot.destroy();
        chart.figure.remove();
        chart = null;
      }
      const data = [times, ...members.map((name) => series.get(name))];
      if (mode === "band") {
        data.push(...members.map((name) => view.min[name]), ...members.map((name) => view.max[name]));
      }
      if (!chart) {
        chart = this._createChart(uPlot, family, members, schema[family] ?? {}, data, mode);
        chart.figure.dataset.source = view ? "history" : "live";
        chart.figure.dataset.points = String(times.length);
        if (view) chart.figure.dataset.step = String(view.step);
        this.charts.set(family, chart);
        added = true;
      } else {
        chart.plot.setData(data);
        if (chart.plot.cursor.idx === null || chart.plot.cursor.idx === undefined) chart.plot.setLegend({ idx: null });
      }
    }
    if (added) {
      const order = [...families.keys()];
      this.chartsEl.replaceChildren(...order.map((family) => this.charts.get(family).figure));
    }
  }

  _createChart(uPlot, family, members, spec, data, mode = "live") {
    const unit = spec.unit ?? "";
    const figure = document.createElement("figure");
    figure.className = "chart";
    figure.dataset.family = family;
    const caption = document.createElement("figcaption");
    caption.textContent = unit ? `${spec.label ?? family} (${unit})` : (spec.label ?? family);
    const holder = document.createElement("div");
    figure.append(caption, holder);
    this.chartsEl.append(figure);
    const width = chartWidth(figure);
    const axis = { stroke: "#c9d1d9", grid: { stroke: "#2d333b", width: 1 }, ticks: { stroke: "#2d333b", width: 1 } };
    const specMin = typeof spec.min === "number" ? spec.min : null;
    const specMax = typeof spec.max === "number" ? spec.max : null;
    const options = {
      width,
      height: CHART_HEIGHT,
      // On a recorded range a drag across the chart zooms into it (loaded again, at a finer step if one fits).
      cursor: { drag: mode === "live" ? { x: false, y: false } : { x: true, y: false, setScale: false } },
      hooks: mode === "live" ? {} : {
        setSelect: [(u) => {
          if (u.select.width < 3) return;
          const from = u.posToVal(u.select.left, "x");
          const to = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          this._zoom(from, to);
        }],
      },
      legend: { show: true, live: true },
      scales: {
        x: { time: true },
        y: {
          range: (u, min, max) => {
            const low = specMin ?? min;
            let high = specMax ?? max;
            if (!(high > low)) high = low + 1;
            if (specMax === null) high += (high - low) * 0.1;
            return [low, high];
          },
        },
      },
      axes: [
        { ...axis, space: 80, values: (u, splits) => splits.map((ts) => axisText(ts, u.scales.x.max - u.scales.x.min)) },
        { ...axis, size: 64, values: (u, splits) => splits.map((value) => formatValue(value, unit, { digits: value % 1 ? 1 : 0 })) },
      ],
      series: [
        // Without a cursor on the chart the legend shows the newest values, so it reads as a live readout.
        { label: "Time", value: (u, ts, sidx, idx) => clockText(idx === null ? lastValue(u.data[0]) : ts) },
        ...members.map((name, index) => ({
          label: instanceOf(name) ?? spec.label ?? name,
          stroke: PALETTE[index % PALETTE.length],
          width: 1.5,
          points: { show: false },
          spanGaps: true,
          value: (u, value, sidx, idx) => formatValue(idx === null ? lastValue(u.data[sidx]) : value, unit),
        })),
        ...(mode === "band" ? ["min", "max"].flatMap((kind) => members.map((name, index) => ({
          label: `${instanceOf(name) ?? spec.label ?? name} ${kind}`,
          stroke: `${PALETTE[index % PALETTE.length]}${BAND_ALPHA}`,
          width: 1,
          points: { show: false },
          spanGaps: true,
          value: (u, value, sidx, idx) => formatValue(idx === null ? lastValue(u.data[sidx]) : value, unit),
        }))) : []),
      ],
      // The min–max band of each metric: uPlot fills between the max series and the min series.
      bands: mode === "band" ? members.map((name, index) => ({
        series: [1 + 2 * members.length + index, 1 + members.length + index],
        fill: `${PALETTE[index % PALETTE.length]}${BAND_ALPHA}`,
      })) : [],
    };
    const plot = new uPlot(options, data, holder);
    return { figure, plot, key: members.join(",") };
  }

  _resizeCharts() {
    for (const chart of this.charts.values()) {
      const width = chartWidth(chart.figure);
      if (chart.plot.width !== width) chart.plot.setSize({ width, height: CHART_HEIGHT });
    }
  }

  // -- the Analyze action ---------------------------------------------------------------------
  async analyze() {
    const hostId = this.hostId;
    const session = this.session;
    const button = this.el("analyze");
    const result = this.el("analyze-result");
    result.hidden = false;
    result.dataset.state = "pending";
    result.replaceChildren(`Analyzing the last ${ANALYZE_SECONDS} s of ${hostId}…`);
    if (!session) {
      this._analyzeError(result, "Not connected to the router.");
      return;
    }
    button.disabled = true;
    let timer;
    try {
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${ANALYZE_TIMEOUT_MS / 1000} s`)), ANALYZE_TIMEOUT_MS);
      });
      const answer = await Promise.race([session.call("nerve.analyze_host", [hostId, ANALYZE_SECONDS]), timeout]);
      if (hostId !== this.hostId) return;
      this._analyzeResult(result, answer);
    } catch (error) {
      if (hostId !== this.hostId) return;
      this._analyzeError(result, errorText(error), error?.error);
    } finally {
      clearTimeout(timer);
      button.disabled = !this.session;
    }
  }

  _analyzeError(result, message, uri) {
    result.dataset.state = "error";
    const strong = document.createElement("strong");
    strong.textContent = "Analyze failed: ";
    const text = document.createElement("span");
    text.className = "analyze-message";
    text.textContent = message;
    result.replaceChildren(strong, text);
    if (uri) result.dataset.error = uri;
  }

  _analyzeResult(result, answer) {
    result.dataset.state = "ok";
    delete result.dataset.error;
    const schema = this.getSchema()?.measure ?? {};
    const summary = document.createElement("p");
    const badge = document.createElement("span");
    badge.className = "badge small";
    badge.dataset.level = levelText(answer.level);
    badge.textContent = levelText(answer.level);
    summary.append(`Fresh analysis of ${answer.samples} samples over ${answer.seconds} s by ${answer.analyzer ?? "an analyzer"}: `, badge);
    const table = document.createElement("table");
    table.className = "compact";
    const head = table.createTHead().insertRow();
    for (const title of ["Metric", "Level", "Mean", "p95", "Trend /min", "Anomaly"]) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = title;
      head.append(th);
    }
    const body = table.createTBody();
    const names = Object.keys(answer.metrics ?? {}).sort((a, b) => compareMetrics(a, b, schema));
    for (const name of names) {
      const stats = answer.metrics[name];
      const unit = schema[familyOf(name)]?.unit ?? "";
      const tr = body.insertRow();
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = metricLabel(name, schema);
      const level = document.createElement("td");
      const levelBadge = document.createElement("span");
      levelBadge.className = "badge small";
      levelBadge.dataset.level = stats.level ? levelText(stats.level) : "none";
      levelBadge.textContent = stats.level ? levelText(stats.level) : "—";
      level.append(levelBadge);
      tr.append(th, level);
      for (const text of [formatValue(stats.mean, unit), formatValue(stats.p95, unit),
        formatSigned(stats.trend, unit === "%" ? "pt" : unit), formatSigned(stats.anomaly, "", 1)]) {
        const td = document.createElement("td");
        td.className = "num";
        td.textContent = text;
        tr.append(td);
      }
    }
    // The gist in two lines (levels, unusual values); every metric's statistics one click away.
    const levels = names.filter((name) => answer.metrics[name].level);
    const unusual = names.filter((name) => Math.abs(answer.metrics[name].anomaly ?? 0) >= 3);
    const gist = document.createElement("p");
    gist.className = "analyze-gist";
    gist.append(levels.length ? "Levels: " : "No metric with thresholds.");
    levels.forEach((name, index) => {
      const badge = document.createElement("span");
      badge.className = "badge small";
      badge.dataset.level = levelText(answer.metrics[name].level);
      badge.textContent = levelText(answer.metrics[name].level);
      gist.append(index ? ", " : "", `${metricLabel(name, schema)} `, badge);
    });
    if (unusual.length) {
      gist.append(`. Unusual (|z| ≥ 3): ${unusual.map((name) =>
        `${metricLabel(name, schema)} ${formatSigned(answer.metrics[name].anomaly, "", 1)}`).join(", ")}.`);
    }
    const more = document.createElement("details");
    const label = document.createElement("summary");
    label.textContent = `All ${names.length} metrics`;
    const wrap = document.createElement("div");
    wrap.className = "table-wrap";
    wrap.append(table);
    more.append(label, wrap);
    result.replaceChildren(summary, gist, more);
  }
}
