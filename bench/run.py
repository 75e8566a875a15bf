"""The benchmark: the real ``siem-forwarder once`` process against local vendor fakes, per output.

Every fake, the TCP sink and every measured program run in their own processes. A measured
program is counted with every process it starts (worker processes included): its CPU is the
larger of the kernel's ``wait4`` accounting of the child (itself and the descendants it reaped)
and the sum of what ``/proc`` showed of each process of the tree; its peak RSS and thread count
are peaks of sums over the tree, sampled from ``/proc`` (``bench/proctree.py``), next to the
child's own ``wait4`` maxrss. The fakes' CPU is read from ``/proc/<pid>/stat`` before and after,
and reported as a share of the measured wall time, so a run where the fake was the bottleneck
shows it. Every figure is the median of ``--runs`` runs. Two baselines run against the same
Incydr fake: the peer (Code42's ``incydr`` CLI, in its own virtual environment) and the bare
loop (``bench/bare_loop.py``). The parallel scenario runs Incydr -> syslog_cef with ``workers:``
0, 1 and 2, and the many-sources scenario N Asana sources in one process; each setting a build
does not know (``siem-forwarder check`` exits 78) is reported as not supported. The results go
to stdout and, unless ``--quick``, to ``bench/RESULTS.md``.

Usage::

    .venv/bin/python bench/run.py            # full run, writes bench/RESULTS.md
    .venv/bin/python bench/run.py --quick    # small backlogs, one run, no peer (the CI smoke test)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from proctree import TreeSampler  # noqa: E402
from sink import read_counts  # noqa: E402

PY = sys.executable
PEER_VENV = BENCH / ".venv-peer"
INCYDR_ID, INCYDR_SECRET = "bench-client", "bench-secret"
ASANA_TOKEN, ASANA_WORKSPACE = "2/1204/1207:bench", "12345"
AGILICUS_TOKEN = "agilicus-bench-token"
HEC_TOKEN = "11111111-2222-3333-4444-555555555555"
TICK = os.sysconf("SC_CLK_TCK")
EX_CONFIG = 78
NOT_SUPPORTED = "not supported by this build"


# --------------------------------------------------------------------------- processes


def proc_cpu(pid: int) -> float:
    """User+system CPU seconds of a running process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float, what: str) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout:.0f}s")
        time.sleep(0.05)
    return path.read_text().strip()


class Service:
    """A fake or the sink, in its own process, until stopped."""

    def __init__(self, name: str, argv: list[str], workdir: Path, timeout: float = 600):
        self.name = name
        ready = workdir / f"{name}.ready"
        self.log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - the process writes it until stop() closes it
        self.proc = subprocess.Popen([*argv, "--ready-file", str(ready)], cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.address = wait_for_file(ready, self.proc, timeout, name)

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def fake(name: str, module: str, workdir: Path, *args: str) -> Service:
    return Service(name, [PY, "-m", f"tests.fakes.{module}", "--port", "0", *args], workdir)


@dataclass
class Measured:
    wall: float
    cpu: float  # the process tree: max(wait4 of the child, sum of the sampled processes)
    rss_mb: float  # wait4 ru_maxrss of the child: the largest of it and the children it reaped
    returncode: int
    output: str
    cpu_wait4: float = float("nan")
    cpu_sampled: float = float("nan")
    tree_rss_mb: float = float("nan")  # peak of the summed VmRSS (at least rss_mb)
    tree_pss_mb: float = float("nan")  # peak of the summed Pss: shared pages counted once
    threads: float = float("nan")  # peak of the summed Threads
    processes: float = float("nan")  # peak number of processes in the tree
    roles: str = ""  # each role's CPU and peak memory (TreeUsage.roles), where there are several


RUN_TIMEOUT = 600.0
SAMPLE_INTERVAL = 0.05


def measure(argv: list[str], workdir: Path, env: dict[str, str] | None = None, label: str = "run",
            sample: bool = True) -> Measured:
    """Run ``argv`` to the end; wall time, and CPU, peak RSS and threads of it and its descendants.

    ``wait4`` gives the child's CPU (its own and that of every descendant it reaped) and its
    maxrss; a :class:`TreeSampler` adds what ``/proc`` shows of the whole tree every
    SAMPLE_INTERVAL seconds. A child still running after RUN_TIMEOUT seconds is killed (its exit
    status says so), so a hung run cannot keep the benchmark, and the fakes it started, alive.
    """
    log_path = workdir / f"{label}.log"
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid, SAMPLE_INTERVAL).start() if sample else None
        watchdog = threading.Timer(RUN_TIMEOUT, proc.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
            tree = sampler.stop() if sampler is not None else None
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu, rss = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0
    m = Measured(wall, cpu, rss, proc.returncode, log_path.read_text(errors="replace"), cpu_wait4=cpu)
    if tree is not None and tree.samples:
        m.cpu_sampled = tree.cpu_s
        m.cpu = max(cpu, tree.cpu_s)
        m.tree_rss_mb = max(rss, tree.peak_rss_kb / 1024.0)
        if tree.peak_pss_kb:
            m.tree_pss_mb = tree.peak_pss_kb / 1024.0
        m.threads, m.processes = tree.peak_threads, tree.peak_processes
        if len(tree.cpu_by_role) > 1:
            m.roles = tree.roles()
    return m


def forwarder_argv(*args: str) -> list[str]:
    script = Path(PY).with_name("siem-forwarder")
    return [str(script), *args] if script.exists() else [PY, "-m", "forwarder_core", *args]


def forwarder_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "STATE_DIRECTORY"))}
    env["SIEM_FORWARDER_LOG_LEVEL"] = "warning"
    return env


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def wait_count(read: Callable[[], int], want: int, timeout: float = 20.0) -> int:
    """The count once it reaches ``want`` (the sink may still be reading), or the last seen."""
    deadline = time.monotonic() + timeout
    got = read()
    while got < want and time.monotonic() < deadline:
        time.sleep(0.05)
        got = read()
    return got


# --------------------------------------------------------------------------- results


