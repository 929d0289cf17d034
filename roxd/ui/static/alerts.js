// Alerts: filters (the API's own: container, rule, phase, severity, since), the list (live
// while no time filter is set), and one alert with its process ancestry and actions.
import { PHASES, SEVERITIES, actionButton, api, argv, badge, card, cname, el, fmtTime,
  liveAlerts, note, phaseBadge, qs, sevBadge, shortId, table } from "./core.js";

const FILTERS = ["container", "rule", "phase", "severity", "since"];
const KILL_FRESH_MS = 60e3;

function filterForm(params) {
  const input = (name, placeholder) => el("input", { name, placeholder,
    value: params.get(name) || "" });
  const select = (name, options) => el("select", { name },
    el("option", { value: "" }, `any ${name}`),
    options.map((o) => el("option", { value: o, selected: params.get(name) === o }, o)));
  const form = el("form", { class: "filters", id: "alert-filters" },
    input("container", "container (name, id, host)"), input("rule", "rule id"),
    select("phase", PHASES), select("severity", SEVERITIES.slice(0, 7)),
    input("since", "since (15m, 2h, 7d)"), el("button", { type: "submit" }, "Filter"),
    el("a", { href: "#/alerts" }, "clear"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const p = new URLSearchParams();
    for (const k of FILTERS) if (data.get(k)) p.set(k, data.get(k));
    location.hash = "#/alerts" + (p.toString() ? "?" + p : "");
  });
  return form;
}

function row(a) {
  const tr = el("tr", { "data-alert": a.id, "data-rule": a.rule.id, class: "click" },
    el("td", { class: "time" }, fmtTime(a.time)), el("td", {}, sevBadge(a.rule.severity)),
    el("td", {}, phaseBadge(a.rule.phase)), el("td", {}, a.rule.id),
    el("td", {}, cname(a.container)), el("td", { class: "num" }, String(a.process.pid)),
    el("td", {}, el("code", {}, argv(a.process.args) || a.process.exe)),
    el("td", {}, a.actions.filter((x) => x.action !== "alert")
      .map((x) => `${x.action}: ${x.outcome}`).join(", ")),
    el("td", { class: "num" }, a.count > 1 ? `×${a.count}` : ""));
  tr.addEventListener("click", () => { location.hash = `#/alerts/${a.id}`; });
  return tr;
}

function ancestry(p) {
  // nearest first in the record; drawn from the oldest ancestor down to the process
  const chain = [...(p.ancestors || [])].reverse();
  return el("ol", { class: "ancestry" },
    chain.map((a) => el("li", {}, el("span", { class: "pid" }, String(a.pid)), " ",
      el("code", {}, argv(a.args) || a.exe))),
    el("li", { class: "self" }, el("span", { class: "pid" }, String(p.pid)), " ",
      el("code", {}, argv(p.args) || p.exe)));
}

function eventFacts(ev) {
  const facts = [["type", ev.type]];
  if (ev.exec) facts.push(["file", ev.exec.filename], ["fileless", String(ev.exec.fileless)]);
  if (ev.connect) facts.push(["destination", `${ev.connect.daddr}:${ev.connect.dport}`],
    ["result", `${ev.connect.result}${ev.connect.errno ? " (errno " + ev.connect.errno + ")" : ""}`]);
  if (ev.file) facts.push(["operation", ev.file.operation], ["path", ev.file.path],
    ["result", ev.file.result]);
  if (ev.syscall) facts.push(["syscall", ev.syscall.name], ["result", ev.syscall.result]);
  if (ev.baseline) facts.push(["baseline", `${ev.baseline.workload}: ${ev.baseline.verdict}`]);
  return facts;
}

function dl(pairs) {
  return el("dl", { class: "facts" }, pairs.map(([k, v]) => [el("dt", {}, k),
    el("dd", {}, v === null || v === undefined || v === "" ? "-" : v)]));
}

