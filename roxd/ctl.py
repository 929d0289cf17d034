"""`roxctl`: drive a running roxd through its control socket.

    roxctl status                          version, uptime, programs, events/s, drops, rules
    roxctl health                          exit 0 when healthy (Kubernetes exec probes)
    roxctl containers                      containers with mode, alerts, risk, quarantine
    roxctl risk show CONTAINER|WORKLOAD    the risk score and every reason for it
    roxctl risk list                       every workload's risk, most at risk first
    roxctl events --type exec              live events (Ctrl-C to stop; --count N)
    roxctl alerts list --since 1h          recent alerts; alerts show ID; alerts follow
    roxctl incidents list | show ID        alerts of one attack: phases, timeline, process tree
    roxctl rules list | show ID | validate PATH... | reload | enable ID... | disable --tag T
    roxctl kill PID                        SIGKILL by pidfd
    roxctl isolate CONTAINER               network quarantine; release CONTAINER lifts it
    roxctl posture [--refresh] [--format docker-bench]   CIS Docker Benchmark results
    roxctl netmap [--since 1h] [--format table|json|dot] who talks to whom
    roxctl inventory [containers|images] [--all]         what runs and what it is made of
    roxctl top [-b] [-d S] [-s KEY]        live view of the containers (roxd/ctl_top.py)
    roxctl ... -o table|wide|json|yaml     output formats (--json = -o json), before or after
                                           the command, as --socket

Exit codes (roxd/ctl_output.py): 0 ok, 1 refused or failed, 2 usage, 3 roxd not reachable,
4 not found, 5 permission denied, 6 not available here, 130 interrupted.
roxctl never imports the engine: only the standard library, roxd.api.client,
roxd.vocabulary (the words it shares with the engine) and roxd.text (how untrusted text is
shown); `rules validate` with no daemon is the one exception (roxd/ctl_validate.py).

Everything roxctl prints that came from roxd goes through `term()` (roxd/text.py's
printable()): a container's argv, exe path or comm can hold ESC sequences, newlines and
non-UTF-8 bytes, and they are shown as \\xNN, never interpreted by the terminal. JSON is
ASCII (control characters as \\u00NN), YAML escapes them too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from roxd import __version__, ctl_netmap
from roxd.api.client import ApiClient, ApiFailure, Unreachable, default_socket, path_of
from roxd.ctl_fleet import add_fleet_parser, duration
from roxd.ctl_output import (
    EXIT_DENIED,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Out,
    OutputError,
    add_global_flags_everywhere,
    exit_code_for_status,
    exit_codes_text,
    output_format,
    term,
)
from roxd.vocabulary import EVENT_KINDS, PHASES, SEVERITIES

SEVERITY_COLORS = {"emergency": "1;31", "alert": "1;31", "critical": "31", "error": "31",
                   "warning": "33", "notice": "36", "info": "", "debug": "2"}
MODE_COLORS = {"quarantined": "1;31", "monitor": "33", "enforce": "32"}


# ---------------------------------------------------------------------------- commands


def cmd_health(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    """Exit 0 when roxd is healthy (programs attached, rules loaded), 1 with the problems
    otherwise, 3 when it does not answer: an exec probe for Kubernetes (docs/kubernetes.md)."""
    try:
        h = api.get("/v1/health")
    except ApiFailure as exc:
        if exc.status != 503 or not isinstance(exc.body, dict):
            raise
        h = exc.body
    if out.json:
        out.dump(h)
    elif h.get("ok"):
        out.print("ok")
    else:
        out.print("unhealthy: " + term("; ".join(map(str, h.get("problems", [])))))
    return EXIT_OK if h.get("ok") else EXIT_ERROR


def cmd_status(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    s = api.get("/v1/status")
    if out.json:
        out.dump(s)
        return EXIT_OK
    drops = s["drops"]
    ringbuf = drops["by_cause"]["ringbuf_full"]
    features = ", ".join(f"{k}={'yes' if v['available'] else 'no'}"
                         for k, v in s["features"].items() if isinstance(v, dict))
    rows = [
        ("version", s["version"]),
        ("pid", s["pid"]),
        ("uptime", _duration(s["uptime_s"])),
        ("mode", "monitor (dry run)" if s["monitor"] else "enforce"),
        ("kernel", f"{s['features']['kernel']}: {features}"),
        ("programs", f"{s['programs']['count']} attached"),
        ("events", f"{s['events']['total']} ({s['events']['per_second']}/s)"),
        ("alerts", f"{s['alerts']['total']} ({s['alerts']['per_second']}/s)"),
        ("drops", f"{drops['total']}" + (" (" + ", ".join(f"{k} {v}" for k, v in
                                                          ringbuf.items()) + ")"
                                         if drops["total"] else "")),
        ("rules", f"{s['rules']['enabled']}/{s['rules']['count']} enabled, version "
                  f"{(s['rules']['version'] or '-')[:12]}"),
        ("containers", f"{s['containers']['running']} running, "
                       f"{s['containers']['quarantined']} quarantined"
                       + (f", {s['containers']['unattributed_events']} unattributed events"
                          if s["containers"].get("unattributed_events") else "")),
        ("socket", s["api"].get("socket", "")),
    ]
    learned = s.get("baselines")
    if learned:  # [baselines] enabled: how many workloads are learning, locked, enforcing
        rows.insert(-1, ("baselines", (
            f"{learned.get('workloads', 0)} workloads, {learned.get('workloads_locked', 0)} "
            f"locked, {learned.get('workloads_enforcing', 0)} enforcing, "
            f"{learned.get('anomalies', 0)} anomalies")))
    policy = s.get("policy") or {}
    if policy.get("network_enforcement"):  # network baselines in enforce mode on this host
        kernel = policy.get("network_kernel") or {}
        rows.insert(-1, ("net baselines", (
            f"{policy['network_enforcement']['effective']}, "
            f"{policy.get('network_cgroups', 0)} cgroups enforced, "
            f"{kernel.get('refused_connect', 0) + kernel.get('refused_sendmsg', 0)} refused")))
    startup = s.get("startup") or {}
    if startup.get("ready_s") is not None:  # where the start went: the longest stage
        longest = max(startup.get("stages") or [{}], key=lambda st: st.get("wall_s", 0))
        origin = (startup.get("bpf_object") or {}).get("origin")
        rows.insert(3, ("start-up", f"{startup['ready_s']} s to READY" + (
            f" (longest: {longest['name']} {longest['wall_s']} s, cpu {longest['cpu_s']} s)"
            if longest.get("name") else "") + (f"; eBPF {origin}" if origin else "")))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        text = term(value)
        if key == "drops" and drops["total"]:
            text = out.paint(text, "1;31")
        out.print(f"{out.paint(key.ljust(width), '1')}  {text}")
    if args.verbose:
        out.print()
        out.table(["RULE", "EFFECTIVE ACTION"], sorted(s["rules"]["effective_actions"].items()))
    return EXIT_OK


def cmd_containers(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    if args.container:
        c = api.get(path_of("/v1/containers", args.container))
        out.dump(c) if out.json else _show_container(out, c)
        return EXIT_OK
    items = api.get("/v1/containers")
    if out.json:
        out.dump(items)
        return EXIT_OK
    items.sort(key=lambda c: -(c.get("risk") or 0))  # most at risk first (stable: by name)
    if out.wide:
        out.table(["NAME", "ID", "IMAGE", "RUNTIME", "NAMESPACE", "POD", "MODE", "ALERTS",
                   "RISK", "EVENTS", "BASELINE", "QUARANTINE"],
                  [(c["name"], c["id"], c["image"], c["runtime"], c.get("namespace"),
                    c.get("pod"), c["mode"], c["alerts"], c.get("risk"), c.get("events"),
                    "/".join((c.get("baseline") or {}).get(k, "") for k in ("state", "mode"))
                    or "-", (c["quarantine"] or {}).get("reason")) for c in items],
                  [None, None, None, None, None, None,
                   lambda v: out.paint(v, MODE_COLORS.get(v.strip(), ""))])
        return EXIT_OK
    # pods only where some container is in one (a Docker-only host keeps its narrow table)
    pods = any(c.get("pod") or c.get("namespace") for c in items)
    head = ["NAMESPACE", "POD"] if pods else []
    out.table([*head, "NAME", "ID", "IMAGE", "MODE", "ALERTS", "RISK", "QUARANTINE"],
              [((c.get("namespace"), c.get("pod")) if pods else ())
               + (c["name"], c["id"][:12], c["image"], c["mode"], c["alerts"], c.get("risk"),
                  (c["quarantine"] or {}).get("reason")) for c in items],
              [*([None, None] if pods else []), None, None, None,
               lambda v: out.paint(v, MODE_COLORS.get(v.strip(), ""))])
    return EXIT_OK


def cmd_risk(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    if args.risk_cmd == "list":
        rows = api.get("/v1/risk/workloads")
        if out.json:
            out.dump(rows)
            return EXIT_OK
        out.table(["WORKLOAD", "RISK", "CONTAINERS", "RISKIEST"],
                  [(w["workload"], w["score"], len(w["containers"]),
                    (w["riskiest"] or "")[:12]) for w in rows])
        return EXIT_OK
    # a workload key always has a kind prefix (image:, k8s:, compose:, label:) and container
    # names never hold a colon: the argument says which it is
    if ":" in args.target:
        r = api.get("/v1/risk/workload", {"workload": args.target})
        if out.json:
            out.dump(r)
            return EXIT_OK
        out.print(f"{out.paint('risk', '1')}  {term(r['score'])}  (workload "
                  f"{term(r['workload'])}: riskiest container "
                  f"{term((r['riskiest'] or '')[:12])} of {len(r['containers'])})")
        out.table(["FACTOR", "POINTS", "CAP", "CONTAINER", "WHY"],
                  [(x["factor"], x["points"], x["cap"], x.get("container", "")[:12],
                    x["detail"]) for x in r["reasons"]])
        return EXIT_OK
    r = api.get(path_of("/v1/containers", args.target, "risk"))
    if out.json:
        out.dump(r)
        return EXIT_OK
    out.print(f"{out.paint('risk', '1')}  {term(r['score'])}  (the sum of the factors below; "
              f"{term(r['container'][:12])}; configuration: {term(r['config'])})")
    out.table(["FACTOR", "POINTS", "CAP", "WHY"],
              [(x["factor"], x["points"], x["cap"], x["detail"]) for x in r["reasons"]])
    return EXIT_OK


def _show_container(out: Out, c: dict[str, Any]) -> None:
    for key in ("id", "name", "image", "runtime", "mode", "alerts", "running"):
        out.print(f"{key:<10} {term(c[key])}")
    for key in ("namespace", "pod", "pod_uid", "runtime_namespace"):
        if c.get(key):  # only what the runtime said (pods, containerd namespaces)
            out.print(f"{key:<10} {term(c[key])}")
    for key in ("labels", "pod_labels"):
        if c.get(key):
            pairs = ", ".join(f"{k}={v}" for k, v in sorted(c[key].items()))
            out.print(f"{key:<10} {term(pairs)}")
    if c["quarantine"]:
        out.print(f"{'quarantine':<10} since {c['quarantine']['since']:.0f}: "
                  f"{term(c['quarantine']['reason'])}")


def _stream_params(args: argparse.Namespace) -> dict[str, Any]:
    return {"max_items": args.count, "max_seconds": args.seconds}


def cmd_events(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    params = {"type": ",".join(args.type) if args.type else None, "container": args.container,
              "pid": args.pid, **_stream_params(args)}
    for item in api.stream("/v1/events/stream", params):
        if out.json:
            out.line(item)
        elif item.get("type") == "dropped":
            out.print(out.paint(f"... {term(item['count'])} events missed (reader too slow)",
                                "33"))
        else:
            out.print(_event_line(out, item))
    return EXIT_OK


def _event_line(out: Out, e: dict[str, Any]) -> str:
    c = e.get("container")
    proc = e.get("process", {})
    where = term((c.get("name") or c["id"][:12]) if c else "host")
    detail = " ".join(proc.get("args") or []) or proc.get("exe", "")
    if e.get("type") == "connect":
        conn = e["connect"]
        detail = f"{proc.get('exe')} -> {conn['daddr']}:{conn['dport']} {conn['result']}"
    elif e.get("type") == "exit":
        detail = f"{proc.get('exe')} exit {e['exit']['code']}"
    return f"{term(e.get('time', ''))[11:23]}  " \
           f"{out.paint(term(e.get('type', '?')).ljust(7), '36')} " \
           f"{where:<20} {term(proc.get('pid', '')):>7}  {term(detail)}"


def _alert_params(args: argparse.Namespace) -> dict[str, Any]:
    return {"container": args.container, "rule": args.rule, "phase": args.phase,
            "severity": args.severity}


def _alert_rows(out: Out, alerts: list[dict[str, Any]]) -> None:
    wide = ["IMAGE", "MITRE", "EXE"] if out.wide else []  # -o wide: what and where it ran
    out.table(["TIME", "SEVERITY", "PHASE", "RULE", "CONTAINER", "PID", "ACTIONS", *wide, "ID"],
              [(a["time"][:19].replace("T", " "), a["rule"]["severity"], a["rule"]["phase"],
                a["rule"]["id"], (a["container"] or {}).get("name") or
                ((a["container"] or {}).get("id", "")[:12] or "host"),
                a["process"]["pid"],
                ",".join(f"{x['action']}:{x['outcome']}" for x in a["actions"]),
                *([(a["container"] or {}).get("image") or "-",
                   ",".join(a["rule"].get("mitre") or []) or "-", a["process"].get("exe")]
                  if out.wide else []), a["id"])
               for a in alerts],
              [None, lambda v: out.paint(v, SEVERITY_COLORS.get(v.strip(), ""))])


def cmd_alerts(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    if args.alerts_cmd == "show":
        a = api.get(path_of("/v1/alerts", args.id))
        if out.json:
            out.dump(a)
        else:
            _alert_rows(out, [a])
            out.print()
            out.print("process: " + term(" ".join(a["process"].get("args")
                                                   or [a["process"]["exe"]])))
            out.print("exe:     " + term(a["process"]["exe"]))
            for anc in a["process"].get("ancestors", []):
                out.print(f"  <- {term(anc['pid'])} {term(anc['exe'])}: "
                          f"{term(' '.join(anc.get('args') or []))}")
            for act in a["actions"]:
                out.print(f"action: {term(act['action'])} {term(act['outcome'])} "
                          f"{term(act['reason'])}")
        return EXIT_OK
    if args.alerts_cmd == "follow":
        for item in api.stream("/v1/alerts/stream", {**_alert_params(args),
                                                     **_stream_params(args)}):
            if out.json:
                out.line(item)
            elif item.get("type") == "dropped":
                out.print(out.paint(f"... {term(item['count'])} alerts missed", "33"))
            else:
                _alert_rows(out, [item])
        return EXIT_OK
    page = api.get("/v1/alerts", {**_alert_params(args), "since": args.since,
                                   "until": args.until, "limit": args.limit})
    if out.json:
        out.dump(page["items"])
    else:
        _alert_rows(out, page["items"])
    return EXIT_OK


def _clock(stamp: Any) -> str:
    """HH:MM:SS.mmm of an RFC 3339 time."""
    return term(stamp)[11:23] if stamp else "-"


def _where(c: dict[str, Any]) -> str:
    return term(c.get("name") or (c["id"][:12] if c["id"] != "host" else "host"))


def _incident_id(api: ApiClient, ref: str) -> str:
    """A full id, or the one incident whose id starts with `ref` (as `list` shows them)."""
    if len(ref) == 32:
        return ref
    found = [i["id"] for i in api.get("/v1/incidents", {"limit": 1000})["items"]
             if i["id"].startswith(ref.lower())]
    if len(found) != 1:
        raise ApiFailure(404, f"no incident {ref!r}" if not found
                         else f"{len(found)} incidents start with {ref!r}: give more digits")
    return found[0]


def cmd_incidents(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    if args.incidents_cmd == "show":
        inc = api.get(path_of("/v1/incidents", _incident_id(api, args.id)))
        out.dump(inc) if out.json else _show_incident(out, inc)
        return EXIT_OK
    items = api.get("/v1/incidents", {"state": args.state, "container": args.container,
                                      "since": args.since, "limit": args.limit})["items"]
    if out.json:
        out.dump(items)
        return EXIT_OK
    out.table(["ID", "STATE", "SEVERITY", "PHASES", "CONTAINERS", "ALERTS", "FIRST SEEN",
               "LAST SEEN"],
              [(i["id"][:12], i["state"], i["severity"],
                ">".join(p["phase"] for p in i["phases"]),
                ",".join(_where(c) for c in i["containers"]), i["alerts"],
                i["first_seen"][:19].replace("T", " "), i["last_seen"][:19].replace("T", " "))
               for i in items],
              [None, None, lambda v: out.paint(v, SEVERITY_COLORS.get(v.strip(), ""))])
    return EXIT_OK


def _show_incident(out: Out, inc: dict[str, Any]) -> None:
    """The timeline, one section per phase in kill-chain order, then actions and the
    process tree that connects the alerts."""
    rows = [
        ("incident", inc["id"]),
        ("state", inc["state"] + (f" (closed {inc['closed_at']})" if inc["closed_at"] else "")),
        ("severity", f"{inc['severity']} (worst alert {inc.get('worst_alert_severity')}, "
                     f"{len(inc['phases'])} phases)"),
        ("containers", ", ".join(f"{_where(c)} ({term(c['id'][:12])}, {term(c.get('image'))})"
                                 for c in inc["containers"])),
        ("seen", f"{inc['first_seen']} .. {inc['last_seen']}, {inc['alerts']} alerts"),
        ("phases", " > ".join(f"{p['phase']} {_clock(p['first_seen'])}"
                              for p in inc["phases"])),
    ]
    for key, value in rows:
        out.print(f"{out.paint(key.ljust(10), '1')}  {term(value)}")
    by_phase: dict[str, list[dict[str, Any]]] = {}
    for e in inc["timeline"]:
        by_phase.setdefault(e["phase"], []).append(e)
    for p in inc["phases"]:
        out.print()
        out.print(out.paint(f"== {term(p['phase'])} (first {_clock(p['first_seen'])}) ==", "1"))
        for e in by_phase.get(p["phase"], []):
            cmd = " ".join(e.get("args") or []) or e["exe"]
            severity = out.paint(term(e["severity"]).ljust(8),
                                 SEVERITY_COLORS.get(e["severity"], ""))
            where = term(e.get("container_name") or e["container"][:12])
            note = term(f"[{e['link']}; {','.join(e['actions'])}; {e['alert_id'][:8]}]")
            out.print(f"  {_clock(e['time'])}  {severity} {term(e['rule'])}  {where}  "
                      f"pid {term(e['pid'])}  {term(e['exe'])}  {term(cmd)}  {note}")
    if inc.get("timeline_dropped"):
        out.print(f"  ... {term(inc['timeline_dropped'])} more alerts not kept in the timeline")
    if inc["actions"]:
        out.print()
        out.print(out.paint("actions", "1"))
        for a in inc["actions"]:
            out.print(f"  {_clock(a['time'])}  {term(a['action'])} {term(a['outcome'])}"
                      f"{' (in kernel)' if a.get('in_kernel') else ''}  {term(a.get('reason'))}"
                      f"  alert {term(a['alert_id'][:8])}")
    if inc["process_tree"]:
        out.print()
        out.print(out.paint("process tree", "1"))
        _print_tree(out, inc)


def _print_tree(out: Out, inc: dict[str, Any]) -> None:
    rules = {e["alert_id"]: e["rule"] for e in inc["timeline"]}
    nodes = {n["pid"]: n for n in inc["process_tree"]}
    children: dict[Any, list[int]] = {}
    for n in inc["process_tree"]:
        parent = n["parent"] if n["parent"] in nodes else None
        children.setdefault(parent, []).append(n["pid"])

    def walk(pid: int, prefix: str, last: bool, top: bool) -> None:
        n = nodes[pid]
        hits = ", ".join(rules.get(a, a[:8]) for a in n["alerts"])
        branch = "" if top else ("`- " if last else "|- ")
        out.print(f"  {prefix}{branch}{term(pid)} {term(n['exe'])}"
                  + (f"  <- {term(hits)}" if hits else ""))
        kids = children.get(pid, [])
        for i, kid in enumerate(kids):
            walk(kid, prefix + ("" if top else ("   " if last else "|  ")), i == len(kids) - 1,
                 False)

    for root in children.get(None, []):
        walk(root, "", True, True)


def cmd_rules(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    sub = args.rules_cmd
    if sub == "show":
        r = api.get(path_of("/v1/rules", args.id))
        if out.json:
            out.dump(r)
        else:
            for key in ("id", "name", "phase", "severity", "mitre", "event", "enabled",
                        "effective", "source", "line", "description"):
                out.print(f"{key:<12}{term(r.get(key))}")
        return EXIT_OK
    if sub == "validate":
        from roxd.ctl_validate import cmd_validate

        return cmd_validate(api, out, args)
    if sub == "reload":
        try:
            result = api.post("/v1/rules/reload")
        except ApiFailure as exc:
            if exc.status == 422 and isinstance(exc.body, dict):
                if out.json:
                    out.dump(exc.body)
                for e in exc.body.get("errors", []):
                    print(term(f"roxctl: {e['file']}:{e['line'] or ''}: {e['message']}"),
                          file=sys.stderr)
                print("roxctl: reload failed; the previous rule set keeps running",
                      file=sys.stderr)
                return EXIT_ERROR
            raise
        if out.json:
            out.dump(result)
        else:
            out.print(term(f"reloaded: {result['rules']} rules, version "
                           f"{result['version'][:12]}"))
        return EXIT_OK
    if sub == "top":
        result = api.get("/v1/rules/top", {"since": args.since, "limit": args.limit})
        if out.json:
            out.dump(result)
            return EXIT_OK
        out.print(term(f"since {result['since']}"))
        out.table(["RULE", "RAISED", "EMITTED", "FOLDED", "THROTTLED", "LAST"],
                  [(r["rule"], str(r["raised"]), str(r["emitted"]), str(r["folded"]),
                    str(r["throttled"]), r["last_minute"][:16].replace("T", " "))
                   for r in result["rules"]])
        return EXIT_OK
    if sub in ("enable", "disable"):
        result = api.post(f"/v1/rules/{sub}", {"ids": args.ids, "tags": args.tag})
        if out.json:
            out.dump(result)
        else:
            out.print(term(f"{sub}d {len(result['changed'])} of {len(result['matched'])} "
                           f"matching rules" + (": " + ", ".join(result["changed"])
                                                if result["changed"] else "")))
        return EXIT_OK
    params = {"phase": args.phase, "tag": args.tag_filter,
              "enabled": {"enabled": True, "disabled": False}.get(args.state)}
    result = api.get("/v1/rules", params)
    if out.json:
        out.dump(result["rules"])
        return EXIT_OK
    out.table(["ID", "PHASE", "SEVERITY", "MITRE", "EFFECTIVE"],
              [(r["id"], r["phase"], r["severity"], ",".join(r["mitre"]), r["effective"])
               for r in result["rules"]],
              [None, None, lambda v: out.paint(v, SEVERITY_COLORS.get(v.strip(), ""))])
    return EXIT_OK


def cmd_kill(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    result = api.post("/v1/actions/kill", {"pid": args.pid})
    out.dump(result) if out.json else out.print(f"killed {args.pid} ({term(result['comm'])}): "
                                                f"{term(result['reason'])}")
    return EXIT_OK


def cmd_isolate(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    body = {"reason": args.reason} if args.reason else {}
    result = api.post(path_of("/v1/containers", args.container, "isolate"), body)
    c = result["container"]
    others = result.get("quarantined_with") or []
    with_others = (f" with {len(others)} container(s) sharing its network namespace: "
                   + ", ".join(o[:12] for o in others)) if others else ""
    out.dump(result) if out.json else out.print(
        f"isolated {term(c['name'] or c['id'][:12])}{term(with_others)}")
    return EXIT_OK


def cmd_release(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    result = api.post(path_of("/v1/containers", args.container, "release"))
    c = result["container"]
    out.dump(result) if out.json else out.print(f"released {term(c['name'] or c['id'][:12])}")
    return EXIT_OK


def cmd_seccomp(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    if args.seccomp_cmd == "status":
        result = api.get("/v1/seccomp")
    elif args.seccomp_cmd == "profile":
        result = api.get("/v1/seccomp/profile", {"target": args.target, "kill": args.kill})
        if not args.report:
            # exactly the profile document: `> p.json` is what `docker run --security-opt
            # seccomp=p.json` takes; what would only be commentary goes to stderr
            for warning in result.get("warnings") or []:
                print(term(f"roxctl: warning: {warning}"), file=sys.stderr)
            if out.format == "yaml":
                out.dump(result["profile"])
            else:
                out.print(json.dumps(result["profile"], indent=2))
            return EXIT_OK
    else:
        body: dict[str, Any] = {"target": args.target}
        if args.seccomp_cmd == "apply" and args.kill:
            body["kill"] = True
        result = api.post(f"/v1/seccomp/{args.seccomp_cmd}", body)
    out.dump(result)
    return EXIT_OK


def _when(ns: int | None) -> str:
    if not ns:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


def cmd_baselines(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    verb = args.baselines_cmd
    if verb == "export":
        doc = api.get("/v1/baselines/export",
                      {"workload": args.workload} if args.workload else None)
        out.print(json.dumps(doc, indent=2))  # always JSON: it is the import format
        return EXIT_OK
    if verb == "import":
        try:
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
            doc = json.loads(text)
        except (OSError, ValueError) as exc:
            print(f"roxctl: cannot read {args.file}: {exc}", file=sys.stderr)
            return EXIT_ERROR
        result = api.post("/v1/baselines/import", doc)
        out.dump(result) if out.json else out.print(
            f"imported {len(result['imported'])} baseline(s): " + ", ".join(result["imported"]))
        return EXIT_OK
    if verb == "list":
        result = api.get("/v1/baselines")
        if out.json:
            out.dump(result)
            return EXIT_OK
        out.table(["WORKLOAD", "STATE", "MODE", "LEARNED", "ANOMALIES", "LOCKED"],
                  [(b["workload"], b["state"],
                    b["mode"] if b.get("enforced_mode", b["mode"]) == b["mode"]
                    else f"{b['mode']} (break-glass: {b['enforced_mode']})",
                    b["learned"], b["anomalies"],
                    _when(b["locked_at_ns"])) for b in result["baselines"]],
                  [None, None, lambda v: out.paint(v, MODE_COLORS.get(v.strip(), ""))])
        return EXIT_OK
    if verb == "show":
        b = api.get("/v1/baselines/show", {"workload": args.workload})
        if out.json:
            out.dump(b)
            return EXIT_OK
        for key in ("workload", "state", "effective_mode", "image", "anomalies"):
            out.print(f"{key:<15} {term(b[key])}")
        if b.get("breakglass_until_ns"):
            out.print(f"{'break-glass':<15} until {_when(b['breakglass_until_ns'])}: enforce "
                      f"acts as monitor ({term(b.get('breakglass_reason') or 'no reason')})")
        out.print(f"{'learning since':<15} {_when(b['first_seen_ns'])}")
        out.print(f"{'locked':<15} {_when(b['locked_at_ns'])}")
        out.table(["EXECUTABLE", "COUNT", "FIRST", "LAST", "PARENTS"],
                  [(path, p["count"], _when(p["first_ns"]), _when(p["last_ns"]),
                    ", ".join(p["parents"])) for path, p in b["processes"].items()])
        if b.get("peers"):
            out.print()
            out.table(["NETWORK", "COUNT", "FIRST", "LAST"],
                      [(peer, p["count"], _when(p["first_ns"]), _when(p["last_ns"]))
                       for peer, p in b["peers"].items()])
        if b.get("file_dirs"):
            out.print()
            out.table(["WRITTEN DIRECTORY", "COUNT", "FIRST", "LAST"],
                      [(f"write {d}", p["count"], _when(p["first_ns"]), _when(p["last_ns"]))
                       for d, p in b["file_dirs"].items()])
        return EXIT_OK
    body: dict[str, Any] = {}
    if verb == "lock" and args.all:
        body["all"] = True
    elif args.workload:
        body["workload"] = args.workload
    if verb == "mode":
        body["mode"] = args.mode
    if verb == "accept":
        body["path"] = args.path
    if verb == "breakglass":
        if args.duration is None:
            print("roxctl: baselines breakglass needs --for DURATION (90s, 30m, 2h; 0s ends "
                  "an exemption)", file=sys.stderr)
            return EXIT_ERROR
        body["duration_s"] = args.duration
        if args.reason:
            body["reason"] = args.reason
    out.dump(api.post(f"/v1/baselines/{verb}", body))
    return EXIT_OK


RESULT_COLORS = {"PASS": "32", "WARN": "1;31", "INFO": "34", "NOTE": "33"}


def cmd_posture(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"refresh": True if args.refresh else None,
                              "format": args.format}
    report = api.get("/v1/posture", params)
    if out.json or args.format is not None:
        out.dump(report)
        return EXIT_OK
    out.table(["ID", "RESULT", "CONCERNS", "CHECK", "REASON"],
              [(c["id"], c["result"], c["concerns"], c["title"], c["reason"])
               for c in report["checks"]],
              [None, lambda v: out.paint(v, RESULT_COLORS.get(v.strip(), ""))])
    counts = report["counts"]
    out.print()
    out.print(term(f"{report['benchmark']}: {len(report['checks'])} checks, "
                   + ", ".join(f"{counts[k]} {k}" for k in ("PASS", "WARN", "INFO", "NOTE"))
                   + f", score {report['score']}"))
    if args.verbose:
        for c in report["checks"]:
            if c["result"] == "WARN":
                out.print(term(f"{c['id']} remediation: {c['remediation']}"))
    return EXIT_OK


def cmd_inventory(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    if args.what == "images":
        images = api.get("/v1/inventory/images")
        if out.json:
            out.dump(images)
            return EXIT_OK
        out.table(["TAGS", "ID", "CREATED", "SIZE", "CONTAINERS", "USER"],
                  [(",".join(i["tags"]) or "<none>", i["id"].removeprefix("sha256:")[:12],
                    i["created"], _size(i["size"]), i["containers"], i["user"] or "-")
                   for i in images])
        return EXIT_OK
    items = api.get("/v1/inventory/containers", {"all": True if args.all else None})
    if out.json:
        out.dump(items)
        return EXIT_OK
    out.table(["NAME", "ID", "IMAGE", "USER", "PRIVILEGED", "HOST NS", "CAPS", "PORTS",
               "WRITABLE HOST MOUNTS", "SECCOMP", "LISTENING", "STARTED"],
              [(c["name"], c["id"][:12], c["image"], c["user"] or "(image)",
                "yes" if c["privileged"] else "no",
                ",".join(k for k, v in c["host_namespaces"].items() if v) or "-",
                " ".join([*("+" + x for x in c["cap_add"]), *("-" + x for x in c["cap_drop"])])
                or "-",
                ",".join(f"{p['host_ip'] or '*'}:{p['host_port']}->{p['container_port']}/"
                         f"{p['protocol']}" for p in c["ports"] if p["host_port"]) or "-",
                ",".join(m["source"] for m in c["mounts"] if m["writable_host_path"]) or "-",
                c["seccomp"], _listening(c), c["started_at"] or c["state"])
               for c in items],
              [None, None, None, None,
               lambda v: out.paint(v, "1;31" if v.strip() == "yes" else "")])
    return EXIT_OK


def _listening(c: dict[str, Any]) -> str:
    """Observed listening sockets: tcp/8080(nc) udp/[::]:53 ... (address unless any)."""
    shown = []
    for s in c.get("listening") or ():
        where = "" if s["address"] in ("0.0.0.0", "::") else f"{s['address']}:"
        who = f"({s['process']})" if s.get("process") else ""
        shown.append(f"{s['protocol']}/{where}{s['port']}{who}")
    return " ".join(shown) or "-"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB"):
        if value < 1000:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1000
    return f"{value:.1f}GB"


def cmd_version(api: ApiClient, out: Out, _args: argparse.Namespace) -> int:
    server: str | None
    try:
        server = api.get("/v1/status")["version"]
    except (Unreachable, ApiFailure) as exc:
        server = None
        note = str(exc)
    if out.json:
        out.dump({"client": __version__, "server": server})
    else:
        out.print(f"roxctl {__version__}")
        out.print(f"roxd   {term(server)}" if server else f"roxd   unknown ({term(note)})")
    return EXIT_OK


def cmd_completion(_api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    if args.shell == "zsh":
        from roxd.ctl_completion import zsh_completion

        out.print(zsh_completion(build_parser()))
    else:
        out.print(bash_completion(build_parser()))
    return EXIT_OK


def cmd_man(_api: ApiClient, out: Out, _args: argparse.Namespace) -> int:
    from roxd.ctl_manpage import manpage

    out.stream.write(manpage(build_parser()))
    return EXIT_OK


def cmd_top(api: ApiClient, out: Out, args: argparse.Namespace) -> int:
    from roxd.ctl_top import run_top

    return run_top(api, out, args)


# ---------------------------------------------------------------------------- parser


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--container", help="name, id or id prefix, or `host`")
    p.add_argument("--rule", help="rule id")
    p.add_argument("--phase", choices=PHASES)
    p.add_argument("--severity", choices=SEVERITIES, help="this severity or more severe")


def _stream_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=int, metavar="N", help="stop after N items")
    p.add_argument("--seconds", type=float, metavar="S", help="stop after S seconds")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="roxctl", description="Drive roxd through its control "
                                "socket. --socket, -o/--output and --json may also follow "
                                "the subcommand.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=exit_codes_text())
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("status", help="version, uptime, programs, events/s, drops, rules")
    s.add_argument("-v", "--verbose", action="store_true", help="also each rule's effect")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("health", help="exit 0 when roxd is healthy (a probe for Kubernetes)")
    s.set_defaults(func=cmd_health)

    s = sub.add_parser("containers", help="containers with mode, alerts and quarantine")
    s.add_argument("container", nargs="?", help="show one container")
    s.set_defaults(func=cmd_containers)

    s = sub.add_parser("risk", help="risk scores of containers and workloads, with reasons")
    rksub = s.add_subparsers(dest="risk_cmd", required=True, metavar="SUBCOMMAND")
    r = rksub.add_parser("show", help="every factor and its points (they sum to the score)")
    r.add_argument("target", metavar="CONTAINER|WORKLOAD",
                   help="container name, id or unique id prefix; or a workload key "
                        "(image:REPO/NAME, k8s:NS/OWNER/CONTAINER, compose:PROJECT/SERVICE, "
                        "label:VALUE)")
    rksub.add_parser("list", help="every workload's risk, most at risk first")
    s.set_defaults(func=cmd_risk)

    s = sub.add_parser("events", help="live events (Ctrl-C to stop)")
    s.add_argument("--type", action="append", choices=EVENT_KINDS, help="repeatable")
    s.add_argument("--container", help="name, id or id prefix, or `host`")
    s.add_argument("--pid", type=int)
    s.add_argument("-f", "--follow", action="store_true",
                   help="follow (the default: events are not stored, only streamed)")
    _stream_args(s)
    s.set_defaults(func=cmd_events)

    s = sub.add_parser("alerts", help="list, show or follow alerts")
    asub = s.add_subparsers(dest="alerts_cmd", required=True, metavar="SUBCOMMAND")
    a = asub.add_parser("list", help="recent alerts, newest first")
    _filters(a)
    a.add_argument("--since", help="RFC 3339 time or age (30s, 15m, 2h, 7d)")
    a.add_argument("--until", help="RFC 3339 time or age")
    a.add_argument("--limit", type=int, default=100)
    a = asub.add_parser("show", help="one alert")
    a.add_argument("id")
    a = asub.add_parser("follow", help="live alerts")
    _filters(a)
    _stream_args(a)
    s.set_defaults(func=cmd_alerts)

    s = sub.add_parser("incidents", help="alerts of one attack tied together: list, show")
    isub = s.add_subparsers(dest="incidents_cmd", required=True, metavar="SUBCOMMAND")
    i = isub.add_parser("list", help="incidents, most recently active first")
    i.add_argument("--state", choices=("open", "closed"))
    i.add_argument("--container", help="name, id or id prefix, or `host`")
    i.add_argument("--since", help="last seen at or after: RFC 3339 time or age (30s, 2h, 7d)")
    i.add_argument("--limit", type=int, default=100)
    i = isub.add_parser("show", help="one incident: phases, timeline, actions, process tree")
    i.add_argument("id", help="incident id or a unique prefix of it")
    s.set_defaults(func=cmd_incidents)

    s = sub.add_parser("rules", help="list, show, top, validate, reload, enable, disable rules")
    rsub = s.add_subparsers(dest="rules_cmd", required=True, metavar="SUBCOMMAND")
    r = rsub.add_parser("list", help="loaded rules and their effective action")
    r.add_argument("--phase", choices=PHASES)
    r.add_argument("--tag", dest="tag_filter", help="phase, MITRE id or tag")
    r.add_argument("--state", choices=("enabled", "disabled"))
    r = rsub.add_parser("show", help="one rule")
    r.add_argument("id")
    r = rsub.add_parser("validate", help="check rules files and directories (by roxd, merged "
                                         "with its loaded rules; locally when it is not running)")
    r.add_argument("paths", nargs="+", metavar="PATH", help="a rules file or a directory of "
                                                             "*.toml files")
    r.add_argument("--standalone", action="store_true",
                   help="check the files alone, not merged with roxd's loaded rules")
    r.add_argument("--offline", action="store_true",
                   help="never ask roxd: check with the local rule loader (the files alone)")
    rsub.add_parser("reload", help="reload the rule files (a bad file keeps the running set)")
    r = rsub.add_parser("top", help="alerts per rule: raised, emitted, folded, throttled")
    r.add_argument("--since", default="1h", help="RFC 3339 time or an age: 30m, 2h, 1d "
                   "(default 1h; minute resolution, at most a day back)")
    r.add_argument("--limit", type=int, default=20, help="at most this many rules (default 20)")
    for verb in ("enable", "disable"):
        r = rsub.add_parser(verb, help=f"{verb} rules by id or --tag (until roxd restarts)")
        r.add_argument("ids", nargs="*", metavar="ID")
        r.add_argument("--tag", action="append", default=[],
                       help="phase, MITRE id or tag; repeatable")
    s.set_defaults(func=cmd_rules)

    s = sub.add_parser("kill", help="SIGKILL a process by pidfd")
    s.add_argument("pid", type=int)
    s.set_defaults(func=cmd_kill)
    s = sub.add_parser("isolate", help="network-quarantine a container")
    s.add_argument("container", help="name, id or unique id prefix")
    s.add_argument("--reason")
    s.set_defaults(func=cmd_isolate)
    s = sub.add_parser("release", help="lift a container's quarantine")
    s.add_argument("container", help="name, id or unique id prefix")
    s.set_defaults(func=cmd_release)

    s = sub.add_parser("seccomp", help="seccomp learning, profiles and enforcement")
    ssub = s.add_subparsers(dest="seccomp_cmd", required=True, metavar="SUBCOMMAND")
    ssub.add_parser("status", help="what is learned, applied and enforced")
    for verb, text in (("learn", "start learning"), ("stop", "stop learning"),
                       ("profile", "print the learned profile"), ("apply", "apply the profile"),
                       ("enforce", "kill outside the learned set"),
                       ("release", "stop enforcing")):
        x = ssub.add_parser(verb, help=text)
        x.add_argument("target", help="container (or image for learn/profile)")
        if verb in ("profile", "apply"):
            x.add_argument("--kill", action="store_true", help="kill instead of EPERM")
        if verb == "profile":
            x.add_argument("--report", action="store_true",
                           help="the whole report (profile, validation, comparison with "
                                "Docker's default, what was learned) instead of the profile")
    s.set_defaults(func=cmd_seccomp)

    s = sub.add_parser("baselines", help="process baselines: what each workload runs")
    bsub = s.add_subparsers(dest="baselines_cmd", required=True, metavar="SUBCOMMAND")
    bsub.add_parser("list", help="every workload: state, mode, size, anomalies")
    x = bsub.add_parser("show", help="one workload's learned executables")
    x.add_argument("workload", help="a workload key as `baselines list` shows it")
    x = bsub.add_parser("lock", help="lock a baseline: what is new from now on is an anomaly")
    x.add_argument("workload", nargs="?", help="a workload key")
    x.add_argument("--all", action="store_true", help="every workload still learning")
    x = bsub.add_parser("unlock", help="learn again from now")
    x.add_argument("workload", help="a workload key")
    x = bsub.add_parser("mode", help="learn, monitor or enforce (kill in the kernel)")
    x.add_argument("workload", help="a workload key")
    x.add_argument("mode", choices=("learn", "monitor", "enforce"))
    x = bsub.add_parser("accept", help="add an executable, a network element or a written "
                                       "directory to a workload's baseline")
    x.add_argument("workload", help="a workload key")
    x.add_argument("path", help="the executable path, as executed, or a network element or "
                                "written directory as `show` lists it ('outbound tcp/443 "
                                "198.51.100.0/24', 'write /var/lib/app')")
    x = bsub.add_parser("breakglass", help="exempt a workload from enforce mode for a while "
                                           "(audited as an alert)")
    x.add_argument("workload", help="a workload key")
    # not required=True for argparse: every command must parse with its positionals alone
    # (tests/unit/test_ctl.py); cmd_baselines says what is missing
    x.add_argument("--for", dest="duration", type=duration, metavar="DURATION",
                   help="how long (required): 90s, 30m, 2h (at most 7d); 0s ends an "
                        "exemption now")
    x.add_argument("--reason", default="", help="why (kept with the exemption and its alert)")
    x = bsub.add_parser("export", help="baselines as JSON (one workload, or all) on stdout")
    x.add_argument("workload", nargs="?", help="a workload key (default: every workload)")
    x = bsub.add_parser("import", help="replace workloads' baselines from an export file "
                                       "(all or nothing)")
    x.add_argument("file", help="a file written by `baselines export` (- for stdin)")
    s.set_defaults(func=cmd_baselines)
    s = sub.add_parser("posture", help="CIS Docker Benchmark posture (the last scan)")
    s.add_argument("--refresh", action="store_true", help="scan now")
    s.add_argument("--format", metavar="FORMAT",
                   help="docker-bench: docker-bench-security's JSON log format (roxd: JSON)")
    s.add_argument("-v", "--verbose", action="store_true", help="remediation of each WARN")
    s.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="JSON output")
    s.set_defaults(func=cmd_posture)
    s = sub.add_parser("inventory", help="containers or images on this host")
    s.add_argument("what", nargs="?", default="containers", choices=("containers", "images"))
    s.add_argument("--all", action="store_true", help="also containers that are not running")
    s.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="JSON output")
    s.set_defaults(func=cmd_inventory)

    ctl_netmap.add_parser(sub)
    add_fleet_parser(sub)  # roxctl fleet: reads NATS JetStream, not the socket (ctl_fleet.py)
    sub.add_parser("version", help="roxctl's and roxd's versions").set_defaults(
        func=cmd_version)
    s = sub.add_parser("completion", help="print a shell completion script (bash, zsh)")
    s.add_argument("shell", choices=("bash", "zsh"))
    s.set_defaults(func=cmd_completion)
    from roxd.ui.ctl_ui import add_ui_command  # the dashboard's login link (roxd/ui)
    add_ui_command(sub)
    s = sub.add_parser("man", help="print roxctl's manual page (roff), made from this parser")
    s.set_defaults(func=cmd_man)
    s = sub.add_parser("top", help="live view of containers: risk, events/s, alerts, drops, "
                                   "baseline, quarantine (q quits)")
    s.add_argument("-d", "--delay", type=float, default=2.0, metavar="SECONDS",
                   help="seconds between refreshes (default 2)")
    s.add_argument("-b", "--batch", "--once", dest="batch", action="store_true",
                   help="print frames as plain text instead of the live view (for scripts)")
    s.add_argument("-n", "--iterations", type=int, default=None, metavar="N",
                   help="stop after N frames (batch mode default: 1)")
    s.add_argument("-s", "--sort", default="risk", metavar="KEY",
                   help="risk (default), events, alerts, drops, name, baseline, quarantine")
    s.set_defaults(func=cmd_top)
    add_global_flags_everywhere(p, f"roxd's socket (default $ROXD_SOCKET or "
                                   f"{default_socket()})")
    return p


def bash_completion(parser: argparse.ArgumentParser) -> str:
    """A bash completion script for the parser's commands, subcommands and options."""
    from roxd.ctl_completion import VALUE_OPTIONS, completion_words

    words = completion_words(parser)

    value_options = "|".join(VALUE_OPTIONS)
    cases = "\n".join(f'        "{k}") opts="{" ".join(v)}" ;;' for k, v in sorted(words.items()))
    return f"""# bash completion for roxctl (generated by `roxctl completion bash`)
_roxctl() {{
    local cur prev key opts word i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    case "$prev" in
        -o|--output) COMPREPLY=($(compgen -W "table wide json yaml" -- "$cur")); return ;;
        --socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    key=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        case "$word" in
            {value_options}) ((i++)); continue ;;
            -*) continue ;;
        esac
        case "$key${{key:+ }}$word" in
{chr(10).join(f'            "{k}") key="{k}" ;;' for k in sorted(words) if k)}
        esac
    done
    case "$key" in
{cases}
    esac
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}}
complete -F _roxctl roxctl"""


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a terminal that is not UTF-8: \xNN, no crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        out = Out(output_format(args))
    except OutputError as exc:
        print(f"roxctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    api = ApiClient(args.socket)
    try:
        return int(args.func(api, out, args))
    except Unreachable as exc:
        print(f"roxctl: {exc.message()}", file=sys.stderr)
        return EXIT_DENIED if isinstance(exc.cause, PermissionError) else EXIT_UNREACHABLE
    except ApiFailure as exc:
        print(f"roxctl: {term(exc.reason)} (HTTP {exc.status})", file=sys.stderr)
        body = exc.body if isinstance(exc.body, dict) else {}
        for c in body.get("candidates", []):
            print(term(f"  {c.get('id')}  {c.get('name') or ''}"), file=sys.stderr)
        return exit_code_for_status(exc.status)
    except OutputError as exc:
        print(f"roxctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK if args.command in ("events", "alerts", "top") else EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    finally:
        api.close()


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


if __name__ == "__main__":
    sys.exit(main())
