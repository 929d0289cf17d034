"""`roxd --release-quarantines`: lift every network quarantine, for package removal.

A quarantine table lives in the container's own network namespace and outlives roxd (by
design: stopping roxd must not free a quarantined container). Removing the package removes the
only tool that lifts it, so the package's pre-removal script runs this after the service
stopped: it deletes the tables recorded in the state dir, then empties the state. Upgrades do
not run it. A table whose record was lost (a deleted state dir) is not searched for: roxd
never touches a namespace it has no record of.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from roxd.config import Config
from roxd.enforce.cgroups import ContainerCgroups
from roxd.enforce.quarantine import Quarantine
from roxd.runtime import connect_runtime

log = logging.getLogger(__name__)


def release_quarantines(config: Config) -> int:
    """Exit status: 0 when every table found was deleted, 1 otherwise (each reason printed)."""
    runtime = connect_runtime(config.containers)
    try:
        quarantine = Quarantine.for_runtime(Path(config.daemon.state_dir), runtime,
                                            cgroups=ContainerCgroups.from_host())
        done = quarantine.release_all()
    finally:
        runtime.close()
    for line in done:
        print(f"roxd: {line}", file=sys.stderr)
    print(f"roxd: {sum(line.startswith('released') for line in done)} quarantine table(s) "
          "released", file=sys.stderr)
    return 1 if any(line.startswith("could not") for line in done) else 0
