// The mesh panel: who is connected (from the router's meta API) and each analyzer instance's load.

import { formatValue, naturalCompare } from "./format.js";
import { frameScheduler } from "./schedule.js";

const ANALYZE_URI = "nerve.analyze";
// Analyzer loads arrive every second per instance; drawing them once a second is enough.
const LOAD_GAP_MS = 1000;
const ROLES = ["tracker", "simulator", "analyzer", "orchestrator", "dashboard", "operator", "component"];

export class MeshPanel {
  constructor({ root, onJoin, onLeave, onOrchestrator } = {}) {
    this.root = root;
    this.onJoinHandler = onJoin;
    this.onLeaveHandler = onLeave;
    this.onOrchestrator = onOrchestrator;
    this.sessions = new Map();
    // Sessions that left while attach() was still asking who is there: their details may arrive after the leave.
    this.leftWhileListing = null;
    this.callees = [];
    this.loads = new Map();
    this.session = null;
    this.refreshTimer = null;
    this.refreshing = null;
    this.counts = {};
    this.scheduleLoads = frameScheduler(() => this.render(), LOAD_GAP_MS);
    this.calleesKnown = false;
  }

  // Called on every (re)join: rebuild everything from the router, then follow its meta events.
  async attach(session) {
    this.session = session;
    this.sessions.clear();
    this.callees = [];
    this.calleesKnown = false;
    this.leftWhileListing = new Set();
    const on = (topic, handler, options) => session.subscribe(topic, handler, options);
    await Promise.all([
      on("wamp.session.on_join", (args) => this._joined(args[0])),
      on("wamp.session.on_leave", (args) => this._left(args[0])),
      on("wamp.registration.on_register", () => this.refreshCallees()),
      on("wamp.registration.on_unregister", () => this.refreshCallees()),
      on("nerve.analyzer.", (args, kwargs, details) => this._load(args[0], details), { match: "prefix" }),
    ]);
    const ids = await session.call("wamp.session.list");
    const details = await Promise.allSettled(ids.map((id) => session.call("wamp.session.get", [id])));
    const leftWhileListing = this.leftWhileListing;
    this.leftWhileListing = null;
    const present = details.filter((result) => result.status === "fulfilled" && result.value).map((result) => result.value);
    for (const info of present) if (!leftWhileListing.has(info.session)) this._remember(info);
    for (const info of present) {
      if (leftWhileListing.has(info.session)) this.onLeaveHandler?.(info);
      else this.onJoinHandler?.(info);
    }
    await this.refreshCallees();
    this.render();
  }

  detach() {
    this.session = null;
    this.render();
  }

  _remember(info) {
    if (info && info.session !== undefined) {
      this.sessions.set(info.session, { authid: info.authid, authrole: info.authrole });
    }
  }

  _joined(info) {
    this._remember(info);
    this.onJoinHandler?.(info);
    if (info?.authrole === "analyzer") this.refreshCallees();
    if (info?.authrole === "orchestrator") this.onOrchestrator?.("join", info);
    this.scheduleRender();
  }

  _left(sessionId) {
    const info = this.sessions.get(sessionId);
    this.sessions.delete(sessionId);
    this.leftWhileListing?.add(sessionId);
    if (info) {
      this.onLeaveHandler?.(info);
      if (info.authrole === "analyzer") {
        this.loads.delete(info.authid);
        this.refreshCallees();
      }
      if (info.authrole === "orchestrator") this.onOrchestrator?.("leave", info);
    }
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

  // Coalesces bursts of meta events (an analyzer leaving fires leave + unregister) into one lookup.
  refreshCallees() {
    if (this.refreshTimer) return this.refreshing;
    this.refreshing = new Promise((resolve) => {
      this.refreshTimer = setTimeout(async () => {
        this.refreshTimer = null;
        try {
          await this._queryCallees();
        } catch (error) {
          console.warn("nerve: could not list analyzers", error);
        }
        this.scheduleRender();
        resolve();
      }, 30);
    });
    return this.refreshing;
  }

  async _queryCallees() {
    const session = this.session;
    if (!session || !session.isOpen) return;
    const registration = await session.call("wamp.registration.lookup", [ANALYZE_URI, { match: "exact" }]);
    let ids = [];
    if (registration !== null && registration !== undefined) {
      ids = await session.call("wamp.registration.list_callees", [registration]).catch(() => []);
    }
    const callees = [];
    for (const id of ids) {
      let info = this.sessions.get(id);
      if (!info) {
        info = await session.call("wamp.session.get", [id]).catch(() => null);
        if (info) this._remember(info);
      }
      callees.push({ session: id, authid: info?.authid ?? String(id) });
    }
    if (session === this.session) {
      this.callees = callees.sort((a, b) => naturalCompare(a.authid, b.authid));
      this.calleesKnown = true;
    }
  }

  countByRole() {
    const counts = Object.fromEntries(ROLES.map((role) => [role, 0]));
    for (const info of this.sessions.values()) {
      if (counts[info.authrole] !== undefined) counts[info.authrole] += 1;
    }
    return counts;
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
