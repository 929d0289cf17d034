/* Test program for tests/kernel/test_evasion.py: what an attacker does without any tool that an
 * exec rule could name. Static, so it runs in the busybox test image. Prints one result line.
 *   evasion udp4 ADDR PORT COUNT   COUNT datagrams with sendto() on an AF_INET socket, no connect
 *   evasion udp6 ADDR PORT COUNT   the same on an AF_INET6 socket (ADDR may be ::ffff:a.b.c.d)
 *   evasion tcp6 ADDR PORT         connect() of an AF_INET6 TCP socket (::ffff:a.b.c.d)
 *   evasion uring                  io_uring_setup(2): a ring with 4 entries
 *   evasion module                 init_module, finit_module, delete_module called directly */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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
    if (argc >= 2 && !strcmp(argv[1], "uring"))
        return uring();
    if (argc >= 2 && !strcmp(argv[1], "module"))
        return module();
    fprintf(stderr, "usage: evasion udp4|udp6 ADDR PORT COUNT | tcp6 ADDR PORT | uring | module\n");
    return 2;
}
