"""`check --connect`: one attempt per component, all at once, bounded, one cause per line."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import run_forwarder


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    done.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def _config(port: int, silent: int | None = None) -> dict:
    url = f"http://127.0.0.1:{port}"
    sources = [
        {"name": "asana", "type": "asana", "options": {"base_url": url + "/api/1.0", "token": "${T}", "workspace_gid": "1"}},
        {"name": "incydr", "type": "incydr", "options": {"base_url": url, "client_id": "k", "client_secret": "${T}"}},
        {"name": "agilicus", "type": "agilicus", "options": {"base_url": url, "token": "${T}"}},
        {"name": "agilicus-auth", "type": "agilicus_auth", "options": {"base_url": url, "token": "${T}"}},
        {"name": "pangea", "type": "pangea", "options": {"base_url": url, "token": "${T}"}},
    ]
    outputs = [
        {"name": "hec", "type": "splunk_hec", "options": {"url": url, "token": "${T}"}},
        {"name": "es", "type": "elastic_bulk", "options": {"url": url, "index": "logs-x"}},
        {"name": "cef", "type": "syslog_cef", "options": {"host": "127.0.0.1", "port": port}},
    ]
    if silent is not None:
        sources.append({"name": "slow", "type": "agilicus", "options": {"base_url": f"http://127.0.0.1:{silent}",
                                                                          "token": "${T}"}})
    return {"sources": sources, "outputs": outputs}


def test_every_component_unreachable_is_reported_once_each_within_seconds(tmp_path: Path) -> None:
    port = _closed_port()
    started = time.monotonic()
    result = run_forwarder(tmp_path, _config(port), "check", "--connect", env={"T": "secret-value-123"})
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    assert elapsed < 8, f"check --connect took {elapsed:.1f} s"
    lines = result.stdout.splitlines()[1:]
    assert [line.split(":", 1)[0] for line in lines] == [
        "source asana (asana)", "source incydr (incydr)", "source agilicus (agilicus)",
        "source agilicus-auth (agilicus_auth)", "source pangea (pangea)",
        "output hec (splunk_hec)", "output es (elastic_bulk)", "output cef (syslog_cef)"]
    for line in lines:
        assert ": FAILED: " in line and "refused" in line.lower(), line
        assert line.count("http://") <= 1, f"more than one endpoint named: {line}"
        assert "retry" not in line and "next try" not in line and "attempts" not in line, line
        name = line.split(" ")[1]
        assert f": {name}: " not in line, f"component named twice: {line}"
    assert "retrying" not in result.stderr, result.stderr
    assert "secret-value-123" not in result.stdout + result.stderr


def test_a_silent_component_cannot_hold_the_check_past_its_bound(tmp_path: Path, silent_port: int) -> None:
    started = time.monotonic()
    result = run_forwarder(tmp_path, _config(_closed_port(), silent_port), "check", "--connect",
                           "--connect-timeout", "2", env={"T": "secret-value-123"})
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert elapsed < 6, f"check --connect took {elapsed:.1f} s with a 2 s bound"
    slow = [line for line in result.stdout.splitlines() if line.startswith("source slow ")]
    assert len(slow) == 1 and ": FAILED: " in slow[0]
    assert "timed out" in slow[0] or "no answer within 2 s" in slow[0], slow[0]