@dataclass
class Scenario:
    name: str
    events: int
    runs: list[dict[str, float]] = field(default_factory=list)
    counts_ok: bool = True
    problems: list[str] = field(default_factory=list)
    note: str = ""
    supported: bool = True  # False: the build refused a setting the scenario needs (nothing ran)
    settings: dict[str, Any] = field(default_factory=dict)  # top-level config keys the scenario set
    kind: str = "once"  # "idle": a `run` left caught up (its own table: Bench.idle)

    def median(self, key: str) -> float:
        values = [r[key] for r in self.runs if key in r and r[key] == r[key]]
        return statistics.median(values) if values else float("nan")

    def summary(self) -> dict[str, Any]:
        wall = self.median("seconds")
        cpu = self.median("cpu")
        return {"name": self.name, "events": self.events, "seconds": wall, "events_per_s": self.median("rate"),
                "cpu_s": cpu, "cpu_us_per_event": 1e6 * cpu / self.events if self.events else float("nan"),
                "cpu_wait4_s": self.median("cpu_wait4"), "cpu_sampled_s": self.median("cpu_sampled"),
                "rss_mb": self.median("rss"), "tree_rss_mb": self.median("tree_rss"),
                "tree_pss_mb": self.median("tree_pss"),
                "threads": self.median("threads"), "processes": self.median("processes"),
                "source_fake_cpu_pct": self.median("source_cpu_pct"), "sink_cpu_pct": self.median("sink_cpu_pct"),
                "runs": len(self.runs), "counts_ok": self.counts_ok, "problems": self.problems, "note": self.note,
                "supported": self.supported, "settings": self.settings, "kind": self.kind,
                "final_rss_mb": self.median("final_rss"), "final_pss_mb": self.median("final_pss"),
                "final_threads": self.median("final_threads"), "final_processes": self.median("final_processes"),
                "idle_cpu_s": self.median("idle_cpu")}


def record(scenario: Scenario, m: Measured, delivered: int, source: Service | None, sink_services: list[Service],
           cpu_before: dict[str, float]) -> None:
    run = {"seconds": m.wall, "rate": delivered / m.wall if m.wall > 0 else 0.0, "cpu": m.cpu, "rss": m.rss_mb,
           "cpu_wait4": m.cpu_wait4, "cpu_sampled": m.cpu_sampled, "tree_rss": m.tree_rss_mb,
           "tree_pss": m.tree_pss_mb,
           "threads": m.threads, "processes": m.processes}
    if source is not None:
        run["source_cpu_pct"] = 100 * (source.cpu() - cpu_before[source.name]) / m.wall
    if sink_services:
        run["sink_cpu_pct"] = 100 * sum(s.cpu() - cpu_before[s.name] for s in sink_services) / m.wall
    scenario.runs.append(run)
    if m.returncode != 0:
        scenario.counts_ok = False
        scenario.problems.append(f"exit {m.returncode}: {m.output[-600:]}")
    if delivered != scenario.events:
        scenario.counts_ok = False
        scenario.problems.append(f"expected {scenario.events} events, the far end counted {delivered}")


