"""The workload programs: tiny C sources compiled with gcc at run time, all static, so the same
binaries run on the host and in the busybox test image (which has no libc).

Every driver times its own loop with CLOCK_MONOTONIC and prints one JSON object on stdout, so
`docker exec` start-up never counts in a figure.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

# The exec target: a static binary with no libc that exits at once.
TINY_C = r"""
void _start(void) {
    __asm__ volatile ("mov $60, %eax\n xor %edi, %edi\n syscall");
}
"""

# Appends one byte to /bench-out/hits with its very first instructions: if it ever runs one
# user-space instruction, the file grows (tests/kernel/test_enforce.py's MARKER_C).
MARKER_C = r"""
static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile ("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c)
                      : "rcx", "r11", "memory");
    return r;
}
void _start(void) {
    long fd = sys3(2, (long)"/bench-out/hits", 02 | 0100 | 02000, 0644);
    sys3(1, fd, (long)"x", 1);
    sys3(60, 0, 0, 0);
}
"""

# Sleeps for argv[1]'s worth of milliseconds (default 2000) and exits 0: the victim of a
# userspace-decided kill (its command line matches a rule, not its name).
SLEEPER_C = r"""
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
    long ms = 2000;
    for (int i = 1; i < argc; i++) if (argv[i][0] >= '0' && argv[i][0] <= '9') ms = atol(argv[i]);
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, 0);
    return 0;
}
"""

COMMON_H = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static void pace(long long start, long i, double rate) {
    if (rate <= 0) return;
    long long due = start + (long long)(i * (1e9 / rate));
    struct timespec ts = { due / 1000000000LL, due % 1000000000LL };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, 0) == EINTR) {}
}
"""

# execstorm PATH N [distinct 0|1] [rate/s]: N x (fork; execve PATH; waitpid). With distinct, the
# argument changes every exec, so no two command lines are the same (no in-kernel folding).
EXECSTORM_C = COMMON_H + r"""
#include <sys/wait.h>
int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: execstorm PATH N [distinct] [rate]\n"); return 2; }
    const char *path = argv[1];
    long n = atol(argv[2]);
    int distinct = argc > 3 && atoi(argv[3]);
    double rate = argc > 4 ? atof(argv[4]) : 0;
    long failed = 0;
    char arg[32];
    long long t0 = now_ns();
    for (long i = 0; i < n; i++) {
        pace(t0, i, rate);
        snprintf(arg, sizeof arg, distinct ? "run-%ld" : "run", i);
        pid_t pid = fork();
        if (pid == 0) {
            char *av[] = { (char *)path, arg, 0 };
            char *envp[] = { 0 };
            execve(path, av, envp);
            _exit(127);
        }
        int st;
        if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) failed++;
    }
    long long t1 = now_ns();
    printf("{\"n\":%ld,\"elapsed_ns\":%lld,\"failed\":%ld}\n", n, t1 - t0, failed);
    return 0;
}
"""

