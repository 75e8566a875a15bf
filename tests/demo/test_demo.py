"""The newcomer's path: the demo, then the everyday commands it prints, on the demo's config."""
from __future__ import annotations

import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.helpers import REPO


def _lines(proc: subprocess.Popen[str]) -> "queue.Queue[str | None]":
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_demo_serve_keeps_the_vendor_apis_up_for_the_printed_commands_until_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    demo = subprocess.Popen([sys.executable, "scripts/demo.py", "--serve", "--events", "60", "--out", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        lines = _lines(demo)
        seen: list[str] = []
        deadline = time.monotonic() + 240
        while not any("keep running until Ctrl-C" in line for line in seen):
            line = lines.get(timeout=max(1, deadline - time.monotonic()))
            assert line is not None, "\n".join(seen)
            seen.append(line)
        commands: list[str] = []
        while True:
            line = lines.get(timeout=30)
            assert line is not None
            if not line and commands:
                break
            if line.startswith("  "):
                commands.append(line.strip())
        assert "syslog CEF messages in" in "\n".join(seen)
        env_line, *everyday = commands
        assert env_line.startswith(f". {out}/demo.env")
        assert [c.split()[1] for c in everyday] == ["check", "check", "once", "state", "quarantine", "cef-check"]
        assert "--connect" in everyday[1]
        for command in everyday:  # exactly as printed, from the checkout, after sourcing the env file
            done = subprocess.run(["sh", "-c", f"{env_line.split('#')[0]} && {command}"], cwd=REPO,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            if "--connect" in command:
                assert done.stdout.count(": ok: ") == 11, done.stdout  # 5 sources, 6 outputs
            if command.split()[1] == "quarantine":
                assert "pangea" in done.stdout
            if command.split()[1] == "cef-check":
                assert done.stdout.rstrip().endswith(" valid, 0 invalid")
        asana = urlsplit((out / "asana.url").read_text().strip())
        socket.create_connection((asana.hostname, asana.port), timeout=5).close()  # still up
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=30) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    try:
        socket.create_connection((asana.hostname, asana.port), timeout=2).close()
    except OSError:
        pass
    else:
        raise AssertionError("the simulated vendor API outlived the demo")
