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
    this.credentials = null; // {authid, ticket, authrole} while an operator is signed in; the ticket stays in memory
    this.identity = { authid: null, authrole: null }; // who the router says the session is
    this.refusedHandlers = [];
    this.connection = this._connection();
  }

  _connection() {
    // autobahn's own retry stops for good when the router says GOODBYE (as on shutdown), so we
    // keep max_retries at 0 and run the reconnect loop ourselves.
    const options = { url: this.url, realm: this.realm, max_retries: 0, retry_if_unreachable: false };
    if (this.credentials) {
      const { authid, ticket, authrole } = this.credentials;
      // WAMP ticket authentication, the role asked for in HELLO as every WAMP client does.
      Object.assign(options, {
        authmethods: ["ticket"], authid, authrole,
        onchallenge: (session, method) => {
          if (method === "ticket") return ticket;
          throw new Error(`the router asked for ${method}, not a ticket`);
        },
      });
    }
    const connection = new autobahn.Connection(options);
    connection.onopen = (session, details) => { if (this.connection === connection) this._opened(session, details); };
    connection.onclose = (reason, details) => (this.connection === connection ? this._closed(reason, details) : true);
    return connection;
  }

  // Join again at once with these credentials, or anonymously with null, on the same endpoint.
  reconnectAs(credentials) {
    const previous = this.connection;
    this.credentials = credentials;
    this.connection = this._connection();
    try { previous.close(); } catch (error) { /* not open */ }
    this._closed("switching", {});
    clearTimeout(this.retryTimer);
    this._open();
  }

  // Called with the router's reason when it refuses the credentials; the page then joins anonymously again.
  onRefused(handler) { this.refusedHandlers.push(handler); }

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
    this.identity = { authid: details?.authid ?? null, authrole: details?.authrole ?? null };
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
    if (this.credentials && !wasOpen && details?.reason && details.reason !== "wamp.close.normal") {
      // Refused at join (a wrong ticket, a role it may not have): retrying the same ticket will not help.
      this.credentials = null;
      this.connection = this._connection();
      for (const handler of this.refusedHandlers) handler(`${details.reason}: ${details.message ?? ""}`);
    }
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
