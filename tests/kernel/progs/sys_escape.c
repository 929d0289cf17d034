/* Test payload: container-escape syscalls made directly (no mount/unshare binary), each
 * printing its result. Built static by scripts/test-images-extra.sh. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void)
{
    long r = syscall(SYS_mount, "none", "/mnt", "tmpfs", 0UL, NULL);
    printf("mount=%ld errno=%s\n", r, r ? strerror(errno) : "0");
    r = syscall(SYS_unshare, CLONE_NEWNS | CLONE_NEWUSER);
    printf("unshare=%ld errno=%s\n", r, r ? strerror(errno) : "0");
    fflush(stdout);
    return 0;
}
