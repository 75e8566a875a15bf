"""No writer under the state directory follows a symlink: each refuses, naming the link, and the
file the link points at keeps its content, mode and owner.

The service user owns the state directory and can plant a link under any name the forwarder
uses; these tests plant one for every writer, in process (root's and any user's code path alike:
the refusal does not depend on who runs it). tests/reliability/test_state_dir_as_root.py runs
the commands as root against a service user's directory.
"""
from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from forwarder_core.engine.diskbuffer import DiskBuffer
from forwarder_core.errors import OutputError, StateError
from forwarder_core.metrics import Metrics
from forwarder_core.plugin_api import ComponentConfig, Context
from forwarder_core.storage.checkpoint import CheckpointStore
from forwarder_core.storage.durable import LineAppender, cut_partial_line
from forwarder_core.storage.setaside import DEAD_LETTER, QUARANTINE, SetAside
from forwarder_core.storage.setaside_files import rewrite, set_aside_files
from forwarder_core.storage.statedir import StateLock, ensure_state_dir, lock_holder, state_dir_problems
from siem_forwarder_plugins.outputs.file import FileOutput

PRECIOUS = b"a file the forwarder must never touch\nand a last line without its newline"


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """What a planted link points at: outside the state directory, 0644 (root's, when root runs this)."""
    path = tmp_path / "elsewhere" / "precious"
    path.parent.mkdir()
    path.write_bytes(PRECIOUS)
    path.chmod(0o644)
    return path


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return Path(ensure_state_dir(str(tmp_path / "state")))


def _snapshot(path: Path) -> tuple[bytes, int, int, int]:
    st = os.lstat(path)
    return path.read_bytes(), st.st_mode, st.st_uid, st.st_gid


