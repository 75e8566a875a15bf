"""Many sources from a bounded pool (``max_concurrent_polls``): every event exactly once, the
threads bounded by the pool whatever the number of sources, a long backlog that does not starve
a short one, and a SIGTERM that commits nothing early. Counts only, never times."""
from __future__ import annotations

import logging
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from forwarder_core.commands import daemon
from forwarder_core.config.loader import load_config
from forwarder_core.engine.app import build_app, run_sources_once
from forwarder_core.engine.pipeline import SourceRunner
from forwarder_core.engine.pollpool import SLICE_PAGES
from forwarder_core.engine.polls import SourceResult
from forwarder_core.metrics import Metrics
from forwarder_core.plugin.manager import load_plugins
from forwarder_core.plugin_api import ComponentConfig, Context, Page, Source
from forwarder_core.storage.checkpoint import CheckpointStore
from forwarder_core.storage.setaside import QUARANTINE, SetAside
from tests.fakes.asana import AsanaFake
from tests.helpers import lines_written, read_jsonl, run_forwarder, start_forwarder, write_config


def counters(tmp_path: Path, testkit_path: str, sizes: list[int], pool: int, page_size: int = 10,
             **settings: Any) -> dict[str, Any]:
    """``len(sizes)`` counter sources (``src-000`` has ``sizes[0]`` events, ...) into one file."""
    return {
        "state_dir": str(tmp_path / "state"),
        "plugin_paths": [testkit_path],
        "max_concurrent_polls": pool,
        **settings,
        "sources": [{"name": f"src-{i:03d}", "type": "counter", "interval": 3600,
                     "options": {"count": n, "page_size": page_size}} for i, n in enumerate(sizes)],
        "outputs": [{"name": "out", "type": "file", "options": {"path": str(tmp_path / "out.jsonl")}}],
    }


def delivered(tmp_path: Path) -> Counter[tuple[str, str]]:
    """How often each (source, event id) reached the file."""
    return Counter((e["source"]["name"], e["id"]) for e in read_jsonl(tmp_path / "out.jsonl"))


def expected(sizes: list[int]) -> set[tuple[str, str]]:
    return {(f"src-{i:03d}", f"counter-{seq}") for i, n in enumerate(sizes) for seq in range(n)}


def once_in_process(tmp_path: Path, config: dict[str, Any], progress: Any = None) -> list[SourceResult]:
    path = write_config(tmp_path / "config.yaml", config)
    loaded, plugins = load_config(str(path), load_plugins)
    app = build_app(loaded, plugins)
    try:
        return run_sources_once(app, progress=progress)
    finally:
        app.close()


def test_once_with_300_sources_and_a_pool_of_4_delivers_each_event_once_on_8_threads(
        tmp_path: Path, testkit_path: str) -> None:
    sizes = [30 + i % 7 for i in range(300)]
    before = threading.active_count()
    peak = [before]

    def sample(result: SourceResult) -> None:
        peak[0] = max(peak[0], threading.active_count())

    results = once_in_process(tmp_path, counters(tmp_path, testkit_path, sizes, pool=4), sample)
    assert all(r.ok and r.done for r in results)
    assert [r.delivered for r in results] == sizes
    got = delivered(tmp_path)
    assert set(got) == expected(sizes) and set(got.values()) == {1}
    assert peak[0] - before <= 2 * 4, "a slot and its fetcher per pool slot, none per source"
    assert threading.active_count() == before, "every slot and fetcher ends with the run"


def test_a_long_backlog_does_not_starve_a_short_source(tmp_path: Path, testkit_path: str) -> None:
    """A pool of one: the long source, first in the config, hands the slot over after a slice."""
    long_pages = 5 * SLICE_PAGES
    sizes = [long_pages * 10, 30]
    finished: list[tuple[str, int]] = []
    long_delivered = [0]

    def watch(result: SourceResult) -> None:
        if result.name == "src-000":
            long_delivered[0] = result.delivered
        if result.done and result.name not in {n for n, _ in finished}:
            finished.append((result.name, long_delivered[0]))

    results = once_in_process(tmp_path, counters(tmp_path, testkit_path, sizes, pool=1), watch)
    assert [r.delivered for r in results] == sizes
    assert [name for name, _ in finished] == ["src-001", "src-000"]
    assert finished[0][1] < sizes[0], "the short source caught up while the long one still had a backlog"
    got = delivered(tmp_path)
    assert set(got) == expected(sizes) and set(got.values()) == {1}


