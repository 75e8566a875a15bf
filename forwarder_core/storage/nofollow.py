"""Files under the state directory opened without following a symlink, relative to their directory's fd.

The state directory belongs to the service user, who can plant any name in it: a symlink to a
root-owned file, a FIFO, a hard link. Root runs commands on that directory too (``quarantine
replay``, ``state reset``, ``once``), so nothing here opens a path below the state directory by
name: each directory is opened with ``O_DIRECTORY|O_NOFOLLOW`` relative to its parent's
descriptor, each file with ``O_NOFOLLOW`` relative to its directory's, new files with
``O_EXCL``, and modes are set with ``fchmod`` on the descriptor. A file that is a symlink, not a
regular file, hard-linked elsewhere or owned by another user is refused with a
:class:`~forwarder_core.errors.StateError` that names it, and left as it is.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from forwarder_core.errors import StateError

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_REFUSED = (errno.ELOOP, errno.ENOTDIR, errno.ENXIO, errno.EMLINK)


def refusal(path: str, what: str) -> StateError:
    return StateError(f"{path} {what}; refusing to use it (only the forwarder's own files belong in the "
                      f"state directory: remove it, and find out who put it there)")


def _describe(fd_or_st: os.stat_result) -> str:
    mode = fd_or_st.st_mode
    if stat.S_ISLNK(mode):
        return "is a symlink"
    if stat.S_ISDIR(mode):
        return "is a directory"
    return "is not a regular file"


def parts_under(under: str, path: str) -> list[str]:
    """``path``'s components below the directory ``under``; ValueError when it is not below it."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(under))
    parts = rel.split(os.sep)
    if rel in (".", "") or parts[0] == os.pardir:
        raise ValueError(f"{path} is not under {under}")
    return parts


def open_subdir(dir_fd: int, name: str, where: str, *, create: bool = True) -> int:
    """The subdirectory ``name`` of ``dir_fd`` (made 0700 when missing), never through a symlink."""
    if create:
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            pass
    try:
        return os.open(name, _DIR, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _REFUSED:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            raise refusal(where, _describe(st)) from None
        raise


@contextmanager
def opened_dir(under: str, parts: list[str], *, create: bool = True) -> Iterator[int]:
    """A descriptor of ``under/parts[0]/...``; ``under`` itself is opened as configured, everything
    below it without following a symlink. Raises FileNotFoundError when ``create`` is off and a part is missing."""
    fd = os.open(under, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        where = under
        for part in parts:
            where = os.path.join(where, part)
            sub = open_subdir(fd, part, where, create=create)
            os.close(fd)
            fd = sub
        yield fd
    finally:
        os.close(fd)


def open_file(dir_fd: int, name: str, where: str, flags: int, mode: int = 0o600, *, create: bool = True,
              check_owner: bool = True) -> int:
    """``name`` in ``dir_fd``, opened with ``flags`` without following a symlink, created ``O_EXCL``
    with ``mode`` when missing (FileNotFoundError when ``create`` is off).

    What it opens must be a regular file with no other hard link, and (``check_owner``, for every
    file this process writes) belong to this user, its mode set to ``mode`` through the descriptor.
    """
    flags = (flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC)) | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, mode, dir_fd=dir_fd)
            except FileExistsError:  # created in between: take it as it is now, checked below
                fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _REFUSED:
            raise refusal(where, _describe(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refusal(where, _describe(st))
        if check_owner and st.st_uid != os.geteuid():
            raise refusal(where, f"belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})")
        if st.st_nlink > 1:
            raise refusal(where, f"has {st.st_nlink} hard links")
        if check_owner and stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_under(under: str, path: str, flags: int, mode: int = 0o600, *, create: bool = True,
               check_owner: bool = True) -> int:
    """The file ``path`` below the directory ``under``: every directory between them and the file itself
    opened as :func:`opened_dir` and :func:`open_file` do."""
    *dirs, name = parts_under(under, path)
    with opened_dir(under, dirs, create=create) as dir_fd:
        return open_file(dir_fd, name, path, flags, mode, create=create, check_owner=check_owner)


def sqlite_file(under: str, path: str) -> os.stat_result:
    """Make ``path`` (a SQLite database below ``under``) safe for :func:`sqlite3.connect` to open by name.

    SQLite opens its database and its ``-wal``, ``-shm`` and ``-journal`` files by path, following
    symlinks; it cannot be handed a descriptor. So the database is created here (``O_EXCL``, 0600)
    when missing, and it and each companion that exists must be a regular file of this user, set to
    0600; afterwards :func:`same_file` checks that SQLite opened the very file checked here. Returns
    the database's status (``st_size == 0``: new).

    Existing files are only looked at through ``O_PATH`` descriptors: SQLite's locks are POSIX
    record locks, which a process loses when it closes any other descriptor of the file it opened
    for reading or writing (not an ``O_PATH`` one). Another connection of this process may have
    them open (a reload), and SQLite's own is open when :func:`same_file` runs.
    """
    *dirs, name = parts_under(under, path)
    with opened_dir(under, dirs) as dir_fd:
        try:
            st = _inspect(dir_fd, name, path)
        except FileNotFoundError:
            try:
                os.close(os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                                 dir_fd=dir_fd))
            except FileExistsError:
                pass  # made in between: inspected below like any other
            st = _inspect(dir_fd, name, path)
        secure_companions(dir_fd, name, path)
    return st


def _inspect(dir_fd: int, name: str, where: str, mode: int = 0o600) -> os.stat_result:
    """What :func:`open_file` checks, through an ``O_PATH`` descriptor (which opens neither the file nor
    a symlink's target, and whose close releases no lock); the mode set through it."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refusal(where, _describe(st))
        if st.st_uid != os.geteuid():
            raise refusal(where, f"belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})")
        if st.st_nlink > 1:
            raise refusal(where, f"has {st.st_nlink} hard links")
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(f"/proc/self/fd/{fd}", mode)  # the inode held, not a name: fchmod refuses O_PATH
        return st
    finally:
        os.close(fd)


def secure_companions(dir_fd: int, name: str, path: str) -> None:
    """Check (and set to 0600) the SQLite files beside database ``name`` that exist."""
    for suffix in ("-wal", "-shm", "-journal"):
        try:
            _inspect(dir_fd, name + suffix, path + suffix)
        except FileNotFoundError:
            continue


def same_file(under: str, path: str, before: os.stat_result) -> None:
    """After SQLite opened ``path``: it is still the regular file checked before, and its companions are safe."""
    *dirs, name = parts_under(under, path)
    with opened_dir(under, dirs, create=False) as dir_fd:
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
            raise refusal(path, "was replaced while it was being opened")
        secure_companions(dir_fd, name, path)
