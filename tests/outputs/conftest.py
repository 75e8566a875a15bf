"""Fixtures for the output tests: a real rsyslog receiver (see :mod:`tests.rsyslog`).

Without ``rsyslogd`` the tests that need it are skipped on a developer's machine and fail in
CI (``CI=true``), where ``scripts/install-test-deps.sh`` must have installed it.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.outputs.encoded import CompressHere
from tests.rsyslog import INSTALL_HINT, Pki, Rsyslog, find_rsyslogd, gtls_available, make_pki


def _rsyslogd_or_fail() -> str:
    binary = find_rsyslogd()
    missing = INSTALL_HINT if binary is None else (
        None if gtls_available() else "rsyslog's TLS driver is missing; apt-get install rsyslog-gnutls")
    if missing:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(missing, pytrace=False)
        pytest.skip(missing)
    assert binary is not None
    return binary


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _started(directory: Path, pki: Pki, tls: bool = True) -> Rsyslog:
    receiver = Rsyslog(directory, _rsyslogd_or_fail(), pki, tls=tls)
    receiver.validate()
    receiver.start()
    return receiver


@pytest.fixture(scope="session")
def rsyslog(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Rsyslog]:
    """One rsyslogd for the session; tests tell their messages apart by a marker in the event ids."""
    receiver = _started(tmp_path_factory.mktemp("rsyslog"), pki)
    yield receiver
    receiver.stop()


@pytest.fixture
def own_rsyslog(tmp_path: Path, pki: Pki) -> Iterator[Rsyslog]:
    """An rsyslogd (UDP and TCP only: it starts fast) for one test that stops or restarts it."""
    receiver = _started(tmp_path / "rsyslog", pki, tls=False)
    yield receiver
    receiver.stop()


@pytest.fixture
def own_tls_rsyslog(tmp_path: Path, pki: Pki) -> Iterator[Rsyslog]:
    """Like ``own_rsyslog``, with the TLS listeners too (each start costs rsyslog a second or two)."""
    receiver = _started(tmp_path / "rsyslog-tls", pki)
    yield receiver
    receiver.stop()


@pytest.fixture
def compress_here(monkeypatch: pytest.MonkeyPatch) -> CompressHere:
    """For the tests that a batch encoded in a worker is sent with the bodies built there."""
    return CompressHere(monkeypatch)

