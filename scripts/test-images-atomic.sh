#!/bin/sh
# Offline image for the detection benchmark (bench/detection, docs/detection.md): Atomic Red
# Team's Linux tests need bash, coreutils, python3, perl, nc, crontab, sudo, ... which the
# busybox images lack. Built with `docker import` like scripts/test-images.sh, no registry:
#   roxd-test/atomic:latest   files of Debian packages installed on this host (dpkg -L, with
#                             their installed dependency closure) plus a few packages that a
#                             runtime host need not have installed (cron, sudo, netcat, at,
#                             kmod, socat, busybox): their .debs are fetched once with
#                             `apt-get download` into /var/cache/roxd/atomic-debs and unpacked,
#                             never installed.
# Idempotent: an existing image is left alone (ROXD_REBUILD_ATOMIC=1 rebuilds it).
set -eu
IMAGE=roxd-test/atomic:latest
have() { docker image inspect "$1" >/dev/null 2>&1; }
if have "$IMAGE" && [ "${ROXD_REBUILD_ATOMIC:-0}" != 1 ]; then exit 0; fi

BASE="bash coreutils dash findutils grep sed mawk tar gzip bzip2 xz-utils procps util-linux
python3 perl-base passwd login openssl iproute2 net-tools openssh-client zip unzip psmisc file
less xxd hostname debianutils ncurses-bin libc-bin curl wget diffutils ed gcc libc6-dev make
sqlite3 lsof strace gdb libboost-regex1.74.0 binutils iptables nftables gnupg vim-common vim
lsb-release systemd libdbus-1-3 e2fsprogs"
EXTRA="cron sudo netcat-openbsd at kmod libkmod2 socat libwrap0 sensible-utils iputils-ping
rsync libpopt0 tcpdump libpcap0.8 telnet inetutils-telnet nmap nmap-common liblinear4 liblua5.3-0
libpcre3 libssh2-1 libblas3 cpio p7zip p7zip-full screen libutempter0 expect tcl8.6 libtcl8.6
tcl-expect bind9-dnsutils bind9-libs libuv1 libjson-c5 liblmdb0 libmaxminddb0 libfstrm0
libprotobuf-c1 libxml2 libicu72 libedit2 sshpass whois libidn12 openssh-server
openssh-sftp-server libwrap0 procps libjemalloc2 lua-lpeg busybox"
DEBS=/var/cache/roxd/atomic-debs

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# the installed dependency closure of the base packages (alternatives: the first one)
closure() {
    todo="$*"; seen=" "
    while [ -n "$todo" ]; do
        # shellcheck disable=SC2086
        set -- $todo; p=$1; shift; todo="$*"
        case "$seen" in *" $p "*) continue ;; esac
        installed "$p" || continue
        seen="$seen$p "
        deps=$(dpkg-query -W -f='${Depends}, ${Pre-Depends}' "$p" | tr ',' '\n' |
            sed 's/|.*//; s/(.*)//; s/:any//; s/ //g' | grep -v '^$' || true)
        todo="$todo $deps"
    done
    echo "$seen"
}

for p in bash coreutils python3 perl-base; do
    installed "$p" || { echo "package $p missing on this host (apt-get install $p)" >&2; exit 1; }
