// Small SVG charts drawn here (no library): stacked bars over time, the kill-chain timeline,
// a process tree, a bipartite "who talks to whom" graph.
import { PHASES, el, svg } from "./core.js";

// Buckets of alerts per phase. items: [{t: ms, phase}], from/to: ms, n: buckets.
export function phaseBars(items, from, to, n, { width = 760, height = 200 } = {}) {
  const step = (to - from) / n;
  const buckets = Array.from({ length: n }, () => Object.fromEntries(PHASES.map((p) => [p, 0])));
  for (const it of items) {
    const i = Math.floor((it.t - from) / step);
    if (i >= 0 && i < n && it.phase in buckets[i]) buckets[i][it.phase] += 1;
  }
  const max = Math.max(1, ...buckets.map((b) => PHASES.reduce((s, p) => s + b[p], 0)));
  const left = 34, bottom = 22, top = 8;
  const plotH = height - bottom - top, bw = (width - left - 4) / n;
  const g = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
    "aria-label": "alerts by phase over time" });
  for (const frac of [0, 0.5, 1]) {
    const y = top + plotH * (1 - frac);
    g.append(svg("line", { x1: left, x2: width, y1: y, y2: y, class: "gridline" }));
    g.append(svg("text", { x: left - 4, y: y + 4, class: "axis", "text-anchor": "end" },
      String(Math.round(max * frac))));
  }
  buckets.forEach((b, i) => {
    let y = top + plotH;
    for (const p of PHASES) {
      if (!b[p]) continue;
      const h = (b[p] / max) * plotH;
      y -= h;
      g.append(svg("rect", { x: left + i * bw + 1, y, width: Math.max(1, bw - 2), height: h,
        class: "ph-fill-" + p }, svg("title", {}, `${b[p]} ${p}`)));
    }
  });
  const fmt = (ms) => new Date(ms).toLocaleTimeString(undefined, { hour12: false,
    hour: "2-digit", minute: "2-digit" });
  for (const i of [0, Math.floor(n / 2), n]) {
    g.append(svg("text", { x: Math.min(width - 20, left + i * bw), y: height - 6,
      class: "axis", "text-anchor": i === 0 ? "start" : "middle" }, fmt(from + i * step)));
  }
  return el("div", {}, g, legend());
}

export function legend() {
  return el("div", { class: "legend" }, PHASES.map((p) => el("span", {},
    el("i", { class: "ph-bg-" + p }), p.replace("_", " "))));
}

