// roxd dashboard: what every page shares. Data comes from the control API's own routes,
// served under /api/ with the session cookie; nothing is loaded from anywhere else.
// Every value from roxd is put in the page as text (textContent), never as HTML: argv, exe
// paths and container names are chosen by whoever runs in the containers.

export const PHASES = ["foothold", "privilege_escalation", "persistence", "lateral_movement",
  "objectives"];
export const SEVERITIES = ["emergency", "alert", "critical", "error", "warning", "notice",
  "info", "debug"];

export const session = { role: "none", csrf: "" };

export class ApiError extends Error {
  constructor(status, reason) {
    super(reason);
    this.status = status;
  }
}

export async function loadSession() {
  const r = await fetch("/session", { credentials: "same-origin" });
  if (r.status === 401) throw new ApiError(401, "not logged in: run `roxctl ui` for a link");
  Object.assign(session, await r.json());
  return session;
}

// GET (or POST with a JSON body) on the control API. Changes carry the CSRF header.
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    headers["X-Roxd-Csrf"] = session.csrf;
    headers["Content-Type"] = "application/json";
  }
  const r = await fetch("/api" + path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: text }; }
  if (!r.ok) {
    if (r.status === 401) showBanner("Session ended: run `roxctl ui` for a new login link.");
    throw new ApiError(r.status, (data && data.error) || `HTTP ${r.status}`);
  }
  return data;
}

export function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") p.set(k, v);
  }
  const s = p.toString();
  return s ? "?" + s : "";
}

// ------------------------------------------------------------------ DOM

// As roxd.text.printable: control characters, line separators and bidi controls as \xNN
// (their UTF-8 bytes), so argv cannot reorder what the page shows ("Trojan source") or hide
// text behind a line break. Applied to every text this page puts in the document.
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const UTF8 = new TextEncoder();

export function printable(text) {
  return String(text).replace(UNSAFE, (c) => [...UTF8.encode(c)]
    .map((b) => "\\x" + b.toString(16).padStart(2, "0")).join(""));
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

function setAttrs(node, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = printable(v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(printable(c)));
  }
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function table(columns, rows, { rowAttrs, empty = "nothing yet" } = {}) {
  const head = el("tr", {}, columns.map((c) => el("th", { class: c.cls }, c.title)));
  const body = rows.map((row) => el("tr", rowAttrs ? rowAttrs(row) : {},
    columns.map((c) => el("td", { class: c.cls }, c.cell(row)))));
  if (!rows.length) body.push(el("tr", {}, el("td", { colspan: columns.length, class: "empty" },
    empty)));
  return el("table", { class: "grid" }, el("thead", {}, head), el("tbody", {}, body));
}

export function badge(text, kind) {
  return el("span", { class: `badge ${kind || ""}` }, text);
}

export function sevBadge(sev) { return badge(sev || "-", "sev-" + (sev || "none")); }
export function phaseBadge(phase) { return badge((phase || "-").replace("_", " "), "ph-" + phase); }

export function card(title, ...children) {
  return el("section", { class: "card" }, title ? el("h2", {}, title) : null, children);
}

export function note(text) { return el("p", { class: "note" }, text); }

export function errorBox(err) {
  return el("div", { class: "error" }, `${err.status ? "HTTP " + err.status + ": " : ""}${err.message}`);
}

export function showBanner(text) {
  const b = document.getElementById("banner");
  b.textContent = text;
  b.hidden = false;
}

export function toast(text, kind = "ok") {
  const t = el("div", { class: `toast ${kind}`, role: "status" }, text);
  document.getElementById("toasts").append(t);
  setTimeout(() => t.remove(), 6000);
}

// ------------------------------------------------------------------ formatting

// Local time as 2026-11-29 18:20:35: sortable, one line.
export function fmtTime(iso) {
  if (!iso) return "-";
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function shortId(id) { return id ? String(id).slice(0, 12) : "-"; }

export function cname(c) {
  if (!c) return "host";
  return (c.name || "").replace(/^\//, "") || shortId(c.id);
}

export function argv(args) { return (args || []).join(" "); }

// ------------------------------------------------------------------ actions

// A change that cannot be taken back casually asks first (a real dialog, not window.confirm,
// so it can say what will happen). Resolves true only on the confirm button.
export function confirmAction(title, message, confirmLabel) {
  const dlg = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = printable(title);
  document.getElementById("confirm-message").textContent = printable(message);
  const ok = document.getElementById("confirm-ok");
  ok.textContent = confirmLabel;
  return new Promise((resolve) => {
    const done = (value) => {
      dlg.removeEventListener("close", onClose);
      resolve(value);
    };
    const onClose = () => done(dlg.returnValue === "ok");
    dlg.addEventListener("close", onClose);
    dlg.returnValue = "";
    dlg.showModal();
  });
}

// A button for a change: hidden behind the admin role, confirmed, reported.
export function actionButton(label, { action, title, message, confirmLabel, run, after,
  danger = true }) {
  const btn = el("button", { class: danger ? "danger" : "", "data-action": action }, label);
  if (session.role !== "admin") {
    btn.disabled = true;
    btn.title = "needs an admin session (roxctl ui as root or a member of api.admin_group)";
    return btn;
  }
  btn.addEventListener("click", async () => {
    if (title && !(await confirmAction(title, message, confirmLabel || label))) return;
    btn.disabled = true;
    try {
      const result = await run();
      toast(`${label}: done`);
      if (after) after(result);
    } catch (err) {
      toast(`${label}: ${err.message}`, "bad");
    } finally {
      btn.disabled = false;
    }
  });
  return btn;
}

// ------------------------------------------------------------------ live streams

// One server-sent event stream per kind for the whole page (browsers keep few connections
// per host): the API's own /v1/alerts/stream and /v1/events/stream with format=sse.
class Live {
  constructor(path, onState) {
    this.path = path;
    this.listeners = new Set();
    this.source = null;
    this.onState = onState;
  }

  subscribe(fn) {
    this.listeners.add(fn);
    if (!this.source) this.open();
    return () => {
      this.listeners.delete(fn);
      if (!this.listeners.size && this.closeWhenIdle) this.close();
    };
  }

  open() {
    this.source = new EventSource("/api" + this.path);
    this.source.onopen = () => this.onState && this.onState(true);
    this.source.onerror = () => this.onState && this.onState(false);
    this.source.onmessage = (e) => this.deliver(e);
    for (const kind of ["alert", "exec", "connect", "exit", "file", "syscall", "seccomp",
      "dropped", "fold_summary", "throttle"]) {
      this.source.addEventListener(kind, (e) => this.deliver(e));
    }
  }

  deliver(e) {
    let item;
    try { item = JSON.parse(e.data); } catch { return; }
    for (const fn of this.listeners) fn(item);
  }

  close() {
    if (this.source) this.source.close();
    this.source = null;
  }
}

function liveState(ok) {
  const dot = document.getElementById("live");
  dot.className = ok ? "live on" : "live off";
  dot.title = ok ? "live: alerts stream open" : "live stream reconnecting";
}

export const liveAlerts = new Live("/v1/alerts/stream?format=sse", liveState);
export const liveConnects = new Live("/v1/events/stream?type=connect&format=sse");
liveConnects.closeWhenIdle = true;
