"""The state directory cannot be turned against root.

The service user owns the state directory, so it can plant anything in it: a symlink named
``lock`` to a root-owned file, ``quarantine/<source>.jsonl`` to a root-only one. The operator
then runs, as root, the commands docs/operations.md gives (``quarantine replay``, ``state
reset``, ``once``). Those commands act as the directory's owner, and no file under the
directory is opened through a symlink: every target stays as it was (content, mode, owner).

Run as root (CI does); the service user is the package's ``siem-forwarder`` where installed,
else ``nobody``.
"""
from __future__ import annotations

import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import forwarder_env, read_jsonl, write_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the attack is root following a service user's link")


def _service_user() -> tuple[int, int]:
    try:
        pw = pwd.getpwnam("siem-forwarder")
    except KeyError:
        return 65534, 65534
    return pw.pw_uid, pw.pw_gid


SERVICE = _service_user()
SECRET = "root-only secret line\n"


@pytest.fixture
def shared(testkit_path: str) -> Iterator[Path]:
    """A directory the service user can reach (pytest's tmp_path is private to root), with a state
    directory that belongs to the service user, as systemd's StateDirectory= leaves it."""
    path = Path(tempfile.mkdtemp(prefix="siem-forwarder-owner-"))
    path.chmod(0o755)
    state = path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, *SERVICE)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def _targets(root: Path) -> dict[str, Path]:
    """Files only root may read or write: what a planted link points at."""
    secret = root / "root-only"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    owned = root / "root-owned"
    owned.write_text("root's own file, no newline at the end")
    owned.chmod(0o644)
    return {"secret": secret, "owned": owned}


def _snapshot(paths: dict[str, Path]) -> dict[str, tuple[bytes, int, int, int]]:
    out = {}
    for name, path in paths.items():
        st = os.lstat(path)
        out[name] = (path.read_bytes(), st.st_mode, st.st_uid, st.st_gid)
    return out


def _plant(link: Path, target: Path) -> None:
    """A symlink as the service user makes it (owned by the service user)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    os.lchown(link.parent, *SERVICE)
    link.symlink_to(target)
    os.lchown(link, *SERVICE)


def _config(shared: Path, testkit_path: str, output: dict[str, Any] | None = None, **extra: Any) -> Path:
    cfg = {"state_dir": str(shared / "state"), "plugin_paths": [testkit_path],
           "sources": [{"name": "asana", "type": "counter", "options": {"count": 6, "page_size": 3, "invalid_every": 3}}],
           "outputs": [{"name": "out", "type": "file", "options": {"path": str(shared / "state" / "out.jsonl")},
                        **(output or {})}],
           **extra}
    path = shared / "config.yaml"
    write_config(path, cfg)
    path.chmod(0o644)
    return path


def _run(config: Path, *args: str, as_user: tuple[int, int] | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", f"--reuid={as_user[0]}", f"--regid={as_user[1]}", "--clear-groups"] if as_user else []
    return subprocess.run([*prefix, sys.executable, "-m", "forwarder_core", *args, "-c", str(config)],
                          capture_output=True, text=True, env=forwarder_env(), cwd="/", timeout=120,
                          stdin=subprocess.DEVNULL)


def _readable_by_service_user(root: Path) -> str:
    """Everything under ``root`` the service user can read, as it would read it."""
    script = ("import os,sys\nout=[]\nfor d,_,fs in os.walk(sys.argv[1]):\n for f in fs:\n  p=os.path.join(d,f)\n"
              "  try:\n   fd=os.open(p,os.O_RDONLY|os.O_NOFOLLOW|os.O_NONBLOCK)\n  except OSError:\n   continue\n"
              "  out.append(os.read(fd,1<<20).decode('utf-8','replace'))\n  os.close(fd)\nprint(''.join(out))\n")
    return subprocess.run(["setpriv", f"--reuid={SERVICE[0]}", f"--regid={SERVICE[1]}", "--clear-groups",
                           sys.executable, "-c", script, str(root)], capture_output=True, text=True, check=True).stdout


def test_finding_13_replay_as_root_neither_leaks_a_root_only_file_nor_truncates_a_root_owned_one(
        shared: Path, testkit_path: str) -> None:
    targets = _targets(shared)
    before = _snapshot(targets)
    state = shared / "state"
    _plant(state / "quarantine" / "asana.jsonl", targets["secret"])
    _plant(state / "lock", targets["owned"])
    config = _config(shared, testkit_path)

    result = _run(config, "quarantine", "replay")  # as root, exactly as docs/operations.md says

    assert _snapshot(targets) == before, result.stdout + result.stderr
    assert SECRET.strip() not in _readable_by_service_user(state)
    assert result.returncode != 0
    assert "symlink" in result.stdout + result.stderr


ONCE_WRITERS = ["lock", "checkpoints.sqlite", "checkpoints.sqlite-wal", "quarantine/asana.jsonl", "out.jsonl",
                "buffer/out.sqlite"]


@pytest.mark.parametrize("planted", ONCE_WRITERS)
def test_once_as_root_follows_no_link_planted_for_a_writer(shared: Path, testkit_path: str, planted: str) -> None:
    targets = _targets(shared)
    before = _snapshot(targets)
    state = shared / "state"
    _plant(state / planted, targets["owned"])
    config = _config(shared, testkit_path, {"buffer": "disk"} if planted.startswith("buffer/") else None,
                     delivery={"once_give_up_after": 2, "max_backoff": 0.2})

    result = _run(config, "once")

    assert _snapshot(targets) == before, result.stdout + result.stderr
    assert result.returncode != 0
    assert "symlink" in result.stdout + result.stderr
    assert (state / planted).is_symlink()  # left where it was, for the operator to find


def test_state_reset_as_root_follows_no_planted_lock(shared: Path, testkit_path: str) -> None:
    targets = _targets(shared)
    before = _snapshot(targets)
    _plant(shared / "state" / "lock", targets["owned"])
    result = _run(_config(shared, testkit_path), "state", "reset", "asana")
    assert _snapshot(targets) == before
    assert result.returncode == 74 and f"{shared}/state/lock is a symlink" in result.stdout, result.stdout


def test_commands_run_as_root_act_as_the_owner_of_the_state_directory(shared: Path, testkit_path: str) -> None:
    config = _config(shared, testkit_path)
    once = _run(config, "once")
    assert once.returncode == 0, once.stdout + once.stderr
    assert f"running as uid {SERVICE[0]}" in once.stderr
    state = shared / "state"
    made = [state / "lock", state / "checkpoints.sqlite", state / "quarantine" / "asana.jsonl", state / "out.jsonl"]
    assert all(p.exists() for p in made)
    assert {(p.lstat().st_uid, p.lstat().st_gid) for p in [state, *state.rglob("*")]} == {SERVICE}
    assert len(read_jsonl(state / "out.jsonl")) == 4 and len(read_jsonl(state / "quarantine" / "asana.jsonl")) == 2

    for command in (["state"], ["quarantine", "list"], ["state", "reset", "asana"]):
        result = _run(config, *command)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"running as uid {SERVICE[0]}" in result.stderr, command
    replay = _run(config, "quarantine", "replay")
    assert replay.returncode == 1, replay.stdout + replay.stderr  # still invalid: kept, rewritten by the owner
    assert {(p.lstat().st_uid, p.lstat().st_gid) for p in [state, *state.rglob("*")]} == {SERVICE}
