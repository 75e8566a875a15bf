#!/bin/sh
# After removal: forget the units. On purge (deb only) also delete the state (checkpoints,
# quarantine, dead letters, buffers) and the service user; a plain remove keeps both, so a
# reinstall resumes where it stopped. rpm has no purge: its erase behaves like a remove.
#   deb: postrm remove | purge | upgrade | disappear | abort-install | abort-upgrade | ...
#   rpm: %postun 0 (erase) | 1 (upgrade)
set -e

case "$1" in
    remove|0|purge) ;;
    *) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi

if [ "$1" = purge ]; then
    rm -rf /var/lib/siem-forwarder
    if getent passwd siem-forwarder >/dev/null; then
        userdel siem-forwarder || true
    fi
    if getent group siem-forwarder >/dev/null; then
        groupdel siem-forwarder || true
    fi
    # Files an administrator added (secrets, instance configs) are theirs to delete: rmdir
    # removes these directories only when they are empty.
    rmdir /etc/siem-forwarder/conf.d /etc/siem-forwarder/credentials /etc/siem-forwarder 2>/dev/null || true
fi
exit 0
