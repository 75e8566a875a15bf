"""Quarantine and dead-letter files: events set aside, never dropped.

``state_dir/quarantine/<source>.jsonl`` holds events that failed validation (or a source's own
checks); ``state_dir/dead-letter/<output>.jsonl`` holds events an output refused for good. Each
line is ``{"time", "source", "output"?, "reason", "id", "integrity"?, "raw"}``. A batch of records
is written with one ``write`` and one ``fsync`` before the cursor moves past them, through
:class:`~forwarder_core.state.durable.LineAppender`, which first cuts a line a crash left half written. Neither the directories nor the files are
ever reached through a symlink (:mod:`forwarder_core.state.nofollow`).
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from forwarder_core.state.durable import LineAppender
from forwarder_core.state.nofollow import opened_dir
from forwarder_core.state.statedir import ensure_subdir

QUARANTINE = "quarantine"
DEAD_LETTER = "dead-letter"


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


class SetAside:
    """Appends records to ``<state_dir>/<kind>/<name>.jsonl``; thread-safe."""

    def __init__(self, state_dir: str, kind: str):
        self.state_dir = state_dir
        self.dir = ensure_subdir(state_dir, kind)
        self.kind = kind
        self._lock = threading.Lock()
        self._files: dict[str, LineAppender] = {}

    def path(self, name: str) -> str:
        return os.path.join(self.dir, _safe_name(name) + ".jsonl")

    def write(self, name: str, records: Iterable[dict[str, Any]]) -> int:
        lines = [json.dumps(r, ensure_ascii=False, separators=(",", ":"), default=str) + "\n" for r in records]
        if not lines:
            return 0
        path = self.path(name)
        with self._lock:
            appender = self._files.get(path)
            if appender is None:
                appender = self._files[path] = LineAppender(path, under=self.state_dir)
        try:
            appender.append("".join(lines).encode("utf-8"))
        finally:
            appender.close()  # replay rewrites these files by rename: never keep one open
        return len(lines)

    @staticmethod
    def record(source: str, reason: str, event_id: str | None, raw: Any, output: str | None = None,
               integrity: Any = None) -> dict[str, Any]:
        """One line of the file; ``integrity`` (a source's verification verdicts) is kept where known."""
        rec: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "source": source}
        if output is not None:
            rec["output"] = output
        rec["reason"] = reason
        rec["id"] = event_id
        if integrity:
            rec["integrity"] = integrity
        rec["raw"] = raw
        return rec

    def files(self) -> list[str]:
        with opened_dir(self.state_dir, [self.kind], create=False) as dir_fd:
            return sorted(os.path.join(self.dir, f) for f in os.listdir(dir_fd) if f.endswith(".jsonl"))
