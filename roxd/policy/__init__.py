"""The policy stage: the single owner of everything userspace writes into the kernel's maps.

    policy = KernelPolicy(sensor, enforce_in_kernel=True, fold_window_ns=..., ...)
    policy.apply_rules(rule_set)          # start, reload, enable/disable
    resolver.add_change_listener(policy.containers_changed)   # any thread
    killed_by = policy.on_event(decoded, container)            # loop thread, once per event
    policy.quiet(decoded)                  # no rule cares: fold identical events in the kernel

It imports the rule engine's real types and the sensor's map contract (roxd.sensor.maps);
the sensor imports neither rules nor policy.
"""
