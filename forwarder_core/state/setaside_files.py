"""Quarantine and dead-letter files read back: records, selection by owner, reasons grouped, atomic rewrite.

:mod:`forwarder_core.state.setaside` appends records; ``siem-forwarder quarantine list|replay`` reads
them back with this module and, after a replay, rewrites each file with only what is still set
aside.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from forwarder_core.secrets import redact
from forwarder_core.state.setaside import DEAD_LETTER, QUARANTINE
from forwarder_core.state.statedir import secure_file


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


def read_file(kind: str, path: str) -> SetAsideFile:
    name = os.path.basename(path)[: -len(".jsonl")]
    out = SetAsideFile(kind, name, path)
    with open(path, encoding="utf-8", errors="replace") as fh:
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
        directory = os.path.join(state_dir, kind)
        if not os.path.isdir(directory):
            continue
        for entry in sorted(os.listdir(directory)):
            if entry.endswith(".jsonl"):
                files.append(read_file(kind, os.path.join(directory, entry)))
    return files


def rewrite(path: str, lines: list[str]) -> None:
    """Replace ``path`` with ``lines`` atomically (or remove it when none are left)."""
    if not lines:
        os.unlink(path)
    else:
        tmp = f"{path}.replay-{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, "".join(lines).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        secure_file(path)
    dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def return_ownership(state_dir: str) -> None:
    """Run as root (to read root-only credentials), replay must not leave files the service user
    can no longer append to: what it wrote goes back to the state directory's owner."""
    if os.geteuid() != 0:
        return
    owner = os.stat(state_dir)
    if owner.st_uid == 0:
        return
    for kind in (QUARANTINE, DEAD_LETTER):
        directory = os.path.join(state_dir, kind)
        if not os.path.isdir(directory):
            continue
        for path in [directory, *(os.path.join(directory, f) for f in os.listdir(directory))]:
            st = os.lstat(path)
            if (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
                os.lchown(path, owner.st_uid, owner.st_gid)


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