# --------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.services: list[Service] = []
        self.results: list[Scenario] = []
        self.run_no = 0
        self.known: dict[str, tuple[bool, str]] = {}

    def start(self, service: Service) -> Service:
        self.services.append(service)
        return service

    def stop(self, service: Service) -> None:
        service.stop()
        self.services.remove(service)

    def close(self) -> None:
        for service in list(self.services):
            self.stop(service)

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ config

    def start_time(self, hours_back: float) -> str:
        return (datetime.now(timezone.utc) - timedelta(hours=hours_back)).isoformat()

    def config(self, state: Path, source: dict[str, Any] | list[dict[str, Any]], output: dict[str, Any],
               settings: dict[str, Any] | None = None) -> Path:
        """The run's config file: ``settings`` are top-level keys (``workers``, ...)."""
        import yaml

        path = state.parent / "config.yaml"
        sources = source if isinstance(source, list) else [source]
        path.write_text(yaml.safe_dump({"state_dir": str(state), **(settings or {}), "sources": sources,
                                        "outputs": [output]}, sort_keys=False))
        path.chmod(0o600)  # inline tokens: a readable file would earn a warning per source
        return path

    def supports(self, settings: dict[str, Any], source: dict[str, Any]) -> tuple[bool, str]:
        """Whether this build takes ``settings``: ``siem-forwarder check`` on a config setting them.

        Exit 78 (the config refused) means not supported, with the check's own words; any other
        failure is a broken benchmark and raises.
        """
        key = json.dumps(settings, sort_keys=True)
        if key not in self.known:
            run_dir = Path(tempfile.mkdtemp(prefix="check-", dir=self.workdir))
            cfg = self.config(run_dir / "state", source, self.output("file", str(run_dir / "out.jsonl")), settings)
            done = subprocess.run(forwarder_argv("check", "-c", str(cfg)), cwd=run_dir, env=forwarder_env(),
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
            said = (done.stdout + done.stderr).strip().replace(str(cfg), "config")
            if done.returncode not in (0, EX_CONFIG):
                raise RuntimeError(f"siem-forwarder check exited {done.returncode} on {settings}: {said}")
            self.known[key] = (done.returncode == 0, said)
            self.log(f"[bench] {settings}: " + ("supported" if done.returncode == 0 else f"{NOT_SUPPORTED} ({said})"))
        return self.known[key]

    def incydr_source(self, url: str, **extra: Any) -> dict[str, Any]:
        return {"name": "code42", "type": "incydr", "start_time": self.start_time(26),
                "options": {"base_url": url, "client_id": INCYDR_ID, "client_secret": INCYDR_SECRET,
                            "settle_delay": 0, "page_size": 10_000, **extra}}

    def output(self, kind: str, target: str) -> dict[str, Any]:
        if kind == "syslog_cef":
            return {"name": "siem", "type": "syslog_cef",
                    "options": {"host": "127.0.0.1", "port": int(target), "protocol": "tcp"}}
        if kind == "splunk_hec":
            return {"name": "siem", "type": "splunk_hec", "options": {"url": target, "token": HEC_TOKEN,
                                                                      "gzip": True, "ack": False}}
        if kind == "elastic_bulk":
            return {"name": "siem", "type": "elastic_bulk",
                    "options": {"url": target, "index": f"bench-{self.run_no}", "gzip": True}}
        return {"name": "siem", "type": "file", "options": {"path": target}}

    # ------------------------------------------------------------------ one forwarder scenario

    def forwarder_scenario(self, name: str, events: int, source_service: Service, source_block: Callable[[], dict],
                           kind: str, target: Service | None, runs: int) -> Scenario:
        scenario = Scenario(name, events)
        self.log(f"[bench] {name}: {events} events x {runs} run(s)")
        for _ in range(runs):
            self.forwarder_run(scenario, source_service, source_block, kind, target)
        self.results.append(scenario)
        return scenario

    def forwarder_run(self, scenario: Scenario, source_service: Service, source_block: Callable[[], dict],
                      kind: str, target: Service | None) -> None:
        """One measured ``once`` of ``scenario`` (its ``settings`` in the config), recorded in it."""
        events = scenario.events
        self.run_no += 1
        run_dir = Path(tempfile.mkdtemp(prefix=f"run{self.run_no}-", dir=self.workdir))
        state = run_dir / "state"
        watched = [s for s in (target,) if s is not None]
        if kind == "syslog_cef":
            data_port, control_port = target.address.split()  # type: ignore[union-attr]
            out = self.output(kind, data_port)
            read = lambda: read_counts(int(control_port))["frames"]  # noqa: E731
        elif kind == "splunk_hec":
            out = self.output(kind, target.address)  # type: ignore[union-attr]
            read = lambda: http_json(target.address + "/_fake/stats")["indexed"]  # type: ignore  # noqa: E731
        elif kind == "elastic_bulk":
            out = self.output(kind, target.address)  # type: ignore[union-attr]
            index = out["options"]["index"]
            read = lambda: sum(n for i, n in http_json(target.address + "/_fake/stats")["indices"].items()  # type: ignore  # noqa: E731
                               if i.startswith(index) or index in i)
        else:
            path = run_dir / "out.jsonl"
            out = self.output(kind, str(path))
            read = lambda: count_lines(path)  # noqa: E731
        before_count = read()
        cfg = self.config(state, source_block(), out, scenario.settings)
        before = {s.name: s.cpu() for s in [source_service, *watched]}
        m = measure(forwarder_argv("once", "-c", str(cfg)), run_dir, forwarder_env(), "forwarder")
        delivered = wait_count(read, before_count + events) - before_count
        record(scenario, m, delivered, source_service, watched, before)
        self.log_run(m, delivered)
        if not self.args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)

    def log_run(self, m: Measured, delivered: int) -> None:
        self.log(f"[bench]   {delivered} events in {m.wall:.2f}s = {delivered / m.wall:,.0f}/s, "
                 f"cpu {m.cpu:.2f}s (tree), rss {m.tree_rss_mb:.0f} MB (tree) / {m.rss_mb:.0f} MB (wait4), "
                 f"pss {m.tree_pss_mb:.0f} MB (tree), "
                 f"{m.threads:.0f} threads in {m.processes:.0f} process(es)"
                 + (f" [{m.roles}]" if m.roles else "")
                 + ("" if m.returncode == 0 else f" EXIT {m.returncode}"))

    # ------------------------------------------------------------------ parallel and many sources

    def parallel(self, incydr: Service, events: int, sink: Service, runs: int, workers: list[int]) -> list[Scenario]:
        """Incydr -> syslog_cef with each ``workers:`` value, the runs interleaved so that the
        machine's moods fall on every variant alike."""
        scenarios = []
        source = lambda: self.incydr_source(incydr.address)  # noqa: E731
        for n in workers:
            scenario = Scenario(f"parallel: incydr -> syslog_cef, workers: {n}", events, settings={"workers": n})
            scenario.supported, said = self.supports(scenario.settings, source())
            if not scenario.supported:
                scenario.note = f"{NOT_SUPPORTED}: {said}"
            scenarios.append(scenario)
            self.results.append(scenario)
        for run in range(runs):
            for scenario in scenarios:
                if scenario.supported:
                    self.log(f"[bench] {scenario.name}: {events} events, run {run + 1} of {runs}")
                    self.forwarder_run(scenario, incydr, source, "syslog_cef", sink)
        return scenarios

    def many_sources(self, n: int, per_source: int, pool: int, runs: int) -> Scenario:
        """``n`` Asana sources, one workspace each on one fake, in one ``once`` into one file.

        Every event must arrive exactly once: the lines are counted, their ids must be distinct,
        and each source must have delivered its own workspace's ``per_source`` events.
        """
        self.log(f"[bench] starting the Asana fake with {n} workspaces of {per_source} events")
        asana = self.start(fake("asana-many", "asana", self.workdir, "--events", str(per_source),
                                "--workspaces", str(n), "--token", ASANA_TOKEN, "--workspace-gid", ASANA_WORKSPACE,
                                "--span", str(20 * 3600)))
        gids = [str(int(ASANA_WORKSPACE) + i) for i in range(n)]
        sources = lambda: [{"name": f"asana-{i:04d}", "type": "asana", "start_time": self.start_time(26),  # noqa: E731
                            "options": {"base_url": asana.address + "/api/1.0", "token": ASANA_TOKEN,
                                        "workspace_gid": gid, "settle_delay": 0}} for i, gid in enumerate(gids)]
        scenario = Scenario(f"many sources: {n:,} asana sources x {per_source} events -> one file, one process",
                            n * per_source, settings={"max_concurrent_polls": pool})
        supported, said = self.supports(scenario.settings, sources()[0])
        if not supported:
            scenario.settings = {}
            scenario.note = f"max_concurrent_polls {NOT_SUPPORTED}, run without it: {said}"
        self.log(f"[bench] {scenario.name}: {runs} run(s), settings {scenario.settings}")
        for _ in range(runs):
            self.run_no += 1
            run_dir = Path(tempfile.mkdtemp(prefix=f"run{self.run_no}-", dir=self.workdir))
            path = run_dir / "out.jsonl"
            cfg = self.config(run_dir / "state", sources(), self.output("file", str(path)), scenario.settings)
            before = {asana.name: asana.cpu()}
            m = measure(forwarder_argv("once", "-c", str(cfg)), run_dir, forwarder_env(), "forwarder")
            lines, problems = exactly_once(path, {f"asana-{i:04d}": gid for i, gid in enumerate(gids)}, per_source)
            record(scenario, m, lines, asana, [], before)
            scenario.problems += problems
            scenario.counts_ok = scenario.counts_ok and not problems
            self.log_run(m, lines)
            if not self.args.keep:
                shutil.rmtree(run_dir, ignore_errors=True)
        self.stop(asana)
        self.results.append(scenario)
        return scenario

    # ------------------------------------------------------------------ idle footprint

    def idle(self, per_source: int, seconds: float, runs: int) -> list[Scenario]:
        """``run`` with four sources (Incydr, Asana, Agilicus audits and auth audits) of
        ``per_source`` events each into one file, for each of IDLE_SETTINGS: its tree sampled from
        the start, while it catches up, and for ``seconds`` after, then stopped with SIGTERM."""
        span = ("--span", "3600")
        inc = self.start(fake("incydr-idle", "incydr", self.workdir, "--events", str(per_source), "--client-id",
                              INCYDR_ID, "--client-secret", INCYDR_SECRET, *span))
        asana = self.start(fake("asana-idle", "asana", self.workdir, "--events", str(per_source), "--token",
                                ASANA_TOKEN, "--workspace-gid", ASANA_WORKSPACE, *span))
        agilicus = self.start(fake("agilicus-idle", "agilicus", self.workdir, "--events", str(per_source),
                                   "--token", AGILICUS_TOKEN, *span))
        start = self.start_time(26)
        sources = [self.incydr_source(inc.address),
                   {"name": "asana", "type": "asana", "start_time": start,
                    "options": {"base_url": asana.address + "/api/1.0", "token": ASANA_TOKEN,
                                "workspace_gid": ASANA_WORKSPACE, "settle_delay": 0}},
                   *({"name": kind, "type": kind, "start_time": start,
                      "options": {"base_url": agilicus.address, "token": AGILICUS_TOKEN, "settle_delay": 0}}
                     for kind in ("agilicus", "agilicus_auth"))]
        scenarios = []
        for settings, label in IDLE_SETTINGS:
            scenario = Scenario(f"idle: 4 sources x {per_source} events, then `run` {seconds:.0f} s caught up, "
                                f"{label}", 4 * per_source, settings=settings, kind="idle")
            scenario.supported, said = self.supports(settings, sources[0]) if settings else (True, "")
            if not scenario.supported:
                scenario.note = f"{NOT_SUPPORTED}: {said}"
            scenarios.append(scenario)
            self.results.append(scenario)
        for run in range(runs):
            for scenario in scenarios:
                if scenario.supported:
                    self.log(f"[bench] {scenario.name}: run {run + 1} of {runs}")
                    self.idle_run(scenario, sources, seconds)
        for service in (inc, asana, agilicus):
            self.stop(service)
        return scenarios

    def idle_run(self, scenario: Scenario, sources: list[dict[str, Any]], seconds: float) -> None:
        self.run_no += 1
        run_dir = Path(tempfile.mkdtemp(prefix=f"run{self.run_no}-", dir=self.workdir))
        path = run_dir / "out.jsonl"
        cfg = self.config(run_dir / "state", sources, self.output("file", str(path)), scenario.settings)
        with open(run_dir / "forwarder.log", "wb") as log:
            started = time.perf_counter()
            proc = subprocess.Popen(forwarder_argv("run", "-c", str(cfg)), cwd=run_dir, env=forwarder_env(),
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            sampler = TreeSampler(proc.pid, SAMPLE_INTERVAL).start()
            try:
                delivered = wait_count(lambda: count_lines(path), scenario.events, RUN_TIMEOUT)
                caught_up = time.perf_counter()
                cpu_caught_up = sampler.cpu_now()
                while time.perf_counter() < caught_up + seconds and proc.poll() is None:
                    time.sleep(0.1)
                usage = sampler.stop()  # its last sample: the tree as it idles, before SIGTERM
                proc.terminate()
                returncode = proc.wait(60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        output = (run_dir / "forwarder.log").read_text(errors="replace")
        scenario.runs.append({
            "seconds": caught_up - started, "cpu": usage.cpu_s, "idle_cpu": usage.cpu_s - cpu_caught_up,
            "tree_rss": usage.peak_rss_kb / 1024, "tree_pss": usage.peak_pss_kb / 1024 or float("nan"),
            "threads": usage.peak_threads, "processes": usage.peak_processes,
            "final_rss": usage.last_rss_kb / 1024, "final_pss": usage.last_pss_kb / 1024 or float("nan"),
            "final_threads": usage.last_threads, "final_processes": usage.last_processes})
        if returncode != 0:
            scenario.counts_ok = False
            scenario.problems.append(f"exit {returncode}: {output[-600:]}")
        if delivered != scenario.events:
            scenario.counts_ok = False
            scenario.problems.append(f"expected {scenario.events} events, the file holds {delivered}")
        self.log(f"[bench]   caught up in {caught_up - started:.1f}s; peak {usage.peak_rss_kb / 1024:.0f} MB RSS "
                 f"{usage.peak_pss_kb / 1024:.0f} MB PSS in {usage.peak_processes} process(es), "
                 f"{usage.peak_threads} threads; after {seconds:.0f} s idle {usage.last_rss_kb / 1024:.0f} MB RSS "
                 f"{usage.last_pss_kb / 1024:.0f} MB PSS in {usage.last_processes} process(es), "
                 f"{usage.last_threads} threads" + (f" [{usage.roles()}]" if len(usage.cpu_by_role) > 1 else ""))
        if not self.args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)

    # ------------------------------------------------------------------ baselines

    def bare_loop(self, incydr: Service, events: int, sink: Service, runs: int) -> Scenario:
        scenario = Scenario("bare loop: incydr -> JSON lines over TCP", events)
        self.log(f"[bench] {scenario.name}: {events} events x {runs} run(s)")
        data_port, control_port = sink.address.split()
        for _ in range(runs):
            now = time.time()
            before_count = read_counts(int(control_port))["frames"]
            before = {s.name: s.cpu() for s in (incydr, sink)}
            m = measure([PY, str(BENCH / "bare_loop.py"), "--url", incydr.address, "--client-id", INCYDR_ID,
                         "--client-secret", INCYDR_SECRET, "--start", str(now - 30 * 3600), "--end", str(now + 60),
                         "--sink-port", data_port], self.workdir, label="bare")
            delivered = wait_count(lambda: read_counts(int(control_port))["frames"], before_count + events) - before_count
            record(scenario, m, delivered, incydr, [sink], before)
            self.log(f"[bench]   {delivered} events in {m.wall:.2f}s = {delivered / m.wall:,.0f}/s, cpu {m.cpu:.2f}s")
        self.results.append(scenario)
        return scenario

    def peer(self, incydr: Service, events: int, sink: Service, runs: int) -> Scenario | None:
        exe = ensure_peer(self.log)
        scenario = Scenario("peer: incydr CLI (audit-log search --output TCP) -> JSON lines over TCP", events)
        if exe is None:
            scenario.counts_ok = False
            scenario.problems.append("the peer could not be installed (see the log above)")
            self.results.append(scenario)
            return None
        self.log(f"[bench] {scenario.name}: {events} events x {runs} run(s)")
        data_port, control_port = sink.address.split()
        start = (datetime.now(timezone.utc) - timedelta(days=2)).strftime("%Y-%m-%d")
        for n in range(runs):
            home = Path(tempfile.mkdtemp(prefix="peer-home-", dir=self.workdir))
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "INCYDR_URL": incydr.address,
                   "INCYDR_API_CLIENT_ID": INCYDR_ID, "INCYDR_API_CLIENT_SECRET": INCYDR_SECRET,
                   "INCYDR_USE_RICH": "false", "LANG": "C.UTF-8"}
            before_count = read_counts(int(control_port))["frames"]
            before = {s.name: s.cpu() for s in (incydr, sink)}
            m = measure([str(exe), "audit-log", "search", "--output", f"TCP:127.0.0.1:{data_port}",
                         "--checkpoint", f"bench{n}", "--start", start], home, env, label="peer")
            delivered = wait_count(lambda: read_counts(int(control_port))["frames"], before_count + events) - before_count
            record(scenario, m, delivered, incydr, [sink], before)
            self.log(f"[bench]   {delivered} events in {m.wall:.2f}s = {delivered / m.wall:,.0f}/s, cpu {m.cpu:.2f}s")
        self.results.append(scenario)
        return scenario

    def version(self, times: int) -> dict[str, float]:
        walls = []
        for _ in range(times):
            m = measure(forwarder_argv("--version"), self.workdir, forwarder_env(), "version", sample=False)
            if m.returncode != 0:
                raise RuntimeError(f"--version failed: {m.output}")
            walls.append(m.wall)
        return {"median_ms": 1000 * statistics.median(walls), "max_ms": 1000 * max(walls), "runs": times}