def test_once_cli_with_a_small_pool_keeps_its_summary_and_exit_status(tmp_path: Path, testkit_path: str) -> None:
    sizes = [25] * 40
    done = run_forwarder(tmp_path, counters(tmp_path, testkit_path, sizes, pool=3), "once")
    assert done.returncode == 0, done.stderr
    assert sum(f"src-{i:03d}" in done.stdout for i in range(40)) == 40, done.stdout
    got = delivered(tmp_path)
    assert set(got) == expected(sizes) and set(got.values()) == {1}


def _sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def test_sixty_asana_tenants_share_connections_instead_of_keeping_one_each(tmp_path: Path) -> None:
    """One vendor host, many tenants: the idle keep-alive sockets are bounded by the pool, not by
    the sources (a socket each ran a host with 2,000 sources out of file descriptors)."""
    token = "2/1204/1207:many-tenants"
    with AsanaFake(events=20, span=900, token=token, workspaces=60) as fake:
        config = {
            "state_dir": str(tmp_path / "state"), "max_concurrent_polls": 4,
            "sources": [{"name": f"src-{i:03d}", "type": "asana", "start_time": fake.begin.isoformat(),
                         "options": {"base_url": fake.url + "/api/1.0", "token": token, "workspace_gid": gid,
                                     "settle_delay": 0}} for i, gid in enumerate(fake.workspace_gids)],
            "outputs": [{"name": "out", "type": "file", "options": {"path": str(tmp_path / "out.jsonl")}}],
        }
        path = write_config(tmp_path / "config.yaml", config)
        path.chmod(0o600)
        loaded, plugins = load_config(str(path), load_plugins)
        before = _sockets()
        app = build_app(loaded, plugins)
        try:
            results = run_sources_once(app)
            held = _sockets() - before
        finally:
            app.close()
        want = {(f"src-{i:03d}", e["gid"]) for i, gid in enumerate(fake.workspace_gids)
                for e in fake.events(workspace=gid)}
    assert all(r.ok and r.done for r in results)
    got = delivered(tmp_path)
    assert set(got) == want and set(got.values()) == {1}
    assert 0 < held <= 2 * 4, f"{held} sockets (both ends: the fake serves in this process)"


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def _wait(predicate: Any, proc: Any, timeout: float = 120.0, every: Any = None) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if every is not None:
            every()
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _terminate_when(proc: Any, predicate: Any, every: Any = None) -> None:
    """Wait until ``predicate()``, then SIGTERM ``proc`` and assert it drained and exited 0."""
    try:
        assert _wait(predicate, proc, every=every)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err


def test_run_with_300_sources_and_a_pool_of_4_delivers_each_event_once_on_bounded_threads(
        tmp_path: Path, testkit_path: str) -> None:
    sizes = [20 + i % 5 for i in range(300)]
    proc = start_forwarder(tmp_path, counters(tmp_path, testkit_path, sizes, pool=4))
    peak = [0]

    def sample() -> None:
        try:
            peak[0] = max(peak[0], _threads(proc.pid))
        except OSError:
            pass

    _terminate_when(proc, lambda: lines_written(tmp_path / "out.jsonl") >= sum(sizes), every=sample)
    got = delivered(tmp_path)
    assert set(got) == expected(sizes) and set(got.values()) == {1}
    # main, the 4 slots and their 4 fetchers; a thread a source would be 300 more
    assert 0 < peak[0] <= 1 + 2 * 4, peak[0]


