// Containers: what runs (roxd's view joined with the engine's inventory), each one's
// baseline (state and mode), risk, quarantine, and the quarantine / release actions.
import { actionButton, api, badge, card, cname, el, fmtTime, note, shortId,
  table } from "./core.js";

function baselineCell(b) {
  if (!b) return el("span", { class: "muted" }, "-");
  return el("span", {}, badge(b.state, "bl-" + b.state), " ", badge(b.mode, "mode-" + b.mode),
    el("small", {}, ` ${b.learned} learned, ${b.anomalies} anomalies`));
}

function privileges(inv) {
  if (!inv) return "-";
  const bits = [];
  bits.push(inv.user ? `user ${inv.user}` : "user root (image default)");
  if (inv.privileged) bits.push("privileged");
  if (inv.cap_add.length) bits.push(`+${inv.cap_add.join(",")}`);
  const shared = Object.entries(inv.host_namespaces).filter(([, v]) => v).map(([k]) => k);
  if (shared.length) bits.push(`host ${shared.join(",")}`);
  for (const w of inv.warnings || []) if (!bits.includes(w)) bits.push(w);
  return bits.join(" · ");
}

function actions(c, reload) {
  if (c.mode === "quarantined") {
    return actionButton("Release", { action: "release", title: `Release ${cname(c)}?`,
      message: "Lift the network quarantine: its connections work again.",
      run: () => api(`/v1/containers/${encodeURIComponent(c.id)}/release`, { method: "POST" }),
      after: reload, danger: false });
  }
  if (!c.running) return "";
  return actionButton("Quarantine", { action: "isolate", title: `Quarantine ${cname(c)}?`,
    message: "Cut its network (nftables in its namespace) until you release it; its " +
      "processes keep running.",
    run: () => api(`/v1/containers/${encodeURIComponent(c.id)}/isolate`, { method: "POST",
      body: { reason: "quarantined from the dashboard" } }), after: reload });
}

async function detail(c, inv, baseline) {
  const risk = await api(`/v1/containers/${encodeURIComponent(c.id)}/risk`).catch(() => null);
  const facts = [["id", c.id], ["image", c.image], ["runtime", c.runtime],
    ["mode", c.mode], ["workload", c.workload || "-"]];
  if (c.quarantine) facts.push(["quarantined", `${fmtTime(c.quarantine.since)}: ${c.quarantine.reason}`]);
  if (inv) {
    facts.push(["command", inv.command.join(" ")], ["started", fmtTime(inv.started_at)],
      ["seccomp", inv.seccomp], ["apparmor", inv.apparmor || "-"],
      ["read-only rootfs", String(inv.readonly_rootfs)],
      ["no-new-privileges", String(inv.no_new_privileges)],
      ["mounts", inv.mounts.map((m) => `${m.source || m.type} → ${m.destination}${m.rw ? " (rw)" : ""}`).join("; ") || "-"],
      ["ports", inv.ports.map((p) => `${p.host_ip || ""}:${p.host_port} → ${p.container_port}/${p.protocol}`).join("; ") || "-"]);
  }
  return el("div", { id: "container-detail", "data-container": cname(c) },
    el("h2", {}, cname(c)),
    el("div", { class: "cols" },
      card("Facts", el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k),
        el("dd", {}, v === null || v === undefined || v === "" ? "-" : String(v))]))),
      card(`Risk ${risk ? risk.score : "?"}`, risk ? table([
        { title: "factor", cell: (r) => r.factor },
        { title: "points", cls: "num", cell: (r) => `${r.points} / ${r.cap}` },
        { title: "why", cell: (r) => r.detail || "" },
      ], risk.reasons, { empty: "no risk factor" }) : note("not available"),
      baseline ? note(`Baseline ${baseline.workload}: ${baseline.state}, mode ` +
        `${baseline.mode}, ${baseline.learned} executables learned.`) : null)));
}

export async function render(root, arg) {
  const [containers, inventory, baselines] = await Promise.all([
    api("/v1/containers"),
    api("/v1/inventory/containers").catch((err) => ({ error: err })),
    api("/v1/baselines").catch((err) => ({ error: err })),
  ]);
  const invById = new Map(Array.isArray(inventory) ? inventory.map((r) => [r.id, r]) : []);
  const blByKey = new Map(baselines.baselines ? baselines.baselines.map((b) => [b.workload, b]) : []);
  const reload = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  const rows = [...containers].sort((a, b) => (b.risk - a.risk) || cname(a).localeCompare(cname(b)));
  const grid = table([
    { title: "container", cell: (c) => el("a", { href: `#/containers/${encodeURIComponent(c.id)}` },
      cname(c)) },
    { title: "image", cell: (c) => c.image || "-" },
    { title: "risk", cls: "num", cell: (c) => String(c.risk) },
    { title: "alerts", cls: "num", cell: (c) => el("a", {
      href: `#/alerts?container=${encodeURIComponent(c.id)}` }, String(c.alerts)) },
    { title: "mode", cell: (c) => el("span", { class: "mode" }, badge(c.mode, "mode-" + c.mode),
      c.running ? "" : badge("not running", "muted")) },
    { title: "baseline", cell: (c) => baselineCell(blByKey.get(c.workload)) },
    { title: "privileges", cell: (c) => privileges(invById.get(c.id)) },
    { title: "", cell: (c) => actions(c, reload) },
  ], rows, { rowAttrs: (c) => ({ "data-container": cname(c), "data-mode": c.mode,
    class: arg && (c.id === arg || cname(c) === arg) ? "sel" : "" }),
    empty: "no containers" });
  root.append(el("h1", {}, "Containers"), card(null, grid,
    note("Mode: enforce (rules act), monitor (roxd in dry run: alerts only), quarantined " +
      "(network cut). Baseline: learning or locked, and what happens to new executables " +
      "once locked (docs/baselines.md)."),
    inventory.error ? note(`Inventory not available: ${inventory.error.message}`) : null,
    baselines.error ? note(`Baselines: ${baselines.error.message}`) : null));
  const chosen = arg && containers.find((c) => c.id === arg || cname(c) === arg);
  if (chosen) {
    root.append(await detail(chosen, invById.get(chosen.id), blByKey.get(chosen.workload)));
  } else if (arg) {
    root.append(note(`No running or quarantined container ${shortId(arg)}.`));
  }
  return null;
}
