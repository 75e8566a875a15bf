"""A hostile vendor at the transport level neither loses an event nor holds the forwarder.

Each test runs the real ``siem-forwarder`` against :class:`~tests.fakes.hostile_http.HostileAsana`,
whose first page of each poll is honest and whose later pages are an attack: a slow-loris, a
200 MB page, a gzip bomb, HTML, a redirect to another host, a truncated body, a 503 storm. The
poll fails with an error naming what happened, the page before it stays committed and the
cursor does not move past it, the forwarder's peak RSS stays bounded (measured by ``wait4``),
and once the vendor is honest again every event arrives exactly once. SIGTERM during a
slow-loris ends ``once`` and ``run`` promptly, with nothing committed that was not delivered.
"""
from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.storage.checkpoint import CheckpointStore
from tests.fakes.hostile_http import HostileAsana
from tests.helpers import forwarder_env, lines_written, read_jsonl, start_forwarder, write_config

TOKEN = "2/1204/1207:fake-service-account"
EVENTS, PAGE = 150, 50
RSS_BOUND_MB = 300
"""Generous: a ``once`` of this source peaks near 100 MB; before the bounds, 2.4 GB (huge) and 2.9 GB (bomb)."""

EXPECTED = {
    "slowloris": "within the request deadline of 3s (option request_deadline",
    "huge": "passed max_response_bytes (67,108,864 bytes)",
    "bomb": "passed max_response_bytes (67,108,864 bytes) once decompressed",
    "html": "expected JSON, got an HTML page",
    "redirect": "401 Not Authorized",  # the other host never saw the token
    "truncated": "truncated",
    "storm": "503 Service Unavailable after 6 attempts",
}


@pytest.fixture
def vendor() -> Iterator[HostileAsana]:
    fake = HostileAsana(events=EVENTS, span=3600, token=TOKEN, trickle=0.5)
    fake.start()
    yield fake
    fake.stop()


def config(tmp_path: Path, vendor: HostileAsana, **options: Any) -> dict[str, Any]:
    start = (datetime.now(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "state_dir": str(tmp_path / "state"),
        "sources": [{"name": "asana", "type": "asana", "start_time": start,
                     "options": {"base_url": vendor.url + "/api/1.0", "token": "${ASANA}",
                                 "workspace_gid": "12345", "page_size": PAGE, **options}}],
        "outputs": [{"name": "out", "type": "file", "options": {"path": str(tmp_path / "out.jsonl")}}],
    }


_LAUNCH = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)
"""Starts the forwarder from a small Python of its own and reports its ``ru_maxrss``: a child
forked straight from the test process would carry that process's own peak (hundreds of MB late
in a full run) into its figure, since Linux keeps the high-water mark of the memory it had
before ``exec``."""


def once(tmp_path: Path, conf: dict[str, Any]) -> tuple[subprocess.CompletedProcess[str], float]:
    """``siem-forwarder once`` as a child; its result and its peak RSS in MB (``wait4``'s ru_maxrss)."""
    path = write_config(tmp_path / "config.yaml", conf)
    peak = tmp_path / "once.maxrss"
    argv = [sys.executable, "-c", _LAUNCH, str(peak), "-m", "forwarder_core", "once", "-c", str(path)]
    with open(tmp_path / "once.out", "w+") as out, open(tmp_path / "once.err", "w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, text=True,
                                env=forwarder_env({"ASANA": TOKEN}))
        proc.wait()
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())
    return done, int(peak.read_text()) / 1024


def committed(tmp_path: Path) -> int:
    store = CheckpointStore(tmp_path / "state")
    try:
        checkpoint = store.get("asana")
        return checkpoint.delivered if checkpoint is not None else 0
    finally:
        store.close()


def delivered_ids(tmp_path: Path) -> list[str]:
    return [e["id"] for e in read_jsonl(tmp_path / "out.jsonl")]


@pytest.mark.parametrize("mode", list(EXPECTED))
def test_a_hostile_page_fails_the_poll_by_name_loses_nothing_and_holds_no_memory(
        tmp_path: Path, vendor: HostileAsana, mode: str) -> None:
    vendor.hostile(mode)
    conf = config(tmp_path, vendor, timeout=1, request_deadline=3)

    done, peak_mb = once(tmp_path, conf)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    (row,) = [ln for ln in done.stdout.splitlines() if ln.startswith("asana ")]
    assert row.rstrip().endswith("FAILED"), done.stdout
    # the reason is said once, in the log line of the failed poll
    errors = [ln for ln in done.stderr.splitlines() if " ERROR " in ln and "asana" in ln]
    assert any(EXPECTED[mode] in ln for ln in errors), done.stderr
    assert peak_mb < RSS_BOUND_MB, f"peak RSS {peak_mb:.0f} MB"
    assert vendor.hostile_answers >= 1
    # The honest first page is delivered and committed; the cursor stays before the hostile one.
    assert len(delivered_ids(tmp_path)) == PAGE
    assert committed(tmp_path) == PAGE
    if mode == "redirect":
        assert vendor.elsewhere and all("Authorization" not in r.headers for r in vendor.elsewhere)
        assert all(TOKEN not in str(r.headers) for r in vendor.elsewhere)

    vendor.hostile(None)
    again, _ = once(tmp_path, conf)

    assert again.returncode == 0, again.stdout + again.stderr
    ids = delivered_ids(tmp_path)
    assert len(ids) == len(set(ids)) == EVENTS
    assert set(ids) == {e["gid"] for e in vendor.events()}


def _await_the_trickle(proc: subprocess.Popen[str], vendor: HostileAsana, out: Path) -> None:
    """Wait until page 1 was delivered and page 2 is being trickled (or the forwarder died)."""
    while not (vendor.answering.wait(0.1) and lines_written(out) >= PAGE):
        assert proc.poll() is None, proc.communicate()


@pytest.mark.parametrize("command", ["once", "run"])
def test_sigterm_during_a_slowloris_ends_the_forwarder_and_commits_nothing_undelivered(
        tmp_path: Path, vendor: HostileAsana, command: str) -> None:
    vendor.trickle = 2.0
    vendor.hostile("slowloris")
    # A deadline of 5 x 60 s: only the stop can end this request within the test.
    conf = config(tmp_path, vendor, timeout=60)
    conf["shutdown_timeout"] = 5
    proc = start_forwarder(tmp_path, conf, command, env={"ASANA": TOKEN})
    try:
        _await_the_trickle(proc, vendor, tmp_path / "out.jsonl")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)  # a guard against a hang, not a measure
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == (0 if command == "run" else 1), stdout + stderr
    assert "Traceback" not in stderr
    assert "abandoned" not in stderr  # the request was cut off, not left running
    assert len(delivered_ids(tmp_path)) == PAGE
    assert committed(tmp_path) == PAGE
