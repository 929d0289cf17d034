// Incidents: the list, and one incident as a kill chain across the five phases (a lane per
// phase, a dot per alert at its time), its timeline, the process tree and actions taken.
import { PHASES, api, argv, badge, card, el, fmtTime, liveAlerts, note, phaseBadge, qs,
  sevBadge, shortId, table } from "./core.js";
import { killChain, processTree } from "./charts.js";

function chain(incident) {
  const reached = new Map(incident.phases.map((p) => [p.phase, p.first_seen]));
  return el("ol", { class: "chain" }, PHASES.map((p) => el("li", {
    class: reached.has(p) ? "reached ph-bg-" + p : "",
  }, el("b", {}, p.replace("_", " ")),
  el("small", {}, reached.has(p) ? fmtTime(reached.get(p)) : "not reached"))));
}

async function detail(id) {
  const inc = await api(`/v1/incidents/${encodeURIComponent(id)}`);
  const ruleOf = new Map(inc.timeline.map((e) => [e.alert_id, e.rule]));
  const picked = el("div", { class: "picked" });
  const show = (e) => picked.replaceChildren(el("div", { class: "pickbox" },
    phaseBadge(e.phase), " ", sevBadge(e.severity), " ", el("b", {}, e.rule), " ",
    `pid ${e.pid} `, el("code", {}, argv(e.args) || e.exe), " ",
    el("a", { href: `#/alerts/${e.alert_id}` }, "alert details")));
  const timeline = table([
    { title: "time", cls: "time", cell: (e) => fmtTime(e.time) },
    { title: "phase", cell: (e) => phaseBadge(e.phase) },
    { title: "severity", cell: (e) => sevBadge(e.severity) },
    { title: "rule", cell: (e) => el("a", { href: `#/alerts/${e.alert_id}` }, e.rule) },
    { title: "container", cell: (e) => e.container_name || shortId(e.container) },
    { title: "pid", cls: "num", cell: (e) => String(e.pid) },
    { title: "command", cell: (e) => el("code", {}, argv(e.args) || e.exe) },
    { title: "linked by", cell: (e) => e.link },
    { title: "actions", cell: (e) => e.actions.join(", ") },
  ], inc.timeline, { rowAttrs: (e) => ({ "data-rule": e.rule }) });
  const actions = table([
    { title: "time", cls: "time", cell: (a) => fmtTime(a.time) },
    { title: "action", cell: (a) => a.action },
    { title: "outcome", cell: (a) => badge(a.outcome, "out-" + a.outcome) },
    { title: "reason", cell: (a) => a.reason || "" },
  ], inc.actions, { empty: "alerts only: no kill, isolation or seccomp action" });
  return el("div", { id: "incident", "data-incident": inc.id },
    el("h2", {}, `Incident ${shortId(inc.id)} `, badge(inc.state, "state-" + inc.state), " ",
      sevBadge(inc.severity)),
    el("p", { class: "meta" },
      `${inc.alerts} alerts · containers: `,
      inc.containers.map((c) => c.name || shortId(c.id)).join(", "),
      ` · first ${fmtTime(inc.first_seen)} · last ${fmtTime(inc.last_seen)}`,
      inc.timeline_dropped ? ` · ${inc.timeline_dropped} alerts not kept in the timeline` : ""),
    chain(inc),
    card("Kill chain", killChain(inc.timeline, { onPick: show }), picked,
      note("Each dot is an alert at its time, in its phase's lane; the line follows the " +
        "order they happened. Click a dot.")),
    el("div", { class: "cols" },
      card("Process tree", processTree(inc.process_tree, (id) => ruleOf.get(id) || shortId(id)),
        note("The processes that connect the alerts; the root is where the chain stopped " +
          "(a container runtime, a login daemon, or an unreadable parent).")),
      card("Actions", actions)),
    card("Timeline", timeline));
}

export async function render(root, arg, params) {
  const state = params.get("state") || "";
  const list = await api("/v1/incidents" + qs({ state, limit: 200 }));
  const filters = el("p", { class: "filters" }, "state: ", ["", "open", "closed"].map((s) =>
    el("a", { href: `#/incidents${s ? "?state=" + s : ""}`, class: s === state ? "active" : "" },
      s || "all")));
  const rows = table([
    { title: "incident", cell: (i) => el("a", { href: `#/incidents/${i.id}` }, shortId(i.id)) },
    { title: "state", cell: (i) => badge(i.state, "state-" + i.state) },
    { title: "severity", cell: (i) => sevBadge(i.severity) },
    { title: "phases", cell: (i) => i.phases.map((p) => phaseBadge(p.phase)) },
    { title: "containers", cell: (i) => i.containers.map((c) => c.name || shortId(c.id)).join(", ") },
    { title: "alerts", cls: "num", cell: (i) => String(i.alerts) },
    { title: "first seen", cls: "time", cell: (i) => fmtTime(i.first_seen) },
    { title: "last seen", cls: "time", cell: (i) => fmtTime(i.last_seen) },
  ], list.items, { rowAttrs: (i) => ({ "data-incident": i.id, class: i.id === arg ? "sel" : "" }),
    empty: "no incidents" });
  const chosen = arg || (list.items[0] && list.items[0].id);
  root.append(el("h1", {}, "Incidents"),
    note("Alerts of one attack tied together by process ancestry, network and time " +
      "(docs/incidents.md)."), filters, card(null, rows));
  if (chosen) root.append(await detail(chosen));
  // a new alert may extend an incident: offer a refresh rather than redraw under the reader
  const badgeNew = el("button", { class: "refresh", hidden: true,
    onclick: () => window.dispatchEvent(new HashChangeEvent("hashchange")) }, "new alerts: refresh");
  root.prepend(badgeNew);
  return liveAlerts.subscribe((item) => { if (item.type === "alert") badgeNew.hidden = false; });
}
