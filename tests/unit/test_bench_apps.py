"""The application benchmark's pure parts (bench/apps): reading each load generator's report,
the agent rotation, the ratios and the command line. The real run is
tests/kernel/test_bench_apps.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.__main__ import parse
from bench.apps.image import c_project
from bench.apps.loads import LoadError, Measurement, parse_pgbench, parse_redis, parse_wrk
from bench.apps.phase import ratios, rotation, table

WRK = """Running 5s test @ http://172.17.0.3/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms    1.10ms  20.51ms   85.17%
    Req/Sec    10.68k     1.21k   12.90k    70.00%
  Latency Distribution
     50%    1.25ms
     75%    1.90ms
     90%    2.81ms
     99%  562.00us
  106530 requests in 5.00s, 246.76MB read
Requests/sec:  21306.12
Transfer/sec:     49.35MB
"""

REDIS = ('"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",'
         '"p99_latency_ms","max_latency_ms"\n'
         '"SET","20000.00","0.600","0.152","0.551","0.927","1.735","8.839"\n'
         '"GET","40000.00","0.400","0.100","0.351","0.627","1.235","5.839"\n')

PGBENCH = """transaction type: <builtin: TPC-B (sort of)>
scaling factor: 2
query mode: simple
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 5 s
number of transactions actually processed: 7000
number of failed transactions: 0 (0.000%)
latency average = 5.700 ms
initial connection time = 12.345 ms
tps = 1403.551234 (without initial connection time)
"""


def test_wrk_report_gives_requests_per_second_and_p99_in_ms() -> None:
    m = parse_wrk(WRK)
    assert m.throughput == pytest.approx(21306.12)
    assert m.p99_ms == pytest.approx(0.562)  # 562 us
    assert m.ops == 106530


def test_wrk_errors_or_a_missing_line_fail_the_run() -> None:
    with pytest.raises(LoadError, match="Non-2xx"):
        parse_wrk(WRK + "  Non-2xx or 3xx responses: 12\n")
    with pytest.raises(LoadError, match="99%"):
        parse_wrk(WRK.replace("99%", "98%"))


def test_redis_throughput_is_over_both_tests_and_p99_the_worse() -> None:
    m = parse_redis(REDIS, 40000)
    # 40000 SETs at 20000/s (2 s) and 40000 GETs at 40000/s (1 s): 80000 in 3 s
    assert m.throughput == pytest.approx(80000 / 3)
    assert m.p99_ms == pytest.approx(1.735)
    assert m.ops == 80000
    with pytest.raises(LoadError):
        parse_redis("ERROR: connection refused", 40000)


def test_pgbench_tps_and_p99_of_the_logged_transactions() -> None:
    # 1.5 % of the transactions are slow: the p99 is one of them, the median is not
    m = parse_pgbench(PGBENCH, [1.0] * 985 + [7.0] * 15)
    assert m.throughput == pytest.approx(1403.551234)
    assert m.p99_ms == 7.0
    assert m.ops == 7000  # pgbench's count, not the log's lines
    with pytest.raises(LoadError, match="failed transactions"):
        parse_pgbench(PGBENCH.replace("transactions: 0 (", "transactions: 3 ("), [1.0])
    with pytest.raises(LoadError, match="no per-transaction log"):
        parse_pgbench(PGBENCH, [])


def test_every_agent_takes_every_position_over_as_many_repetitions() -> None:
    agents = ["none", "roxd", "roxd-baselines", "auditd", "bpftrace"]
    orders = [rotation(agents, rep) for rep in range(len(agents))]
    for position in range(len(agents)):
        assert sorted(o[position] for o in orders) == sorted(agents)
    assert all(sorted(o) == sorted(agents) for o in orders)


def test_ratios_pair_each_agent_with_the_no_agent_slot_of_its_repetition() -> None:
    runs = {(0, "nginx", "none"): Measurement(1000.0, 2.0, "req/s"),
            (0, "nginx", "roxd"): Measurement(800.0, 3.0, "req/s"),
            (1, "nginx", "none"): Measurement(500.0, 4.0, "req/s"),
            (1, "nginx", "roxd"): Measurement(500.0, 4.0, "req/s"),
            (2, "nginx", "roxd"): Measurement(100.0, 9.0, "req/s")}  # no baseline: left out
    tput, p99 = ratios(runs, "nginx", "roxd", 3)
    assert tput == [1.25, 1.0]  # none/agent: above 1 is slower
    assert p99 == [1.5, 1.0]


def test_table_names_a_refusal_instead_of_figures() -> None:
    assert "refused: an audit daemon" in table({"refused": "an audit daemon (pid 9) already "
                                                "runs on this host"})


def test_command_line_chooses_apps_agents_reps_and_seconds() -> None:
    s, _ = parse(["--phases", "apps", "--apps", "nginx,compile", "--app-agents", "bpftrace",
                  "--app-reps", "4", "--app-seconds", "12.5"])
    assert s.phases == ("apps",)
    assert s.apps == ("nginx", "compile")
    assert s.app_agents == ("none", "bpftrace")
    assert (s.app_reps, s.app_seconds) == (4, 12.5)
    quick, _ = parse(["--quick"])
    assert (quick.app_reps, quick.app_seconds) == (2, 5.0)
    assert "apps" in quick.phases


@pytest.mark.parametrize("argv", [["--apps", "mysql"], ["--app-agents", "falco"],
                                  ["--app-seconds", "0"], ["--app-reps", "-1"]])
def test_bad_apps_options_are_refused_with_the_reason(argv: list[str],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(argv)
    err = capsys.readouterr().err
    assert "unknown" in err or "must be positive" in err


def test_an_unknown_phase_is_refused_with_the_known_ones(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--phases", "overhead,speed"])
    err = capsys.readouterr().err
    assert "unknown phases: speed (known: overhead, latency, capacity" in err


def test_the_c_project_builds_in_parallel_and_runs(tmp_path: Path) -> None:
    """The compile job's project: every unit compiles warning-free with -Wall and links."""
    dest = tmp_path / "proj"
    c_project(dest, units=3)
    built = subprocess.run(["make", "-s", "-j2", "CC=gcc"], cwd=dest, capture_output=True,
                           text=True)
    assert built.returncode == 0, built.stderr
    assert "warning" not in built.stderr
    assert sorted(p.name for p in dest.glob("*.o")) == ["main.o", "unit0.o", "unit1.o",
                                                       "unit2.o"]
    ran = subprocess.run([str(dest / "proj")], capture_output=True, text=True, check=True)
    assert float(ran.stdout) > 0


