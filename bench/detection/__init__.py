"""Detection benchmark (issue 21, docs/detection.md): Atomic Red Team's Linux tests, each in its
own fresh offline container with roxd watching; alerts scored per ATT&CK tactic and phase."""
