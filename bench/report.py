"""The results file (flat keys: workload.agent.figure) and the short table on stdout."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

TARGETS = {"exec_storm": 1.05, "connect_storm": 1.05, "syscall_loop": 1.02, "file_storm": 1.05}


def write(results: dict[str, Any], out_dir: Path) -> Path:
    """`make bench`'s run: bench-<local time>.json, and the same text as latest.json."""
    path = write_json(results, out_dir, "bench", time.strftime("%Y%m%dT%H%M%S"))
    (out_dir / "latest.json").write_text(path.read_text())
    return path


def write_json(doc: dict[str, Any], out_dir: Path, name: str, stamp: str) -> Path:
    """Every bench results file: out_dir/<name>-<stamp>.json (out_dir made if missing),
    indented, one trailing newline; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{stamp}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def utc_stamp() -> str:
    """Now in UTC as a file-name stamp (20261130T032600Z)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def write_and_show(doc: dict[str, Any], out_dir: Path, name: str) -> Path:
    """The stand-alone micro-benchmarks' ending (bench.baseline_exec, bench.netenf): the
    results file stamped in UTC, the document on stdout, and where it went on stderr."""
    path = write_json(doc, out_dir, name, utc_stamp())
    print(json.dumps(doc, indent=2))
    print(f"written: {path}", file=sys.stderr)
    return path


