// The dashboard's entry point: wires the WAMP connection to the views and routes between overview and host.

import { AlertFeed } from "./alerts.js";
import { Connection } from "./connection.js";
import { HostDetail } from "./detail.js";
import { errorText, formatClock } from "./format.js";
import { MeshPanel } from "./mesh.js";
import { SignIn } from "./signin.js";
import { Overview, fetchSnapshot } from "./overview.js";

const $ = (selector) => document.querySelector(selector);
const SNAPSHOT_RETRY_MS = 1000;
const DIGEST_LATE_SECONDS = 3.5;

let schema = null;
let snapshotTimer = null;
let snapshotInFlight = null;
let snapshotSession = null;
let orchestratorMissing = false;

const connection = new Connection();
const overview = new Overview({
  list: $("#tiles"),
  map: $("#fleet-canvas"),
  card: $("#fleet-card"),
  open: (hostId) => { window.location.hash = `#/host/${encodeURIComponent(hostId)}`; },
  summary: $("#summary"),
  count: $("#host-count"),
  empty: $("#overview-empty"),
  filterForm: $("#overview-controls"),
});
const alerts = new AlertFeed({
  list: $("#alert-list"), count: $("#alert-count"), counts: $("#alert-counts"), empty: $("#alerts-empty"),
  messages: $("#alert-messages"), groupBy: $("#alert-group-by"), action: $("#alert-action"),
});
const signIn = new SignIn({ form: $("#signin"), state: $("#signin-state"), signOut: $("#signout"), connection });
const detail = new HostDetail({ root: $("#detail-view"), overview, getSchema: () => schema });
const mesh = new MeshPanel({
  root: $("#mesh-panel"),
  onJoin: (info) => markHosts(info, false),
  onLeave: (info) => markHosts(info, true),
  onOrchestrator: (what) => {
    // A (re)started orchestrator may know different hosts: backfill again once it serves nerve.snapshot.
    if (what === "join" && connection.session) loadSnapshot(connection.session);
    renderBanner();
  },
});

alerts.onAlert((alert) => {
  overview.applyAlert(alert);
  detail.handleAlert(alert);
});

function setSchema(value) {
  if (!value) return;
  schema = value;
  overview.setSchema(value);
  alerts.setSchema(value);
}

// A tracker's authid is its host id; the simulator's hosts are sim-*. Its hosts have left only once the last session
// of that identity has.
function markHosts(info, left) {
  const predicate = info.authrole === "tracker" ? (id) => id === info.authid
    : info.authrole === "simulator" ? (id) => id.startsWith("sim-") : null;
  if (!predicate) return;
  const stillThere = left && [...mesh.sessions.values()].some((other) => other.authid === info.authid && other.authrole === info.authrole);
  if (!stillThere) overview.markLeft(predicate, left);
}

async function loadSnapshot(session) {
  clearTimeout(snapshotTimer);
  if (snapshotInFlight && snapshotSession === session) return snapshotInFlight;
  snapshotSession = session;
  const attempt = (async () => {
    try {
      performance.mark("nerve:snapshot-asked");
      const snapshot = await fetchSnapshot(session);
      performance.mark("nerve:snapshot-received");
      if (session !== connection.session) return;
      orchestratorMissing = false;
      setSchema(snapshot.schema);
      overview.applySnapshot(snapshot);
      performance.mark("nerve:snapshot-applied");
    } catch (error) {
      if (session !== connection.session) return;
      // Right after a router restart the orchestrator may not have registered again yet.
      orchestratorMissing = error?.error === "wamp.error.no_such_procedure";
      if (!orchestratorMissing) console.warn("nerve: snapshot failed:", errorText(error));
      snapshotTimer = setTimeout(() => loadSnapshot(session), SNAPSHOT_RETRY_MS);
    } finally {
      if (snapshotInFlight === attempt) snapshotInFlight = null;
      renderBanner();
    }
  })();
  snapshotInFlight = attempt;
  return attempt;
}

// Performance marks (nerve:joined, nerve:snapshot-*) split a page's opening into its steps for DevTools and
// bench/dashboard_bench.py.
connection.onOpen(async (session) => {
  performance.mark("nerve:joined");
  overview.setOnline(true);
  await Promise.all([
    session.subscribe("nerve.digest", (args) => overview.applyDigest(args[0])),
    session.subscribe("nerve.alert.", (args, kwargs, details) => alerts.handle(args, kwargs, details), { match: "prefix" }),
  ]);
  await Promise.all([loadSnapshot(session), mesh.attach(session), detail.attach(session),
                     alerts.attach(session, { canAct: signIn.signedIn })]);
});

connection.onClose(() => {
  overview.setOnline(false);
  mesh.detach();
  detail.detach();
  alerts.detach();
  clearTimeout(snapshotTimer);
});

const STATUS_TEXT = {
  connecting: () => "Connecting to the router…",
  joining: () => "Connected; loading the mesh…",
  connected: () => "Live",
  reconnecting: (status) => `Connection lost${status.downSince ? ` at ${formatClock(status.downSince)}` : ""}; reconnecting (attempt ${status.attempt})…`,
};

connection.onStatus((status) => {
  const el = $("#connection");
  el.dataset.state = status.state;
  $("#connection-text").textContent = STATUS_TEXT[status.state]?.(status) ?? status.state;
  document.body.dataset.connection = status.state;
  renderBanner();
});

function renderBanner() {
  const banner = $("#banner");
  let text = "";
  const state = connection.state;
  if (state === "reconnecting") {
    text = `The router is unreachable since ${formatClock(connection.downSince)}: the values below are frozen and will refresh by themselves once it is back.`;
  } else if (state === "connected" || state === "joining") {
    const age = overview.digestAge();
    if (orchestratorMissing || (state === "connected" && mesh.counts.orchestrator === 0 && mesh.sessions.size > 0)) {
      text = "No orchestrator is connected: hosts are not being updated.";
    } else if (age !== null && age > DIGEST_LATE_SECONDS) {
      text = `No digest from the orchestrator for ${Math.round(age)} s.`;
    }
  }
  if (banner.textContent !== text) banner.textContent = text;
  banner.hidden = !text;
}
setInterval(renderBanner, 1000);

// -- routing: #/host/<id> opens a host, anything else is the overview ---------------------------
let lastHost = null;
function route() {
  const match = /^#\/host\/(.+)$/.exec(window.location.hash);
  if (match) {
    const hostId = decodeURIComponent(match[1]);
    $("#overview-view").hidden = true;
    const opening = detail.hostId !== hostId;
    detail.open(hostId);
    if (opening) $("#detail-title").focus({ preventScroll: false });
    window.scrollTo({ top: 0 });
    lastHost = hostId;
  } else {
    detail.close();
    $("#overview-view").hidden = false;
    if (lastHost) {
      // Back on the overview, focus returns to the tile or map cell the user came from.
      overview.focusHost(lastHost);
      lastHost = null;
    }
  }
}
window.addEventListener("hashchange", route);
route();

// Exposed for tests, benchmarks and the console: the live session is the page's own, with its own permissions.
window.nerve = {
  get session() { return connection.session; },
  connection,
  overview,
  alerts,
  signIn,
  mesh,
  detail,
  get schema() { return schema; },
  loadedAt: performance.now(),
};

connection.start();