NOTES_MARK = "<!-- notes: kept by bench/run.py when it rewrites this file -->"


def kept_notes(path: Path) -> str:
    """The hand-written part of an existing results file (profiles, before/after), kept on rewrite."""
    text = path.read_text() if path.exists() else ""
    at = text.find(NOTES_MARK)
    return "\n" + (text[at:] if at >= 0 else NOTES_MARK + "\n")


def exactly_once(path: Path, workspaces: dict[str, str], per_source: int) -> tuple[int, list[str]]:
    """Lines in the file output, and what is wrong with them: an id twice, a source that did not
    deliver exactly ``per_source`` events, an event carrying another source's workspace."""
    seen: set[str] = set()
    per: dict[str, int] = dict.fromkeys(workspaces, 0)
    lines = duplicates = crossed = 0
    if path.exists():
        with open(path, "rb") as fh:
            for line in fh:
                lines += 1
                event = json.loads(line)
                duplicates += event["id"] in seen
                seen.add(event["id"])
                name = event["source"]["name"]
                per[name] = per.get(name, 0) + 1
                crossed += workspaces.get(name) != (event.get("organization") or {}).get("id")
    problems = []
    if duplicates:
        problems.append(f"{duplicates} event(s) delivered more than once (same id)")
    wrong = {name: count for name, count in per.items() if count != per_source}
    if wrong:
        problems.append(f"{len(wrong)} source(s) did not deliver exactly {per_source} events, e.g. "
                        + ", ".join(f"{name}: {count}" for name, count in sorted(wrong.items())[:5]))
    if crossed:
        problems.append(f"{crossed} event(s) not from their own source's workspace")
    return lines, problems


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            n += chunk.count(b"\n")
    return n


