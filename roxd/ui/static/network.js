// Network: who talks to whom. roxd has no communication-map API yet, so this page aggregates
// connect events: those of stored alerts (history) and the live connect events it receives
// while it is open (GET /v1/events/stream?type=connect), by source container and destination.
import { api, card, cname, el, liveConnects, note, qs, table } from "./core.js";
import { flowGraph } from "./charts.js";

const FAMILY_LOOPBACK = /^(127\.|::1$|0\.0\.0\.0$|::$)/;

export async function render(root) {
  const edges = new Map();
  let liveCount = 0;
  const add = (record, fromAlert) => {
    const c = record.connect;
    if (!c) return;
    const src = cname(record.container);
    // a loopback address is the source's own (its network namespace's), not a shared node
    const dst = FAMILY_LOOPBACK.test(c.daddr) ? `${c.daddr} in ${src}` : c.daddr;
    const key = `${src}\u0000${dst}`;
    const e = edges.get(key) || { src, dst, count: 0, ports: new Set(), refused: true,
      alerts: 0, live: 0 };
    e.count += 1 + (record.folded || 0);
    e.ports.add(`${c.dport}`);
    if (c.result === "ok" || c.result === "in_progress") e.refused = false;
    if (fromAlert) e.alerts += 1; else e.live += 1;
    edges.set(key, e);
  };
  const history = await api("/v1/alerts" + qs({ since: "24h", limit: 1000 }));
  for (const a of history.items) if (a.event && a.event.connect) add(a.event, true);

  const graphBox = el("div", { id: "flow-graph" });
  const listBox = el("div", {});
  const counter = el("span", { id: "live-connects" }, "0");
  const draw = () => {
    const list = [...edges.values()].sort((a, b) => b.count - a.count);
    graphBox.replaceChildren(list.length ? flowGraph(list.slice(0, 40))
      : note("No connections seen yet: they appear here as containers connect."));
    listBox.replaceChildren(table([
      { title: "from", cell: (e) => e.src }, { title: "to", cell: (e) => e.dst },
      { title: "ports", cell: (e) => [...e.ports].sort().join(", ") },
      { title: "connects", cls: "num", cell: (e) => String(e.count) },
      { title: "of them alerts", cls: "num", cell: (e) => String(e.alerts) },
      { title: "result", cell: (e) => (e.refused ? "refused or failed" : "connected") },
    ], list, { rowAttrs: (e) => ({ "data-src": e.src, "data-dst": e.dst }),
      empty: "no connections yet" }));
  };
  draw();
  root.append(el("h1", {}, "Network"),
    note("roxd has no container communication map yet (issue 17). This graph aggregates " +
      "connect events: those that raised an alert in the last 24 h, and every connect " +
      "event seen live since this page was opened (it starts empty on each visit). " +
      "Destinations are addresses: roxd does not yet know which container owns an address. " +
      "Accepted connections (the server side) are not seen."),
    card(el("span", {}, "Connections (live: ", counter, " connect events since opened)"),
      graphBox),
    card("Edges", listBox));
  let pending = null;
  return liveConnects.subscribe((ev) => {
    if (ev.type !== "connect") return;
    liveCount += 1;
    counter.textContent = String(liveCount);
    add(ev, false);
    if (!pending) pending = setTimeout(() => { pending = null; draw(); }, 500);
  });
}
