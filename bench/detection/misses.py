"""Why a test that executed raised no alert in its phase, when the reason is known and out of
reach of rules over the events roxd traces (or not worth the noise such a rule would make).
Keyed by test key (T1234.001-2) or technique. Filled from measured runs; docs/detection.md
shows the same reasons."""

from __future__ import annotations

_HARNESS_SHELL = (
    "only everyday shell commands (echo $0, cat /etc/shells, an echo loop, uname); the technique "
    "is a shell running, which the harness starts from the container's entrypoint shell and the "
    "foothold rules rightly leave alone. An attacker's shell has a non-shell parent (an "
    "exploited service, docker exec) and raises foothold.shell-in-container")
_LOCAL_TABLES = (
    "reads the route table (ip route, netstat -r): entrypoints look up the default gateway this "
    "way; the neighbour tables (arp, ip neigh, tcp_metrics) are reported")
_SSH_COPY = (
    "alerted in lateral_movement (remote copy and SSH client in a container) and, with the "
    "remote side named, objectives.remote-file-transfer")

MISS_REASONS: dict[str, str] = {
    "T1018-13": _LOCAL_TABLES, "T1018-14": _LOCAL_TABLES,
    "T1027.001": "appends a byte with dd and shell redirection (`dd ... >> file`): a plain "
                 "write that exec events cannot tell from any other; the change shows only as a "
                 "different hash, which needs file integrity monitoring (truncate -s +1 is "
                 "reported: foothold.file-padded)",
    "T1059.004-6": _HARNESS_SHELL, "T1059.004-8": _HARNESS_SHELL,
    "T1059.004-13": _HARNESS_SHELL,
    "T1059.004-7": "cat /etc/shells: alerted as privilege_escalation.account-file-read (the "
                   "login databases printed by a text tool); the test's tactic is execution",
    "T1059.004-10": "useradd and chsh: alerted as persistence (account created and modified); "
                    "the test's tactic is execution",
    "T1070.003-8": "a leading space keeps `hostname` and `whoami` out of the history: nothing "
                   "but two benign commands happens",
    "T1070.004-1": "rm -f of one file in /tmp: everyday (scratch files, lock files, a job's "
                   "output); shred is reported (objectives.secure-delete), and so is rm -r of / or "
                   "a system directory (objectives.system-tree-deleted). Deleting the dropped "
                   "binary itself would need the file's exec history, which roxd does not keep",
    "T1070.004-2": "rm -rf of a folder in /tmp: everyday cleanup; rm -r of / or a top-level "
                   "system directory is reported (objectives.system-tree-deleted)",
    "T1059.006-1": "racy: the python -c code is 400 bytes, the kernel keeps 255 bytes of an "
                   "argument, and python exits at once (its import of requests fails); roxd "
                   "completes the argument from /proc only when it reads it before the exit "
                   "(foothold.interpreter-download-exec fired in one of the last two runs)",
    "T1074.001-2": "alerted as foothold.download-piped-to-shell (curl | sh: the discovery script "
                   "fetched and run); writing its output to /tmp, the staging itself, is "
                   "everyday",
    "T1090.001-1": "the proxy is set in the environment (export http_proxy=...), which exec "
                   "events do not carry, and the curl that follows is a plain request (its "
                   "connect to the proxy port, 127.0.0.1:3128, looks like any connect to a "
                   "local service); seeing it needs the downloader's proxy variables captured "
                   "at exec (a bounded read of the environment for a few programs, proposed in "
                   "docs/detection.md)",
    "T1105-1": _SSH_COPY, "T1105-2": _SSH_COPY, "T1105-3": _SSH_COPY, "T1105-4": _SSH_COPY,
    "T1105-5": _SSH_COPY, "T1105-6": _SSH_COPY,
    "T1105-14": "whois to a local port: a lookup tool; the file transfer it stands for needs "
                "content inspection",
    "T1105-27": "curl -O into the working directory, then `bash atomic.sh` by relative path: "
                "the download fails offline and the script never exists",
    "T1496-1": "`yes > /dev/null`: CPU load without a miner's name, arguments or pool "
               "connection (`yes | tool` answers prompts in scripts); needs resource-usage "
               "monitoring",
    "T1222.002-13": "lost in the full run 20261130T040345Z only (load average up to 11): sudo "
                     "and the compiled /tmp program raised privilege_escalation.sudo-su-in-"
                     "container and foothold.exec-from-tmp in the run before and alone "
                     "(20261130T040816Z); roxd reported itself drained, so the cause (events "
                     "dropped in the kernel, or an attribution race) is not established",
    "T1690-9": "lost in the full run 20261130T040345Z only, where roxd had not drained within "
               "15 s: `export HISTFILE=/dev/null` in sh -c raised objectives.history-tampering-"
               "command in the run before and alone (20261130T040816Z)",
    "T1531-4": "passwd: alerted as persistence.account-modified (a changed password is also a "
               "way back in); the test's tactic is impact",
    "T1546.018-3": "the .pth hook is written by shell redirection; a file rule would need a "
                   "suffix match (*.pth), which the kernel's path filter cannot do (it matches "
                   "prefixes and whole basenames); the venv's programs in /tmp are reported as "
                   "foothold",
    "T1564.001-1": "creating dot-files in /var/tmp: lock files and sockets do it all the time; "
                   "running a program from a hidden directory is reported",
    "T1568.002-1": "the Python file copied into the running container is reported "
                   "(foothold.script-not-in-image); the domain-generation algorithm itself shows "
                   "only as DNS queries, which roxd does not trace",
    "T1569.003-6": "systemctl list-units: alerted as privilege_escalation.service-manager-"
                   "queried-in-container (service discovery, a container reaching a service "
                   "manager); the test's tactic is execution",
    "T1571-2": "telnet is alerted as lateral_movement.cleartext-remote-client; the test's "
               "tactic is command and control over a non-standard port, and 8081 is a common "
               "application port (the port rules watch mining pools, Docker API, kubelet, etcd)",
    "T1685-6": "a CentOS-only test whose if-statement is not valid shell (rc 2): nothing runs",
    "T1685-50": "sudo is reported (privilege escalation); mdatp is absent, so the tampering "
                "command never runs",
    "T1685-66": "FreeBSD's /etc/syslog.conf does not exist on Debian: the write is behind an "
                "`if [ -f ]` that is false, and nothing happens",
    "T1005-2": "the files it searches are downloaded first (offline: they never arrive); the "
               "find over $HOME is everyday",
}


def miss_reason(key: str, technique: str) -> str:
    return MISS_REASONS.get(key) or MISS_REASONS.get(technique) or ""
