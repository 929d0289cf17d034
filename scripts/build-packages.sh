#!/bin/sh
# Build the roxd .deb (packaging/deb/debian, debhelper + pybuild) and .rpm
# (packaging/rpm/roxd.spec, rpmbuild) into dist/ (or $1).
#
#   scripts/build-packages.sh [DIST_DIR]        both packages, then lintian on the .deb
#   ROXD_PACKAGES=deb scripts/build-packages.sh      only one format
#   ROXD_PACKAGE_TREE=worktree scripts/...           package the working tree, uncommitted
#                                                    edits included (default: HEAD, so
#                                                    what is packaged is what is committed)
#
# Needs (Debian 12): debhelper dh-python pybuild-plugin-pyproject python3-all
# python3-setuptools python3-wheel python3-pip rpm lintian. Builds in a temporary
# copy; never writes inside the source tree except DIST_DIR.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
DIST=${1:-$REPO/dist}
FORMATS=${ROXD_PACKAGES:-deb rpm}
# Debian's own interpreter and tools, never a pyenv/venv python earlier on PATH
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
unset PYTHONPATH VIRTUAL_ENV PYTHONHOME || true
# no local pip configuration (find-links, indexes) may leak into a package build
PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_CONFIG_FILE PIP_NO_INDEX PIP_DISABLE_PIP_VERSION_CHECK

TREE=${ROXD_PACKAGE_TREE:-head}
PARTS="pyproject.toml README.md roxd bpf rules config systemd docs packaging"

WORK=$(mktemp -d /tmp/roxd-pkg.XXXXXX)
trap 'rm -rf "$WORK"' EXIT INT TERM
SRC=$WORK/src
mkdir -p "$SRC" "$DIST"
case $TREE in
    head) git -C "$REPO" archive --format=tar HEAD $PARTS | tar -xf - -C "$SRC" ;;
    worktree) (cd "$REPO" && tar -cf - --exclude='__pycache__' --exclude='*.pyc' $PARTS) \
                  | tar -xf - -C "$SRC" ;;
    *) echo "build-packages: ROXD_PACKAGE_TREE must be head or worktree" >&2; exit 2 ;;
esac

VERSION=$(/usr/bin/python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$SRC/pyproject.toml")
deb_version=$(dpkg-parsechangelog -l "$SRC/packaging/deb/debian/changelog" -S Version)
rpm_version=$(sed -n 's/^Version:[[:space:]]*//p' "$SRC/packaging/rpm/roxd.spec")
for v in "$deb_version" "$rpm_version"; do
    if [ "${v%%-*}" != "$VERSION" ]; then
        echo "build-packages: version mismatch: pyproject.toml says $VERSION, packaging says $v" >&2
        echo "  (update packaging/deb/debian/changelog and packaging/rpm/roxd.spec)" >&2
        exit 1
    fi
done
mv "$SRC" "$WORK/roxd-$VERSION"
SRC=$WORK/roxd-$VERSION
# the manual pages, for both formats (roxctl.1 is generated from roxctl's parser:
# packaging/man/roxctl.1, used from there by both)
cp "$SRC/packaging/deb/debian/roxd.8" "$SRC/packaging/"
# the rpm's Source0, taken before the deb build leaves its build tree behind
tar -czf "$WORK/roxd-$VERSION.tar.gz" -C "$WORK" "roxd-$VERSION"

build_deb() {
    cp -r "$SRC/packaging/deb/debian" "$SRC/debian"
    (cd "$SRC" && dpkg-buildpackage --build=binary --no-sign -rfakeroot) \
        >"$WORK/deb-build.log" 2>&1 || {
        tail -40 "$WORK/deb-build.log" >&2
        echo "build-packages: dpkg-buildpackage failed (log above)" >&2
        exit 1
    }
    deb=$WORK/roxd_${deb_version}_all.deb
    cp "$deb" "$DIST/"
    echo "built $DIST/$(basename "$deb")"
    if command -v lintian >/dev/null 2>&1; then
        # errors fail the build; warnings are printed
        lintian --fail-on error --suppress-tags-from-file "$SRC/packaging/deb/lintian-suppress" \
            "$DIST/$(basename "$deb")" || {
            echo "build-packages: lintian found errors" >&2
            exit 1
        }
    fi
    rm -rf "$SRC/debian"
}

build_rpm() {
    top=$WORK/rpmbuild
    mkdir -p "$top/SOURCES" "$top/SPECS"
    cp "$WORK/roxd-$VERSION.tar.gz" "$top/SOURCES/"
    cp "$SRC/packaging/rpm/roxd.spec" "$top/SPECS/"
    # BuildRequires can only be checked where rpm manages the system (not on Debian)
    nodeps=
    if ! rpm -q rpm >/dev/null 2>&1; then
        nodeps=--nodeps
    fi
    rpmbuild -bb $nodeps --define "_topdir $top" "$top/SPECS/roxd.spec" \
        >"$WORK/rpm-build.log" 2>&1 || {
        tail -40 "$WORK/rpm-build.log" >&2
        echo "build-packages: rpmbuild failed (log above)" >&2
        exit 1
    }
    for rpmfile in "$top"/RPMS/noarch/roxd-*.rpm; do
        cp "$rpmfile" "$DIST/"
        echo "built $DIST/$(basename "$rpmfile")"
    done
}

for format in $FORMATS; do
    case $format in
        deb) build_deb ;;
        rpm) build_rpm ;;
        *) echo "build-packages: unknown format $format (deb, rpm)" >&2; exit 2 ;;
    esac
done
