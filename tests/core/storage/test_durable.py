"""No torn lines: a write cut short by a crash never leaves an unreadable line behind."""
from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.metrics import Metrics
from forwarder_core.plugin_api import ComponentConfig, Context
from forwarder_core.storage import durable
from forwarder_core.storage.durable import LineAppender, cut_partial_line
from forwarder_core.storage.setaside import DEAD_LETTER, QUARANTINE, SetAside
from siem_forwarder_plugins.outputs.file import FileOutput
from tests.helpers import read_jsonl

WHOLE = b'{"id":"a"}\n{"id":"b"}\n'


@pytest.mark.parametrize("tail", [b'{"id":"c","raw":{"x', b"x" * 200_000], ids=["short", "longer than a chunk"])
def test_a_partial_last_line_is_cut_and_whole_lines_stay(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(WHOLE + tail)
    assert cut_partial_line(str(path)) == len(tail)
    assert path.read_bytes() == WHOLE
    assert cut_partial_line(str(path)) == 0 and path.read_bytes() == WHOLE


def test_a_file_that_is_one_partial_line_becomes_empty_and_a_missing_one_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"id":')
    assert cut_partial_line(str(path)) == 6 and path.read_bytes() == b""
    assert cut_partial_line(str(tmp_path / "absent.jsonl")) == 0 and not (tmp_path / "absent.jsonl").exists()


def test_the_appender_cuts_before_its_first_append_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(WHOLE + b'{"id":"torn')
    caplog.set_level(logging.WARNING, logger="siem_forwarder.durable")
    appender = LineAppender(str(path))
    appender.append(b'{"id":"c"}\n')
    appender.append(b'{"id":"d"}\n')
    appender.close()
    assert [json.loads(line)["id"] for line in path.read_bytes().splitlines()] == ["a", "b", "c", "d"]
    assert "partial line (11 bytes" in caplog.text


def test_the_file_output_after_a_torn_write_holds_only_whole_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(WHOLE + b'{"id":"c","timest')  # what kill -9 in the middle of a write leaves
    output = FileOutput(ComponentConfig(name="out", type="file", options={"path": str(path)}),
                        Context("out", str(tmp_path), logging.getLogger("test"), Metrics()))
    output.send([{"id": "c"}, {"id": "d"}])
    output.close()
    assert [e["id"] for e in read_jsonl(path)] == ["a", "b", "c", "d"]


@pytest.mark.parametrize("kind", [QUARANTINE, DEAD_LETTER])
def test_quarantine_and_dead_letter_files_cut_a_torn_record_before_appending(tmp_path: Path, kind: str) -> None:
    files = SetAside(str(tmp_path), kind)
    Path(files.path("src")).write_bytes(b'{"time":"t","source":"src","reason":"r","id":"1","raw":{}}\n{"time":"t","sou')
    files.write("src", [SetAside.record("src", "why", "2", {"k": 1})])
    assert [r["id"] for r in read_jsonl(files.path("src"))] == ["1", "2"]


def test_a_symlink_where_the_file_should_be_is_refused_and_its_target_left_alone(tmp_path: Path) -> None:
    """Neither the cut nor an append goes through a symlink planted at the file's path."""
    target = tmp_path / "elsewhere.txt"
    target.write_bytes(b"precious, no newline at the end")
    link = tmp_path / "f.jsonl"
    link.symlink_to(target)
    with pytest.raises(OSError) as cut:
        cut_partial_line(str(link))
    assert cut.value.errno == errno.ELOOP
    with pytest.raises(OSError, match="it is a symlink; refusing to write through it") as appended:
        LineAppender(str(link)).append(b"line\n")
    assert appended.value.errno == errno.ELOOP and appended.value.filename == str(link)
    assert target.read_bytes() == b"precious, no newline at the end"


def test_a_file_another_writer_creates_at_the_same_moment_is_appended_to_not_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.jsonl"
    real_open = os.open
    raced: list[bool] = []

    def open_racing(name: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if not raced and not flags & os.O_CREAT:  # missing when looked for, made by the other writer just after
            raced.append(True)
            path.write_bytes(b"theirs\n")
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", name)
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(durable.os, "open", open_racing)
    LineAppender(str(path)).append(b"ours\n")
    assert raced and path.read_bytes() == b"theirs\nours\n"
