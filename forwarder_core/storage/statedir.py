"""The state directory: ours alone, created 0700, files 0600, and locked so that one process owns it.

The directory belongs to the user the service runs as; a process of another user is refused,
except root, which becomes the directory's owner (:func:`act_as_owner`) before it touches
anything in it: what the service user planted there can then reach nothing the service user
could not reach already. Every file below it is opened through :mod:`forwarder_core.storage.nofollow`.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import pwd
import stat
import tempfile

from forwarder_core.errors import StateError
from forwarder_core.storage.nofollow import open_under, opened_dir, parts_under

log = logging.getLogger("siem_forwarder.state")


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def open_state_dir(path: str) -> int:
    """A descriptor of the state directory itself.

    The configured path is followed as the operator wrote it, except a symlink as its last
    component that belongs to neither root nor this user: whoever owns that link could point it
    anywhere.
    """
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
    link = os.lstat(path)
    if not stat.S_ISLNK(link.st_mode):
        raise StateError(f"state directory {path} exists and is not a directory")
    if link.st_uid not in (0, os.geteuid()):
        raise StateError(f"state directory {path} is a symlink that belongs to {_user(link.st_uid)}; "
                         f"refusing to follow it: point state_dir at the directory itself")
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def act_as_owner(st: os.stat_result, path: str) -> None:
    """Root becomes the owner of the state directory for the rest of the process (groups, gid, uid).

    Only what the state directory's owner can do is then done: the service user's links and files
    in it lead nowhere it could not go itself, and the files root creates belong to the service.
    """
    try:
        entry: pwd.struct_passwd | None = pwd.getpwuid(st.st_uid)
    except KeyError:
        entry = None
    gid = entry.pw_gid if entry is not None else st.st_gid
    try:
        if entry is not None:
            os.initgroups(entry.pw_name, gid)
        else:
            os.setgroups([])
        os.setgid(gid)
        os.setuid(st.st_uid)
    except OSError as exc:
        raise StateError(f"state directory {path} belongs to {_user(st.st_uid)}; could not become that user "
                         f"to use it: {exc.strerror or exc}") from None
    log.info("running as %s, the owner of state directory %s", _user(st.st_uid), path)


def ensure_state_dir(path: str) -> str:
    """Create ``path`` (mode 0700) if needed, and make sure this process may use it as its own.

    A directory that belongs to another user is refused, unless this process is root: root then
    acts as the directory's owner (:func:`act_as_owner`) from here on.
    """
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        owner = os.stat(path).st_uid
        if owner != os.geteuid() and os.geteuid() != 0:
            raise StateError(owner_problem(path, owner))  # before opening it: another's 0700 directory cannot be
        fd = open_state_dir(path)
    except OSError as exc:
        raise StateError(f"state directory {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            if os.geteuid() != 0:
                raise StateError(owner_problem(path, st.st_uid))
            act_as_owner(st, path)
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o700)
    except OSError as exc:
        raise StateError(f"state directory {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateError(f"state directory {path} is not writable by this user (uid {os.getuid()})")
    return path


def owner_problem(path: str, uid: int) -> str:
    return (f"state directory {path} belongs to {_user(uid)}, not to this user ({_user(os.geteuid())}): "
            f"run siem-forwarder as its owner, or as root (which then acts as the owner)")


def ensure_subdir(state_dir: str, name: str) -> str:
    """``state_dir/name``, created 0700 if missing; refused if it is a symlink or not a directory."""
    with opened_dir(state_dir, parts_under(state_dir, os.path.join(state_dir, name))):
        pass
    return os.path.join(state_dir, name)


class LockHeld(StateError):
    """Another process holds the state directory's lock."""


class StateLock:
    """An exclusive ``flock`` on ``state_dir/lock``: a second forwarder on the same state refuses to start."""

    def __init__(self, state_dir: str):
        self.path = os.path.join(state_dir, "lock")
        self._fd: int | None = None

    def acquire(self) -> "StateLock":
        fd = open_under(os.path.dirname(self.path), self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise LockHeld(
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
        owner = os.stat(path).st_uid
    except OSError as exc:
        return [f"state directory {path}: {exc.strerror or exc}"]
    if owner != os.geteuid() and os.geteuid() != 0:
        return [owner_problem(path, owner)]
    try:
        fd, probe = tempfile.mkstemp(prefix=".check-", dir=path)
    except OSError as exc:
        return [f"state directory {path} is not writable by this user (uid {os.getuid()}): {exc.strerror or exc}"]
    os.close(fd)
    os.unlink(probe)
    try:
        holder = lock_holder(path)
    except StateError as exc:
        return [str(exc)]
    if holder is not None:
        return [f"state directory {path} is in use: its lock is held by {holder}; "
                f"stop that process first, or give this config another state_dir"]
    return []


def lock_holder(state_dir: str) -> str | None:
    """Who holds ``state_dir/lock`` (``pid 1234 (siem-forwarder run -c ...)``), or None when it is free."""
    lock = os.path.join(state_dir, "lock")
    try:
        fd = open_under(state_dir, lock, os.O_RDONLY, create=False, check_owner=False)
    except OSError:
        return None  # no lock file (or none this user may read): nobody holds it that we can tell
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
