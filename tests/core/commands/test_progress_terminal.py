"""`once` on a real terminal (a pty, rendered with pyte): log records never break the live line,
the line fits the terminal, and it shows events/s and how far through the backlog a source is."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyte
import pytest

from tests.fakes.asana import AsanaFake
from tests.helpers import forwarder_env, write_config

TOKEN = "2/1204/1207:progress-test-account"
COLS, ROWS = 250, 60  # wide enough for a whole log record (their paths are long) on one row
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (INFO|WARNING|ERROR) siem_forwarder")


def run_in_pty(argv: list[str], env: dict[str, str]) -> bytes:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert proc.wait(timeout=120) == 0, b"".join(chunks).decode("utf-8", "replace")
    reader.join(timeout=10)
    os.close(master)
    return b"".join(chunks)


def test_log_records_go_around_the_live_line_which_fits_the_terminal(tmp_path: Path, testkit_path: str) -> None:
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=3)
    with AsanaFake(events=1200, span=3 * 86400 - 600, start=start, token=TOKEN) as fake:
        for _ in range(4):  # slow pages, each run of them followed by a 503 that logs a retry warning
            fake.fault("slow", count=6, delay=0.15)
            fake.fault("status", status=503, count=1)
        config = {
            "state_dir": str(tmp_path / "state"),
            "plugin_paths": [testkit_path],
            "sources": [
                {"name": "asana-main", "type": "asana", "start_time": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "options": {"base_url": fake.url + "/api/1.0", "token": "${T}", "workspace_gid": "12345",
                             "page_size": 50, "settle_delay": 0}},
                {"name": "counter-with-a-long-name", "type": "counter",
                 "options": {"count": 40, "page_size": 10, "invalid_every": 10}},
            ],
            "outputs": [{"name": "out", "type": "file", "options": {"path": str(tmp_path / "out.jsonl")}}],
        }
        path = write_config(tmp_path / "config.yaml", config)
        env = forwarder_env({"T": TOKEN})
        env.pop("COLUMNS", None)
        env.pop("LINES", None)
        raw = run_in_pty([sys.executable, "-m", "forwarder_core", "once", "-c", str(path)], env)

    screen = pyte.Screen(COLS, ROWS)
    pyte.ByteStream(screen).feed(raw)
    lines = [line.rstrip() for line in screen.display]
    shown = [line for line in lines if line]
    logs = [line for line in shown if " siem_forwarder" in line]
    assert any("retrying" in line for line in logs), "\n".join(shown)
    assert any("set aside" in line for line in logs), "\n".join(shown)
    progress = [line for line in shown if line.startswith("[")]
    assert len(progress) == 1, "\n".join(shown)  # every earlier frame was cleared, none left in a log line
    final = progress[0]
    assert re.match(r"^\[\s*\d+s\] [\d,]+ events, [\d,]+/s", final), final
    assert "asana-main 1,200 ✓" in final and len(final) < COLS, final
    for before, line in zip([""] + lines, lines):
        # A row filled to its last column wrapped on to this one; where the wrap fell on a space
        # (a temporary path one character longer moves it) the filled row ends in that space.
        if not line or len(before) >= COLS - 1:
            continue  # empty, or the wrapped rest of a full-width row
        # A log record that started mid-line, or a wrapped progress line, would start otherwise.
        assert LOG_LINE.match(line) or line.startswith(("[", "SOURCE", "asana-main ", "counter-with-a-long-name ", "ledger ",
                                                        "  ")), f"broken line on the screen: {line!r}\n" + "\n".join(shown)
        assert not re.search(r".\[\s*\d+s\] ", line), f"a progress fragment inside a line: {line!r}"
    frames = [f for f in raw.decode("utf-8", "replace").replace("\x1b[K", "").split("\r") if f.startswith("[")]
    assert any(re.search(r"asana-main [\d,]+ \d+% …", f) for f in frames), "no backlog progress shown"
    assert all(len(f.split("\n")[0]) < COLS for f in frames)


def test_the_line_fits_a_narrow_terminal_by_whole_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    from types import SimpleNamespace

    from forwarder_core.commands import progress
    from forwarder_core.commands.progress import ProgressReporter
    from forwarder_core.engine.polls import SourceResult

    # The clock stands still at 10 s in: the rate and the elapsed time must not depend on how
    # long a loaded machine takes over the 110 lines below.
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: 1_000.0))
    reporter = ProgressReporter(["asana-main", "incydr-eu", "pangea"], io.StringIO())
    reporter.started = 990.0
    reporter.update(SourceResult("asana-main", delivered=1_234_567, progress=0.42))
    reporter.update(SourceResult("incydr-eu", delivered=98_765, done=True))
    wide = reporter.line(200)
    assert "asana-main 1,234,567 42% … | incydr-eu 98,765 ✓ | pangea …" in wide
    for width in range(10, 120):
        line = reporter.line(width)
        assert len(line) <= width - 1, (width, line)
        for part in line.split(" | ")[1:]:
            assert part in ("asana-main 1,234,567 42% …", "incydr-eu 98,765 ✓", "pangea …") or \
                re.fullmatch(r"\+\d more", part), (width, line)
    assert re.match(r"\[  10s\] 1,333,332 events, 133,333/s \| asana-main", reporter.line(200))
    assert reporter.line(60) == "[  10s] | asana-main 1,234,567 42% … | +2 more"
    assert reporter.line(30) == "[  10s] | +3 more"