def test_a_running_benchmark_keeps_its_containers_from_another_run() -> None:
    """bench/containers.py removes leftovers only of runs whose process is gone: this process
    is alive; a pid with another start time (reused) or no owner at all is a leftover."""
    from bench.containers import owner, run_alive

    me = owner()
    assert run_alive(me)
    pid, _, started = me.partition(":")
    assert not run_alive(f"{pid}:{int(started) + 1}")
    assert not run_alive("")


def test_the_apps_results_file_stands_alone(tmp_path: Path) -> None:
    """bench/results/apps-<time>.json: the phase with the machine, commit and notes of the
    run, so a quiet run can be compared with a contended one without the other phases."""
    import json

    from bench.__main__ import write_apps

    results = {"machine": {"cpus": 2, "loadavg_at_start": ["0.1", "0.2", "0.3"]},
               "quick": True, "started": "2026-11-30T00:00:00+0000", "roxd_commit": "abc",
               "overhead": {"ignored": 1}, "apps": {"figures": {}, "reps": 2},
               "notes_start": ["another tracer was running"]}
    path = write_apps(results, tmp_path)
    assert path.name.startswith("apps-") and path.suffix == ".json"
    doc = json.loads(path.read_text())
    assert doc["apps"] == {"figures": {}, "reps": 2}
    assert doc["machine"]["loadavg_at_start"] == ["0.1", "0.2", "0.3"]
    assert doc["notes"] == ["another tracer was running"]
    assert "overhead" not in doc


def test_redis_runs_are_sized_for_the_run_length_not_the_warm_up() -> None:
    """redis-benchmark takes a request count: sized from the first warm-up's rate so a
    measured run lasts about --app-seconds (two tests, half each), the same count in every
    run of the phase."""
    from bench.apps.loads import Redis

    r = Redis()
    assert r._count(20.0) == 20000  # before any warm-up: a fixed first guess
    r.rate = 40000.0
    assert r._count(20.0) == 400000
    assert r._count(0.1) == 10000  # never a run too short to mean anything
