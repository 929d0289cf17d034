// Posture: the CIS Docker Benchmark results of the last scan (or a scan now), by section.
import { api, badge, card, el, fmtTime, note, qs, table } from "./core.js";

const ORDER = ["WARN", "NOTE", "INFO", "PASS"];
// the benchmark's section titles (roxd/posture/model.py SECTIONS)
const SECTIONS = { 1: "Host Configuration", 2: "Docker daemon configuration",
  3: "Docker daemon configuration files", 4: "Container Images and Build File",
  5: "Container Runtime", 6: "Docker Security Operations" };

export async function render(root, _arg, params) {
  const refresh = params.get("refresh") === "1";
  const show = params.get("result") || "";
  const report = await api("/v1/posture" + qs({ refresh: refresh ? "true" : "" }));
  const counts = el("div", { class: "stats" }, ORDER.map((r) => el("a", {
    class: `stat res-${r}` + (show === r ? " active" : ""),
    href: `#/posture${show === r ? "" : "?result=" + r}` },
  el("div", { class: "stat-value" }, String(report.counts[r] || 0)),
  el("div", { class: "stat-label" }, r))),
  el("div", { class: "stat" }, el("div", { class: "stat-value" }, String(report.score)),
    el("div", { class: "stat-label" }, "score")));
  const sections = new Map();
  for (const c of report.checks) {
    if (show && c.result !== show) continue;
    if (!sections.has(c.section)) sections.set(c.section, []);
    sections.get(c.section).push(c);
  }
  const rescan = el("a", { class: "button", href: "#/posture?refresh=1" }, "Scan now");
  root.append(el("h1", {}, "Posture"),
    note(`${report.benchmark}: scan of ${fmtTime(new Date(report.finished * 1000).toISOString())}` +
      ` on ${report.host.hostname || "this host"}. Score: +1 per scored PASS, −1 per WARN ` +
      "(docker-bench-security's). NOTE: could not be decided here, with the reason."),
    el("p", {}, rescan), counts);
  for (const [section, checks] of sections) {
    checks.sort((a, b) => ORDER.indexOf(a.result) - ORDER.indexOf(b.result));
    root.append(card(`${section}. ${SECTIONS[section] || ""}`, table([
      { title: "check", cell: (c) => c.id },
      { title: "result", cell: (c) => badge(c.result, "res-" + c.result) },
      { title: "title", cell: (c) => el("span", {}, c.title,
        c.result === "WARN" && c.remediation ? el("small", { class: "remedy" },
          "Fix: " + c.remediation) : null) },
      { title: "where / why", cell: (c) => [c.reason || "", c.items.length ?
        el("ul", { class: "items" }, c.items.slice(0, 8).map((i) => el("li", {}, i)),
          c.items.length > 8 ? el("li", {}, `… ${c.items.length - 8} more`) : null) : null] },
    ], checks, { rowAttrs: (c) => ({ "data-check": c.id, "data-result": c.result }) })));
  }
  if (!sections.size) root.append(note("No check with that result."));
  return null;
}
