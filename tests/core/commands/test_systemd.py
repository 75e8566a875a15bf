"""The sd_notify protocol, checked against a real AF_UNIX datagram socket as systemd binds it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from forwarder_core.commands import systemd


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket playing the service manager; NOTIFY_SOCKET points at it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify")
        sock.bind(address)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
    else:
        name = f"siem-forwarder-test-{os.getpid()}-{id(sock)}"
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    sock.settimeout(5)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(65536).decode("utf-8").split("\n")


def test_notify_sends_all_fields_in_one_datagram(notify_socket: socket.socket) -> None:
    assert systemd.notify("READY=1", "STATUS=polling 3 sources") is True
    assert received(notify_socket) == ["READY=1", "STATUS=polling 3 sources"]


def test_helpers_send_the_protocol_keys(notify_socket: socket.socket) -> None:
    assert systemd.ready("polling 2 sources")
    assert received(notify_socket) == ["READY=1", "STATUS=polling 2 sources"]
    assert systemd.ready()
    assert received(notify_socket) == ["READY=1"]
    assert systemd.watchdog()
    assert received(notify_socket) == ["WATCHDOG=1"]
    assert systemd.stopping()
    assert received(notify_socket) == ["STOPPING=1"]
    assert systemd.status("last delivery 12:00:05, 0 queued")
    assert received(notify_socket) == ["STATUS=last delivery 12:00:05, 0 queued"]


def test_reloading_carries_the_monotonic_clock(notify_socket: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert systemd.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    fields = received(notify_socket)
    assert fields[0] == "RELOADING=1"
    key, _, value = fields[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_status_text_cannot_inject_fields(notify_socket: socket.socket) -> None:
    systemd.status("source down\nREADY=1\nMAINPID=1")
    assert received(notify_socket) == ["STATUS=source down READY=1 MAINPID=1"]


def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    assert systemd.ready("x") is False
    assert systemd.watchdog() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert systemd.stopping() is False


def test_unreachable_socket_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    with pytest.raises(OSError):
        systemd.notify("READY=1")


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 30.0


def test_watchdog_meant_for_another_process_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert systemd.watchdog_interval() is None


@pytest.mark.parametrize("usec", [None, "", "0", "abc"])
def test_no_or_bad_watchdog_usec_means_no_watchdog(usec: str | None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    if usec is None:
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    assert systemd.watchdog_interval() is None


def test_child_process_sees_no_watchdog_for_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """A subprocess inherits WATCHDOG_* from the service but must not ping for it."""
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    out = subprocess.run(
        [sys.executable, "-c", "from forwarder_core.commands import systemd; print(systemd.watchdog_interval())"],
        capture_output=True, text=True, check=True, timeout=30,
    )
    assert out.stdout.strip() == "None"


def test_credentials_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert systemd.credentials_dir() is None
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert systemd.credentials_dir() == str(tmp_path)