async function detail(id) {
  const a = await api(`/v1/alerts/${encodeURIComponent(id)}`);
  const [rule, incidents] = await Promise.all([
    api(`/v1/rules/${encodeURIComponent(a.rule.id)}`).catch(() => null),
    api("/v1/incidents" + qs({ container: a.container ? a.container.id : "host", limit: 50 }))
      .catch(() => ({ items: [] })),
  ]);
  const incident = incidents.items.find((i) => i.timeline.some((e) => e.alert_id === a.id));
  const p = a.process;
  // The API kills whichever process holds the pid now: after a minute the alerted process
  // may be gone and its pid reused, so the button is only offered for fresh alerts.
  const fresh = Date.now() - Date.parse(a.last_time || a.time) < KILL_FRESH_MS;
  const kill = actionButton("Kill process", { action: "kill", title: `Kill pid ${p.pid}?`,
    message: `SIGKILL pid ${p.pid} (${p.exe}) by pidfd. The alert is ` +
      `${Math.round((Date.now() - Date.parse(a.time)) / 1000)} s old: if that process has ` +
      "exited, whatever process holds the pid now is killed. Protected processes are refused.",
    run: () => api("/v1/actions/kill", { method: "POST", body: { pid: p.pid } }) });
  if (!fresh) {
    kill.disabled = true;
    kill.title = "the alert is over a minute old: its pid may belong to another process " +
      "now (check, then roxctl kill PID)";
  }
  const buttons = [kill];
  if (a.container) {
    buttons.push(actionButton("Quarantine container", { action: "isolate",
      title: `Quarantine ${cname(a.container)}?`,
      message: "Cut its network (nftables in its namespace) until it is released.",
      run: () => api(`/v1/containers/${encodeURIComponent(a.container.id)}/isolate`,
        { method: "POST", body: { reason: `dashboard: alert ${a.id}` } }) }));
  }
  if (rule && rule.enabled) {
    buttons.push(actionButton("Disable rule", { action: "disable-rule",
      title: `Disable ${rule.id}?`, message: "No alert or action from it until enabled again " +
        "or roxd restarts.", run: () => api("/v1/rules/disable", { method: "POST",
        body: { ids: [rule.id] } }) }));
  }
  return el("div", { id: "alert", "data-alert": a.id },
    el("h2", {}, sevBadge(a.rule.severity), " ", phaseBadge(a.rule.phase), " ",
      el("span", { id: "alert-rule" }, a.rule.id)),
    el("p", { class: "meta" }, a.rule.name || "", rule && rule.description ?
      el("span", { class: "desc" }, rule.description) : ""),
    el("div", { class: "actions" }, buttons),
    el("div", { class: "cols" },
      card("What happened", dl([
        ["time", fmtTime(a.time)], ["container", cname(a.container)],
        ["image", a.container ? a.container.image : "host"],
        ["count", a.count > 1 ? `${a.count} (${fmtTime(a.first_time)} – ${fmtTime(a.last_time)})` : "1"],
        ["MITRE", (a.rule.mitre || []).join(", ")],
        ["incident", incident ? el("a", { href: `#/incidents/${incident.id}` },
          shortId(incident.id)) : "-"],
        ...eventFacts(a.event)])),
      card("Process and ancestry", dl([["pid", String(p.pid)], ["uid", String(p.uid)],
        ["exe", el("code", {}, p.exe)], ["command", el("code", {}, argv(p.args))]]),
      ancestry(p), note("Oldest ancestor first (at most 8 are kept)."))),
    card("Actions taken", table([
      { title: "action", cell: (x) => x.action },
      { title: "outcome", cell: (x) => badge(x.outcome, "out-" + x.outcome) },
      { title: "in kernel", cell: (x) => (x.in_kernel ? "yes" : "no") },
      { title: "reason", cell: (x) => x.reason || "" },
    ], a.actions)));
}

export async function render(root, arg, params) {
  root.append(el("h1", {}, "Alerts"), filterForm(params));
  if (arg) {
    root.append(await detail(arg));
    return null;
  }
  const filters = Object.fromEntries(FILTERS.map((k) => [k, params.get(k)]));
  const page = await api("/v1/alerts" + qs({ ...filters, limit: 200 }));
  const tbl = table([
    { title: "time", cls: "time", cell: () => "" }, { title: "severity", cell: () => "" },
    { title: "phase", cell: () => "" }, { title: "rule", cell: () => "" },
    { title: "container", cell: () => "" }, { title: "pid", cell: () => "" },
    { title: "command", cell: () => "" }, { title: "actions", cell: () => "" },
    { title: "", cell: () => "" }], [], { empty: "no alerts match" });
  const body = tbl.querySelector("tbody");
  if (page.items.length) body.replaceChildren(...page.items.map(row));
  tbl.id = "alert-list";
  // older pages: the API's cursor, appended below
  let cursor = page.next_cursor;
  const more = el("button", { hidden: !cursor, id: "alerts-older" }, "Older alerts");
  more.addEventListener("click", async () => {
    more.disabled = true;
    const next = await api("/v1/alerts" + qs({ ...filters, limit: 200, cursor }));
    body.append(...next.items.map(row));
    cursor = next.next_cursor;
    more.hidden = !cursor;
    more.disabled = false;
  });
  root.append(card(null, tbl, el("p", {}, more), note(`Newest first, from the ` +
    `${page.source}; ${params.get("since") ? "time-filtered: not live" : "live"}.`)));
  if (params.get("since")) return null;
  // live: the stream takes the same filters (not the time ones)
  const live = { container: filters.container, rule: filters.rule, phase: filters.phase,
    severity: filters.severity };
  const sevRank = (s) => SEVERITIES.indexOf(s);
  return liveAlerts.subscribe((a) => {
    if (a.type !== "alert" || !a.rule) return;
    if (live.rule && a.rule.id !== live.rule) return;
    if (live.phase && a.rule.phase !== live.phase) return;
    if (live.severity && sevRank(a.rule.severity) > sevRank(live.severity)) return;
    if (live.container && ![a.container && a.container.id, a.container && a.container.name,
      a.container ? null : "host"].some((v) => v && String(v).replace(/^\//, "")
      .startsWith(live.container))) return;
    const empty = body.querySelector("td.empty");
    if (empty) empty.parentElement.remove();
    body.prepend(row(a));
  });
}
