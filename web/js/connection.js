// The dashboard's WAMP session: joins same-origin /ws anonymously, reconnects forever, reports its state.

/* global autobahn */

const INITIAL_DELAY = 0.5;
const MAX_DELAY = 2.0;
const GROWTH = 1.5;

export function routerUrl(location = window.location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

export class Connection {
  constructor({ url = routerUrl(), realm = "nerve" } = {}) {
    this.url = url;
    this.realm = realm;
    this.session = null;
    this.state = "connecting";
    this.downSince = null;
    this.attempt = 0;
    this.openHandlers = [];
    this.closeHandlers = [];
    this.statusHandlers = [];
    this.joins = 0;
    this.retryTimer = null;
    // autobahn's own retry stops for good when the router says GOODBYE (as on shutdown), so we
    // keep max_retries at 0 and run the reconnect loop ourselves.
    this.connection = new autobahn.Connection({
      url: this.url,
      realm: this.realm,
      max_retries: 0,
      retry_if_unreachable: false,
    });
    this.connection.onopen = (session, details) => this._opened(session, details);
    this.connection.onclose = (reason, details) => this._closed(reason, details);
  }

  onOpen(handler) { this.openHandlers.push(handler); }
  onClose(handler) { this.closeHandlers.push(handler); }
  onStatus(handler) { this.statusHandlers.push(handler); handler(this.status()); }

  start() {
    this._open();
  }

  status() {
    return { state: this.state, attempt: this.attempt, downSince: this.downSince, joins: this.joins,
             sessionId: this.session ? this.session.id : null };
  }

  _setState(state) {
    this.state = state;
    const status = this.status();
    for (const handler of this.statusHandlers) handler(status);
  }

  _open() {
    this.retryTimer = null;
    this.attempt += 1;
    try {
      this.connection.open();
    } catch (error) {
      // "already open (or opening)": a close event will bring us back here.
    }
  }

  async _opened(session, details) {
    this.session = session;
    this.joins += 1;
    this.attempt = 0;
    this.downSince = null;
    this._setState("joining");
    const results = await Promise.allSettled(this.openHandlers.map((handler) => handler(session, details)));
    for (const result of results) {
      if (result.status === "rejected") console.warn("nerve: set-up after join failed", result.reason);
    }
    if (this.session === session) this._setState("connected");
  }

  _closed(reason, details) {
    const wasOpen = this.session !== null;
    this.session = null;
    if (this.downSince === null) this.downSince = Date.now() / 1000;
    if (wasOpen) for (const handler of this.closeHandlers) handler(reason, details);
    this.delay = wasOpen || !this.delay ? INITIAL_DELAY : Math.min(this.delay * GROWTH, MAX_DELAY);
    // Jitter, so a router restart is not met by every open dashboard in the same millisecond.
    const delay = this.delay * (0.9 + Math.random() * 0.2);
    this._setState(this.joins === 0 ? "connecting" : "reconnecting");
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this._open(), delay * 1000);
    return true; // stop autobahn's retry; ours is scheduled
  }
}