def test_sigterm_during_pooled_polling_commits_nothing_early(tmp_path: Path, testkit_path: str) -> None:
    sizes = [300] * 40
    config = counters(tmp_path, testkit_path, sizes, pool=3)
    proc = start_forwarder(tmp_path, config)
    _terminate_when(proc, lambda: lines_written(tmp_path / "out.jsonl") >= 600)
    got = delivered(tmp_path)
    assert set(got.values()) == {1}
    assert len(got) < sum(sizes), "stopped before the end, or the test proves nothing"
    store = CheckpointStore(str(tmp_path / "state"))
    try:
        for i in range(len(sizes)):
            name = f"src-{i:03d}"
            checkpoint = store.get(name)
            committed = checkpoint.cursor["next"] if checkpoint else 0
            # the file holds exactly what was committed: the page in flight finished, none began after
            assert sum(1 for source, _ in got if source == name) == committed, name
    finally:
        store.close()
    done = run_forwarder(tmp_path, config, "once")
    assert done.returncode == 0, done.stderr
    got = delivered(tmp_path)
    assert set(got) == expected(sizes) and set(got.values()) == {1}


@pytest.mark.parametrize("pool", [1, 2])
def test_sighup_with_a_pool_restarts_every_source_from_its_cursor(tmp_path: Path, testkit_path: str,
                                                                  pool: int) -> None:
    sizes = [15] * 6
    config = counters(tmp_path, testkit_path, sizes, pool=pool)
    for source in config["sources"]:
        source["interval"] = 1
    proc = start_forwarder(tmp_path, config)
    try:
        assert _wait(lambda: lines_written(tmp_path / "out.jsonl") >= sum(sizes), proc)
        bigger = [25] * 6
        for source in config["sources"]:
            source["options"]["count"] = 25
        write_config(tmp_path / "config.yaml", config)
        proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: lines_written(tmp_path / "out.jsonl") >= sum(bigger), proc)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "reloaded: 6 source(s)" in err
    got = delivered(tmp_path)
    assert set(got) == expected(bigger) and set(got.values()) == {1}


class Gate(Source):
    """One page, fetched only once the test opens the gate; says when its poll has begun."""

    type_name = "gate"
    vendor = "Test"
    product = "Gate"

    def __init__(self, config: ComponentConfig, context: Context):
        super().__init__(config, context)
        self.entered = threading.Event()
        self.open = threading.Event()

    def poll(self, cursor: Any) -> Iterator[Page]:
        self.entered.set()
        self.open.wait(60)
        yield Page([], {"done": True})

    def normalize(self, raw: Any) -> dict[str, Any]:
        raise AssertionError("no events")


def test_the_watchdog_counts_a_hung_poll_not_a_source_waiting_for_its_slot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pool of one: the first source hangs in its fetch, the second waits its turn. Only the one
    holding the slot is wedged (withholding the systemd watchdog ping); once it moves on, none is."""
    monkeypatch.setattr(daemon, "WEDGED_AFTER", 0.0)
    metrics, stop, log = Metrics(), threading.Event(), logging.getLogger("test.pool")
    store = CheckpointStore(str(tmp_path))
    gates = [Gate(ComponentConfig(f"gate-{i}", "gate", {}, interval=1), Context(f"gate-{i}", str(tmp_path), log, metrics))
             for i in range(2)]
    runners = [SourceRunner(g, [], store, SetAside(str(tmp_path), QUARANTINE), metrics, stop) for g in gates]
    app = SimpleNamespace(config=SimpleNamespace(max_concurrent_polls=1), stop=stop, sources=runners)
    scheduler = daemon.Scheduler(app)  # type: ignore[arg-type]
    scheduler.start()
    for g in gates:
        g.config.interval = 3600  # started within 0.1 s; polled once only
    try:
        assert _await(lambda: any(g.entered.is_set() for g in gates))
        first = 0 if gates[0].entered.is_set() else 1
        assert scheduler.wedged() == [f"gate-{first}"]
        gates[first].open.set()
        assert _await(lambda: gates[1 - first].entered.is_set())
        assert scheduler.wedged() == [f"gate-{1 - first}"]
        gates[1 - first].open.set()
        assert _await(lambda: not scheduler.pool.running)
        assert scheduler.wedged() == []
    finally:
        for g in gates:
            g.open.set()
        assert scheduler.stop(30)
        store.close()


def _await(predicate: Any, timeout: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False
