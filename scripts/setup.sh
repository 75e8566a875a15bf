#!/bin/sh
# Sets up .venv with siem-forwarder (editable) and the given extras, from a clean clone.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh test,pangea
# Needs Python 3.11+ with venv; on Debian, installs python3-venv first when root or sudo allows.
set -eu
cd "$(dirname "$0")/.."
extras="${1:-pangea}"
py="${PYTHON:-python3}"

if ! command -v "$py" >/dev/null 2>&1; then
    echo "setup: $py not found; install Python 3.11 or newer (Debian: apt-get install python3)" >&2
    exit 1
fi
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    echo "setup: $("$py" --version 2>&1) is too old; siem-forwarder needs Python 3.11 or newer" >&2
    exit 1
fi

# Debian splits venv/ensurepip into python3-venv.
if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    pkg="python3-venv"
    if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
        echo "setup: Python's venv module is missing; install $pkg (as root)" >&2; exit 1; fi
    echo "setup: installing $pkg"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$pkg"
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
    rm -rf .venv
    "$py" -m venv .venv
fi

# Reinstall only when the project metadata or the requested extras changed.
stamp=".venv/.siem-forwarder-setup"
want="$(cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)-$extras"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    log=".venv/setup.log"
    echo "setup: installing siem-forwarder and its dependencies into .venv (log: $log)"
    if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip &&
           .venv/bin/python -m pip install --disable-pip-version-check -e ".[$extras]"; } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "setup: pip install failed; the whole log is in $log" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi
