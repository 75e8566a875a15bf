"""examples/siem-forwarder-example, installed as an operator installs a plugin, and run.

Its own tests run with the pytest plugin's fixtures (the way a plugin author tests), and the real
``siem-forwarder`` process runs its ``example_system_log`` source against a fake System Log API
that rate-limits with its own reset header.
"""
from __future__ import annotations

import email.utils
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forwarder_core.testing import FakeServer
from tests.conftest import _pip_target
from tests.helpers import REPO, forwarder_env, read_jsonl, run_forwarder

EXAMPLE = REPO / "examples" / "siem-forwarder-example"
LOGS = "/api/v1/logs"


@pytest.fixture(scope="module")
def example_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(_pip_target(EXAMPLE, tmp_path_factory.mktemp("example")))


def _event(n: int) -> dict:
    return {"uuid": f"evt-{n}", "published": f"2026-01-01T00:00:{n:02d}.000Z", "eventType": "user.session.start",
            "actor": {"id": f"u{n}", "displayName": f"User {n}", "type": "User"}, "outcome": {"result": "SUCCESS"}}


def test_the_examples_own_tests_pass_with_the_pytest_plugin(example_path: str, tmp_path: Path) -> None:
    env = forwarder_env({"PYTHONPATH": example_path})
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_a_plugin_written_against_the_old_module_paths_still_passes_its_tests(tmp_path: Path) -> None:
    """The example as it was written before the core was grouped by concern (``forwarder_core.http``,
    ``.waits``, ``.fakehttp``) installs and passes its own tests unchanged, told where to import from now."""
    old = _pip_target(REPO / "tests" / "fixtures" / "oldpaths_example", tmp_path / "plugin")
    env = forwarder_env({"PYTHONPATH": str(old)})
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "always::DeprecationWarning",
                             str(REPO / "tests" / "fixtures" / "oldpaths_example" / "tests")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout
    assert "forwarder_core.http has moved; import from forwarder_core.plugin_api instead" in result.stdout


def test_the_example_source_runs_in_the_daemon_and_resumes(example_path: str, tmp_path: Path) -> None:
    events = [_event(n) for n in range(5)]
    with FakeServer() as api:
        api.pages("GET", LOGS, events)
        config = {"plugin_paths": [example_path],
                  "sources": [{"name": "okta", "type": "example_system_log", "start_time": "2026-01-01T00:00:00Z",
                               "options": {"base_url": api.url, "token": "${EXAMPLE_TOKEN}", "page_size": 2}}],
                  "outputs": [{"name": "out", "type": "file", "options": {"path": str(tmp_path / "out.jsonl")}}]}
        env = {"EXAMPLE_TOKEN": "00abc-secret-token"}
        checked = run_forwarder(tmp_path, config, "check", "--connect", env=env)
        assert checked.returncode == 0, checked.stderr
        assert "read the System Log at " + api.url in checked.stdout + checked.stderr
        now = time.time()
        api.fault("status", path=LOGS, status=429, headers={
            "X-Rate-Limit-Reset": str(int(now) + 2), "Date": email.utils.formatdate(now, usegmt=True)})
        started = time.monotonic()
        first = run_forwarder(tmp_path, config, env=env)
        assert first.returncode == 0, first.stderr
        assert time.monotonic() - started >= 1.0  # it waited for the reset the 429 announced
        assert "429" in first.stderr and "00abc-secret-token" not in first.stderr
        assert [e["id"] for e in read_jsonl(tmp_path / "out.jsonl")] == [f"evt-{n}" for n in range(5)]
        events.append(_event(7))
        again = run_forwarder(tmp_path, config, env=env)
        assert again.returncode == 0, again.stderr
    delivered = [e["id"] for e in read_jsonl(tmp_path / "out.jsonl")]
    assert delivered == [f"evt-{n}" for n in range(5)] + ["evt-7"], "resumed from its cursor, nothing twice"


def test_the_example_lists_its_source(example_path: str, tmp_path: Path) -> None:
    result = run_forwarder(tmp_path, {"plugin_paths": [example_path], "sources": [], "outputs": []},
                           "plugins", "-c", str(tmp_path / "config.yaml"))
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["source", "example_system_log", "siem-forwarder-example", "0.1.0"] in rows, result.stdout
    assert os.path.isdir(example_path)
