"""Quarantine and dead-letter files read back: records, selection by owner, reasons grouped, atomic rewrite.

:mod:`forwarder_core.storage.setaside` appends records; ``siem-forwarder quarantine list|replay`` reads
them back with this module and, after a replay, rewrites each file with only what is still set
aside. Like the writers, it never follows a symlink under the state directory
(:mod:`forwarder_core.storage.nofollow`): root runs ``replay``, and a link planted as
``quarantine/<source>.jsonl`` must not feed a root-only file into files the service user reads.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from forwarder_core.secrets import redact
from forwarder_core.storage.nofollow import open_file, opened_dir
from forwarder_core.storage.setaside import DEAD_LETTER, QUARANTINE


@dataclass
class Record:
    line: str
    data: dict[str, Any] | None
    """The decoded record; None when the line is not a JSON object (kept as it is, never replayed)."""


@dataclass
class SetAsideFile:
    kind: str  # QUARANTINE or DEAD_LETTER
    name: str  # the source (quarantine) or output (dead letter) the file is named after
    path: str
    records: list[Record] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.kind}/{os.path.basename(self.path)}"


def read_file(kind: str, path: str, fh: Iterable[str]) -> SetAsideFile:
    """The records of the file at ``path``, read from ``fh`` (lines)."""
    name = os.path.basename(path)[: -len(".jsonl")]
    out = SetAsideFile(kind, name, path)
    for line in fh:
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            data = None
        out.records.append(Record(line if line.endswith("\n") else line + "\n",
                                  data if isinstance(data, dict) else None))
    if out.records and out.records[0].data is not None:
        owner = out.records[0].data.get("output" if kind == DEAD_LETTER else "source")
        if isinstance(owner, str) and owner:
            out.name = owner  # the file name is a sanitized form of it
    return out


def set_aside_files(state_dir: str, kinds: Iterable[str]) -> list[SetAsideFile]:
    files = []
    for kind in kinds:
        try:
            with opened_dir(state_dir, [kind], create=False) as dir_fd:
                for entry in sorted(os.listdir(dir_fd)):
                    if not entry.endswith(".jsonl"):
                        continue
                    path = os.path.join(state_dir, kind, entry)
                    fd = open_file(dir_fd, entry, path, os.O_RDONLY, create=False)
                    with open(fd, encoding="utf-8", errors="replace") as fh:
                        files.append(read_file(kind, path, fh))
        except FileNotFoundError:
            continue
    return files


def rewrite(state_dir: str, path: str, lines: list[str]) -> None:
    """Replace ``path`` (below ``state_dir``) with ``lines`` atomically, or remove it when none are left.

    The new content goes to a temporary file created ``O_EXCL`` beside it and renamed over it,
    all relative to the directory's descriptor: a symlink planted as either name is replaced or
    refused, never written through.
    """
    kind = os.path.basename(os.path.dirname(path))
    name = os.path.basename(path)
    with opened_dir(state_dir, [kind], create=False) as dir_fd:
        if not lines:
            os.unlink(name, dir_fd=dir_fd)
        else:
            tmp = f"{name}.replay-{os.getpid()}.tmp"
            try:
                os.unlink(tmp, dir_fd=dir_fd)  # left by a killed replay of the same pid: a name, never followed
            except FileNotFoundError:
                pass
            fd = open_file(dir_fd, tmp, os.path.join(os.path.dirname(path), tmp), os.O_WRONLY)
            try:
                view = memoryview("".join(lines).encode("utf-8"))
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)


_EVENT_SPECIFIC = (
    (re.compile(r"\b[0-9a-fA-F]{16,}\b"), "<id>"),  # document and event ids
    (re.compile(r"'[^']{0,200}' (?=is not |is too |does not )"), "<value> "),  # the value a schema refused
)


def _short(reason: str) -> str:
    reason = redact(" ".join(reason.split()))
    return reason if len(reason) <= 200 else reason[:199] + "…"


def group_reason(reason: str) -> str:
    """The reason without what is specific to one event, so that alike records count together."""
    for pattern, stand_in in _EVENT_SPECIFIC:
        reason = pattern.sub(stand_in, reason)
    return _short(reason)


def selected(files: list[SetAsideFile], sources: list[str] | None, outputs: list[str] | None) -> list[SetAsideFile]:
    chosen = []
    for f in files:
        if f.kind == QUARANTINE and sources and f.name not in sources:
            continue
        if f.kind == DEAD_LETTER and outputs and f.name not in outputs:
            continue
        if f.kind == DEAD_LETTER and sources:
            if not any(r.data is not None and r.data.get("source") in sources for r in f.records):
                continue
        chosen.append(f)
    return chosen
