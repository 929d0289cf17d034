"""Process baselines: what each workload normally executes, learned, locked, then enforced.

    engine = BaselineEngine(settings, state_dir)
    facts = engine.observe(enriched_exec)     # BaselineFacts: learning | learned | anomaly
    engine.tick()                              # auto-lock ended windows, persist changes
    engine.enforcing()                         # {workload: learned paths} for the kernel

A baseline belongs to a workload (roxd/baselines/workload.py), not to a container: replicas
and restarts share it. The policy stage turns `enforcing()` into kernel allow-lists; the rules
stage turns an `anomaly` into an alert (built-in rules `baseline.*`).
"""
