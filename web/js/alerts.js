// The alert feed: nerve.alert.* events (level changes and ad-hoc messages), newest on top, bounded.

import { formatClock, formatValue, isoTime, levelText } from "./format.js";
import { frameScheduler } from "./schedule.js";

export const MAX_ALERTS = 100;
// An alert storm becomes one DOM update per 300 ms at most; a lone alert shows in the next frame.
const FEED_GAP_MS = 300;

// Both shapes on the topic: a level change from the orchestrator, or `nerve alert send`'s {message, ts, sender}.
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

// One <li> for an alert; used by the live feed and by a host's alert history.
export function alertItem(alert, schema, { showHost = true } = {}) {
  const li = document.createElement("li");
  li.className = `alert alert-${alert.kind}`;
  if (alert.hostId) li.dataset.host = alert.hostId;
  const time = document.createElement("time");
  time.dateTime = isoTime(alert.ts);
  time.textContent = formatClock(alert.ts);
  li.append(time);
  if (showHost && alert.hostId) {
    const host = document.createElement("a");
    host.className = "alert-host";
    host.href = `#/host/${encodeURIComponent(alert.hostId)}`;
    host.textContent = alert.hostId;
    li.append(" ", host);
  }
  const body = document.createElement("span");
  body.className = "alert-body";
  if (alert.kind === "level") {
    li.dataset.level = levelText(alert.level);
    li.dataset.metric = alert.metric;
    const metric = document.createElement("span");
    metric.className = "alert-metric";
    metric.textContent = alert.metric;
    const change = document.createElement("span");
    change.className = "alert-change";
    const previous = document.createElement("span");
    previous.className = "badge small";
    previous.dataset.level = levelText(alert.previous);
    previous.textContent = levelText(alert.previous);
    const next = document.createElement("span");
    next.className = "badge small";
    next.dataset.level = levelText(alert.level);
    next.textContent = levelText(alert.level);
    const arrow = document.createElement("span");
    arrow.className = "arrow";
    arrow.textContent = " → ";
    change.append(previous, arrow, next);
    body.append(metric, " ", change);
    if (alert.value !== null) {
      const unit = schema?.measure?.[alert.metric.split(".")[0]]?.unit ?? "";
      const value = document.createElement("span");
      value.className = "alert-value";
      value.textContent = formatValue(alert.value, unit, { digits: 1 });
      body.append(" ", value);
    }
  } else {
    li.dataset.level = "message";
    const message = document.createElement("span");
    message.className = "alert-message";
    message.textContent = alert.message;
    body.append(message);
    if (alert.sender) {
      const sender = document.createElement("span");
      sender.className = "alert-sender";
      sender.textContent = ` — ${alert.sender}`;
      body.append(sender);
    }
  }
  li.append(" ", body);
  return li;
}

export class AlertFeed {
  constructor({ list, count, empty, max = MAX_ALERTS } = {}) {
    this.list = list;
    this.countEl = count;
    this.empty = empty;
    this.max = max;
    this.pending = [];
    this.total = 0;
    this.schema = null;
    this.listeners = [];
    this.scheduleRender = frameScheduler(() => this._render(), FEED_GAP_MS);
  }

  setSchema(schema) {
    this.schema = schema;
  }

  onAlert(listener) {
    this.listeners.push(listener);
  }

  // WAMP event handler for the nerve.alert. prefix subscription.
  handle(args, kwargs, details) {
    const alert = normalizeAlert(args?.[0] ?? kwargs, details?.topic);
    this.add(alert);
  }

  add(alert) {
    this.total += 1;
    this.pending.push(alert);
    for (const listener of this.listeners) listener(alert);
    this.scheduleRender();
  }

  _render() {
    const fresh = this.pending.slice(-this.max);
    this.pending = [];
    const fragment = document.createDocumentFragment();
    for (let i = fresh.length - 1; i >= 0; i -= 1) fragment.append(alertItem(fresh[i], this.schema));
    this.list.prepend(fragment);
    while (this.list.childElementCount > this.max) this.list.lastElementChild.remove();
    if (this.empty) this.empty.hidden = this.list.childElementCount > 0;
    if (this.countEl) {
      this.countEl.textContent = this.total > this.max ? `${this.max} newest of ${this.total}` : `${this.total}`;
    }
  }
}
