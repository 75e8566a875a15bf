"""The state directory: created 0700, files 0600, and locked so that one process owns it."""
from __future__ import annotations

import fcntl
import os
import tempfile

from forwarder_core.errors import StateError


def secure_file(path: str) -> None:
    """Make a state file readable by its owner only."""
    try:
        os.chmod(path, 0o600)
    except OSError:
        pass


def ensure_state_dir(path: str) -> str:
    """Create ``path`` (mode 0700) if needed and check it is a writable directory."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, 0o700)
    except OSError as exc:
        raise StateError(f"state directory {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateError(f"state directory {path} is not writable by this user (uid {os.getuid()})")
    return path


def ensure_subdir(state_dir: str, name: str) -> str:
    sub = os.path.join(state_dir, name)
    os.makedirs(sub, mode=0o700, exist_ok=True)
    return sub


class StateLock:
    """An exclusive ``flock`` on ``state_dir/lock``: a second forwarder on the same state refuses to start."""

    def __init__(self, state_dir: str):
        self.path = os.path.join(state_dir, "lock")
        self._fd: int | None = None

    def acquire(self) -> "StateLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StateError(
                f"another siem-forwarder is running on state directory {os.path.dirname(self.path)} "
                f"(lock {self.path}); two would deliver everything twice"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def state_dir_problems(path: str) -> list[str]:
    """What would stop ``run``/``once`` from using ``path``, found without creating or changing it.

    For ``check``: the directory must exist or be creatable, be a directory, take a file from
    this user (tried for real, since root on a read-only file system passes every permission
    test), and its lock must be free, else the holder is named.
    """
    if not os.path.lexists(path):
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.lexists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            return [f"state directory {path} cannot be created: {parent} is not a directory"]
        if not os.access(parent, os.W_OK | os.X_OK):
            return [f"state directory {path} does not exist and cannot be created by this user "
                    f"(uid {os.getuid()}): {parent} is not writable"]
        return []
    if not os.path.isdir(path):
        return [f"state directory {path} exists and is not a directory"]
    try:
        fd, probe = tempfile.mkstemp(prefix=".check-", dir=path)
    except OSError as exc:
        return [f"state directory {path} is not writable by this user (uid {os.getuid()}): {exc.strerror or exc}"]
    os.close(fd)
    os.unlink(probe)
    holder = lock_holder(path)
    if holder is not None:
        return [f"state directory {path} is in use: its lock is held by {holder}; "
                f"stop that process first, or give this config another state_dir"]
    return []


def lock_holder(state_dir: str) -> str | None:
    """Who holds ``state_dir/lock`` (``pid 1234 (siem-forwarder run -c ...)``), or None when it is free."""
    lock = os.path.join(state_dir, "lock")
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None  # no lock file: nobody holds it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            pid = os.read(fd, 32).decode("ascii", "replace").strip()
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
    finally:
        os.close(fd)
    if not pid.isdigit():
        return "another process"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            command = fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        command = ""
    return f"pid {pid}" + (f" ({command[:120]})" if command else "")