def machine() -> dict[str, Any]:
    load = Path("/proc/loadavg").read_text().split()[:3]
    return {"kernel": platform.release(), "cpus": _cpus(), "loadavg_at_start": load,
            "python": platform.python_version()}


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _fmt(s: dict[str, Any] | None, digits: int = 3) -> str:
    if not s:
        return "-"
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def table(results: dict[str, Any]) -> str:
    lines: list[str] = []
    ov = results.get("overhead", {})
    if ov:
        agents = sorted({k.split(".")[1] for k in ov if k.endswith(".ratio")},
                        key=lambda a: ["roxd", "auditd", "bpftrace"].index(a)
                        if a in ("roxd", "auditd", "bpftrace") else 9)
        wls = sorted({k.split(".")[0] for k in ov if k.endswith(".seconds")},
                     key=lambda w: (w.split("_")[0], len(w)))
        lines.append("workload overhead: ratio to no agent, median [min-max]; none = seconds")
        head = f"{'workload':26} {'none (s)':22}" + "".join(f" {a:22}" for a in agents)
        lines.append(head + " target")
        for wl in wls:
            row = f"{wl:26} {_fmt(ov.get(f'{wl}.none.seconds')):22}"
            for a in agents:
                row += f" {_fmt(ov.get(f'{wl}.{a}.ratio')):22}"
            base = wl.removesuffix("_bystander").removesuffix("_learning")
            target = TARGETS.get(base) if wl == base or wl.endswith("_bystander") else None
            lines.append(row + (f" <= {target}" if target else ""))
        lines.append("")
        lines.append(f"roxd ready {_fmt(ov.get('roxd.ready_s'), 2)} s; RSS idle "
                     f"{_fmt(ov.get('roxd.rss_idle_mb'), 1)} MB, after storms "
                     f"{_fmt(ov.get('roxd.rss_after_storms_mb'), 1)} MB (target <= 150)")
        for wl in wls:
            cpu = ov.get(f"{wl}.roxd.agent_cpu_s")
            if cpu:
                lines.append(f"roxd CPU during {wl}: {_fmt(cpu)} s")
    cap = results.get("capacity", {})
    if cap:
        lines.append("")
        lines.append("capacity (2 generators): rate/s, emitted, folded, dropped, roxd CPU s")
        for variant, steps in cap.items():
            rows = steps["steps"] if "steps" in steps else list(steps.values())
            for st in rows:
                paced = (f" @{st['paced_rate_per_generator']:.0f}/s/gen"
                         if st.get("paced_rate_per_generator") else "")
                lines.append(f"  {variant:18} {st['storm'] + paced:32} {st['rate_per_s']:>9.0f}"
                             f" {st['emitted']:>7} {st['folded']:>7} {st['dropped']:>7}"
                             f" {st['roxd_cpu_s']:>6}")
            if "steps" in steps:
                lines.append(f"  {variant:18} highest rate without drops: "
                             f"{steps['highest_rate_without_drops']}; in-kernel kill while "
                             f"overloaded: {steps['enforcement_while_overloaded']}")
    lat = results.get("latency", {})
    if lat:
        lines.append("")
        kk = lat.get("kernel_kill", {})
        if kk:
            lines.append(f"in-kernel kill: {kk['killed_before_first_instruction']} of "
                         f"{kk['execs']} killed before their first instruction; exec->death "
                         f"p50 {kk['exec_to_death']['p50_ms']} ms p99 "
                         f"{kk['exec_to_death']['p99_ms']} ms")
        uk = lat.get("userspace_kill", {})
        if uk.get("exec_to_death"):
            lines.append(f"userspace kill: {uk['killed']} of {uk['execs']} killed; exec->death "
                         f"p50 {uk['exec_to_death']['p50_ms']} ms p99 "
                         f"{uk['exec_to_death']['p99_ms']} ms")
        nat = lat.get("exec_to_exit_no_agent")
        if nat:
            lines.append(f"(reference: exec->exit of a no-op binary, no agent: p50 "
                         f"{nat['p50_ms']} ms p99 {nat['p99_ms']} ms)")
    prof = results.get("profile", {})
    if prof:
        lines.append("")
        lines.append(f"profile (bpf_stats, roxd CPU from schedstat; median [min-max]); idle "
                     f"roxd {prof.get('roxd_idle_cpu_pct', '?')} % CPU")
        for name, p in prof.items():
            if not isinstance(p, dict) or "bpf_ns_per_event" not in p:
                continue
            line = f"  {name:26} BPF {_mm(p['bpf_ns_per_event'])} ns/event"
            if "exec_path_bpf_ns_per_exec" in p:
                line += f", exec path {_mm(p['exec_path_bpf_ns_per_exec'])} ns/exec"
            line += f", roxd CPU {_mm(p['roxd_cpu_us_per_event'])} us/event"
            if "roxd_cpu_us_per_handled_event" in p:
                line += f" ({_mm(p['roxd_cpu_us_per_handled_event'])} per handled event)"
            if "roxd_cpu_us_per_alert" in p:
                line += f", {_mm(p['roxd_cpu_us_per_alert'])} us/alert"
            lines.append(line)
            other = prof.get("against", {}).get(name)
            if other:
                line = f"  {'  (against)':26} BPF {_mm(other['bpf_ns_per_event'])} ns/event"
                if "exec_path_bpf_ns_per_exec" in other:
                    line += f", exec path {_mm(other['exec_path_bpf_ns_per_exec'])} ns/exec"
                line += f", roxd CPU {_mm(other['roxd_cpu_us_per_event'])} us/event"
                lines.append(line)
    start = results.get("startup", {})
    if start:
        lines.append("")
        for variant, v in start.items():
            if not isinstance(v, dict):  # loadavg_at_end
                lines.append(f"startup load average at the end: {v}")
                continue
            comp = f", eBPF compile+load {_mm(v['compile_s'])} s" if v.get("compile_s") else ""
            cpu = f", CPU at READY {_mm(v['cpu_at_ready_s'])} s" if v.get("cpu_at_ready_s") else ""
            lines.append(f"startup {variant}: READY {_mm(v['ready_s'])} s{comp}{cpu}")
            for name, st in ((v.get("stages") or {}).get("stages") or {}).items():
                lines.append(f"  {name:32} {st['thread']:12} wall {_mm(st['wall_s'])} s, "
                             f"cpu {_mm(st['cpu_s'])} s")
    for n in results.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)


def _mm(s: Any) -> str:
    """A Summary dict as 'median [min-max]' (older results hold a bare number)."""
    if isinstance(s, dict):
        return f"{s['median']:g} [{s['min']:g}-{s['max']:g}]"
    return str(s)
