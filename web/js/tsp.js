// The TSP page: random or TSPLIB cities, nerve.tsp.solve with progressive results drawn live, compute instance load.
// Watching is anonymous; a solve holds the mesh's compute instances, so it runs in a second session signed in
// with an operator's ticket (`nerve credential operator NAME`), which the router's authenticator recognises.

/* global autobahn */

import { Connection, routerUrl } from "./connection.js";
import { errorText } from "./format.js";

const $ = (selector) => document.querySelector(selector);
const STALE_SECONDS = 3;
const numberFormat = new Intl.NumberFormat();

const connection = new Connection();
const instances = new Map(); // instance -> {row, seen (ms)}
let cities = [];
let tour = null;
let solving = false;

// -- cities: a small seeded generator (mulberry32), integer coordinates, no two cities on one spot --------------
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function generateCities(n, seed) {
  const next = random(seed);
  const seen = new Set();
  const out = [];
  while (out.length < n) {
    const point = [Math.floor(next() * 1000), Math.floor(next() * 700)];
    const key = point.join(",");
    if (!seen.has(key)) { seen.add(key); out.push(point); }
  }
  return out;
}

function regenerate() {
  const n = Number($("#tsp-n").value);
  const seed = Math.max(0, Math.floor(Number($("#tsp-seed").value) || 0));
  cities = generateCities(n, seed);
  tour = null;
  draw();
}

// -- drawing --------------------------------------------------------------------------------------------
function draw() {
  const canvas = $("#tsp-canvas");
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(200, canvas.clientWidth);
  const height = Math.round(Math.min(width * 0.7, Math.max(240, window.innerHeight * 0.62)));
  if (canvas.style.height !== `${height}px`) canvas.style.height = `${height}px`;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.fillStyle = "#0d1117";
  ctx.fillRect(0, 0, width, height);
  if (!cities.length) return;
  const xs = cities.map((c) => c[0]);
  const ys = cities.map((c) => c[1]);
  const minX = Math.min(...xs), minY = Math.min(...ys);
  const spanX = Math.max(...xs) - minX || 1, spanY = Math.max(...ys) - minY || 1;
  const pad = 12;
  const scale = Math.min((width - 2 * pad) / spanX, (height - 2 * pad) / spanY);
  const offX = (width - spanX * scale) / 2, offY = (height - spanY * scale) / 2;
  // y grows upward in TSPLIB coordinates, downward on the canvas.
  const at = (i) => [offX + (cities[i][0] - minX) * scale, height - offY - (cities[i][1] - minY) * scale];
  if (tour && tour.length === cities.length) {
    ctx.strokeStyle = "#79c0ff";
    ctx.lineWidth = 1.6;
    ctx.beginPath();
    tour.forEach((city, k) => { const [x, y] = at(city); if (k === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y); });
    ctx.closePath();
    ctx.stroke();
  }
  ctx.fillStyle = "#ffd33d";
  for (let i = 0; i < cities.length; i += 1) {
    const [x, y] = at(i);
    ctx.beginPath();
    ctx.arc(x, y, 3, 0, 2 * Math.PI);
    ctx.fill();
  }
  canvas.dataset.drawn = String(Number(canvas.dataset.drawn || 0) + 1);
}

// -- signing in: a ticket-authenticated session of its own, reconnecting like the page's anonymous one ---------
const SIGNIN_DELAYS = [0.5, 1, 2];

class SignedInSession {
  constructor({ url = routerUrl(), realm = "nerve", onChange = () => {} } = {}) {
    this.url = url;
    this.realm = realm;
    this.onChange = onChange;
    this.session = null;
    this.authid = null;
    this.role = null;
    this.state = "signed-out";
    this.connection = null;
    this.retries = 0;
    this.retryTimer = null;
  }