# connstorm N [distinct 0|1] [rate/s]: N x (socket; connect to 127.0.0.1; close), alternating
# a listening port (accepted by a forked child) and a closed one (refused). With distinct, the
# refused connects walk through ports so no two are the same event.
CONNSTORM_C = COMMON_H + r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
static int bound(struct sockaddr_in *a) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    a->sin_family = AF_INET; a->sin_port = 0; a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(s, (struct sockaddr *)a, sizeof *a);
    socklen_t len = sizeof *a;
    getsockname(s, (struct sockaddr *)a, &len);
    return s;
}
int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: connstorm N [distinct] [rate]\n"); return 2; }
    long n = atol(argv[1]);
    int distinct = argc > 2 && atoi(argv[2]);
    double rate = argc > 3 ? atof(argv[3]) : 0;
    struct sockaddr_in open_a, closed_a;
    int ls = bound(&open_a);
    listen(ls, 4096);
    int cs = bound(&closed_a);
    close(cs);  /* nothing listens there now: refused */
    pid_t acceptor = fork();
    if (acceptor == 0) {
        for (;;) { int c = accept(ls, 0, 0); if (c >= 0) close(c); }
    }
    close(ls);
    struct linger lg = { 1, 0 };  /* RST on close: no TIME_WAIT pile-up */
    long accepted = 0, refused = 0, other = 0;
    long long t0 = now_ns();
    for (long i = 0; i < n; i++) {
        pace(t0, i, rate);
        struct sockaddr_in to = (i & 1) ? closed_a : open_a;
        if (distinct && (i & 1)) {
            int p = 20000 + (int)((i / 2) % 30000);
            if (p == ntohs(open_a.sin_port)) p++;
            to.sin_port = htons(p);
        }
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&to, sizeof to) == 0) accepted++;
        else if (errno == ECONNREFUSED) refused++;
        else other++;
        setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(s);
    }
    long long t1 = now_ns();
    kill(acceptor, SIGKILL);
    waitpid(acceptor, 0, 0);
    printf("{\"n\":%ld,\"elapsed_ns\":%lld,\"accepted\":%ld,\"refused\":%ld,\"failed\":%ld}\n",
           n, t1 - t0, accepted, refused, other);
    return 0;
}
"""

# sysloop N: N x getppid() through the raw syscall instruction (no libc caching, no vDSO).
SYSLOOP_C = COMMON_H + r"""
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    long long t0 = now_ns();
    for (long i = 0; i < n; i++) {
        long r;
        __asm__ volatile ("syscall" : "=a"(r) : "a"(110L) : "rcx", "r11", "memory");
    }
    long long t1 = now_ns();
    printf("{\"n\":%ld,\"elapsed_ns\":%lld,\"failed\":0}\n", n, t1 - t0);
    return 0;
}
"""

# openloop N [PATH]: N x open(PATH, O_RDONLY) + close; PATH is a file no rule watches (the
# file-heavy workload of issue 10: every open passes roxd's file programs, none is reported).
OPENLOOP_C = COMMON_H + r"""
#include <fcntl.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    const char *path = argc > 2 ? argv[2] : "/bench/openloop";
    long failed = 0;
    long long t0 = now_ns();
    for (long i = 0; i < n; i++) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) { failed++; continue; }
        close(fd);
    }
    long long t1 = now_ns();
    printf("{\"n\":%ld,\"elapsed_ns\":%lld,\"failed\":%ld}\n", n, t1 - t0, failed);
    return 0;
}
"""

# killrun PATH N [ARG...]: N x (fork; child notes CLOCK_MONOTONIC in shared memory, then
# execve PATH ARG...; parent waitpid). An ARG of "@KILLME" becomes the userspace kill rule's
# pattern, so the driver's own command line does not match the rule. Reports how many died of
# SIGKILL and, per exec, the time from just before execve to waitpid's return (exec to death).
KILLRUN_C = COMMON_H + r"""
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: killrun PATH N [ARG...]\n"); return 2; }
    const char *path = argv[1];
    long n = atol(argv[2]);
    volatile long long *t0 = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                                  -1, 0);
    long long *lat = calloc(n, sizeof *lat);
    long killed = 0, exited = 0, other = 0;
    char **av = calloc(argc, sizeof *av);
    av[0] = (char *)path;
    /* on the heap: a string literal in a .rodata page that the child never touched is not
       mapped in the child yet, and a tracer's bpf_probe_read_user of it fails */
    char *killme = strdup("roxd-bench-kill-me");
    for (int i = 3; i < argc; i++)
        av[i - 2] = strcmp(argv[i], "@KILLME") ? argv[i] : killme;
    for (long i = 0; i < n; i++) {
        *t0 = 0;
        pid_t pid = fork();
        if (pid == 0) {
            char *envp[] = { 0 };
            *t0 = now_ns();
            execve(path, av, envp);
            _exit(127);
        }
        int st;
        waitpid(pid, &st, 0);
        lat[i] = now_ns() - *t0;
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) killed++;
        else if (WIFEXITED(st)) exited++;
        else other++;
    }
    printf("{\"n\":%ld,\"killed\":%ld,\"exited\":%ld,\"other\":%ld,\"latency_ns\":[",
           n, killed, exited, other);
    for (long i = 0; i < n; i++) printf(i ? ",%lld" : "%lld", lat[i]);
    printf("]}\n");
    return 0;
}
"""


@dataclass(frozen=True)
class Program:
    name: str
    source: str
    nostdlib: bool = False


PROGRAMS = (
    Program("tiny", TINY_C, nostdlib=True),
    Program("forbidden-marker", MARKER_C, nostdlib=True),  # bench/rules: in-kernel kill
    Program("sleeper", SLEEPER_C),
    Program("execstorm", EXECSTORM_C),
    Program("connstorm", CONNSTORM_C),
    Program("sysloop", SYSLOOP_C),
    Program("openloop", OPENLOOP_C),
    Program("killrun", KILLRUN_C),
)


def build_all(out_dir: Path) -> dict[str, Path]:
    """Compile every program into out_dir (static, -O2); returns name -> binary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path] = {}
    for prog in PROGRAMS:
        src = out_dir / f"{prog.name}.c"
        src.write_text(prog.source)
        binary = out_dir / prog.name
        flags = ["-static", "-O2"] + (["-nostdlib", "-fno-stack-protector"] if prog.nostdlib
                                      else [])
        result = subprocess.run(["gcc", *flags, "-o", str(binary), str(src)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"gcc failed for {prog.name}:\n{result.stderr}")
        binary.chmod(0o755)
        built[prog.name] = binary
    return built
