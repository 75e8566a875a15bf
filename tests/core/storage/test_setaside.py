"""Quarantine and dead-letter files: every record set aside is written whole, durably, privately, and
says where it came from and why; the durable append behind them never loses part of a batch."""
from __future__ import annotations

import errno
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.storage import durable
from forwarder_core.storage.durable import LineAppender, cut_partial_line
from forwarder_core.storage.setaside import DEAD_LETTER, QUARANTINE, REPR_MAX, SetAside, record_line
from tests.helpers import read_jsonl


def test_a_batch_set_aside_is_appended_whole_and_its_count_returned(tmp_path: Path) -> None:
    files = SetAside(str(tmp_path), QUARANTINE)
    assert files.write("src", [SetAside.record("src", "bad time", "1", {"a": 1})]) == 1
    assert files.write("src", (SetAside.record("src", "bad type", str(i), {"i": i}) for i in (2, 3))) == 2
    assert [(r["id"], r["reason"], r["raw"]) for r in read_jsonl(files.path("src"))] == [
        ("1", "bad time", {"a": 1}), ("2", "bad type", {"i": 2}), ("3", "bad type", {"i": 3})]
    assert files.path("src") == str(tmp_path / QUARANTINE / "src.jsonl")


def test_an_empty_batch_writes_nothing_and_creates_no_file(tmp_path: Path) -> None:
    files = SetAside(str(tmp_path), DEAD_LETTER)
    assert files.write("out", []) == 0
    assert files.files() == [] and not os.path.exists(files.path("out"))


def test_the_files_and_their_folder_are_private_to_the_service_user(tmp_path: Path) -> None:
    files = SetAside(str(tmp_path), DEAD_LETTER)
    files.write("out", [SetAside.record("src", "refused", "1", {"secret-ish": "x"}, output="out")])
    assert stat.S_IMODE(os.stat(files.path("out")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / DEAD_LETTER).st_mode) == 0o700


def test_a_record_names_its_source_output_reason_id_and_integrity_in_a_fixed_order(tmp_path: Path) -> None:
    before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rec = SetAside.record("src", "refused", "e1", {"k": 1}, output="siem", integrity={"signature": "bad"})
    after = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    assert list(rec) == ["time", "source", "output", "reason", "id", "integrity", "raw"]
    assert before <= rec["time"] <= after
    assert (rec["source"], rec["output"], rec["reason"], rec["id"], rec["integrity"], rec["raw"]) == (
        "src", "siem", "refused", "e1", {"signature": "bad"}, {"k": 1})
    plain = SetAside.record("src", "schema", None, "not json", integrity={})
    assert list(plain) == ["time", "source", "reason", "id", "raw"] and plain["id"] is None


def test_a_record_that_json_cannot_hold_is_kept_as_text_and_unicode_stays_readable(tmp_path: Path) -> None:
    files = SetAside(str(tmp_path), QUARANTINE)
    files.write("src", [SetAside.record("src", "bad", "1", {"when": b"bytes", "name": "Zoë\u2028"})])
    text = Path(files.path("src")).read_text(encoding="utf-8")
    assert "Zoë" in text and text.endswith("\n") and text.count("\n") == 1 and ", " not in text
    assert read_jsonl(files.path("src"))[0]["raw"] == {"when": "b'bytes'", "name": "Zoë\u2028"}


class NoText:
    """A value a plugin put in an event that cannot even be printed."""

    def __init__(self, str_raises: type[Exception]):
        self.str_raises = str_raises

    def __str__(self) -> str:
        raise self.str_raises("no text")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def written(record: dict[str, Any]) -> dict[str, Any]:
    """The record as its line reads back; the line is one line of readable UTF-8 (no \\u escapes)."""
    line = record_line(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and b"\\u" not in line
    return json.loads(line)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("raw", "why", "kept"), [
    ({(1, 2): "Zoë"}, "TypeError: keys must be str, int, float, bool or None, not tuple", "{(1, 2): 'Zoë'}"),
    ({"x": NoText(ValueError)}, "ValueError: no text", "<dict whose repr raised RuntimeError>"),
])
def test_a_raw_event_with_no_json_form_is_kept_as_its_repr_and_the_reason_says_why(
        raw: Any, why: str, kept: str) -> None:
    line = written(SetAside.record("src", "refused", "e1", raw, output="siem"))
    assert line["reason"] == f"refused; the raw event has no JSON form ({why}), kept as its Python repr"
    assert (line["raw"], line["id"], line["source"], line["output"]) == (kept, "e1", "src", "siem")


