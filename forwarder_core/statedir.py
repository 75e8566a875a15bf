"""The state directory: created 0700, files 0600, and locked so that one process owns it."""
from __future__ import annotations

import fcntl
import os

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
