// roxd dashboard: the page router (#/page/arg?filters) and start-up.
import { api, clear, el, errorBox, loadSession, session, showBanner } from "./core.js";
import * as overview from "./overview.js";
import * as incidents from "./incidents.js";
import * as alerts from "./alerts.js";
import * as containers from "./containers.js";
import * as network from "./network.js";
import * as posture from "./posture.js";
import * as rules from "./rules.js";

const PAGES = { overview, incidents, alerts, containers, network, posture, rules };
let cleanup = null;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  const [page, ...rest] = path.split("/");
  return { page: PAGES[page] ? page : "overview", arg: rest.map(decodeURIComponent).join("/"),
    params: new URLSearchParams(query || "") };
}

async function route() {
  const { page, arg, params } = parseHash();
  if (cleanup) { try { cleanup(); } catch { /* the old page is gone anyway */ } }
  cleanup = null;
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === page);
  }
  const root = clear(document.getElementById("page"));
  root.dataset.page = page;
  root.dataset.ready = "no";
  document.title = `roxd: ${page}`;
  try {
    cleanup = (await PAGES[page].render(root, arg, params)) || null;
  } catch (err) {
    root.append(errorBox(err));
  }
  root.dataset.ready = "yes"; // the browser test waits on this
}

async function start() {
  try {
    await loadSession();
  } catch (err) {
    showBanner(err.message);
    return;
  }
  const role = document.getElementById("role");
  role.textContent = session.role === "admin" ? "admin" : "read-only";
  role.classList.add(session.role === "admin" ? "admin" : "read");
  document.getElementById("logout").addEventListener("click", async () => {
    await fetch("/logout", { method: "POST", credentials: "same-origin",
      headers: { "X-Roxd-Csrf": session.csrf } });
    location.reload();
  });
  api("/v1/status").then((s) => {
    document.getElementById("host").textContent =
      `roxd ${s.version}${s.monitor ? " (monitor mode)" : ""}`;
  }).catch(() => {});
  window.addEventListener("hashchange", route);
  await route();
}

document.addEventListener("DOMContentLoaded", start);
export { el };
