"""Durable appends of whole lines: the one way the core and the file-writing plugins append.

A ``kill -9`` (or a power cut) in the middle of a write can leave the last line of a file half
written. The batch it belonged to was never acknowledged, so it is written again after the
restart; but appended behind the fragment, the first line of that retry would be glued to it and
both unreadable. So whenever a file is opened for appending, :func:`cut_partial_line` cuts a
last line that has no newline, and every batch is then written whole and fsynced before the
caller reports it delivered.
"""
from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("siem_forwarder.durable")
_CHUNK = 64 * 1024


def cut_partial_line(path: str) -> int:
    """Truncate ``path`` after its last newline; return how many bytes were cut (0: none, or no file)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
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
    finally:
        os.close(fd)
    log.warning("%s ended in a partial line (%d bytes, from a write cut short by a crash); cut it off "
                "before appending: the batch it belonged to was not acknowledged and is written again",
                path, size - keep)
    return size - keep


class LineAppender:
    """Appends batches of whole lines to one file, each write followed by an fsync.

    The file is opened (and a partial last line cut) at the first append; thread-safe.
    """

    def __init__(self, path: str, *, mode: int = 0o600, fsync: bool = True):
        self.path = path
        self.mode = mode
        self.fsync = fsync
        self._fd: int | None = None
        self._lock = threading.Lock()

    def append(self, data: bytes) -> None:
        """Write ``data`` (whole lines, each ending in a newline) and fsync; raises OSError."""
        with self._lock:
            if self._fd is None:
                cut_partial_line(self.path)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, self.mode)
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
