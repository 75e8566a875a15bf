"""Fixtures for the reliability suite: a real rsyslog of its own, and a vendor fake per module."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rsyslog import INSTALL_HINT, Rsyslog, find_rsyslogd, make_pki


@pytest.fixture
def rsyslog_tcp(tmp_path: Path) -> Iterator[Rsyslog]:
    """An rsyslogd with UDP and TCP listeners only (it starts fast), which a test may stop and start."""
    binary = find_rsyslogd()
    if binary is None:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(INSTALL_HINT, pytrace=False)
        pytest.skip(INSTALL_HINT)
    (tmp_path / "pki").mkdir()
    (tmp_path / "rsyslog").mkdir()
    receiver = Rsyslog(tmp_path / "rsyslog", binary, make_pki(tmp_path / "pki"), tls=False)
    receiver.validate()
    receiver.start()
    yield receiver
    receiver.stop()
