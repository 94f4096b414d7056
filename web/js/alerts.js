// The alert feed: the alert keeper's records (nerve.alerts.open at start, then nerve.alerts.changed), grouped by host
// or by kind (metric family), newest activity first, with each alert's state and who acknowledged or silenced it.
// Built for fleets: however many alerts arrive, the page draws at most MAX_GROUPS groups of MAX_ROWS rows, in one
// animation frame per FEED_GAP_MS. Signed-in operators get Ack and Silence buttons (a comment field each).

import { familyOf, formatClock, formatValue, isoTime, levelText, errorText } from "./format.js";
import { frameScheduler } from "./schedule.js";
import { setText } from "./tiles.js";

export const MAX_GROUPS = 30;
export const MAX_ROWS = 4;
const MAX_RESOLVED = 200; // resolved records kept for display, newest
const MAX_MESSAGES = 10; // `nerve alert send` messages kept
// A storm becomes one DOM update per FEED_GAP_MS at most; a lone change shows in the next frame. Longer than the
// digest's tick, so a storm's updates ride the digests' frames (after half the gap) instead of racing them.
const FEED_GAP_MS = 400;
const SILENCE_DURATIONS = [["1 h", 3600], ["4 h", 4 * 3600], ["1 day", 86400], ["until resolved", null]];

// Both shapes on nerve.alert.*: a level change ({metric, level, ...}), or `nerve alert send`'s {message, ts, sender}.
export function normalizeAlert(payload, topic) {
  const fromTopic = topic && topic.startsWith("nerve.alert.") ? topic.slice("nerve.alert.".length) : null;
  const alert = payload && typeof payload === "object" ? payload : { message: String(payload) };
  const hostId = typeof alert.host_id === "string" ? alert.host_id : fromTopic;
  const ts = typeof alert.ts === "number" ? alert.ts : Date.now() / 1000;
  if (alert.metric !== undefined && alert.level !== undefined) {
    return { kind: "level", hostId, ts, metric: String(alert.metric), previous: alert.previous ?? null,
             level: alert.level ?? null, value: typeof alert.value === "number" ? alert.value : null,
             hostname: alert.hostname ?? hostId };
  }
  return { kind: "message", hostId, ts, message: String(alert.message ?? JSON.stringify(alert)),
           sender: alert.sender ? String(alert.sender) : null };
}

