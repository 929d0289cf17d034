"""Application benchmarks (issue 22): nginx, redis, PostgreSQL and a compile job in
containers, under each agent side by side (bench/apps/phase.py)."""
