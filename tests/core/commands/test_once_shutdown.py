"""SIGTERM ends ``once`` and ``run`` within ``shutdown_timeout`` even when a plugin blocks where the
stop cannot reach it: the poll is abandoned, its page uncommitted, and the summary says so. A
batch the SIEM is still answering when SIGTERM arrives is finished and committed, unless the answer
takes longer than ``shutdown_timeout``: then the request is cut off and the page goes again."""
from __future__ import annotations

import signal
import textwrap
from pathlib import Path

from forwarder_core.storage.checkpoint import CheckpointStore
from forwarder_core.testing import SplunkHecFake
from tests.helpers import lines_written, start_forwarder
from tests.reliability.harness import wait_until

STUCK = '''
import threading
from forwarder_core import hookimpl
from forwarder_core.plugin_api import Page, Source


class StuckSource(Source):
    """One page of three events, then a wait that nothing ends (a vendor SDK deaf to the stop)."""

    type_name = "stuck"
    vendor = "Test"
    product = "Stuck"
    options_schema = {"type": "object", "properties": {"hang": {"type": "boolean"}}}
    event_schema = {"type": "object"}

    def poll(self, cursor):
        done = (cursor or {}).get("pages", 0)
        if done == 0:
            yield Page([{"n": i} for i in range(3)], {"pages": 1})
        if self.config.options.get("hang", True):
            threading.Event().wait()

    def normalize(self, raw):
        return self.make_event(raw, id=f"stuck-{raw['n']}", timestamp="2026-01-01T00:00:00Z")


@hookimpl
def forwarder_register_sources(registry):
    registry.add(StuckSource)
'''


def stuck_plugin(root: Path) -> str:
    """A plugin directory holding the ``stuck`` source, found through ``plugin_paths``."""
    root.mkdir()
    (root / "stuck_plugin.py").write_text(STUCK)
    info = root / "stuck_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stuck-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [siem_forwarder]
        stuck = stuck_plugin
        """))
    return str(root)


def test_sigterm_abandons_a_poll_blocked_out_of_reach_after_shutdown_timeout(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    config = {
        "state_dir": str(tmp_path / "state"),
        "plugin_paths": [stuck_plugin(tmp_path / "plugins")],
        "shutdown_timeout": 1,
        "sources": [{"name": "stuck", "type": "stuck"}],
        "outputs": [{"name": "out", "type": "file", "options": {"path": str(out)}}],
    }
    proc = start_forwarder(tmp_path, config, "once")
    try:
        wait_until(lambda: lines_written(out) >= 3, 60, "the first page delivered", proc)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)  # a guard against a hang, not a measure
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, stdout + stderr
    assert "abandoned" in stderr and "Traceback" not in stderr
    (row,) = [ln for ln in stdout.splitlines() if ln.startswith("stuck ")]
    assert row.rstrip().endswith("FAILED")  # the reason is said once, in the log: "... were abandoned ..."
    assert "were abandoned; their cursors did not move" in stderr
    store = CheckpointStore(tmp_path / "state")
    try:
        checkpoint = store.get("stuck")
        assert checkpoint is not None and checkpoint.cursor == {"pages": 1} and checkpoint.delivered == 3
    finally:
        store.close()


def _sigterm_while_the_siem_answers(tmp_path: Path, hec: SplunkHecFake, answer_after: float,
                                    shutdown_timeout: float) -> tuple[int, str]:
    """``run`` one page into a HEC that takes ``answer_after`` seconds to answer; SIGTERM once the
    request has arrived. Returns the exit code and the log."""
    hec.fault("slow", path="/services/collector", delay=answer_after)
    config = {
        "state_dir": str(tmp_path / "state"),
        "plugin_paths": [stuck_plugin(tmp_path / "plugins")],
        "shutdown_timeout": shutdown_timeout,
        "sources": [{"name": "stuck", "type": "stuck", "options": {"hang": False}}],
        "outputs": [{"name": "hec", **hec.output()}],
    }
    proc = start_forwarder(tmp_path, config, "run")
    try:
        wait_until(lambda: any(r.method == "POST" for r in hec.requests), 60, "the batch sent to HEC", proc)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)  # a guard against a hang, not a measure
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, stderr


def _delivered(tmp_path: Path) -> int | None:
    store = CheckpointStore(tmp_path / "state")
    try:
        checkpoint = store.get("stuck")
        return None if checkpoint is None else checkpoint.delivered
    finally:
        store.close()


def test_sigterm_lets_the_batch_being_sent_finish_and_commits_it(tmp_path: Path) -> None:
    with SplunkHecFake() as hec:
        code, stderr = _sigterm_while_the_siem_answers(tmp_path, hec, answer_after=2, shutdown_timeout=30)
        assert code == 0, stderr
        assert len(hec.events) == 3
    assert "not committed" not in stderr and "abandoned" not in stderr, stderr
    assert _delivered(tmp_path) == 3  # the SIEM took the page: it is not sent again on the next start


def test_sigterm_cuts_off_a_send_that_outlasts_shutdown_timeout_and_commits_nothing(tmp_path: Path) -> None:
    with SplunkHecFake() as hec:
        code, stderr = _sigterm_while_the_siem_answers(tmp_path, hec, answer_after=120, shutdown_timeout=1)
    assert code == 0, stderr
    assert "abandoned" in stderr and "Traceback" not in stderr, stderr
    assert _delivered(tmp_path) is None  # never answered: the page goes again on the next start
