#!/bin/sh
# Before removal (not upgrade): stop and disable every unit of the package.
#   deb: prerm remove | upgrade | deconfigure | failed-upgrade
#   rpm: %preun 0 (erase) | 1 (upgrade)
set -e

case "$1" in
    remove|0) ;;
    *) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
    systemctl stop siem-forwarder.service 'siem-forwarder@*.service' || true
fi
if command -v systemctl >/dev/null 2>&1; then
    # Works without a running systemd too: it only removes the [Install] symlinks.
    systemctl --no-reload disable siem-forwarder.service >/dev/null 2>&1 || true
    for link in /etc/systemd/system/*.wants/siem-forwarder@*.service; do
        [ -L "$link" ] || continue
        systemctl --no-reload disable "$(basename "$link")" >/dev/null 2>&1 || rm -f "$link"
    done
fi
exit 0
