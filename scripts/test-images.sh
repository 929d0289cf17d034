#!/bin/sh
# Build the offline test images with `docker import` (no registry is reachable, and none is
# asked). Idempotent: an image that exists is left alone.
#   roxd-test/busybox:latest   busybox-static with its applet links, /bin/sh included
#   roxd-test/busybox:other    the same root filesystem under a second name, for image scoping
set -eu
have() { docker image inspect "$1" >/dev/null 2>&1; }
if have roxd-test/busybox:latest && have roxd-test/busybox:other; then exit 0; fi
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || { echo "busybox-static missing (apt-get install busybox-static)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/root/bin" "$tmp/root/tmp" "$tmp/root/etc" "$tmp/root/proc" "$tmp/root/sys" "$tmp/root/dev"
cp "$BUSYBOX" "$tmp/root/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [ -e "$tmp/root/bin/$applet" ] || ln -s busybox "$tmp/root/bin/$applet"
done
chmod 1777 "$tmp/root/tmp"
echo "root:x:0:0:root:/root:/bin/sh" > "$tmp/root/etc/passwd"
echo "root:x:0:" > "$tmp/root/etc/group"
tar -C "$tmp/root" -cf "$tmp/root.tar" .
have roxd-test/busybox:latest || docker import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' \
    "$tmp/root.tar" roxd-test/busybox:latest >/dev/null
have roxd-test/busybox:other || docker tag roxd-test/busybox:latest roxd-test/busybox:other