  // Resolves once the router accepted the ticket; rejects with the router's reason if it did not.
  signIn(authid, ticket) {
    this.signOut();
    this.authid = authid;
    this._set("signing-in");
    // The ticket goes only to this connection; it is kept in memory, never stored.
    const connection = new autobahn.Connection({
      url: this.url,
      realm: this.realm,
      authmethods: ["ticket"],
      authid,
      onchallenge: (session, method) => {
        if (method === "ticket") return ticket;
        throw new Error(`the router asked for ${method}, not a ticket`);
      },
      max_retries: 0,
      retry_if_unreachable: false,
    });
    this.connection = connection;
    let joinedOnce = false;
    return new Promise((resolve, reject) => {
      connection.onopen = (session, details) => {
        if (this.connection !== connection) return;
        joinedOnce = true;
        this.retries = 0;
        this.session = session;
        this.role = details?.authrole ?? null;
        this._set("signed-in");
        resolve(session);
      };
      connection.onclose = (reason, details) => {
        if (this.connection !== connection) return true;
        this.session = null;
        // The ticket is no longer good (e.g. the router's secrets were replaced): reconnecting will not help.
        const refused = details?.reason === "nerve.error.not_authenticated";
        if (!joinedOnce || refused) {
          // A wrong ticket (or no router): stop, and say why.
          this.connection = null;
          const message = details?.message || details?.reason || `the router is ${reason}`;
          this._set("refused", `${details?.reason ? `${details.reason}: ` : ""}${message}`);
          reject(new Error(this.message));
          return true;
        }
        this._set("reconnecting");
        const delay = SIGNIN_DELAYS[Math.min(this.retries, SIGNIN_DELAYS.length - 1)];
        this.retries += 1;
        this.retryTimer = setTimeout(() => {
          try { connection.open(); } catch (error) { /* already opening */ }
        }, delay * 1000);
        return true; // our retry, not autobahn's (which stops for good after a GOODBYE)
      };
      connection.open();
    });
  }

  signOut() {
    clearTimeout(this.retryTimer);
    const connection = this.connection;
    this.connection = null;
    this.session = null;
    this.role = null;
    if (connection) {
      try { connection.close(); } catch (error) { /* not open */ }
    }
    if (this.state !== "signed-out") this._set("signed-out");
  }

  _set(state, message = "") {
    this.state = state;
    this.message = message;
    this.onChange(this);
  }
}

const SIGNIN_TEXT = {
  "signed-out": () => "Not signed in.",
  "signing-in": (link) => `Signing in as ${link.authid}…`,
  "signed-in": (link) => `Signed in as ${link.authid} (${link.role}).`,
  reconnecting: (link) => `Signed in as ${link.authid}; connection lost, reconnecting…`,
  refused: (link) => `Sign-in refused: ${link.message}`,
};

const signedIn = new SignedInSession({
  onChange: (link) => {
    const state = $("#tsp-signin-state");
    state.dataset.state = link.state;
    state.textContent = SIGNIN_TEXT[link.state]?.(link) ?? link.state;
    const inside = link.state === "signed-in" || link.state === "reconnecting";
    $("#tsp-signout").hidden = !inside;
    $("#tsp-signin-button").disabled = link.state === "signing-in";
    for (const id of ["#tsp-authid", "#tsp-ticket"]) $(id).disabled = inside;
    if (link.state !== "signed-in" && solving && !link.session) {
      message("The signed-in session closed during the solve.");
      solving = false;
      $("#tsp-solve").disabled = false;
    }
  },
});

function signIn(submit) {
  submit.preventDefault();
  const authid = $("#tsp-authid").value.trim();
  const ticket = $("#tsp-ticket").value.trim();
  if (!authid || !ticket) {
    signedIn._set("refused", "enter the name and the ticket `nerve credential operator NAME` printed for it");
    return;
  }
  signedIn.signIn(authid, ticket).then(() => {
    $("#tsp-ticket").value = "";
    message("");
  }, () => {});
}

// -- solving --------------------------------------------------------------------------------------------
function message(text, state = "error") {
  const el = $("#tsp-message");
  el.textContent = text;
  el.dataset.state = state;
  el.hidden = !text;
}

function payloadOf(result) {
  if (result instanceof autobahn.Result) return result.args?.[0] ?? result.kwargs;
  return Array.isArray(result) ? result[0] : result;
}

function show(event) {
  if (event.round !== undefined) $("#tsp-round").textContent = String(event.round);
  if (event.length !== undefined) $("#tsp-length").textContent = numberFormat.format(event.length);
  if (event.temperature !== undefined) $("#tsp-temperature").textContent = Number(event.temperature).toPrecision(3);
  const used = event.instances ?? event.instances_used;
  if (used !== undefined) $("#tsp-instances").textContent = String(used);
  if (event.tour) tour = event.tour;
}

function progress(raw) {
  const event = payloadOf(raw);
  if (!event) return;
  if (event.kind === "start" && Array.isArray(event.cities)) cities = event.cities;
  $("#tsp-state").textContent = event.kind === "start" ? "started" : "solving";
  show(event);
  draw();
}