def ensure_peer(log: Callable[[str], None]) -> Path | None:
    """The peer's ``incydr`` executable, installing ``incydr[cli]`` into bench/.venv-peer if missing."""
    exe = PEER_VENV / "bin" / "incydr"
    if exe.exists():
        return exe
    log(f"[bench] installing the peer (incydr[cli]) into {PEER_VENV}")
    base = getattr(sys, "_base_executable", None) or shutil.which("python3") or "python3"
    try:
        subprocess.run([base, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "-q", "incydr[cli]"], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        log(f"[bench] peer install failed: {exc}")
        return None
    return exe if exe.exists() else None


# --------------------------------------------------------------------------- main


GROUPS = "incydr,others,peer,bare,rss,parallel,many,idle,version"
WORKERS = [0, 1, 2]
IDLE_SETTINGS: list[tuple[dict[str, Any], str]] = [
    ({}, "default settings (workers: auto)"), ({"workers": 0}, "workers: 0"),
    ({"workers": 1}, "workers: 1 (always on, as auto was before)")]


def main(argv: list[str] | None = None) -> int:
    global RUN_TIMEOUT, SAMPLE_INTERVAL
    parser = argparse.ArgumentParser(description="Benchmark siem-forwarder against local fakes and two baselines.")
    parser.add_argument("--quick", action="store_true", help="small backlogs, one run, no peer, no 1M backlog")
    parser.add_argument("--runs", type=int, help="runs per scenario (default 3; 1 with --quick)")
    parser.add_argument("--incydr-events", type=int, help="Incydr backlog (default 200,000; 20,000 with --quick)")
    parser.add_argument("--peer-events", type=int,
                        help="the peer's Incydr backlog (default: the headline's, --incydr-events); ours runs on it "
                             "too, on the same fake, and the ratio compares those two")
    parser.add_argument("--other-events", type=int, help="Asana and Agilicus backlogs (default 20,000; 2,000 quick)")
    parser.add_argument("--rss-events", type=int, nargs=2, metavar=("SMALL", "LARGE"),
                        help="backlogs whose peak RSS is compared (default 100,000 1,000,000; 20,000 60,000 quick)")
    parser.add_argument("--many-sources", type=int, help="Asana sources in the many-sources scenario (default 2,000; "
                                                         "50 with --quick)")
    parser.add_argument("--many-events", type=int, default=100, help="events per source there (default 100)")
    parser.add_argument("--many-pool", type=int, default=16,
                        help="max_concurrent_polls there, when the build supports it (default 16)")
    parser.add_argument("--idle-events", type=int, default=300, help="each idle source's backlog (default 300)")
    parser.add_argument("--idle-seconds", type=float,
                        help="how long `run` stays caught up in the idle scenario (default 60; 3 with --quick, "
                             "which runs it only when --only names it)")
    parser.add_argument("--idle-runs", type=int, default=1, help="runs of each idle variant (default 1)")
    parser.add_argument("--only", help=f"comma-separated scenario groups: {GROUPS}")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--results", help="where to write the Markdown results (default bench/RESULTS.md, "
                                          "none with --quick)")
    parser.add_argument("--json", help="also write the results as JSON here")
    parser.add_argument("--run-timeout", type=float, default=RUN_TIMEOUT,
                        help="seconds after which a measured run is killed (and counted as failed)")
    parser.add_argument("--sample-interval", type=float, default=SAMPLE_INTERVAL,
                        help="seconds between samples of the measured process tree in /proc (default 0.05)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (and every run's state)")
    args = parser.parse_args(argv)
    RUN_TIMEOUT = args.run_timeout
    SAMPLE_INTERVAL = args.sample_interval
    quick = args.quick
    runs = args.runs or (1 if quick else 3)
    incydr_events = args.incydr_events or (20_000 if quick else 200_000)
    other_events = args.other_events or (2_000 if quick else 20_000)
    rss_events = args.rss_events or ([20_000, 60_000] if quick else [100_000, 1_000_000])
    many = args.many_sources or (50 if quick else 2_000)
    groups = set((args.only or GROUPS).split(","))
    if groups - set(GROUPS.split(",")):
        parser.error(f"--only: unknown group(s) {', '.join(sorted(groups - set(GROUPS.split(','))))}; "
                     f"known: {GROUPS}")
    if quick or args.no_peer:
        groups.discard("peer")
    if quick and not args.only:
        groups.discard("idle")  # a `run` left idle: tests/bench asks for it by name
    results_path = Path(args.results) if args.results else (None if quick else BENCH / "RESULTS.md")

    workdir = Path(tempfile.mkdtemp(prefix="siem-bench-"))
    bench = Bench(args, workdir)
    started = time.monotonic()
    version: dict[str, float] | None = None
    rss: list[Scenario] = []
    parallel: list[Scenario] = []
    idle: list[Scenario] = []
    headline: dict[str, Scenario] = {}
    try:
        sink = bench.start(Service("sink", [PY, str(BENCH / "sink.py")], workdir))
        inc_args = ("--client-id", INCYDR_ID, "--client-secret", INCYDR_SECRET, "--span", str(24 * 3600))
        if groups & {"incydr", "bare", "parallel"}:
            bench.log(f"[bench] starting the Incydr fake with {incydr_events} events")
            incydr = bench.start(fake("incydr", "incydr", workdir, "--events", str(incydr_events), *inc_args))
            source = lambda: bench.incydr_source(incydr.address)  # noqa: E731
            if "incydr" in groups:
                headline["cef"] = bench.forwarder_scenario("incydr -> syslog_cef (TCP, RFC 5424, octet counting)",
                                                           incydr_events, incydr, source, "syslog_cef", sink, runs)
            if "bare" in groups:
                headline["bare"] = bench.bare_loop(incydr, incydr_events, sink, runs)
            if "incydr" in groups:
                hec = bench.start(fake("hec", "splunk_hec", workdir, "--token", HEC_TOKEN))
                headline["hec"] = bench.forwarder_scenario("incydr -> splunk_hec (gzip, ack off)", incydr_events,
                                                           incydr, source, "splunk_hec", hec, runs)
                bench.stop(hec)
                es = bench.start(fake("elastic", "elastic", workdir, "--bench"))
                headline["bulk"] = bench.forwarder_scenario("incydr -> elastic_bulk (gzip)", incydr_events, incydr,
                                                            source, "elastic_bulk", es, runs)
                bench.stop(es)
                headline["file"] = bench.forwarder_scenario("incydr -> file (fsync per page)", incydr_events, incydr,
                                                            source, "file", None, runs)
            if "parallel" in groups:
                parallel = bench.parallel(incydr, incydr_events, sink, runs, WORKERS)
            bench.stop(incydr)
        if "others" in groups:
            asana = bench.start(fake("asana", "asana", workdir, "--events", str(other_events), "--token", ASANA_TOKEN,
                                     "--workspace-gid", ASANA_WORKSPACE, "--span", str(20 * 3600)))
            bench.forwarder_scenario(
                "asana -> file", other_events, asana,
                lambda: {"name": "asana", "type": "asana", "start_time": bench.start_time(26),
                         "options": {"base_url": asana.address + "/api/1.0", "token": ASANA_TOKEN,
                                     "workspace_gid": ASANA_WORKSPACE, "settle_delay": 0}},
                "file", None, runs)
            bench.stop(asana)
            agilicus = bench.start(fake("agilicus", "agilicus", workdir, "--events", str(other_events),
                                        "--token", AGILICUS_TOKEN, "--span", str(20 * 3600)))
            bench.forwarder_scenario(
                "agilicus -> file", other_events, agilicus,
                lambda: {"name": "agilicus", "type": "agilicus", "start_time": bench.start_time(26),
                         "options": {"base_url": agilicus.address, "token": AGILICUS_TOKEN, "settle_delay": 0}},
                "file", None, runs)
            bench.stop(agilicus)
        if "peer" in groups:
            peer_events = args.peer_events or incydr_events
            bench.log(f"[bench] starting the Incydr fake with {peer_events} events for the peer")
            # The headline's events (same count, seed and span), with "events": [] past the end: the
            # peer pages by 100 and crashes on a page without the key.
            shared = bench.start(fake("incydr-peer", "incydr", workdir, "--events", str(peer_events),
                                      "--empty-events-past-end", *inc_args))
            headline["peer"] = bench.peer(shared, peer_events, sink, runs)  # type: ignore[assignment]
            headline["ours_peer"] = bench.forwarder_scenario(
                "incydr -> syslog_cef on the peer's fake and backlog", peer_events, shared,
                lambda: bench.incydr_source(shared.address), "syslog_cef", sink, runs)
            bench.stop(shared)
        if "rss" in groups:
            for n in rss_events:
                bench.log(f"[bench] starting the Incydr fake with {n} events (peak RSS)")
                big = bench.start(fake(f"incydr-{n}", "incydr", workdir, "--events", str(n), *inc_args))
                rss.append(bench.forwarder_scenario(f"peak RSS: incydr {n:,} -> syslog_cef", n, big,
                                                    lambda: bench.incydr_source(big.address), "syslog_cef", sink,
                                                    1 if quick else runs))
                bench.stop(big)
        if "many" in groups:
            headline["many"] = bench.many_sources(many, args.many_events, args.many_pool, runs)
        if "idle" in groups:
            idle = bench.idle(args.idle_events, args.idle_seconds or (3 if quick else 60), args.idle_runs)
        if "version" in groups:
            version = bench.version(3 if quick else 10)
    finally:
        bench.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started

    command = " ".join([".venv/bin/python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])])
    report = render(bench.results, headline, rss, parallel, idle, version, command, elapsed)
    print(report)
    if results_path is not None:
        results_path.write_text(report + kept_notes(results_path))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "scenarios": [s.summary() for s in bench.results],
            "version": version,
            "ok": all(s.counts_ok for s in bench.results),
        }, indent=2))
    return 0 if all(s.counts_ok for s in bench.results) else 1


