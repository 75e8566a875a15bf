#!/bin/sh
# Installs the Debian packages the test suite needs that pip cannot provide:
# rsyslog (with its GnuTLS driver) for the syslog_cef output's end-to-end tests, systemd
# and rpm for the packaging tests, PostgreSQL for the fleet tests (tests/fleet/), Prometheus
# (prometheus, promtool) for the dashboard and alert rule tests (tests/monitoring/), and groff
# for the man page.
# Idempotent: installs only what is missing, and only when root or sudo is available.
set -eu

missing=""
command -v rsyslogd >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ] || missing="$missing rsyslog"
# The gtls network stream driver ships separately; without it rsyslog cannot serve TLS.
have_gtls=""
for f in /usr/lib/*/rsyslog/lmnsd_gtls.so /usr/lib/rsyslog/lmnsd_gtls.so; do
    [ -e "$f" ] && have_gtls=1
done
[ -n "$have_gtls" ] || missing="$missing rsyslog-gnutls"
# systemd-analyze and systemd-sysusers check the packaged units; rpm inspects the built .rpm
# (tests/packaging/). Installing systemd in a container does not start it.
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
command -v rpm >/dev/null 2>&1 || missing="$missing rpm"
# The fleet tests (tests/fleet/) start a private PostgreSQL cluster with initdb and pg_ctl.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
# groff renders the man page made from the command line (tests/core/commands/test_help.py).
command -v groff >/dev/null 2>&1 || missing="$missing groff-base"
# The tests start their own Prometheus on a free loopback port with a storage path of their own;
# the package's service is kept from starting (below), and does not matter if it runs.
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || missing="$missing prometheus"

if [ -z "$missing" ]; then
    echo "install-test-deps: nothing to install"
    exit 0
fi

if [ "$(id -u)" = 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root="sudo -n"
else
    echo "install-test-deps: need root or sudo to install:$missing" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: no apt-get; install these by hand:$missing" >&2
    exit 1
fi

echo "install-test-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# Debian's policy-rc.d convention: exit 101 tells the packages' maintainer scripts not to start their
# services (Prometheus would otherwise keep running on :9090 after the install). One that is
# already there is left as it is.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# install-test-deps: no service starts during this install\nexit 101\n' | $as_root tee "$policy" >/dev/null
    $as_root chmod 755 "$policy"
    trap '$as_root rm -f "$policy"' EXIT
fi
$as_root apt-get update -qq
# shellcheck disable=SC2086
$as_root apt-get install -y -qq --no-install-recommends $missing
