#!/bin/sh
# Offline test image for the syscall and file tests (issue 10), beside the busybox images of
# scripts/test-images.sh (which must exist first). Idempotent: an existing image is left alone.
#   roxd-test/escape:latest   the busybox root filesystem plus two static test programs:
#     /bin/sys-escape   mount(2) and unshare(2) called directly, results printed
#     /bin/memfd-exec   copies /bin/busybox into a memfd and execveat()s it (fileless)
set -eu
have() { docker image inspect "$1" >/dev/null 2>&1; }
have roxd-test/escape:latest && exit 0
here=$(cd "$(dirname "$0")" && pwd)
progs="$here/../tests/kernel/progs"
command -v gcc >/dev/null || { echo "gcc missing (apt-get install gcc libc6-dev)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -static -O2 -o "$tmp/sys-escape" "$progs/sys_escape.c"
gcc -static -O2 -o "$tmp/memfd-exec" "$progs/memfd_exec.c"
mkdir -p "$tmp/root/bin" "$tmp/root/tmp" "$tmp/root/etc/cron.d" "$tmp/root/proc" "$tmp/root/sys" \
    "$tmp/root/dev" "$tmp/root/mnt"
cp /bin/busybox "$tmp/root/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ -e "$tmp/root/bin/$applet" ] || ln -s busybox "$tmp/root/bin/$applet"
done
cp "$tmp/sys-escape" "$tmp/memfd-exec" "$tmp/root/bin/"
chmod 1777 "$tmp/root/tmp"
echo "root:x:0:0:root:/root:/bin/sh" > "$tmp/root/etc/passwd"
echo "root:x:0:" > "$tmp/root/etc/group"
tar -C "$tmp/root" -cf "$tmp/root.tar" .
docker import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' "$tmp/root.tar" roxd-test/escape:latest \
    >/dev/null