# --------------------------------------------------------------------------- report


def fmt(value: float, digits: int = 0) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def thread_bound(pool: int) -> int:
    """The most threads that still count as bounded by a poll pool of ``pool``: two a poll being
    run (a source's fetch and pipeline threads) plus THREADS_FIXED, whatever the number of sources."""
    return 2 * pool + THREADS_FIXED


# Threads that do not grow with the sources (main, outputs, metrics, progress, a worker pool's
# helpers and the workers' own): 3 measured with one Asana source into a file, before workers.
THREADS_FIXED = 32


def render(results: list[Scenario], headline: dict[str, Scenario | None], rss: list[Scenario],
           parallel: list[Scenario], idle: list[Scenario], version: dict[str, float] | None, command: str,
           elapsed: float) -> str:
    lines = ["# Benchmark results", "",
             f"Produced by `{command}` (from the repository root) on "
             f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} in {elapsed:.0f} s.", "",
             f"Machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
             f"{platform.processor() or platform.machine()}, Linux {platform.release()}, "
             f"Python {platform.python_version()}, load average at the end {os.getloadavg()[0]:.2f}.", "",
             "Every figure is the median of the runs, and counts the measured program with every process it "
             "starts (worker processes included). CPU is user+system seconds: the larger of `wait4`'s figure "
             "for the child (itself and every descendant it reaped) and the sum over the processes `/proc` "
             "showed. Peak RSS and threads are the peaks of the sums of `VmRSS` and `Threads` over those "
             f"processes, sampled every {1000 * SAMPLE_INTERVAL:.0f} ms; peak PSS is the peak of the sum of "
             "their `Pss` (`smaps_rollup`), which counts a page that processes share once (a worker shares "
             "with the forkserver it was forked from the modules the forkserver loaded; the RSS sum counts "
             "them in both); main maxrss is `wait4`'s `ru_maxrss` "
             "of the child (the largest single process). Fake CPU is the CPU the source fake (and the sink "
             "or SIEM fake) spent during the run, as a share of the run's wall time.", "",
             "| scenario | events | runs | seconds | events/s | CPU s | CPU us/event | peak RSS MB | peak PSS MB "
             "| main maxrss MB "
             "| peak threads | processes | source fake CPU | sink CPU | counts |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for s in results:
        d = s.summary()
        if s.kind == "idle":
            continue
        if not s.supported:
            lines.append(f"| {s.name} | {s.events:,} | 0 |" + " - |" * 11 + f" {NOT_SUPPORTED} |")
            continue
        lines.append(f"| {s.name} | {s.events:,} | {d['runs']} | {fmt(d['seconds'], 2)} | {fmt(d['events_per_s'])} | "
                     f"{fmt(d['cpu_s'], 2)} | {fmt(d['cpu_us_per_event'], 1)} | {fmt(d['tree_rss_mb'])} | "
                     f"{fmt(d['tree_pss_mb'])} | {fmt(d['rss_mb'])} | {fmt(d['threads'])} | {fmt(d['processes'])} | "
                     f"{fmt(d['source_fake_cpu_pct'])}% | {fmt(d['sink_cpu_pct'])}% | "
                     f"{'ok' if s.counts_ok else 'WRONG'} |")
    lines += render_idle(idle)
    problems = [f"- {s.name}: {p}" for s in results for p in s.problems]
    if problems:
        lines += ["", "Problems:", *problems]
    notes = [f"- {s.name}: {s.note}" for s in results if s.note]
    if notes:
        lines += ["", "Notes:", *notes]

    lines += ["", "## Goals", "", "| goal | measured | met |", "| --- | --- | --- |"]

    def rate(key: str) -> float:
        s = headline.get(key)
        return s.median("rate") if s is not None else float("nan")

    cef, hec, bulk = rate("cef"), rate("hec"), rate("bulk")
    peer, bare, ours_peer = rate("peer"), rate("bare"), rate("ours_peer")
    cef_s, peer_s = headline.get("cef"), headline.get("peer")
    backlog = f"{cef_s.events:,}-event" if cef_s is not None else ""
    goals: list[tuple[str, str, bool | str]] = []  # met: yes / NO, or a word where there is no bar
    if cef == cef:
        goals.append(("incydr -> syslog CEF >= 50,000 events/s", f"{fmt(cef)}/s", cef >= 50_000))
    if peer == peer and ours_peer == ours_peer and peer_s is not None:
        which = ("the headline's backlog" if cef_s is not None and cef_s.events == peer_s.events
                 else "not the headline's" + (f" {backlog} backlog" if backlog else ""))
        goals.append(("ours / `incydr` CLI >= 40x, same backlog, same invocation",
                      f"{ours_peer / peer:.1f}x (ours {fmt(ours_peer)}/s, the CLI {fmt(peer)}/s, both on one fake "
                      f"serving {peer_s.events:,} events: {which}; CPU per event: the CLI "
                      f"{fmt(peer_s.summary()['cpu_us_per_event'])} us, ours "
                      f"{fmt(headline['ours_peer'].summary()['cpu_us_per_event'], 1)} us)",  # type: ignore[union-attr]
                      ours_peer / peer >= 40))
    if bare == bare and cef == cef:
        goals.append(("ours / bare loop >= 50%, same backlog, same invocation",
                      f"{100 * cef / bare:.0f}% (ours {fmt(cef)}/s, bare loop {fmt(bare)}/s, both on the headline's "
                      f"{backlog} backlog)", cef / bare >= 0.5))
    if hec == hec:
        goals.append(("incydr -> HEC (gzip, ack off) >= 40,000 events/s", f"{fmt(hec)}/s", hec >= 40_000))
    if bulk == bulk:
        goals.append(("incydr -> bulk >= 40,000 events/s", f"{fmt(bulk)}/s", bulk >= 40_000))
    if cef_s is not None and cef_s.runs:
        per = cef_s.summary()["cpu_us_per_event"]
        goals.append(("CPU per event, all processes <= 20 us (incydr -> syslog CEF)",
                      f"{fmt(per, 1)} us ({fmt(cef_s.median('cpu'), 2)} CPU s for {cef_s.events:,} events)", per <= 20))
    singles = [s for s in results if s.runs and s is not headline.get("many")]
    peak = max((s.median("rss") for s in singles), default=float("nan"))
    if peak == peak:
        goals.append(("peak RSS of any one process < 200 MB (every scenario but many sources)", f"{fmt(peak)} MB",
                      peak < 200))
    if len(rss) == 2 and all(s.runs for s in rss):
        a, b = rss[0].median("tree_rss"), rss[1].median("tree_rss")
        goals.append((f"peak RSS, all processes, {rss[0].events:,} vs {rss[1].events:,} events: < 250 MB and flat "
                      "within 10%", f"{fmt(a)} MB vs {fmt(b)} MB ({100 * (b - a) / a:+.1f}%; main maxrss "
                      f"{fmt(rss[0].median('rss'))} vs {fmt(rss[1].median('rss'))} MB; PSS, shared pages "
                      f"once: {fmt(rss[0].median('tree_pss'))} vs {fmt(rss[1].median('tree_pss'))} MB)",
                      max(a, b) < 250 and abs(b - a) <= 0.1 * a))
    if parallel:
        ran = {s.settings["workers"]: s for s in parallel if s.supported and s.runs}
        if len(ran) == len(parallel):
            one, two = ran[1].median("rate") if 1 in ran else float("nan"), ran[2].median("rate") if 2 in ran else float("nan")
            measured = "; ".join(f"workers {n}: {fmt(s.median('rate'))}/s, {fmt(s.summary()['cpu_us_per_event'], 1)} "
                                 f"us/event, {fmt(s.median('tree_rss'))} MB" for n, s in ran.items())
            goals.append(("throughput with 1 worker vs 2 (reported)",
                          f"2 workers / 1 = {two / one:.2f}x ({measured})", "reported"))
        else:
            refused = ", ".join(str(s.settings["workers"]) for s in parallel if not s.supported)
            goals.append(("throughput with 1 worker vs 2 (reported)", f"`workers: {refused}` {NOT_SUPPORTED}", "-"))
    many = headline.get("many")
    if many is not None and many.runs:
        pool = many.settings.get("max_concurrent_polls")
        mb, threads = many.median("tree_rss"), many.median("threads")
        sources = many.name.split(":", 1)[1].split("asana", 1)[0].strip()
        bound = thread_bound(pool) if pool else None
        goals.append((f"{sources} sources in one process: < 300 MB, threads bounded by the pool",
                      f"{fmt(mb)} MB, {fmt(threads)} threads (" + (f"max_concurrent_polls {pool}: bound {bound}"
                      if bound else f"max_concurrent_polls {NOT_SUPPORTED}: no pool") + ")",
                      mb < 300 and bound is not None and threads <= bound))
    default = idle[0] if idle and idle[0].runs and not idle[0].settings else None
    if default is not None:
        mb, processes = default.median("tree_rss"), default.median("processes")
        zero = next((s for s in idle if s.settings == {"workers": 0} and s.runs), None)
        goals.append(("idle `run`, 4 sources, default settings: peak RSS of the tree <= 70 MB, one process",
                      f"{fmt(mb)} MB, {fmt(processes)} process(es) at the peak"
                      + (f" (workers: 0: {fmt(zero.median('tree_rss'))} MB)" if zero is not None else ""),
                      mb <= 70 and processes == 1))
    if version is not None:
        goals.append(("`siem-forwarder --version` < 300 ms", f"{version['median_ms']:.0f} ms (median of "
                      f"{version['runs']}, max {version['max_ms']:.0f} ms)", version["median_ms"] < 300))
    for goal, measured, met in goals:
        lines.append(f"| {goal} | {measured} | {met if isinstance(met, str) else 'yes' if met else 'NO'} |")
    ratios = [f"ours / `incydr` CLI = {ours_peer / peer:.1f}x (both on the peer's fake, {peer_s.events:,} events)"
              if peer == peer and ours_peer == ours_peer and peer_s is not None else "",
              f"ours / bare loop = {cef / bare:.2f} (both on the headline's {backlog} backlog)"
              if bare == bare and cef == cef else ""]
    if any(ratios):
        lines += ["", "Ratios, each of two runs on the same backlog in this invocation: "
                  + "; ".join(r for r in ratios if r) + "."]
    return "\n".join(lines) + "\n"


