// Rules: the loaded set, each rule's effective action on this host, enable / disable.
import { PHASES, actionButton, api, badge, card, el, note, phaseBadge, qs, sevBadge,
  table } from "./core.js";

export async function render(root, _arg, params) {
  const phase = params.get("phase") || "";
  const text = (params.get("q") || "").toLowerCase();
  const state = params.get("state") || "";
  const set = await api("/v1/rules" + qs({ phase, enabled: state ? String(state === "enabled")
    : "" }));
  const reload = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  const rules = set.rules.filter((r) => !text || r.id.toLowerCase().includes(text)
    || (r.name || "").toLowerCase().includes(text)
    || (r.description || "").toLowerCase().includes(text));
  const form = el("form", { class: "filters" },
    el("input", { name: "q", placeholder: "search id, name, description", value: text }),
    el("select", { name: "phase" }, el("option", { value: "" }, "any phase"),
      PHASES.map((p) => el("option", { value: p, selected: p === phase }, p))),
    el("select", { name: "state" }, ["", "enabled", "disabled"].map((s) =>
      el("option", { value: s, selected: s === state }, s || "enabled or not"))),
    el("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) p.set(k, v);
    location.hash = "#/rules" + (p.toString() ? "?" + p : "");
  });
  const toggle = (r) => (r.enabled
    ? actionButton("Disable", { action: "disable-rule", title: `Disable ${r.id}?`,
      message: "It raises no alert and takes no action until enabled again (kept across " +
        "reloads until roxd restarts).",
      run: () => api("/v1/rules/disable", { method: "POST", body: { ids: [r.id] } }),
      after: reload })
    : actionButton("Enable", { action: "enable-rule", danger: false,
      run: () => api("/v1/rules/enable", { method: "POST", body: { ids: [r.id] } }),
      after: reload }));
  root.append(el("h1", {}, "Rules"), form, card(null, table([
    { title: "rule", cell: (r) => el("span", {}, el("b", {}, r.id),
      el("small", { class: "desc" }, r.description || r.name || "")) },
    { title: "phase", cell: (r) => phaseBadge(r.phase) },
    { title: "severity", cell: (r) => sevBadge(r.severity) },
    { title: "event", cell: (r) => r.event },
    { title: "state", cell: (r) => badge(r.enabled ? "enabled" : "disabled",
      r.enabled ? "on" : "off") },
    { title: "effective action on this host", cell: (r) => r.effective },
    { title: "", cell: toggle },
  ], rules, { rowAttrs: (r) => ({ "data-rule": r.id, "data-enabled": String(r.enabled) }),
    empty: "no rule matches" }),
  note(`${rules.length} of ${set.rules.length} rules; rule set ${String(set.version).slice(0, 12)}` +
    ` from ${set.files.length} files. "Effective" says what a match does here: monitor mode, ` +
    "host kills off and missing kernel features turn kills into alerts.")));
  return null;
}
