/* Test program for tests/kernel/test_evasion.py: what an attacker does without any tool that an
 * exec rule could name. Static, so it runs in the busybox test image. Prints one result line.
 *   evasion udp4 ADDR PORT COUNT   COUNT datagrams with sendto() on an AF_INET socket, no connect
 *   evasion udp6 ADDR PORT COUNT   the same on an AF_INET6 socket (ADDR may be ::ffff:a.b.c.d)
 *   evasion tcp6 ADDR PORT         connect() of an AF_INET6 TCP socket (::ffff:a.b.c.d)
 *   evasion uring                  io_uring_setup(2): a ring with 4 entries
 *   evasion uring-connect ADDR PORT  a TCP connect submitted through an io_uring
 *                                  (IORING_OP_CONNECT): no connect(2) system call is made
 *   evasion uring-nop COUNT        COUNT no-op requests through a ring, one per io_uring_enter;
 *                                  prints the CPU time per request (for the cost figures)
 *   evasion module                 init_module, finit_module, delete_module called directly */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>

static int udp(int family, const char *addr, int port, long count)
{
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        if (inet_pton(AF_INET, addr, &sin->sin_addr) != 1)
            return 2;
        len = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) != 1)
            return 2;
        len = sizeof(*sin6);
    }
    int fd = socket(family, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    long sent = 0, failed = 0;
    for (long i = 0; i < count; i++) {
        if (sendto(fd, "roxd", 4, 0, (struct sockaddr *)&ss, len) < 0)
            failed++;
        else
            sent++;
    }
    printf("udp sent=%ld failed=%ld errno=%d\n", sent, failed, failed ? errno : 0);
    return 0;
}

static int tcp6(const char *addr, int port)
{
    struct sockaddr_in6 sin6;
    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(port);
    if (inet_pton(AF_INET6, addr, &sin6.sin6_addr) != 1)
        return 2;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    int rc = connect(fd, (struct sockaddr *)&sin6, sizeof(sin6));
    printf("connect rc=%d errno=%d\n", rc, rc ? errno : 0);
    return 0;
}

static int uring(void)
{
    unsigned char params[120]; /* struct io_uring_params */
    memset(params, 0, sizeof(params));
    long fd = syscall(425 /* io_uring_setup */, 4, params);
    printf("io_uring_setup rc=%ld errno=%d\n", fd, fd < 0 ? errno : 0);
    return 0;
}

/* The uapi layouts used here (struct io_uring_params, io_sqring_offsets, io_uring_sqe) are
 * fixed ABI; spelled out so the program builds without liburing or new kernel headers. */
struct sqring_offsets { unsigned head, tail, ring_mask, ring_entries, flags, dropped, array,
                        resv1; unsigned long long user_addr; };
struct cqring_offsets { unsigned head, tail, ring_mask, ring_entries, overflow, cqes, flags,
                        resv1; unsigned long long user_addr; };
struct uring_params { unsigned sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle,
                      features, wq_fd, resv[3]; struct sqring_offsets sq_off;
                      struct cqring_offsets cq_off; };
struct uring_sqe { unsigned char opcode, flags; unsigned short ioprio; int fd;
                   unsigned long long off, addr; unsigned len, op_flags;
                   unsigned long long user_data; unsigned long long pad[3]; };
struct uring_cqe { unsigned long long user_data; int res; unsigned flags; };
#define OP_CONNECT 16
#define ENTER_GETEVENTS 1

