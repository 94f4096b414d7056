// The mesh panel: who is connected and each analyzer instance's load. The anonymous page may not read the router's
// session meta API (it carries every session's address and HTTP headers): the router's own nerve.mesh service
// (router/mesh_view.py) answers instead, with each backend session's id, authid and role, and only a count of the
// anonymous ones. Under `nerve up`, its supervisor's retained nerve.supervisor.children event adds every child process
// with its state, restarts and last exit. While a notifier is on the mesh, a line names its unreachable channels.

import { formatValue, naturalCompare } from "./format.js";
import { frameScheduler } from "./schedule.js";

const SESSIONS_URI = "nerve.mesh.sessions";
const CHILDREN_TOPIC = "nerve.supervisor.children";
const RECORDER_TOPIC = "nerve.recorder.state"; // retained by the recorder (components/history/recorder.py)
// The notifier's channels (components/notify/notifier.py), asked for while a notifier is on the mesh.
const NOTIFIER_STATS_URI = "nerve.notifier.stats";
const NOTIFIER_POLL_MS = 2000;
// A child process in these states is not doing its work.
const TROUBLED = new Set(["restarting", "failed"]);
// Analyzer loads arrive every second per instance; drawing them once a second is enough.
const LOAD_GAP_MS = 1000;
const ROLES = ["tracker", "simulator", "analyzer", "orchestrator", "dashboard", "operator", "component"];

// The panel's status line with data attribute `key` (camelCase), made under the counts on first use.
function panelLine(root, key) {
  if (!root) return null;
  let line = [...root.querySelectorAll("p.status-line")].find((element) => key in element.dataset);
  if (!line) {
    line = document.createElement("p");
    line.className = "status-line";
    line.dataset[key] = "";
    root.querySelector(".mesh-counts")?.after(line);
  }
  return line;
}

export class MeshPanel {
  constructor({ root, onJoin, onLeave, onOrchestrator } = {}) {
    this.root = root;
    this.onJoinHandler = onJoin;
    this.onLeaveHandler = onLeave;
    this.onOrchestrator = onOrchestrator;
    this.sessions = new Map();
    this.anonymous = 0;
    this.callees = [];
    this.loads = new Map();
    this.session = null;
    this.counts = {};
    this.scheduleLoads = frameScheduler(() => this.render(), LOAD_GAP_MS);
    this.calleesKnown = false;
    this.children = null; // nerve up's child processes, once its supervisor has said
    this.childRows = new Map();
    this.notifierTimer = null;
  }

  // Called on every (re)join: rebuild everything from the router, then follow nerve.mesh's events.
  async attach(session) {
    this.session = session;
    this.sessions.clear();
    this.callees = [];
    this.calleesKnown = false;
    this.anonymous = 0;
    this.children = null;
    const on = (topic, handler, options) => session.subscribe(topic, handler, options);
    // Events that arrive while the listing is on its way are applied to it afterwards, in order.
    const early = [];
    let listed = false;
    const when = (handler) => (args) => (listed ? handler(args[0]) : early.push(() => handler(args[0])));
    await Promise.all([
      on("nerve.mesh.joined", when((event) => this._joined(event))),
      on("nerve.mesh.left", when((event) => this._left(event))),
      on("nerve.mesh.analyzers", when((event) => this._analyzers(event))),
      on("nerve.analyzer.", (args, kwargs, details) => this._load(args[0], details), { match: "prefix" }),
      // Retained: the latest state at once, whenever the page opens.
      on(CHILDREN_TOPIC, (args) => this._children(args[0]), { get_retained: true }),
      on(RECORDER_TOPIC, (args) => this._recorder(args[0]), { get_retained: true }),
    ]);
    const view = await session.call(SESSIONS_URI);
    if (session !== this.session) return;
    const present = Array.isArray(view?.sessions) ? view.sessions : [];
    for (const info of present) this._remember(info);
    this.anonymous = Number(view?.anonymous) || 0;
    this._analyzers(view);
    for (const info of present) this.onJoinHandler?.(info);
    listed = true;
    for (const apply of early.splice(0)) apply();
    this.render();
    this._watchNotifier();
  }

  detach() {
    this.session = null;
    this.render();
  }

  _remember(info) {
    if (info && info.session !== undefined && info.session !== null) {
      this.sessions.set(info.session, { authid: info.authid, authrole: info.authrole });
    }
  }

  // A backend session {session, authid, authrole}, or {anonymous: count} when a dashboard joined.
  _joined(event) {
    if (!event || typeof event !== "object") return;
    if (event.anonymous !== undefined) {
      this.anonymous = Number(event.anonymous) || 0;
    } else if (!this.sessions.has(event.session)) {
      this._remember(event);
      this.onJoinHandler?.(event);
      if (event.authrole === "orchestrator") this.onOrchestrator?.("join", event);
    }
    this.scheduleRender();
  }

