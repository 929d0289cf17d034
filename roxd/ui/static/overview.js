// Overview: health and drops, containers ranked by risk, alerts by phase over time, the
// newest incidents. Live: the chart and the counters move with the alerts stream.
import { api, badge, card, cname, el, liveAlerts, note, phaseBadge, qs, sevBadge,
  shortId, table, fmtTime } from "./core.js";
import { phaseBars } from "./charts.js";

const WINDOWS = { "1h": [3600e3, 30], "24h": [86400e3, 24], "7d": [7 * 86400e3, 28] };

// Every alert of the window (the store pages 1000 at a time; at most 5 pages drawn).
async function alertsSince(since) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < 5; page++) {
    const r = await api("/v1/alerts" + qs({ since, limit: 1000, cursor }));
    items.push(...r.items);
    cursor = r.next_cursor;
    if (!cursor) return { items, capped: false };
  }
  return { items, capped: true };
}

function stat(label, value, kind, id) {
  return el("div", { class: `stat ${kind || ""}`, id },
    el("div", { class: "stat-value" }, String(value)), el("div", { class: "stat-label" }, label));
}

export async function render(root, _arg, params) {
  const win = WINDOWS[params.get("window")] ? params.get("window") : "1h";
  const [status, health, containers, incidents, alerts] = await Promise.all([
    api("/v1/status"),
    fetch("/api/v1/health", { credentials: "same-origin" }).then((r) => r.json()),
    api("/v1/containers"),
    api("/v1/incidents" + qs({ limit: 5 })).catch(() => ({ items: [] })),
    alertsSince(win),
  ]);
  const drops = status.drops;
  const overflow = Object.values(drops.stream_overflow || {}).reduce((a, b) => a + b, 0);
  const dropTotal = drops.total + overflow + drops.decode_errors + drops.handler_errors;
  const alertCount = stat("alerts since start", status.alerts.total, "", "stat-alerts");
  const stats = el("div", { class: "stats" },
    stat("health", health.ok ? "ok" : "problems", health.ok ? "good" : "bad", "stat-health"),
    stat("events / s", status.events.per_second, ""),
    alertCount,
    stat("drops", dropTotal, dropTotal ? "bad" : "good", "stat-drops"),
    stat("containers", status.containers.running, ""),
    stat("quarantined", status.containers.quarantined,
      status.containers.quarantined ? "warn" : ""),
    stat("rules enabled", `${status.rules.enabled}/${status.rules.count}`, ""));

  const problems = health.ok ? null : el("ul", { class: "problems" },
    (health.problems || []).map((p) => el("li", {}, p)));

  const ranked = [...containers].sort((a, b) => (b.risk - a.risk) || (b.alerts - a.alerts));
  const riskTable = table([
    { title: "container", cell: (c) => el("a", { href: `#/containers/${encodeURIComponent(c.id)}` },
      cname(c)) },
    { title: "risk", cell: (c) => el("span", { class: "riskbar" },
      el("meter", { min: 0, max: 100, low: 30, high: 60, optimum: 0, value: c.risk }),
      ` ${c.risk}`) },
    { title: "alerts", cls: "num", cell: (c) => String(c.alerts) },
    { title: "mode", cell: (c) => badge(c.mode, "mode-" + c.mode) },
  ], ranked.slice(0, 10), { rowAttrs: (c) => ({ "data-container": cname(c) }),
    empty: "no containers running" });

  // alerts by phase: fold summaries and throttle markers are not alerts of a phase
  const [span, n] = WINDOWS[win];
  const now = Date.now();
  const points = alerts.items.filter((a) => a.rule && a.rule.phase)
    .map((a) => ({ t: Date.parse(a.time), phase: a.rule.phase }));
  const chartBox = el("div", { id: "phase-chart" });
  const draw = () => {
    chartBox.replaceChildren(phaseBars(points, Date.now() - span, Date.now(), n));
  };
  draw();
  const picker = el("span", { class: "picker" }, Object.keys(WINDOWS).map((w) =>
    el("a", { href: `#/overview?window=${w}`, class: w === win ? "active" : "" }, w)));

  const byCause = Object.entries(drops.by_cause.ringbuf_full || {});
  const dropRows = [
    ...byCause.map(([k, v]) => [`ring buffer full: ${k}`, v]),
    ...Object.entries(drops.stream_overflow || {}).map(([k, v]) => [`stream overflow: ${k}`, v]),
    ["decode errors", drops.decode_errors], ["handler errors", drops.handler_errors],
  ];
  const dropTable = table([
    { title: "where", cell: (r) => r[0] }, { title: "count", cls: "num", cell: (r) => String(r[1]) },
  ], dropRows);

  const incTable = table([
    { title: "incident", cell: (i) => el("a", { href: `#/incidents/${i.id}` }, shortId(i.id)) },
    { title: "state", cell: (i) => badge(i.state, "state-" + i.state) },
    { title: "severity", cell: (i) => sevBadge(i.severity) },
    { title: "phases", cell: (i) => i.phases.map((p) => phaseBadge(p.phase)) },
    { title: "containers", cell: (i) => i.containers.map((c) => c.name || shortId(c.id)).join(", ") },
    { title: "last seen", cls: "time", cell: (i) => fmtTime(i.last_seen) },
  ], incidents.items, { empty: "no incidents" });

  root.append(
    el("h1", {}, "Overview"),
    stats, problems || "",
    el("div", { class: "cols" },
      card("Containers by risk", riskTable,
        note("Risk 0–100: alerts in incidents, phases reached, privileges and mounts " +
          "(docs/incidents.md).")),
      card(el("span", {}, "Alerts by phase ", picker), chartBox,
        note(`${points.length} alerts in the last ${win}` +
          (alerts.capped ? " (the first 5000 drawn)" : "") + "; live."))),
    el("div", { class: "cols" },
      card("Newest incidents", incTable),
      card("Drops and errors", dropTable,
        note(`Kernel events lost to a full ring buffer, live streams that fell behind, ` +
          `records roxd could not decode. Uptime ${Math.round(status.uptime_s)} s.`))),
  );

  const unsubscribe = liveAlerts.subscribe((item) => {
    if (item.type !== "alert" || !item.rule) return;
    points.push({ t: Date.parse(item.time) || now, phase: item.rule.phase });
    const v = alertCount.querySelector(".stat-value");
    v.textContent = String(Number(v.textContent) + 1);
    draw();
  });
  return unsubscribe;
}
