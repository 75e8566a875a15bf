"""Durable appends of whole lines: the one way the core and the file-writing plugins append.

A ``kill -9`` (or a power cut) in the middle of a write can leave the last line of a file half
written. The batch it belonged to was never acknowledged, so it is written again after the
restart; but appended behind the fragment, the first line of that retry would be glued to it and
both unreadable. So whenever a file is opened for appending, :func:`cut_partial_line` cuts a
last line that has no newline, and every batch is then written whole and fsynced before the
caller reports it delivered.

The file is opened once, without following a symlink (``O_NOFOLLOW``; created ``O_EXCL``), and
the cut and the appends go through that one descriptor: a symlink planted where the file was is
refused, never truncated through. Below the state directory (``under=``) every directory on the
way is opened the same way (:mod:`forwarder_core.storage.nofollow`).
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import threading

from forwarder_core.storage.nofollow import open_under

log = logging.getLogger("siem_forwarder.durable")
_CHUNK = 64 * 1024


def cut_partial_line(path: str) -> int:
    """Truncate ``path`` after its last newline; return how many bytes were cut (0: none, or no file).

    A symlink at ``path`` is refused (OSError ELOOP), its target left alone."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return 0
    try:
        return cut_partial_line_fd(fd, path)
    finally:
        os.close(fd)


def cut_partial_line_fd(fd: int, path: str) -> int:
    """:func:`cut_partial_line` on an open descriptor (``path`` names it in the log); not a regular file: nothing to cut."""
    st = os.fstat(fd)
    size = st.st_size
    if not stat.S_ISREG(st.st_mode) or size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0
    end = size
    keep = 0
    while end > 0:
        start = max(0, end - _CHUNK)
        chunk = os.pread(fd, end - start, start)
        at = chunk.rfind(b"\n")
        if at >= 0:
            keep = start + at + 1
            break
        end = start
    os.ftruncate(fd, keep)
    os.fsync(fd)
    log.warning("%s ended in a partial line (%d bytes, from a write cut short by a crash); cut it off "
                "before appending: the batch it belonged to was not acknowledged and is written again",
                path, size - keep)
    return size - keep


def open_for_append(path: str, mode: int) -> int:
    """``path`` opened to read and append, never through a symlink; created ``O_EXCL`` with ``mode``."""
    flags = os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            return os.open(path, flags)
        except FileNotFoundError:
            try:
                return os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
            except FileExistsError:
                return os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "it is a symlink; refusing to write through it", path) from None
        raise


class LineAppender:
    """Appends batches of whole lines to one file, each write followed by an fsync.

    The file is opened (and a partial last line cut) at the first append; thread-safe. With
    ``under`` (the state directory), ``path`` lies below it and must be a regular file of this
    user (set to ``mode``), reached through no symlink; else only ``path`` itself must not be one.
    """

    def __init__(self, path: str, *, mode: int = 0o600, fsync: bool = True, under: str | None = None):
        self.path = path
        self.mode = mode
        self.fsync = fsync
        self.under = under
        self._fd: int | None = None
        self._lock = threading.Lock()

    def append(self, data: bytes) -> None:
        """Write ``data`` (whole lines, each ending in a newline) and fsync; raises OSError."""
        with self._lock:
            if self._fd is None:
                if self.under is None:
                    fd = open_for_append(self.path, self.mode)
                else:
                    fd = open_under(self.under, self.path, os.O_RDWR | os.O_APPEND, self.mode)
                try:
                    cut_partial_line_fd(fd, self.path)
                except OSError:
                    os.close(fd)
                    raise
                self._fd = fd
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view):]
                if self.fsync:
                    os.fsync(self._fd)
            except OSError:
                self._close_locked()
                raise

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
