#!/bin/sh
# After install or upgrade: create the service user, let it read the config, reload systemd.
# Never starts the service: it needs endpoints and credentials first (docs: operations.md).
#   deb: postinst configure [<old-version>] | abort-upgrade | abort-remove | ...
#   rpm: %post 1 (install) | 2 (upgrade)
set -e

case "$1" in
    configure) upgrade=${2:+yes} ;;
    1) upgrade= ;;
    2) upgrade=yes ;;
    *) exit 0 ;;
esac

if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers /usr/lib/sysusers.d/siem-forwarder.conf
elif ! getent passwd siem-forwarder >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/siem-forwarder --no-create-home \
        --shell /usr/sbin/nologin --comment "SIEM forwarder" siem-forwarder
fi

# The state directory is the user's home. systemd's StateDirectory= would create it when the
# unit starts, but `check` run by hand as the service user (or by a config-management tool)
# must find it too. An existing directory is left as the administrator set it.
if [ ! -d /var/lib/siem-forwarder ]; then
    install -d -o siem-forwarder -g siem-forwarder -m 0750 /var/lib/siem-forwarder
fi

# The packaged files are root:root; the service reads its config through the group. Only a
# root group is changed, so an administrator's own choice survives upgrades.
for path in /etc/siem-forwarder/config.yaml /etc/siem-forwarder/conf.d; do
    if [ -e "$path" ] && [ "$(stat -c %g "$path")" = 0 ]; then
        chgrp siem-forwarder "$path"
    fi
done

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    if [ -n "$upgrade" ]; then
        # Running instances must not keep importing modules from a venv replaced under them;
        # try-restart leaves stopped units stopped.
        systemctl try-restart siem-forwarder.service 'siem-forwarder@*.service' || true
    fi
fi
exit 0