static int uring_connect(const char *addr, int port)
{
    struct uring_params p;
    memset(&p, 0, sizeof(p));
    int ring = syscall(425 /* io_uring_setup */, 4, &p);
    if (ring < 0) {
        printf("io_uring_setup rc=-1 errno=%d\n", errno);
        return 0;
    }
    size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct uring_cqe);
    char *sq = mmap(0, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED, ring, 0);
    struct uring_sqe *sqes = mmap(0, p.sq_entries * sizeof(struct uring_sqe),
                                  PROT_READ | PROT_WRITE, MAP_SHARED, ring, 0x10000000ULL);
    char *cq = mmap(0, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED, ring, 0x8000000ULL);
    if (sq == MAP_FAILED || sqes == MAP_FAILED || cq == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    inet_pton(AF_INET, addr, &sin.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    unsigned tail = *(unsigned *)(sq + p.sq_off.tail);
    unsigned mask = *(unsigned *)(sq + p.sq_off.ring_mask);
    struct uring_sqe *sqe = &sqes[tail & mask];
    memset(sqe, 0, sizeof(*sqe));
    sqe->opcode = OP_CONNECT;
    sqe->fd = fd;
    sqe->addr = (unsigned long long)(unsigned long)&sin;
    sqe->off = sizeof(sin); /* connect: addrlen goes in off */
    sqe->user_data = 42;
    ((unsigned *)(sq + p.sq_off.array))[tail & mask] = tail & mask;
    __atomic_store_n((unsigned *)(sq + p.sq_off.tail), tail + 1, __ATOMIC_RELEASE);
    long n = syscall(426 /* io_uring_enter */, ring, 1, 1, ENTER_GETEVENTS, 0, 0);
    unsigned head = __atomic_load_n((unsigned *)(cq + p.cq_off.head), __ATOMIC_ACQUIRE);
    unsigned cmask = *(unsigned *)(cq + p.cq_off.ring_mask);
    struct uring_cqe *cqe = &((struct uring_cqe *)(cq + p.cq_off.cqes))[head & cmask];
    printf("uring connect submitted=%ld res=%d\n", n, cqe->res);
    return 0;
}

static int uring_nop(long count)
{
    struct uring_params p;
    memset(&p, 0, sizeof(p));
    int ring = syscall(425, 4, &p);
    if (ring < 0)
        return 1;
    char *sq = mmap(0, p.sq_off.array + p.sq_entries * sizeof(unsigned), PROT_READ | PROT_WRITE,
                    MAP_SHARED, ring, 0);
    struct uring_sqe *sqes = mmap(0, p.sq_entries * sizeof(struct uring_sqe),
                                  PROT_READ | PROT_WRITE, MAP_SHARED, ring, 0x10000000ULL);
    char *cq = mmap(0, p.cq_off.cqes + p.cq_entries * sizeof(struct uring_cqe),
                    PROT_READ | PROT_WRITE, MAP_SHARED, ring, 0x8000000ULL);
    if (sq == MAP_FAILED || sqes == MAP_FAILED || cq == MAP_FAILED)
        return 1;
    unsigned mask = *(unsigned *)(sq + p.sq_off.ring_mask);
    struct timespec t0, t1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    for (long i = 0; i < count; i++) {
        unsigned tail = *(unsigned *)(sq + p.sq_off.tail);
        struct uring_sqe *sqe = &sqes[tail & mask];
        memset(sqe, 0, sizeof(*sqe)); /* opcode 0: IORING_OP_NOP */
        ((unsigned *)(sq + p.sq_off.array))[tail & mask] = tail & mask;
        __atomic_store_n((unsigned *)(sq + p.sq_off.tail), tail + 1, __ATOMIC_RELEASE);
        syscall(426, ring, 1, 1, ENTER_GETEVENTS, 0, 0);
        unsigned head = *(unsigned *)(cq + p.cq_off.head);
        __atomic_store_n((unsigned *)(cq + p.cq_off.head), head + 1, __ATOMIC_RELEASE);
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    printf("%.1f\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / count);
    return 0;
}

static int module(void)
{
    long a = syscall(175 /* init_module */, "\x7f" "ELF", 4L, "");
    int ea = a < 0 ? errno : 0;
    long b = syscall(313 /* finit_module */, 0, "", 0);
    int eb = b < 0 ? errno : 0;
    long c = syscall(176 /* delete_module */, "roxd_test", 0);
    int ec = c < 0 ? errno : 0;
    printf("init_module errno=%d finit_module errno=%d delete_module errno=%d\n", ea, eb, ec);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 5 && !strcmp(argv[1], "udp4"))
        return udp(AF_INET, argv[2], atoi(argv[3]), atol(argv[4]));
    if (argc >= 5 && !strcmp(argv[1], "udp6"))
        return udp(AF_INET6, argv[2], atoi(argv[3]), atol(argv[4]));
    if (argc >= 4 && !strcmp(argv[1], "tcp6"))
        return tcp6(argv[2], atoi(argv[3]));
    if (argc >= 3 && !strcmp(argv[1], "uring-nop"))
        return uring_nop(atol(argv[2]));
    if (argc >= 4 && !strcmp(argv[1], "uring-connect"))
        return uring_connect(argv[2], atoi(argv[3]));
    if (argc >= 2 && !strcmp(argv[1], "uring"))
        return uring();
    if (argc >= 2 && !strcmp(argv[1], "module"))
        return module();
    fprintf(stderr, "usage: evasion udp4|udp6 ADDR PORT COUNT | tcp6 ADDR PORT | uring | module\n");
    return 2;
}
