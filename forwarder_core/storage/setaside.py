"""Quarantine and dead-letter files: events set aside, never dropped.

``state_dir/quarantine/<source>.jsonl`` holds events that failed validation (or a source's own
checks); ``state_dir/dead-letter/<output>.jsonl`` holds events an output refused for good. Each
line is ``{"time", "source", "output"?, "reason", "id", "integrity"?, "raw"}``. A batch of records
is written with one ``write`` and one ``fsync`` before the cursor moves past them, through
:class:`~forwarder_core.storage.durable.LineAppender`, which first cuts a line a crash left half
written. Neither the directories nor the files are ever reached through a symlink
(:mod:`forwarder_core.storage.nofollow`).

Writing a record cannot fail on what the event holds (:func:`record_line`): these files are where
an event goes when nothing else could take it, so a record that cannot be written would hold the
cursor for good. A lone surrogate is written as its JSON escape (``\\ud800``: replay reads the
same string back); a raw event with no JSON form at all (nested too deeply for the encoder, a
value a plugin put there that JSON cannot hold) is written as its bounded Python ``repr``, a
string, and the reason says so.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from forwarder_core.jsoncodec import utf8
from forwarder_core.storage.durable import LineAppender
from forwarder_core.storage.nofollow import opened_dir
from forwarder_core.storage.statedir import ensure_subdir

QUARANTINE = "quarantine"
DEAD_LETTER = "dead-letter"
REPR_MAX = 1_000_000
"""Characters of a raw event's ``repr`` kept when it has no JSON form."""


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
        lines = [record_line(r) for r in records]
        if not lines:
            return 0
        path = self.path(name)
        with self._lock:
            appender = self._files.get(path)
            if appender is None:
                appender = self._files[path] = LineAppender(path, under=self.state_dir)
        try:
            appender.append(b"".join(lines))
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


def record_line(record: dict[str, Any]) -> bytes:
    """One record as a JSON line of strict UTF-8; never raises on what the record holds."""
    try:
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
    except Exception as exc:  # circular, too deep, or a str() that raises: no JSON form
        why = "nested too deeply" if isinstance(exc, RecursionError) else f"{type(exc).__name__}: {exc}"
        kept = {key: _plain(value) for key, value in record.items() if key != "raw"}
        kept["reason"] = (f"{kept.get('reason', '')}; the raw event has no JSON form ({why}), "
                          f"kept as its Python repr").lstrip("; ")
        kept["raw"] = _bounded_repr(record.get("raw"))
        text = json.dumps(kept, ensure_ascii=False, separators=(",", ":"), default=str)
    return utf8(text) + b"\n"


def _plain(value: Any) -> Any:
    """A record's own field (time, source, reason, id, integrity) as something JSON surely holds
    (not an int as such: one too long to print has no JSON form)."""
    if value is None or isinstance(value, (str, float, bool)):
        return value
    try:
        json.dumps(value, default=str)
    except Exception:
        return _bounded_repr(value)
    return value


def _bounded_repr(value: Any) -> str:
    try:
        text = repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to print>"
    except Exception as exc:
        return f"<{type(value).__name__} whose repr raised {type(exc).__name__}>"
    return text if len(text) <= REPR_MAX else text[:REPR_MAX] + f"... ({len(text)} characters)"
