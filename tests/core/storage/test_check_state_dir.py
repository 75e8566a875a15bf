"""`check` checks the state directory as `run` and `once` will use it."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from forwarder_core.storage.statedir import StateLock
from tests.helpers import forwarder_env, run_forwarder


def _write(path: Path, state_dir: Path) -> Path:
    path.write_text(f"""\
state_dir: {state_dir}
sources: []
outputs: []
""")
    return path


def test_a_state_dir_that_is_a_file_is_refused_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    cfg = _write(tmp_path / "config.yaml", tmp_path / "state")
    result = run_forwarder(tmp_path, None, "check", "-c", str(cfg))
    assert result.returncode == 78, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"{cfg}:1: $.state_dir: state directory {tmp_path}/state exists and is not a directory"]
    assert run_forwarder(tmp_path, None, "once", "-c", str(cfg)).returncode == 74  # what check now foresees


def test_a_state_dir_under_a_file_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    cfg = _write(tmp_path / "config.yaml", tmp_path / "file" / "state")
    result = run_forwarder(tmp_path, None, "check", "-c", str(cfg))
    assert result.returncode == 78
    assert f"$.state_dir: state directory {tmp_path}/file/state cannot be created: {tmp_path}/file is not a directory" \
        in result.stdout


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can read (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="siem-forwarder-test-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def test_an_unwritable_state_dir_is_refused(shared_dir: Path) -> None:
    state = shared_dir / "state"
    state.mkdir(mode=0o755)
    cfg = _write(shared_dir / "config.yaml", state)
    cfg.chmod(0o644)

    # Root may write anywhere, so root runs check as nobody, on nobody's directory; everyone gets it read-only.
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    if as_nobody:
        os.chown(state, 65534, 65534)
    state.chmod(0o500)
    result = subprocess.run([*as_nobody, sys.executable, "-m", "forwarder_core", "check", "-c", str(cfg)],
                            capture_output=True, text=True, env=forwarder_env(), cwd="/", timeout=60)
    assert result.returncode == 78, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"{cfg}:1: $.state_dir: state directory {state} is not writable by this user (uid "
        f"{65534 if os.geteuid() == 0 else os.getuid()}): Permission denied"]


def test_a_held_lock_names_its_holder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    cfg = _write(tmp_path / "config.yaml", state)
    lock = StateLock(str(state)).acquire()
    try:
        result = run_forwarder(tmp_path, None, "check", "-c", str(cfg))
    finally:
        lock.release()
    assert result.returncode == 78, result.stdout + result.stderr
    assert f"$.state_dir: state directory {state} is in use: its lock is held by pid {os.getpid()} (" in result.stdout
    assert run_forwarder(tmp_path, None, "check", "-c", str(cfg)).returncode == 0


def test_a_state_dir_that_does_not_exist_yet_is_fine_and_not_created(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "config.yaml", tmp_path / "new" / "state")
    result = run_forwarder(tmp_path, None, "check", "-c", str(cfg))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "new").exists()


def test_a_state_dir_problem_is_reported_with_the_config_mistakes(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"state_dir: {tmp_path}/state\nsources:\n  - name: a\n    type: nosuch\noutputs: []\n")
    result = run_forwarder(tmp_path, None, "check", "-c", str(cfg))
    assert result.returncode == 78
    lines = result.stdout.splitlines()
    assert lines[0] == f"{cfg}:1: $.state_dir: state directory {tmp_path}/state exists and is not a directory"
    assert lines[1].startswith(f"{cfg}:4: $.sources[0].type: unknown source type 'nosuch'")
    assert len(lines) == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory that belongs to another user")
def test_a_state_dir_of_another_user_is_refused_by_check_and_once(shared_dir: Path) -> None:
    state = shared_dir / "state"
    state.mkdir(mode=0o700)  # root's
    cfg = _write(shared_dir / "config.yaml", state)
    cfg.chmod(0o644)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    problem = (f"state directory {state} belongs to uid 0 (root), not to this user (uid 65534 (nobody)): "
               f"run siem-forwarder as its owner, or as root (which then acts as the owner)")
    check = subprocess.run([*as_nobody, sys.executable, "-m", "forwarder_core", "check", "-c", str(cfg)],
                           capture_output=True, text=True, env=forwarder_env(), cwd="/", timeout=60)
    assert (check.returncode, check.stdout.splitlines()) == (78, [f"{cfg}:1: $.state_dir: {problem}"])
    for command in (["once"], ["state"], ["quarantine", "list"]):
        result = subprocess.run([*as_nobody, sys.executable, "-m", "forwarder_core", *command, "-c", str(cfg)],
                                capture_output=True, text=True, env=forwarder_env(), cwd="/", timeout=60)
        assert result.returncode == 74, (command, result.stdout + result.stderr)
        assert f"siem-forwarder: {problem}" in result.stdout + result.stderr
        assert os.listdir(state) == []
