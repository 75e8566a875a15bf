"""A private PostgreSQL for the fleet tests: one cluster for the session, an empty database per test."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import Postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    # Not under pytest's temporary root: pytest keeps that 0700 (and resets it at every session
    # start), and the cluster belongs to another user, who must reach its directory.
    top = Path(tempfile.mkdtemp(prefix="siem-forwarder-pg-"))
    os.chmod(top, 0o755)
    server = Postgres(top / "cluster")
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def postgres(postgres_server: Postgres) -> Postgres:
    """The session's PostgreSQL with the forwarder's tables dropped: every test starts a new fleet."""
    postgres_server.reset()
    return postgres_server


@pytest.fixture
def pg_dir(tmp_path: Path) -> Path:
    return tmp_path