  _left(event) {
    if (!event || typeof event !== "object") return;
    if (event.anonymous !== undefined) {
      this.anonymous = Number(event.anonymous) || 0;
      this.scheduleRender();
      return;
    }
    const info = this.sessions.get(event.session);
    this.sessions.delete(event.session);
    if (info) {
      this.onLeaveHandler?.(info);
      if (info.authrole === "analyzer") {
        this.loads.delete(info.authid);
        this.callees = this.callees.filter((callee) => callee.session !== event.session);
      }
      if (info.authrole === "orchestrator") this.onOrchestrator?.("leave", info);
    }
    this.scheduleRender();
  }

  // The sessions serving nerve.analyze, as [{session, authid}].
  _analyzers(event) {
    if (!Array.isArray(event?.analyzers)) return;
    this.callees = event.analyzers
      .map((callee) => ({ session: callee.session, authid: String(callee.authid ?? callee.session) }))
      .sort((a, b) => naturalCompare(a.authid, b.authid));
    this.calleesKnown = true;
    this.scheduleRender();
  }

  // nerve up's child processes: {children: [{name, state, restarts, last_exit: {reason, at}, log}]}.
  _children(event) {
    if (!Array.isArray(event?.children)) return;
    this.children = event.children.filter((child) => child && typeof child.name === "string");
    this.scheduleRender();
  }

  _load(payload, details) {
    if (!payload || typeof payload !== "object") return;
    const authid = payload.instance ?? details?.topic?.slice("nerve.analyzer.".length);
    const previous = this.loads.get(authid);
    const now = performance.now();
    let rate = previous?.rate ?? null;
    if (previous && payload.served >= previous.served && now > previous.at) {
      rate = ((payload.served - previous.served) * 1000) / (now - previous.at);
    }
    this.loads.set(authid, { ...payload, at: now, rate });
    this.scheduleLoads();
  }

  countByRole() {
    const counts = Object.fromEntries(ROLES.map((role) => [role, 0]));
    for (const info of this.sessions.values()) {
      if (counts[info.authrole] !== undefined) counts[info.authrole] += 1;
    }
    counts.dashboard += this.anonymous;
    return counts;
  }

  // The recorder's state line: recording, or why not (a full disk shows here while the mesh runs on).
  _recorder(state) {
    const line = panelLine(this.root, "meshRecorder");
    if (!line || !state) return;
    const trouble = state.state !== "recording" && state.state !== "waiting for samples";
    const size = `${formatValue(state.bytes, "B")} of ${formatValue(state.max_disk, "B")}`;
    const free = state.disk_free === null || state.disk_free === undefined ? "" : `, ${formatValue(state.disk_free, "B")} free`;
    const why = trouble && state.last_error ? `: ${state.last_error.message}` : "";
    line.textContent = `History recorder: ${state.state}${why} (${size}${free})`;
    line.dataset.state = trouble ? "error" : "";
    line.dataset.recorder = state.state;
  }

  // While a notifier is on the mesh, a line says how its channels are doing; an unreachable one is named with its
  // error and what waits for it.
  _watchNotifier() {
    this.notifierTimer ??= setInterval(() => this._pollNotifier(), NOTIFIER_POLL_MS);
    this._pollNotifier();
  }

  async _pollNotifier() {
    const session = this.session;
    const present = session && [...this.sessions.values()].some((info) => info.authrole === "notifier");
    let stats = null;
    if (present) {
      try {
        stats = await session.call(NOTIFIER_STATS_URI);
      } catch (error) {
        stats = null; // not registered yet, or gone between the check and the call
      }
    }
    if (session === this.session) this._renderNotifier(stats);
  }

  _renderNotifier(stats) {
    let line = this.root?.querySelector("[data-mesh-notifier]");
    if (!line && this.root) {
      line = document.createElement("p");
      line.className = "status-line";
      line.dataset.meshNotifier = "";
      this.root.querySelector(".mesh-counts")?.after(line);
    }
    if (!line) return;
    const channels = Object.entries(stats?.channels ?? {});
    const down = channels.filter(([, channel]) => channel.state === "unreachable");
    line.dataset.state = down.length ? "error" : "";
    line.replaceChildren();
    if (!channels.length) return;
    line.append(`Notifications: ${channels.length - down.length} of ${channels.length} channels reachable`);
    for (const [name, channel] of down) {
      const item = document.createElement("span");
      item.className = "notifier-channel";
      item.dataset.channel = name;
      item.dataset.channelState = channel.state;
      item.textContent = `; ${name} (${channel.type}) unreachable: ${channel.last_error ?? "no answer"}, ${channel.pending} waiting`;
      line.append(item);
    }
  }

  // Who joined or left is drawn in the next frame.
  scheduleRender() {
    this.scheduleLoads({ now: true });
  }

