"""Container attribution: cgroup id -> Container, pid -> Process with ancestry."""
