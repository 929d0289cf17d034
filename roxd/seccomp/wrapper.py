"""`seccomp exec`: load a profile's filter through libseccomp, then exec a command under it.

For workloads Docker does not start. libseccomp sets no_new_privs first (its default), so the
filter loads without CAP_SYS_ADMIN and survives the exec.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from roxd.seccomp.errors import ProfileError
from roxd.seccomp.profile import Profile
from roxd.seccomp.validate import compile_filter


def exec_with_profile(profile: Profile, argv: Sequence[str]) -> None:
    """Never returns on success: the process becomes argv[0] under the filter."""
    if not argv:
        raise ProfileError(profile.source, "no command to run under the profile")
    filt = compile_filter(profile)
    filt.load()
    try:
        os.execvp(argv[0], list(argv))
    except OSError as exc:
        # the filter is loaded: we can only report and leave
        raise ProfileError(profile.source,
                           f"cannot exec {argv[0]!r} under the profile: {exc.strerror}") from None