def test_a_circular_or_too_deep_raw_event_is_still_written() -> None:
    circular: list[Any] = []
    circular.append(circular)
    line = written(SetAside.record("src", "bad", "1", circular))
    assert line["raw"] == "[[...]]" and "(ValueError: Circular reference detected)" in line["reason"]
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    line = written(SetAside.record("src", "bad", "2", deep))
    assert line["raw"] == "<list nested too deeply to print>" and "(nested too deeply)" in line["reason"]


def test_a_record_field_with_no_json_form_is_kept_as_its_repr_beside_the_raw_event() -> None:
    circular: dict[str, Any] = {}
    circular["self"] = circular
    line = written(SetAside.record("src", "bad", "1", {"k": 1}, integrity=circular))
    assert line["integrity"] == "{'self': {...}}" and line["raw"] == "{'k': 1}" and line["id"] == "1"


def test_the_repr_of_a_raw_event_with_no_json_form_is_cut_to_a_bound_that_says_how_long_it_was() -> None:
    """Past REPR_MAX characters the repr is cut and says how long it was; one of exactly REPR_MAX is kept whole."""
    raw = {"big": "x" * REPR_MAX, (1,): 1}
    full = len(repr(raw))
    assert written(SetAside.record("src", "bad", "1", raw))["raw"] == repr(raw)[:REPR_MAX] + f"... ({full} characters)"
    exact = {"x" * (REPR_MAX - 16): 1, (1,): 1}
    assert len(repr(exact)) == REPR_MAX and written(SetAside.record("src", "bad", "1", exact))["raw"] == repr(exact)


def test_a_value_that_cannot_even_be_printed_does_not_stop_its_record_being_written() -> None:
    """Whatever a plugin's value raises when JSON asks for its text, the record is written."""
    line = written(SetAside.record("src", "bad", "1", {"x": NoText(RuntimeError)}))
    assert line["raw"] == "<dict whose repr raised RuntimeError>"
    assert "the raw event has no JSON form (RuntimeError: no text)" in line["reason"]
    line = written(SetAside.record("src", "bad", "2", {"k": 1}, integrity={"v": NoText(LookupError)}))
    assert (line["integrity"], line["raw"]) == ("<dict whose repr raised RuntimeError>", "{'k': 1}")
    line = written(SetAside.record("src", "bad", 10 ** 5000, {"k": 1}))  # an int id too long to print
    assert (line["id"], line["raw"]) == ("<int whose repr raised ValueError>", "{'k': 1}")


def test_a_name_that_is_not_a_plain_file_name_cannot_escape_the_folder(tmp_path: Path) -> None:
    files = SetAside(str(tmp_path), DEAD_LETTER)
    assert files.path("../../etc/passwd") == str(tmp_path / DEAD_LETTER / ".._.._etc_passwd.jsonl")
    assert files.path("a b/ü-_.x") == str(tmp_path / DEAD_LETTER / "a_b_ü-_.x.jsonl")
    assert files.path("") == str(tmp_path / DEAD_LETTER / "_.jsonl")


def test_the_files_are_listed_in_order_and_only_the_record_files(tmp_path: Path) -> None:
    files = SetAside(str(tmp_path), QUARANTINE)
    for name in ("b", "a"):
        files.write(name, [SetAside.record(name, "r", "1", {})])
    (tmp_path / QUARANTINE / "notes.txt").write_text("x")
    assert files.files() == [files.path("a"), files.path("b")]


def test_each_write_closes_its_file_so_a_replay_can_replace_it(tmp_path: Path) -> None:
    files = SetAside(str(tmp_path), DEAD_LETTER)
    files.write("out", [SetAside.record("src", "r", "1", {})])
    replaced = tmp_path / "replaced.jsonl"
    replaced.write_text("")
    os.replace(replaced, files.path("out"))  # what replay does with what is still refused
    files.write("out", [SetAside.record("src", "r", "2", {})])
    assert [r["id"] for r in read_jsonl(files.path("out"))] == ["2"]
    assert not [fd for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == files.path("out")]


# ---------------------------------------------------------------------------- the durable append


