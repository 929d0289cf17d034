#!/bin/sh
# Build roxd's container image from Debian packages, offline once the inputs exist.
#
#   deploy/image/build.sh DEB [TAG]
#       DEB   the roxd .deb from scripts/build-packages.sh
#       TAG   default roxd:<version of the .deb>
#
#   ROXD_IMAGE_ROOT=DIR   a Debian 12 root that already holds the .deb's Depends (the package
#                         tests' cached debootstrap root qualifies); without it, one is made
#                         here with debootstrap from this machine's Debian mirror (the only
#                         step that needs a network).
#
# The image: that root plus the .deb installed by dpkg (deploy/image/Dockerfile: FROM scratch,
# no registry). Documentation, manuals and locales are left out of the root to keep it small.
set -eu

DEB=${1:?usage: deploy/image/build.sh DEB [TAG]}
HERE=$(cd "$(dirname "$0")" && pwd)
[ -f "$DEB" ] || { echo "build.sh: no such .deb: $DEB" >&2; exit 2; }
VERSION=$(dpkg-deb -f "$DEB" Version)
TAG=${2:-roxd:$VERSION}
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

WORK=$(mktemp -d /tmp/roxd-image.XXXXXX)
trap 'rm -rf "$WORK"' EXIT INT TERM

ROOT=${ROXD_IMAGE_ROOT:-}
if [ -z "$ROOT" ]; then
    command -v debootstrap >/dev/null || { echo "build.sh: debootstrap missing" >&2; exit 1; }
    # the first alternative of each Depends entry, without versions
    DEPENDS=$(dpkg-deb -f "$DEB" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*//; s/:.*//' \
              | tr -d ' ' | grep -v '^$' | paste -sd, -)
    MIRROR=${ROXD_IMAGE_MIRROR:-http://deb.debian.org/debian}
    ROOT=$WORK/root
    debootstrap --variant=minbase --include="$DEPENDS" bookworm "$ROOT" "$MIRROR" >&2
fi
[ -x "$ROOT/usr/bin/python3" ] || { echo "build.sh: $ROOT is not a Debian root with python3" >&2
                                    exit 1; }

tar -C "$ROOT" --numeric-owner \
    --exclude=./usr/share/doc --exclude=./usr/share/man --exclude=./usr/share/locale \
    --exclude=./usr/share/info --exclude=./var/cache/apt --exclude=./var/lib/apt/lists \
    --exclude=./proc --exclude=./sys --exclude=./dev --exclude=./run \
    --exclude=./.roxd-test-complete \
    -cf "$WORK/rootfs.tar" .
cp "$DEB" "$WORK/roxd.deb"
cp "$HERE/Dockerfile" "$WORK/Dockerfile"
# the classic builder: no BuildKit frontend image to pull
DOCKER_BUILDKIT=0 docker build -q -t "$TAG" "$WORK" >/dev/null
echo "$TAG"