def render_idle(idle: list[Scenario]) -> list[str]:
    """The idle-footprint table: peaks over the whole run (catching up included), and the tree as
    it was after the idle seconds, just before SIGTERM."""
    if not idle:
        return []
    lines = ["", "## Idle footprint", "",
             "`siem-forwarder run` with four sources (Incydr, Asana, Agilicus audits and auth audits, each with "
             "the backlog below, `interval` 60) into one file: the process tree sampled from the start, through "
             "catching up, and for the stated time after; then SIGTERM. Peak: over the whole run; final: the last "
             "sample before SIGTERM. CPU while idle: what the tree used after it had caught up.", "",
             "| scenario | runs | catch-up s | peak RSS MB | peak PSS MB | final RSS MB | final PSS MB "
             "| processes peak / final | threads peak / final | CPU s while idle | counts |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for s in idle:
        if not s.supported:
            lines.append(f"| {s.name} | 0 |" + " - |" * 8 + f" {NOT_SUPPORTED} |")
            continue
        m = s.median
        lines.append(f"| {s.name} | {len(s.runs)} | {fmt(m('seconds'), 1)} | {fmt(m('tree_rss'))} | "
                     f"{fmt(m('tree_pss'))} | {fmt(m('final_rss'))} | {fmt(m('final_pss'))} | "
                     f"{fmt(m('processes'))} / {fmt(m('final_processes'))} | {fmt(m('threads'))} / "
                     f"{fmt(m('final_threads'))} | {fmt(m('idle_cpu'), 2)} | {'ok' if s.counts_ok else 'WRONG'} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