  render() {
    const root = this.root;
    if (!root) return;
    const counts = this.countByRole();
    this.counts = counts;
    const online = Boolean(this.session);
    const set = (key, value) => {
      const el = root.querySelector(`[data-mesh="${key}"]`);
      if (el && el.textContent !== String(value)) el.textContent = String(value);
    };
    set("trackers", online ? counts.tracker : "–");
    set("simulators", online ? counts.simulator : "–");
    set("analyzers", online && this.calleesKnown ? this.callees.length : "–");
    set("orchestrators", online ? counts.orchestrator : "–");
    set("dashboards", online ? counts.dashboard : "–");
    set("operators", online ? counts.operator + counts.component : "–");
    const orchestratorRow = root.querySelector('[data-mesh-row="orchestrators"]');
    if (orchestratorRow) orchestratorRow.classList.toggle("warn", online && counts.orchestrator === 0);
    const analyzerRow = root.querySelector('[data-mesh-row="analyzers"]');
    if (analyzerRow) analyzerRow.classList.toggle("warn", online && this.calleesKnown && this.callees.length === 0);
    this._renderAnalyzers(root.querySelector("[data-mesh-analyzers]"), online);
    this._renderChildren(root.querySelector("[data-mesh-children]"), online);
  }

  _renderChildren(tbody, online) {
    const wrap = this.root.querySelector("[data-mesh-processes]");
    if (!tbody || !wrap) return;
    const children = online && this.children ? this.children : [];
    wrap.hidden = children.length === 0;
    const seen = new Set();
    let order = false;
    for (const child of children) {
      seen.add(child.name);
      let row = this.childRows.get(child.name);
      if (!row) {
        row = this._childRow(child.name);
        this.childRows.set(child.name, row);
        order = true;
      }
      const state = child.state === "failed" ? "left stopped" : String(child.state ?? "–");
      const restarts = String(Number(child.restarts) || 0);
      const exit = child.last_exit ? String(child.last_exit.reason ?? "–") : "–";
      if (row.state.textContent !== state) row.state.textContent = state;
      if (row.restarts.textContent !== restarts) row.restarts.textContent = restarts;
      if (row.exit.textContent !== exit) row.exit.textContent = exit;
      row.exit.title = child.last_exit?.at ? `at ${new Date(child.last_exit.at * 1000).toLocaleTimeString()}` : "";
      row.state.title = child.state === "failed" && child.log ? `its log: ${child.log}` : "";
      row.tr.dataset.state = String(child.state ?? "");
      row.tr.classList.toggle("warn", TROUBLED.has(child.state));
    }
    for (const [name, row] of this.childRows) {
      if (!seen.has(name)) {
        row.tr.remove();
        this.childRows.delete(name);
      }
    }
    if (order) tbody.replaceChildren(...children.map((child) => this.childRows.get(child.name).tr));
  }

  _childRow(name) {
    const tr = document.createElement("tr");
    tr.dataset.child = name;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = name;
    const cell = (col, className) => {
      const td = document.createElement("td");
      td.dataset.col = col;
      if (className) td.className = className;
      return td;
    };
    const state = cell("state");
    const restarts = cell("restarts", "num");
    const exit = cell("exit");
    tr.append(th, state, restarts, exit);
    return { tr, state, restarts, exit };
  }

  _renderAnalyzers(tbody, online) {
    if (!tbody) return;
    this.rows ??= new Map();
    const seen = new Set();
    let order = false;
    for (const callee of online ? this.callees : []) {
      seen.add(callee.authid);
      let row = this.rows.get(callee.authid);
      if (!row) {
        row = this._analyzerRow(callee.authid);
        this.rows.set(callee.authid, row);
        order = true;
      }
      const load = this.loads.get(callee.authid);
      const served = load?.served ?? null;
      const cap = load?.concurrency ?? null;
      const inFlight = load?.in_flight ?? 0;
      const servedText = served === null ? "–" : String(served);
      if (row.served.textContent !== servedText) row.served.textContent = servedText;
      row.served.title = load?.rate != null ? formatValue(load.rate, "calls/s", { digits: 1 }) : "";
      const loadText = cap === null ? "–" : `${inFlight} / ${cap}`;
      if (row.text.textContent !== loadText) {
        row.text.textContent = loadText;
        row.meter.max = cap ?? 1;
        row.meter.high = Math.max((cap ?? 1) - 0.5, 0.5);
        row.meter.value = inFlight;
        row.meter.setAttribute("aria-label", `${callee.authid}: ${loadText} calls in flight`);
      }
    }
    for (const [authid, row] of this.rows) {
      if (!seen.has(authid)) {
        row.tr.remove();
        this.rows.delete(authid);
      }
    }
    if (order) {
      const ordered = (online ? this.callees : []).map((callee) => this.rows.get(callee.authid).tr);
      tbody.replaceChildren(...ordered);
    }
    const empty = this.root.querySelector("[data-mesh-no-analyzers]");
    if (empty) empty.hidden = this.rows.size > 0 || !online || !this.calleesKnown;
  }

  _analyzerRow(authid) {
    const tr = document.createElement("tr");
    tr.dataset.analyzer = authid;
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = authid;
    const served = document.createElement("td");
    served.className = "num";
    const load = document.createElement("td");
    load.className = "load";
    const meter = document.createElement("meter");
    meter.min = 0;
    meter.optimum = 0;
    const text = document.createElement("span");
    load.append(meter, " ", text);
    tr.append(name, served, load);
    return { tr, served, meter, text };
  }
}
