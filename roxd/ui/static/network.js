// Network: the container communication map (GET /v1/netmap, docs/netmap.md): flows from
// containers and the host to other containers, the host, loopback and external prefixes, with
// ports, protocols and results. Reloaded every 5 s and shortly after live connect events.
import { ApiError, api, card, el, liveConnects, note, qs, table } from "./core.js";
import { flowGraph } from "./charts.js";

const label = (ep) => (ep.kind === "container" ? (ep.name || ep.id.slice(0, 12)) : ep.id);

function edgesOf(items) {
  const rows = items.map((f) => {
    const src = label(f.source);
    // loopback is the source's own network namespace, not one node shared by all
    const dst = f.destination.kind === "loopback" ? `loopback in ${src}` : label(f.destination);
    return { src, dst, kind: f.destination.kind, port: `${f.protocol || "?"}/${f.port}`,
      count: f.count, ok: f.succeeded, pending: f.pending, failed: f.failed,
      last: f.last_seen };
  });
  const merged = new Map();  // the graph: one edge per source and destination
  for (const r of rows) {
    const key = `${r.src}\u0000${r.dst}`;
    const e = merged.get(key) || { src: r.src, dst: r.dst, count: 0, ports: new Set(),
      refused: true };
    e.count += r.count;
    e.ports.add(r.port);
    if (r.ok || r.pending) e.refused = false;
    merged.set(key, e);
  }
  return { rows, edges: [...merged.values()].sort((a, b) => b.count - a.count) };
}

export async function render(root) {
  const graphBox = el("div", { id: "flow-graph" });
  const listBox = el("div", {});
  const stats = el("span", { id: "netmap-stats" }, "");
  const draw = (answer) => {
    const { rows, edges } = edgesOf(answer.items);
    graphBox.replaceChildren(edges.length ? flowGraph(edges.slice(0, 40))
      : note("No connections seen yet: they appear here as containers connect."));
    listBox.replaceChildren(table([
      { title: "from", cell: (r) => r.src }, { title: "to", cell: (r) => r.dst },
      { title: "kind", cell: (r) => r.kind }, { title: "port", cell: (r) => r.port },
      { title: "connects", cls: "num", cell: (r) => String(r.count) },
      { title: "ok", cls: "num", cell: (r) => String(r.ok) },
      { title: "pending", cls: "num", cell: (r) => String(r.pending) },
      { title: "failed", cls: "num", cell: (r) => String(r.failed) },
      { title: "last seen", cell: (r) => r.last.slice(0, 19).replace("T", " ") },
    ], rows, { rowAttrs: (r) => ({ "data-src": r.src, "data-dst": r.dst }),
      empty: "no flows yet" }));
    const s = answer.stats;
    stats.textContent = `${s.flows} flows from ${s.connects} connects` +
      (s.flows_evicted ? `, ${s.flows_evicted} evicted` : "");
  };
  let answer;
  try {
    answer = await api("/v1/netmap" + qs({ limit: 2000 }));
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 501) throw err;
    root.append(el("h1", {}, "Network"), note(err.message));
    return null;
  }
  draw(answer);
  root.append(el("h1", {}, "Network"),
    note("Who talks to whom on this host: every outbound connect, aggregated by source, " +
      "destination (a container, the host, loopback or an external prefix), port and " +
      "protocol (roxctl netmap shows the same). Accepted connections from outside the " +
      "host are not traced."),
    card(el("span", {}, "Connections (", stats, ")"), graphBox),
    card("Flows", listBox));
  const reload = () => api("/v1/netmap" + qs({ limit: 2000 })).then(draw, () => {});
  const timer = setInterval(reload, 5000);
  let pending = null;
  const unsubscribe = liveConnects.subscribe((ev) => {
    if (ev.type !== "connect" || pending) return;
    pending = setTimeout(() => { pending = null; reload(); }, 1000);
  });
  return () => { clearInterval(timer); if (pending) clearTimeout(pending); unsubscribe(); };
}