function solve(submit) {
  submit.preventDefault();
  if (solving) return;
  const session = signedIn.session;
  if (!session) {
    message(signedIn.state === "reconnecting" ? "The signed-in session is reconnecting; try again in a moment."
      : "Sign in first: a solve runs on the mesh's compute instances, which anonymous visitors may not start.");
    $("#tsp-authid").focus();
    return;
  }
  const text = $("#tsp-budget").value.trim();
  const budget = Number(text);
  if (!text || !Number.isFinite(budget)) { message("The budget must be a number of seconds."); return; }
  const kwargs = { budget, solve_id: `web-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6)}` };
  const tsplib = $("#tsp-tsplib").value.trim();
  if (tsplib) kwargs.tsplib = tsplib; else kwargs.cities = cities;
  message("");
  solving = true;
  $("#tsp-solve").disabled = true;
  $("#tsp-state").textContent = "submitted";
  for (const id of ["#tsp-round", "#tsp-length", "#tsp-temperature", "#tsp-instances", "#tsp-final"]) $(id).textContent = "–";
  const finished = () => { solving = false; $("#tsp-solve").disabled = false; };
  session.call("nerve.tsp.solve", [], kwargs, { receive_progress: true }).then(
    (raw) => {
      const result = payloadOf(raw);
      show(result);
      $("#tsp-round").textContent = String(result.rounds);
      $("#tsp-final").textContent = numberFormat.format(result.length);
      $("#tsp-state").textContent = "done";
      const gap = result.gap !== undefined ? `, ${result.gap}% above the known optimum` : "";
      message(`Solved: length ${numberFormat.format(result.length)} after ${result.rounds} rounds on ${result.instances} instance(s)${gap}.`, "ok");
      draw();
      finished();
    },
    (error) => {
      $("#tsp-state").textContent = "failed";
      let text = errorText(error);
      if (error?.error === "wamp.error.no_such_procedure") text = `No solver is connected: start \`nerve solver\` (${error.error})`;
      if (error?.error === "wamp.error.not_authorized") text = `${signedIn.authid}'s role (${signedIn.role}) may not start a solve: sign in as an operator (${error.error})`;
      message(`Solve failed: ${text}`);
      finished();
    },
    progress,
  );
}

// -- compute instances --------------------------------------------------------------------------------------
function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.append(td);
  return td;
}

function load(args) {
  const event = args?.[0];
  if (!event || !event.instance) return;
  let entry = instances.get(event.instance);
  if (!entry) {
    const row = document.createElement("tr");
    row.dataset.instance = event.instance;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = event.instance;
    row.append(th);
    for (let i = 0; i < 4; i += 1) cell(row, "").className = i < 3 ? "num" : "";
    entry = { row };
    instances.set(event.instance, entry);
    const rows = [...instances.keys()].sort();
    $("#compute-rows").insertBefore(row, $("#compute-rows").children[rows.indexOf(event.instance)] ?? null);
  }
  entry.seen = Date.now();
  const [cpu, moves, calls, busy] = [...entry.row.querySelectorAll("td")];
  cpu.textContent = `${Number(event.cpu).toFixed(1)}%`;
  moves.textContent = numberFormat.format(event.moves_per_second ?? 0);
  calls.textContent = String(event.calls ?? 0);
  busy.textContent = event.busy ? "busy" : "idle";
  refreshInstances();
}

function refreshInstances() {
  const now = Date.now();
  let live = 0;
  for (const entry of instances.values()) {
    const stale = now - entry.seen > STALE_SECONDS * 1000;
    entry.row.classList.toggle("stale", stale);
    entry.row.title = stale ? "No load published for more than 3 s" : "";
    if (!stale) live += 1;
  }
  $("#compute-count").textContent = String(live);
  $("#compute-empty").hidden = instances.size > 0;
}
setInterval(refreshInstances, 500);

// -- wiring -----------------------------------------------------------------------------------------------
const STATUS_TEXT = {
  connecting: () => "Connecting to the router…",
  joining: () => "Connected; subscribing…",
  connected: () => "Live",
  reconnecting: (status) => `Connection lost; reconnecting (attempt ${status.attempt})…`,
};

connection.onStatus((status) => {
  $("#connection").dataset.state = status.state;
  $("#connection-text").textContent = STATUS_TEXT[status.state]?.(status) ?? status.state;
});
connection.onOpen((session) => session.subscribe("nerve.compute.", load, { match: "prefix" }));
$("#tsp-form").addEventListener("submit", solve);
$("#tsp-signin").addEventListener("submit", signIn);
$("#tsp-signout").addEventListener("click", () => signedIn.signOut());
$("#tsp-generate").addEventListener("click", () => {
  $("#tsp-seed").value = String(Number($("#tsp-seed").value || 0) + 1);
  regenerate();
});
$("#tsp-n").addEventListener("change", regenerate);
$("#tsp-seed").addEventListener("change", regenerate);
window.addEventListener("resize", draw);

regenerate();
connection.start();
window.tsp = { connection, signedIn, instances, get cities() { return cities; } };
