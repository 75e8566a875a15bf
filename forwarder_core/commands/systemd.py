"""The systemd service protocol in pure Python: sd_notify, the watchdog, and credentials.

The units run the daemon as ``Type=notify``: systemd waits for ``READY=1`` before it calls the
start done, kills the process when ``WATCHDOG=1`` stops arriving, and shows ``STATUS=`` in
``systemctl status``. The protocol is one datagram of ``KEY=value`` lines to the AF_UNIX socket
named by ``$NOTIFY_SOCKET``, so it needs no libsystemd binding. Outside systemd every call is a
no-op that returns False, which keeps ``run`` usable from a terminal or a container.

Call :func:`watchdog` from the polling loop itself, never from a helper thread: a thread would
keep pinging while the loop is wedged, and the point of the watchdog is to restart a wedged loop.
"""
from __future__ import annotations

import os
import socket
import time

__all__ = [
    "credentials_dir",
    "notify",
    "ready",
    "reloading",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
]


def _socket_address() -> str | None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return None
    if addr[0] == "@":
        return "\0" + addr[1:]
    return addr


def notify(*fields: str) -> bool:
    """Send ``KEY=value`` fields to the service manager in one datagram.

    Returns True when a message was sent, False when not running under systemd. A socket that is
    set but unreachable raises ``OSError``: that is a broken environment, not a reason to carry
    on silently while systemd waits for ``READY=1`` and then kills the service.
    """
    addr = _socket_address()
    if addr is None:
        return False
    payload = "\n".join(fields).encode("utf-8")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(addr)
        sock.sendall(payload)
    return True


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WatchdogSec=``), or None when not asked.

    ``$WATCHDOG_PID`` names the process the watchdog is meant for; a child that inherited the
    environment (an ``ExecStartPre`` helper, a subprocess) must not ping on the parent's behalf.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec:
        return None
    try:
        micros = int(usec)
        if pid and int(pid) != os.getpid():
            return None
    except ValueError:
        return None
    if micros <= 0:
        return None
    return micros / 2_000_000


def _one_line(text: str) -> str:
    # A newline would start a new KEY=value field and could forge e.g. READY=1 or MAINPID=.
    return " ".join(text.splitlines())


def ready(status_text: str | None = None) -> bool:
    """Tell systemd that start-up (or a reload) is complete, with an optional status line."""
    if status_text is None:
        return notify("READY=1")
    return notify("READY=1", "STATUS=" + _one_line(status_text))


def reloading() -> bool:
    """Announce a reload; send :func:`ready` when it is done.

    ``MONOTONIC_USEC`` is what ``Type=notify-reload`` (systemd 253+) requires to match the
    reload to its request; sending it now keeps the units forward-compatible.
    """
    now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={now_usec}")


def stopping() -> bool:
    """Announce a clean shutdown, so systemd shows ``deactivating`` rather than a hang."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Set the one-line ``STATUS=`` shown by ``systemctl status``."""
    return notify("STATUS=" + _one_line(text))


def watchdog() -> bool:
    """Ping the watchdog: this process is alive and its loop is turning."""
    return notify("WATCHDOG=1")


def credentials_dir() -> str | None:
    """The directory systemd filled from ``LoadCredential=``, or None outside such a unit."""
    path = os.environ.get("CREDENTIALS_DIRECTORY")
    return path or None
