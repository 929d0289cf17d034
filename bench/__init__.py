"""roxd benchmarks (issue 9): workload overhead against no agent, auditd and a bpftrace floor;
capacity (events/s without ring-buffer drops); enforcement latency; roxd's own footprint.

    .venv/bin/python -m bench            # full run (about 15 minutes)
    .venv/bin/python -m bench --quick    # about 3 minutes

See docs/performance.md for how to read the output.
"""
