"""Logging to stderr: one line per record, secrets masked, journald priorities when under systemd."""
from __future__ import annotations

import logging
import os
import sys

from forwarder_core.secrets import redact

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _Formatter(logging.Formatter):
    """Formats on one line and masks secrets; prefixes ``<N>`` for journald when its stream is ours."""

    def __init__(self, journald: bool):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        text = redact(text).replace("\r", "\\r").replace("\n", " | ")
        if self.journald:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{record.levelname} {record.name}: " + redact(
                record.getMessage()).replace("\n", " | ")
        return text


def _stderr_is_journal() -> bool:
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return st.st_dev == dev and st.st_ino == ino


def setup_logging(level: str = "info") -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_siem_forwarder", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(_stderr_is_journal()))
    handler._siem_forwarder = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for noisy in ("urllib3", "requests"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