def _plant(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def _quarantine(state: Path) -> None:
    SetAside(str(state), QUARANTINE).write("src", [SetAside.record("src", "bad", "1", {"x": 1})])


def _dead_letter(state: Path) -> None:
    SetAside(str(state), DEAD_LETTER).write("out", [SetAside.record("src", "refused", "1", {"x": 1}, output="out")])


def _lock(state: Path) -> None:
    StateLock(str(state)).acquire().release()


def _checkpoints(state: Path) -> None:
    CheckpointStore(str(state)).close()


def _disk_buffer(state: Path) -> None:
    DiskBuffer(str(state), "out", 1 << 20).close()


def _replay_reads(state: Path) -> None:
    set_aside_files(str(state), (QUARANTINE,))


def _replay_rewrites(state: Path) -> None:
    (state / QUARANTINE).mkdir(exist_ok=True)
    (state / QUARANTINE / "src.jsonl").write_text('{"id":"1"}\n')
    rewrite(str(state), str(state / QUARANTINE / "src.jsonl"), ['{"id":"2"}\n'])


WRITERS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "quarantine file": ("quarantine/src.jsonl", _quarantine),
    "quarantine directory": ("quarantine", _quarantine),
    "dead-letter file": ("dead-letter/out.jsonl", _dead_letter),
    "dead-letter directory": ("dead-letter", _dead_letter),
    "lock": ("lock", _lock),
    "checkpoint store": ("checkpoints.sqlite", _checkpoints),
    "checkpoint WAL": ("checkpoints.sqlite-wal", _checkpoints),
    "checkpoint shared memory": ("checkpoints.sqlite-shm", _checkpoints),
    "checkpoint journal": ("checkpoints.sqlite-journal", _checkpoints),
    "disk buffer": ("buffer/out.sqlite", _disk_buffer),
    "disk buffer WAL": ("buffer/out.sqlite-wal", _disk_buffer),
    "disk buffer directory": ("buffer", _disk_buffer),
    "replay reading a quarantine file": ("quarantine/src.jsonl", _replay_reads),
    "replay's temporary file": (f"quarantine/src.jsonl.replay-{os.getpid()}.tmp", _replay_rewrites),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_a_link_planted_for_a_writer_is_refused_and_its_target_is_unchanged(state: Path, target: Path,
                                                                           name: str) -> None:
    where, writer = WRITERS[name]
    link = state / where
    pointed = target.parent if where in (QUARANTINE, DEAD_LETTER, "buffer") else target  # a directory's, at one
    _plant(link, pointed)
    before = _snapshot(target), os.lstat(target.parent).st_mode

    try:
        writer(state)
    except StateError as exc:
        assert str(link) in str(exc) and "symlink" in str(exc)
    else:
        # Only the rename of replay may succeed: it replaces the name, the link, never its target.
        assert name == "replay's temporary file", f"{name}: the link was followed without a word"
        assert not link.exists() and (state / QUARANTINE / "src.jsonl").read_text() == '{"id":"2"}\n'

    assert (_snapshot(target), os.lstat(target.parent).st_mode) == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["precious"]


def test_the_file_output_refuses_a_link_planted_where_its_file_was(tmp_path: Path, target: Path) -> None:
    out = tmp_path / "out.jsonl"
    _plant(out, target)
    before = _snapshot(target)
    output = FileOutput(ComponentConfig(name="out", type="file", options={"path": str(out)}),
                        Context("out", str(tmp_path), logging.getLogger("test"), Metrics()))
    with pytest.raises(OutputError, match="symlink"):
        output.send([{"id": "a"}])
    output.close()
    with pytest.raises(OSError):
        cut_partial_line(str(out))
    with pytest.raises(OSError):
        LineAppender(str(out)).append(b"x\n")
    assert _snapshot(target) == before


def test_a_hard_link_or_a_fifo_in_the_state_directory_is_refused(state: Path, target: Path) -> None:
    before = _snapshot(target)
    try:
        os.link(target, state / "lock")
    except PermissionError:
        pytest.skip("hard links to this file are not allowed here")
    with pytest.raises(StateError, match="hard links"):
        _lock(state)
    assert _snapshot(target) == before

    (state / QUARANTINE).mkdir()
    os.mkfifo(state / QUARANTINE / "src.jsonl")
    with pytest.raises(StateError, match="not a regular file"):
        _quarantine(state)  # opened without waiting for a reader that never comes


def test_check_names_a_planted_lock(state: Path, target: Path) -> None:
    _plant(state / "lock", target)
    with pytest.raises(StateError, match="symlink"):
        lock_holder(str(state))
    (problem,) = state_dir_problems(str(state))
    assert f"{state}/lock is a symlink" in problem


def test_new_state_files_are_created_0600_and_existing_ones_set_back_to_it(state: Path) -> None:
    _quarantine(state)
    _checkpoints(state)
    (state / "checkpoints.sqlite").chmod(0o644)
    _checkpoints(state)
    for path in (state / QUARANTINE / "src.jsonl", state / "checkpoints.sqlite"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a link that belongs to another user")
def test_a_state_dir_that_is_another_users_symlink_is_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    link = tmp_path / "state"
    link.symlink_to(real)
    os.lchown(link, 65534, 65534)
    with pytest.raises(StateError, match="is a symlink that belongs to uid 65534"):
        ensure_state_dir(str(link))
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o755 and os.listdir(real) == []
    os.lchown(link, 0, 0)  # root's own link: the operator's choice, followed
    assert ensure_state_dir(str(link)) == str(link)


@pytest.mark.parametrize("opener", ["checkpoints", "disk buffer"])
def test_checking_sqlite_files_keeps_sqlites_locks(state: Path, opener: str) -> None:
    """SQLite's locks are POSIX record locks, which a process loses when it closes *any* descriptor
    of the file. Had the checks opened and closed SQLite's files beside its connection, a reader in
    another process (``state``, a test polling the cursor) would find no lock on the shared memory,
    take the database for unused and truncate it under the daemon (which dies of SIGBUS), or
    checkpoint and delete its WAL."""
    if opener == "checkpoints":
        db: CheckpointStore | DiskBuffer = CheckpointStore(str(state))
        shm = state / "checkpoints.sqlite-shm"
    else:
        db = DiskBuffer(str(state), "out", 1 << 20)
        shm = state / "buffer" / "out.sqlite-shm"
    try:
        dev, ino = os.stat(shm).st_dev, os.stat(shm).st_ino
        held = [line.split() for line in Path("/proc/locks").read_text().splitlines()]
        mine = [f for f in held if f[1] == "POSIX" and f[4] == str(os.getpid())]
        assert any(f[5].endswith(f":{ino}") for f in mine), (dev, ino, mine)  # SQLite's lock on the shm file
    finally:
        db.close()