done
mkdir -p "$DEBS"
for p in $EXTRA; do
    ls "$DEBS/${p}_"*.deb >/dev/null 2>&1 && continue
    (cd "$DEBS" && apt-get download -q "$p" >/dev/null 2>&1) ||
        { echo "cannot fetch $p.deb (apt-get download $p); needed once for $IMAGE" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root="$tmp/root"
mkdir -p "$root"
# shellcheck disable=SC2046
for p in $(closure $BASE); do dpkg -L "$p"; done | sort -u > "$tmp/files"
# regular files and symlinks only; directories are made by --parents
while IFS= read -r f; do
    if [ -f "$f" ] || [ -L "$f" ]; then printf '%s\n' "$f"; fi
done < "$tmp/files" > "$tmp/copy"
# this host has Debian's merged /usr (/bin, /sbin, /lib, /lib64 link into /usr): the image too
mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib" "$root/usr/lib64"
for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done
tar -C / --no-recursion -cf - -T "$tmp/copy" 2>/dev/null | tar -C "$root" -xf -
# the extra .debs unpacked apart, their /bin etc. moved under /usr, then merged in
mkdir -p "$tmp/debs"
for deb in "$DEBS"/*.deb; do dpkg -x "$deb" "$tmp/debs"; done
for d in bin sbin lib lib64; do
    if [ -d "$tmp/debs/$d" ]; then
        mkdir -p "$tmp/debs/usr/$d"; cp -a "$tmp/debs/$d/." "$tmp/debs/usr/$d/"
        rm -rf "${tmp:?}/debs/$d"
    fi
done
cp -a "$tmp/debs/." "$root/"
mkdir -p "$root/tmp" "$root/var/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/root" "$root/home/user" \
    "$root/etc/cron.d" "$root/var/spool/cron/crontabs" "$root/var/spool/cron/atjobs" \
    "$root/var/log" "$root/run" "$root/etc/sudoers.d" "$root/etc/ssh" "$root/root/.ssh"
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 700 "$root/root/.ssh"
cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
user:x:1000:1000:user:/home/user:/bin/bash
EOF
cat > "$root/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
sudo:x:27:user
shadow:x:42:
crontab:x:107:
nogroup:x:65534:
user:x:1000:
EOF
cat > "$root/etc/shadow" <<'EOF'
root:*:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
user:*:19000:0:99999:7:::
EOF
chmod 640 "$root/etc/shadow"
printf 'root ALL=(ALL:ALL) ALL\n%%sudo ALL=(ALL:ALL) NOPASSWD: ALL\n' > "$root/etc/sudoers"
chmod 440 "$root/etc/sudoers"
[ -f "$root/usr/bin/sudo" ] && chmod 4755 "$root/usr/bin/sudo"
printf 'SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin\n' \
    > "$root/etc/crontab"
printf 'PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"\n' \
    > "$root/etc/environment"
: > "$root/root/.bash_history"
: > "$root/root/.ssh/authorized_keys"
chmod 600 "$root/root/.ssh/authorized_keys"
: > "$root/var/log/auth.log"
: > "$root/var/log/syslog"
# a Debian host's logging configuration, which tests that tamper with it look for
printf '*.*;auth,authpriv.none\t-/var/log/syslog\nauth,authpriv.*\t/var/log/auth.log\n' \
    > "$root/etc/rsyslog.conf"
echo atomic > "$root/etc/hostname"
# what the packages' maintainer scripts would have set up: the nc alternative, PAM stacks
ln -sf nc.openbsd "$root/usr/bin/nc"
ln -sf which.debianutils "$root/usr/bin/which"
ln -sf blas/libblas.so.3 "$root/usr/lib/x86_64-linux-gnu/libblas.so.3"
ln -sf mawk "$root/usr/bin/awk"
ln -sf mawk "$root/usr/bin/nawk"
[ -e "$root/usr/bin/vi" ] || ln -sf vim.basic "$root/usr/bin/vi"
[ -e "$root/usr/bin/vim" ] || ln -sf vim.basic "$root/usr/bin/vim"
[ -e "$root/usr/bin/7z" ] || ln -sf ../lib/p7zip/7z "$root/usr/bin/7z"
[ -e "$root/usr/bin/telnet" ] || ln -sf inetutils-telnet "$root/usr/bin/telnet"
[ -e "$root/usr/bin/editor" ] || ln -sf ed "$root/usr/bin/editor"
ln -sf nc.openbsd "$root/usr/bin/netcat"
mkdir -p "$root/etc/pam.d"
printf 'auth [success=1 default=ignore] pam_unix.so nullok\nauth requisite pam_deny.so\nauth required pam_permit.so\n' \
    > "$root/etc/pam.d/common-auth"
for k in account session session-noninteractive password; do
    t=${k%%-*}
    printf '%s required pam_permit.so\n' "$t" > "$root/etc/pam.d/common-$k"
done
printf 'auth sufficient pam_rootok.so\n@include common-auth\n@include common-account\n@include common-session\n' \
    > "$root/etc/pam.d/other"
tar -C "$root" -cf "$tmp/root.tar" .
have "$IMAGE" && docker rmi -f "$IMAGE" >/dev/null
docker import -c 'CMD ["/bin/bash"]' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV HOME=/root' "$tmp/root.tar" "$IMAGE" >/dev/null