def test_a_short_write_is_continued_until_the_whole_batch_is_on_disk(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write = os.write
    monkeypatch.setattr(durable.os, "write", lambda fd, data: write(fd, bytes(data[:3])))
    path = tmp_path / "f.jsonl"
    appender = LineAppender(str(path))
    appender.append(b'{"id":"a"}\n{"id":"b"}\n')
    appender.close()
    assert path.read_bytes() == b'{"id":"a"}\n{"id":"b"}\n'


def test_every_append_is_fsynced_unless_asked_not_to_and_the_mode_is_kept(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    fsync = os.fsync
    monkeypatch.setattr(durable.os, "fsync", lambda fd: (synced.append(fd), fsync(fd)))
    durable_one = LineAppender(str(tmp_path / "a.jsonl"))
    durable_one.append(b"1\n")
    durable_one.append(b"2\n")
    assert len(synced) == 2
    fast = LineAppender(str(tmp_path / "b.jsonl"), mode=0o640, fsync=False)
    fast.append(b"1\n")
    assert len(synced) == 2
    assert stat.S_IMODE(os.stat(tmp_path / "b.jsonl").st_mode) == 0o640 & ~_umask()
    assert stat.S_IMODE(os.stat(tmp_path / "a.jsonl").st_mode) == 0o600
    durable_one.close()
    fast.close()
    fast.close()  # closing twice is harmless


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_write_closes_the_file_and_the_next_append_reopens_and_cuts_what_it_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.jsonl"
    appender = LineAppender(str(path))
    appender.append(b'{"id":"a"}\n')
    write = os.write
    calls = []

    def half_then_full(fd: int, data: bytes) -> int:
        calls.append(fd)
        if len(calls) == 1:
            return write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(durable.os, "write", half_then_full)
    with pytest.raises(OSError, match="No space"):
        appender.append(b'{"id":"b"}\n')
    assert appender._fd is None
    monkeypatch.setattr(durable.os, "write", write)
    appender.append(b'{"id":"b"}\n')
    appender.close()
    assert path.read_bytes() == b'{"id":"a"}\n{"id":"b"}\n'


def test_a_partial_line_whose_newline_sits_exactly_at_a_chunk_edge_is_cut_there(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    tail = b"y" * durable._CHUNK  # the newline before it is the last byte of the chunk before the last
    whole = b"x" * (durable._CHUNK - 1) + b"\n"
    path.write_bytes(whole + tail)
    assert cut_partial_line(str(path)) == len(tail)
    assert path.read_bytes() == whole
    assert durable._CHUNK == 64 * 1024
    path.write_bytes(b"z" * (durable._CHUNK * 2 + 10))  # no newline at all: nothing is whole
    assert cut_partial_line(str(path)) == durable._CHUNK * 2 + 10 and path.read_bytes() == b""
    path.write_bytes(b"\n")
    assert cut_partial_line(str(path)) == 0 and path.read_bytes() == b"\n"
    path.write_bytes(b"")
    assert cut_partial_line(str(path)) == 0


def test_a_cut_reports_how_many_bytes_it_took(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"a\nbcd")
    with caplog.at_level("WARNING", logger="siem_forwarder.durable"):
        assert cut_partial_line(str(path)) == 3
    assert [r.getMessage().split(" (")[1].split(",")[0] for r in caplog.records] == ["3 bytes"]
    assert json.dumps(path.read_text()) == '"a\\n"'


def test_a_newline_that_is_the_first_byte_of_the_last_chunk_still_ends_a_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    whole = b"w\n" + b"x" * 98 + b"\n"  # its last newline at byte 100
    tail = b"y" * (durable._CHUNK - 1)  # so the last chunk read starts exactly at that newline
    path.write_bytes(whole + tail)
    assert cut_partial_line(str(path)) == len(tail)
    assert path.read_bytes() == whole  # the line of x's is whole and stays


def test_finding_the_last_whole_line_reads_a_chunk_at_a_time_never_the_whole_file(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A data file can be gigabytes: cutting a torn last line must not read all of it into memory."""
    reads: list[int] = []
    pread = os.pread
    monkeypatch.setattr(durable.os, "pread", lambda fd, n, offset: (reads.append(n), pread(fd, n, offset))[1])
    path = tmp_path / "f.jsonl"
    whole = b"a" * 1000 + b"\n"
    path.write_bytes(whole + b"z" * (durable._CHUNK * 3 + 5))
    assert cut_partial_line(str(path)) == durable._CHUNK * 3 + 5
    assert path.read_bytes() == whole
    assert max(reads) <= durable._CHUNK and len(reads) == 1 + 4  # the last byte, then four chunks back


def test_a_file_that_ends_in_a_whole_line_is_left_alone_without_a_word(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"id":"a"}\n')
    with caplog.at_level("WARNING", logger="siem_forwarder.durable"):
        assert cut_partial_line(str(path)) == 0
    assert caplog.records == [] and path.read_bytes() == b'{"id":"a"}\n'