// Puts nodes in parent in this order, moving only those out of place: a group that did not change keeps its
// node, so a storm re-lays out the groups it touched, not the whole feed.
function reconcile(parent, nodes) {
  let at = parent.firstChild;
  for (const node of nodes) {
    if (node === at) at = at.nextSibling;
    else parent.insertBefore(node, at);
  }
  while (at) {
    const next = at.nextSibling;
    at.remove();
    at = next;
  }
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function badge(level) {
  const node = el("span", "badge small", levelText(level));
  node.dataset.level = levelText(level);
  return node;
}

function clock(ts) {
  const time = el("time", "", formatClock(ts));
  time.dateTime = isoTime(ts);
  return time;
}

function hostLink(hostId) {
  const link = el("a", "alert-host", hostId);
  link.href = `#/host/${encodeURIComponent(hostId)}`;
  return link;
}

function valueText(metric, value, schema) {
  if (typeof value !== "number") return "";
  if (metric === "boot") return `booted ${formatClock(value)}`;
  const unit = schema?.measure?.[familyOf(metric)]?.unit ?? "";
  return formatValue(value, unit, { digits: 1 });
}

// One <li> for a level change or message; a host's alert history (detail.js) uses it too.
export function alertItem(alert, schema, { showHost = true } = {}) {
  const li = el("li", `alert alert-${alert.kind}`);
  if (alert.hostId) li.dataset.host = alert.hostId;
  li.append(clock(alert.ts));
  if (showHost && alert.hostId) li.append(" ", hostLink(alert.hostId));
  const body = el("span", "alert-body");
  if (alert.kind === "level") {
    li.dataset.level = levelText(alert.level);
    li.dataset.metric = alert.metric;
    const change = el("span", "alert-change");
    change.append(badge(alert.previous), el("span", "arrow", " → "), badge(alert.level));
    body.append(el("span", "alert-metric", alert.metric), " ", change);
    const value = valueText(alert.metric, alert.value, schema);
    if (value) body.append(" ", el("span", "alert-value", value));
  } else {
    li.dataset.level = "message";
    body.append(el("span", "alert-message", alert.message));
    if (alert.sender) body.append(el("span", "alert-sender", ` — ${alert.sender}`));
  }
  li.append(" ", body);
  return li;
}

// What a row says about who acted: "acknowledged by alice at 12:00:03 — on it", "silenced by bob until 13:00".
export function stateText(record, silences) {
  if (record.state === "resolved") return `resolved${record.resolved_at ? ` at ${formatClock(record.resolved_at)}` : ""}`;
  const parts = [];
  if (record.silenced_by) {
    const silence = silences.get(record.silenced_by);
    const until = silence ? (silence.ends_at ? ` until ${formatClock(silence.ends_at)}` : " until resolved") : "";
    parts.push(`silenced${silence ? ` by ${silence.created_by}` : ""}${until}${silence?.comment ? ` — ${silence.comment}` : ""}`);
  }
  if (record.acked_by) {
    parts.push(`acknowledged by ${record.acked_by} at ${formatClock(record.acked_at)}${record.ack_comment ? ` — ${record.ack_comment}` : ""}`);
  }
  return parts.join("; ");
}

export class AlertFeed {
  constructor({ list, count, counts, empty, messages, groupBy, action, max = MAX_GROUPS } = {}) {
    this.list = list;
    this.countEl = count;
    this.countsEl = counts;
    this.empty = empty;
    this.messagesEl = messages;
    this.groupByEl = groupBy;
    this.actionForm = action;
    this.maxGroups = max;
    this.records = new Map(); // id -> record (open, and the newest MAX_RESOLVED resolved)
    this.resolvedIds = new Set(); // ids of the resolved records kept, oldest first
    this.silences = new Map(); // id -> silence (pending, active)
    this.messages = [];
    this.schema = null;
    this.session = null;
    this.canAct = false;
    this.target = null; // {record, kind: "ack" | "silence"} of the open action form
    this.listeners = [];
    this.renders = 0;
    this.groupNodes = new Map(); // group key -> {node, signature} as drawn last
    this.schemaVersion = 0;
    this.messagesVersion = 0;
    this.messagesDrawn = null; // "messages version/schema version" of the messages as drawn
    this.scheduleRender = frameScheduler(() => this._render(), FEED_GAP_MS);
    this.groupByEl?.addEventListener("change", () => this.scheduleRender({ now: true }));
    this.list.addEventListener("click", (event) => this._clicked(event));
    this.actionForm?.addEventListener("submit", (event) => this._submit(event));
    this.actionForm?.querySelector("[data-action=cancel]")?.addEventListener("click", () => this._closeAction());
  }

  setSchema(schema) {
    this.schema = schema;
    this.schemaVersion += 1;
    this.scheduleRender();
  }

  onAlert(listener) {
    this.listeners.push(listener);
  }

  // The page's session: load what is open now, then follow the changes. canAct: the session may ack and silence.
  async attach(session, { canAct = false } = {}) {
    this.session = session;
    this.canAct = canAct;
    if (!canAct) this._closeAction();
    await session.subscribe("nerve.alerts.changed", (args) => this.applyRecord(args[0]));
    await session.subscribe("nerve.silences.changed", (args) => this.applySilence(args[0]));
    try {
      const open = await session.call("nerve.alerts.open");
      if (session !== this.session) return;
      this.loadOpen(open);
    } catch (error) {
      // No keeper runs (yet): the feed fills from nerve.alerts.changed once one does.
      if (error?.error !== "wamp.error.no_such_procedure") console.warn("nerve: nerve.alerts.open failed:", errorText(error));
    }
    this.scheduleRender({ now: true });
  }

  detach() {
    this.session = null;
  }

  loadOpen({ alerts = [], silences = [] } = {}) {
    for (const [id, record] of this.records) if (record.status !== "resolved") this.records.delete(id);
    this.silences.clear();
    for (const silence of silences) this.silences.set(silence.id, silence);
    for (const record of alerts) this.records.set(record.id, record);
    this.scheduleRender();
  }

  applyRecord(record) {
    if (!record || typeof record.id !== "string") return;
    const known = this.records.get(record.id);
    if (known && known.updated_at > record.updated_at) return; // an older change arriving late
    this.records.delete(record.id); // re-inserted: Map order is arrival order, newest last
    this.records.set(record.id, record);
    this.resolvedIds.delete(record.id);
    if (record.status === "resolved") {
      this.resolvedIds.add(record.id); // Set order is insertion order: the oldest resolved goes first
      if (this.resolvedIds.size > MAX_RESOLVED) {
        const oldest = this.resolvedIds.values().next().value;
        this.resolvedIds.delete(oldest);
        this.records.delete(oldest);
      }
    }
    if (this.target?.record.id === record.id) this.target.record = record;
    this.scheduleRender();
  }

  applySilence(silence) {
    if (!silence || typeof silence.id !== "string") return;
    if (silence.state === "expired") this.silences.delete(silence.id);
    else this.silences.set(silence.id, silence);
    this.scheduleRender();
  }

  // WAMP event handler for the nerve.alert. prefix: level changes go to the tiles and the host page; messages here.
  handle(args, kwargs, details) {
    const alert = normalizeAlert(args?.[0] ?? kwargs, details?.topic);
    for (const listener of this.listeners) listener(alert);
    if (alert.kind === "message") {
      this.messages.unshift(alert);
      this.messages.length = Math.min(this.messages.length, MAX_MESSAGES);
      this.messagesVersion += 1;
      this.scheduleRender();
    }
  }

  counts() {
    const counts = { firing: 0, acknowledged: 0, silenced: 0, resolved: 0 };
    for (const record of this.records.values()) counts[record.state] = (counts[record.state] ?? 0) + 1;
    return counts;
  }

  // Groups of records by host or by kind, the group with the newest change first; rows newest first.
  groups() {
    const byKind = this.groupByEl?.value === "metric";
    const groups = new Map();
    for (const record of this.records.values()) {
      const key = byKind ? familyOf(record.metric) : record.host_id;
      let group = groups.get(key);
      if (!group) groups.set(key, group = { key, records: [], newest: 0, open: 0 });
      group.records.push(record);
      group.newest = Math.max(group.newest, record.updated_at ?? 0);
      if (record.status !== "resolved") group.open += 1;
    }
    const ordered = [...groups.values()].sort((a, b) => (b.open > 0) - (a.open > 0) || b.newest - a.newest);
    for (const group of ordered.slice(0, this.maxGroups)) group.records.sort((a, b) => b.updated_at - a.updated_at);
    return { byKind, ordered };
  }

  _render() {
    this.renders += 1;
    const { byKind, ordered } = this.groups();
    const drawn = new Map();
    const nodes = ordered.slice(0, this.maxGroups).map((group) => {
      const signature = this._signature(group, byKind);
      const known = this.groupNodes.get(group.key);
      const node = known?.signature === signature ? known.node : this._group(group, byKind);
      drawn.set(group.key, { node, signature });
      return node;
    });
    this.groupNodes = drawn;
    reconcile(this.list, nodes);
    const counts = this.counts();
    const open = counts.firing + counts.acknowledged + counts.silenced;
    if (this.countEl) setText(this.countEl, String(open));
    if (this.countsEl) {
      setText(this.countsEl, `${counts.firing} firing · ${counts.acknowledged} acknowledged · ${counts.silenced} silenced`
        + (ordered.length > this.maxGroups ? ` · ${this.maxGroups} of ${ordered.length} ${byKind ? "kinds" : "hosts"} shown` : ""));
    }
    if (this.empty && this.empty.hidden !== this.records.size > 0) this.empty.hidden = this.records.size > 0;
    const messages = `${this.messagesVersion}/${this.schemaVersion}`;
    if (this.messagesEl && this.messagesDrawn !== messages) {
      this.messagesDrawn = messages;
      this.messagesEl.replaceChildren(...this.messages.map((alert) => alertItem(alert, this.schema)));
    }
    if (this.target) this._describeTarget();
  }

  // Everything a group's node shows: equal signatures, equal nodes.
  _signature(group, byKind) {
    const rows = group.records.slice(0, MAX_ROWS).map((record) =>
      `${record.id}|${record.state}|${record.updated_at}|${stateText(record, this.silences)}`);
    return `${byKind}|${this.canAct}|${this.schemaVersion}|${group.open}|${group.records.length}|${rows.join("\n")}`;
  }

  _group(group, byKind) {
    const li = el("li", "alert-group");
    li.dataset.group = group.key;
    const head = el("div", "alert-group-head");
    head.append(byKind ? el("span", "alert-metric", group.key) : hostLink(group.key),
                el("span", "count", `${group.open} open`));
    const rows = el("ul", "alert-rows");
    for (const record of group.records.slice(0, MAX_ROWS)) rows.append(this._row(record, byKind));
    li.append(head, rows);
    if (group.records.length > MAX_ROWS) li.append(el("p", "alert-more", `+${group.records.length - MAX_ROWS} more`));
    return li;
  }

  _row(record, byKind) {
    const li = el("li", "alert alert-record");
    li.dataset.alertId = record.id;
    li.dataset.state = record.state;
    li.dataset.level = levelText(record.level);
    li.dataset.host = record.host_id;
    li.dataset.metric = record.metric;
    li.append(clock(record.updated_at ?? record.ts), " ");
    li.append(byKind ? hostLink(record.host_id) : el("span", "alert-metric", record.metric), " ");
    if (record.previous) li.append(badge(record.previous), el("span", "arrow", " → "));
    li.append(badge(record.level));
    const value = valueText(record.metric, record.value, this.schema);
    if (value) li.append(" ", el("span", "alert-value", value));
    const state = el("span", "alert-state", record.state);
    state.dataset.state = record.state;
    li.append(" ", state, " ", el("span", "alert-who", stateText(record, this.silences)));
    if (this.canAct && record.status === "firing") {
      const actions = el("span", "alert-actions");
      const kinds = record.acked_by ? [["silence", "Silence"]] : [["ack", "Ack"], ["silence", "Silence"]];
      for (const [kind, label] of kinds) {
        const button = el("button", "button small", label);
        button.type = "button";
        button.dataset.act = kind;
        button.setAttribute("aria-label", `${label} ${record.host_id} ${record.metric}`);
        actions.append(button);
      }
      li.append(" ", actions);
    }
    return li;
  }

  _clicked(event) {
    const button = event.target.closest("button[data-act]");
    if (!button || !this.actionForm) return;
    const record = this.records.get(button.closest("[data-alert-id]")?.dataset.alertId);
    if (!record) return;
    this.target = { record, kind: button.dataset.act };
    const form = this.actionForm;
    form.hidden = false;
    form.dataset.kind = this.target.kind;
    form.querySelector("[data-silence-only]").hidden = this.target.kind !== "silence";
    form.querySelector("[data-action=submit]").textContent = this.target.kind === "ack" ? "Acknowledge" : "Silence";
    form.querySelector("[data-result]").textContent = "";
    const duration = form.elements.duration;
    if (!duration.options.length) {
      for (const [label, seconds] of SILENCE_DURATIONS) duration.append(new Option(label, seconds === null ? "" : String(seconds)));
    }
    this._describeTarget();
    form.elements.comment.focus();
  }

  _describeTarget() {
    const { record, kind } = this.target;
    this.actionForm.querySelector("[data-target]").textContent =
      `${kind === "ack" ? "Acknowledge" : "Silence"} ${record.host_id} ${record.metric} (${levelText(record.level)}, ${record.state})`;
  }

  _closeAction() {
    this.target = null;
    if (this.actionForm) this.actionForm.hidden = true;
  }

  async _submit(event) {
    event.preventDefault();
    if (!this.target || !this.session) return;
    const form = this.actionForm;
    const { record, kind } = this.target;
    const comment = form.elements.comment.value;
    const result = form.querySelector("[data-result]");
    try {
      if (kind === "ack") {
        await this.session.call("nerve.alert.ack", [record.id], { comment });
      } else {
        const scope = form.elements.scope.value;
        const matchers = scope === "metric" ? { metric: familyOf(record.metric) }
          : scope === "host" ? { host: record.host_id } : { host: record.host_id, metric: record.metric };
        const seconds = form.elements.duration.value;
        await this.session.call("nerve.silence.create", [matchers], seconds ? { duration: Number(seconds), comment } : { comment });
      }
      form.elements.comment.value = "";
      this._closeAction();
    } catch (error) {
      result.textContent = errorText(error);
    }
  }
}
