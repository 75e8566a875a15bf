"""Fixtures shared by the whole suite."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

FIXTURES = Path(__file__).resolve().parent / "fixtures"

collect_ignore = ["fixtures"]
"""Plugins the tests install (their own tests run inside those tests, against the installed copy)."""

HYPOTHESIS_PROFILE_ENV = "SIEM_FORWARDER_HYPOTHESIS_PROFILE"
# ``ci`` (the default): every run draws the same examples, so a failure in CI fails again on a laptop,
# and no example database makes one machine's run differ from another's. ``long``: random seeds and
# ten times the default number of examples, to find what the fixed seeds do not (docs/reliability.md).
# A test's own ``settings(max_examples=...)`` keeps its count under both.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("long", derandomize=False, max_examples=1000, print_blob=True)
settings.load_profile(os.environ.get(HYPOTHESIS_PROFILE_ENV, "ci"))


def _pip_target(package: Path, target: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
                    "--target", str(target), str(package)], check=True, capture_output=True, text=True)
    return target


@pytest.fixture(scope="session")
def testkit_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test-only plugin distribution (``counter`` and ``acme_guard`` sources, ``flaky`` output) in a plugin
    directory."""
    return str(_pip_target(FIXTURES / "testkit", tmp_path_factory.mktemp("testkit")))


@pytest.fixture
def counter_config(tmp_path: Path, testkit_path: str):
    """A config factory: a ``counter`` source into a ``file`` output, in this test's temp dir."""
    def make(count: int = 25, page_size: int = 10, **source_options):
        return {
            "state_dir": str(tmp_path / "state"),
            "plugin_paths": [testkit_path],
            "sources": [{"name": "counter", "type": "counter",
                         "options": {"count": count, "page_size": page_size, **source_options}}],
            "outputs": [{"name": "out", "type": "file", "options": {"path": str(tmp_path / "out.jsonl")}}],
        }
    return make


@pytest.fixture(autouse=True, scope="session")
def _strict_ledger():
    """Every pipeline run of the suite, in process or in a child ``siem-forwarder``, raises on a
    ledger that does not balance, so no test passes while an event leaves the path uncounted."""
    from forwarder_core.storage.ledger import STRICT_ENV

    old = os.environ.get(STRICT_ENV)
    os.environ[STRICT_ENV] = "1"
    yield
    if old is None:
        os.environ.pop(STRICT_ENV, None)
    else:
        os.environ[STRICT_ENV] = old
