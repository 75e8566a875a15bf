"""A hostile vendor against the real forwarder: peak RSS on a 200 MB page and a gzip bomb, and
the time from SIGTERM to exit while a vendor trickles one byte every 2 s.

The vendor is :mod:`tests.fakes.hostile_http` in a process of its own, hostile from its first
answer. Each ``once`` is a child of this script: its peak RSS is ``wait4``'s ``ru_maxrss`` (the
forwarder is one process here: the hostile page never reaches a worker), or, for a run this
script has to kill at ``--cap`` seconds, the last ``VmHWM`` read from ``/proc``. The SIGTERM
figure is the wall time from the signal to the child's exit, sent once the vendor has started to
trickle its answer and ``--settle`` seconds more (so the forwarder is well inside the request).

``--tree DIR`` runs the forwarder of another checkout (its ``forwarder_core`` is imported from
the working directory), e.g. the commit before the bounds: ``git archive e6256b8 | tar -x -C
/tmp/base`` then ``--tree /tmp/base``. Usage::

    .venv/bin/python bench/hostile.py                      # this tree: huge, bomb, sigterm
    .venv/bin/python bench/hostile.py --tree /tmp/base --cap 300
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
TOKEN = "2/1204/1207:fake-service-account"


def start_vendor(workdir: Path, mode: str, trickle: float,
                 answering: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    ready = workdir / f"vendor-{mode}-{time.monotonic_ns()}.url"
    marker = ["--answering-file", str(answering)] if answering is not None else []
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.hostile_http", "--mode", mode, "--every",
                             "--trickle", str(trickle), "--ready-file", str(ready), *marker], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the {mode} vendor did not start")
        time.sleep(0.05)
    return proc, ready.read_text()


def write_config(workdir: Path, url: str, name: str) -> Path:
    state = workdir / f"state-{name}"
    config: dict[str, Any] = {
        "state_dir": str(state),
        "sources": [{"name": "asana", "type": "asana",
                     "start_time": (datetime.now(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "options": {"base_url": url + "/api/1.0", "token": "${ASANA}", "workspace_gid": "12345",
                                 "page_size": 50}}],
        "outputs": [{"name": "out", "type": "file", "options": {"path": str(workdir / f"out-{name}.jsonl")}}],
    }
    path = workdir / f"config-{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def hwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def forwarder(tree: Path, command: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ASANA": TOKEN, "SIEM_FORWARDER_LOG_LEVEL": "info"}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "forwarder_core", command, "-c", str(config)], cwd=tree,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def reap(proc: subprocess.Popen[bytes], cap: float) -> tuple[str, float, float]:
    """Wait for ``proc`` up to ``cap`` seconds (then SIGKILL); (outcome, peak RSS MB, seconds)."""
    started = time.monotonic()
    peak = 0.0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return f"exit {proc.returncode}", max(peak, usage.ru_maxrss / 1024), time.monotonic() - started
        peak = max(peak, hwm_mb(proc.pid))
        if time.monotonic() - started > cap:
            proc.kill()
            os.wait4(proc.pid, 0)
            return f"killed after {cap:.0f} s", peak, time.monotonic() - started
        time.sleep(0.05)


def summary_line(log: Path) -> str:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("asana ") and ("poll failed" in line or " ok" in line or "stopped" in line):
            return line.split("  ")[-1].strip()[:160]
    return ""


def bench_memory(tree: Path, workdir: Path, mode: str, cap: float) -> None:
    vendor, url = start_vendor(workdir, mode, 2.0)
    try:
        log = workdir / f"once-{mode}.log"
        outcome, peak, seconds = reap(forwarder(tree, "once", write_config(workdir, url, mode), log), cap)
    finally:
        vendor.terminate()
        vendor.wait()
    print(f"| once, {mode} | {outcome} | {peak:.0f} MB | {seconds:.1f} s | {summary_line(log)} |", flush=True)


def bench_sigterm(tree: Path, workdir: Path, command: str, runs: int, settle: float, cap: float) -> None:
    times: list[float] = []
    outcomes: list[str] = []
    for run in range(runs):
        name = f"sigterm-{command}-{run}"
        answering = workdir / f"{name}.answering"
        vendor, url = start_vendor(workdir, "slowloris", 2.0, answering)
        try:
            proc = forwarder(tree, command, write_config(workdir, url, name), workdir / f"{name}.log")
            while not answering.exists():
                if proc.poll() is not None:
                    log = (workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                    raise SystemExit(f"the forwarder exited before the request: {proc.returncode}\n{log}")
                time.sleep(0.05)
            time.sleep(settle)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            outcome, _, _ = reap(proc, cap)
            times.append(time.monotonic() - sent)
            outcomes.append(outcome)
        finally:
            vendor.terminate()
            vendor.wait()
    print(f"| SIGTERM to {command}, slow-loris | {', '.join(sorted(set(outcomes)))} | median "
          f"{statistics.median(times):.2f} s, max {max(times):.2f} s over {runs} | |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=REPO, help="the checkout whose forwarder runs (default: this)")
    parser.add_argument("--only", default="huge,bomb,sigterm", help="comma-separated: huge, bomb, sigterm")
    parser.add_argument("--runs", type=int, default=3, help="SIGTERM runs per command")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds from the start of the trickle to SIGTERM")
    parser.add_argument("--cap", type=float, default=120.0, help="seconds after which a run is killed")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        workdir = Path(tmp)
        print(f"forwarder tree: {args.tree.resolve()}")
        print("| run | outcome | peak RSS | time | error |")
        print("| --- | --- | ---: | ---: | --- |")
        for mode in ("huge", "bomb"):
            if mode in only:
                bench_memory(args.tree, workdir, mode, args.cap)
        if "sigterm" in only:
            for command in ("once", "run"):
                bench_sigterm(args.tree, workdir, command, args.runs, args.settle, args.cap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