// The kill chain: one lane per phase, a dot per timeline entry at its time.
export function killChain(timeline, { width = 1200, onPick } = {}) {
  if (!timeline.length) return el("p", { class: "note" }, "No alert kept in the timeline.");
  const lane = 30, left = 190, right = 20, top = 10;
  const height = top + lane * PHASES.length + 26;
  const times = timeline.map((e) => e.time_ns / 1e6);
  const t0 = Math.min(...times), t1 = Math.max(...times);
  const span = Math.max(1, t1 - t0);
  const x = (t) => left + ((t - t0) / span) * (width - left - right);
  const g = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart killchain",
    role: "img", "aria-label": "kill-chain timeline" });
  PHASES.forEach((p, i) => {
    const y = top + i * lane + lane / 2;
    g.append(svg("rect", { x: 0, y: top + i * lane + 2, width, height: lane - 4,
      class: "lane" + (timeline.some((e) => e.phase === p) ? " reached" : "") }));
    g.append(svg("text", { x: 8, y: y + 4, class: "lane-label" }, `${i + 1}. ${p.replace("_", " ")}`));
  });
  let prev = null;
  timeline.forEach((e) => {
    const i = PHASES.indexOf(e.phase);
    const cx = x(e.time_ns / 1e6), cy = top + i * lane + lane / 2;
    if (prev) g.append(svg("line", { x1: prev[0], y1: prev[1], x2: cx, y2: cy, class: "path" }));
    prev = [cx, cy];
  });
  timeline.forEach((e) => {
    const i = PHASES.indexOf(e.phase);
    const dot = svg("circle", { cx: x(e.time_ns / 1e6), cy: top + i * lane + lane / 2, r: 7,
      class: "dot sev-fill-" + e.severity, "data-rule": e.rule },
    svg("title", {}, `${e.time}  ${e.rule}  pid ${e.pid} ${e.exe}`));
    if (onPick) dot.addEventListener("click", () => onPick(e));
    g.append(dot);
  });
  // an attack often fits in a second: then the axis shows milliseconds
  const fmt = (ms) => {
    const d = new Date(ms), p = (n, w = 2) => String(n).padStart(w, "0");
    const s = `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
    return span < 60e3 ? `${s}.${p(d.getMilliseconds(), 3)}` : s;
  };
  g.append(svg("text", { x: left, y: height - 6, class: "axis" }, fmt(t0)));
  g.append(svg("text", { x: width - right, y: height - 6, class: "axis", "text-anchor": "end" },
    fmt(t1)));
  return g;
}

// The process tree of an incident as nested lists: pid, exe, the rules it raised.
export function processTree(nodes, ruleOf) {
  const byPid = new Map(nodes.map((n) => [n.pid, { ...n, children: [] }]));
  const roots = [];
  for (const n of byPid.values()) {
    const parent = n.parent !== null && n.parent !== n.pid ? byPid.get(n.parent) : null;
    if (parent) parent.children.push(n); else roots.push(n);
  }
  // pids are reused: a parent loop must not recurse forever, nor hide its nodes
  const drawn = new Set();
  const item = (n) => {
    drawn.add(n.pid);
    const kids = n.children.filter((c) => !drawn.has(c.pid)).sort((a, b) => a.pid - b.pid);
    return el("li", {},
      el("span", { class: "pid" }, String(n.pid)), " ", el("code", {}, n.exe || "?"),
      n.alerts.length ? el("span", { class: "raised" }, " ← ",
        [...new Set(n.alerts.map(ruleOf))].join(", ")) : null,
      kids.length ? el("ul", {}, kids.map(item)) : null);
  };
  const top = roots.map(item);
  for (const n of byPid.values()) if (!drawn.has(n.pid)) top.push(item(n));
  return el("ul", { class: "tree" }, top);
}

// Who talks to whom: sources (left) to destinations (right), edge width by count.
export function flowGraph(edges, { width = 1200 } = {}) {
  const sources = [...new Set(edges.map((e) => e.src))].sort();
  const dests = [...new Set(edges.map((e) => e.dst))].sort();
  const rowH = 34, top = 20;
  const height = top * 2 + rowH * Math.max(sources.length, dests.length, 1);
  const sx = 330, dx = width - 330;
  const cut = (s) => (s.length > 40 ? s.slice(0, 39) + "…" : s);
  const ys = (list, i) => top + rowH * i + rowH / 2 +
    (rowH * (Math.max(sources.length, dests.length) - list.length)) / 2;
  const g = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart flows", role: "img",
    "aria-label": "connections between containers and addresses" });
  const max = Math.max(1, ...edges.map((e) => e.count));
  for (const e of edges) {
    const y1 = ys(sources, sources.indexOf(e.src)), y2 = ys(dests, dests.indexOf(e.dst));
    const mid = (sx + dx) / 2;
    g.append(svg("path", { d: `M${sx},${y1} C${mid},${y1} ${mid},${y2} ${dx},${y2}`,
      class: "edge " + (e.refused ? "refused" : "ok"),
      "stroke-width": 1.5 + (5 * e.count) / max },
    svg("title", {}, `${e.src} → ${e.dst}: ${e.count} connect(s), ports ${[...e.ports].join(", ")}`)));
  }
  sources.forEach((s, i) => {
    const y = ys(sources, i);
    g.append(svg("circle", { cx: sx, cy: y, r: 8, class: "node src" }));
    g.append(svg("text", { x: sx - 14, y: y + 4, "text-anchor": "end", class: "node-label" }, cut(s), svg("title", {}, s)));
  });
  dests.forEach((d, i) => {
    const y = ys(dests, i);
    g.append(svg("circle", { cx: dx, cy: y, r: 8, class: "node dst" }));
    g.append(svg("text", { x: dx + 14, y: y + 4, class: "node-label" }, cut(d), svg("title", {}, d)));
  });
  return g;
}
