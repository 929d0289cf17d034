/* Test payload: copy /bin/busybox into a memfd and run it from there with
 * execveat(fd, "", AT_EMPTY_PATH) — fileless execution. argv: applet and its arguments. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int src = open("/bin/busybox", O_RDONLY);
    int fd = memfd_create("payload", MFD_CLOEXEC);
    if (src < 0 || fd < 0) {
        perror("open/memfd_create");
        return 1;
    }
    char buf[65536];
    ssize_t n;
    while ((n = read(src, buf, sizeof(buf))) > 0)
        if (write(fd, buf, n) != n)
            return 1;
    char *def[] = {"echo", "fileless-ok", NULL};
    char **args = argc > 1 ? argv + 1 : def;
    char *envp[] = {"PATH=/bin", NULL};
    syscall(SYS_execveat, fd, "", args, envp, AT_EMPTY_PATH);
    perror("execveat");
    return 1;
}
