"""`once` progress: a live bar on a terminal, plain lines otherwise, and the summary table."""
from __future__ import annotations

import io

from forwarder_core.commands.progress import ProgressReporter, print_summary
from forwarder_core.engine.polls import SourceResult
from forwarder_core.metrics import Metrics


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_one_redrawn_line_with_every_source() -> None:
    out = Terminal()
    reporter = ProgressReporter(["asana", "incydr"], out)
    reporter.update(SourceResult("asana", delivered=1200, pages=12))
    reporter.update(SourceResult("incydr", delivered=5, done=True))
    reporter.finish()
    frames = out.getvalue().split("\r")
    assert "asana 1,200 …" in frames[-1] and "incydr 5 ✓" in frames[-1]
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1


def test_plain_output_has_a_line_per_source_when_done_and_while_slow() -> None:
    out = io.StringIO()
    reporter = ProgressReporter(["asana"], out, plain_every=0)
    reporter.update(SourceResult("asana", delivered=10, pages=1))
    reporter.update(SourceResult("asana", delivered=20, quarantined=1, pages=2, done=True))
    assert out.getvalue().splitlines() == [
        "asana: 10 delivered, 0 quarantined, 1 page(s) [running]",
        "asana: 20 delivered, 1 quarantined, 2 page(s) [done]",
    ]
    quiet = io.StringIO()
    reporter = ProgressReporter(["asana"], quiet, plain_every=60)
    reporter.update(SourceResult("asana", delivered=10, pages=1))
    assert quiet.getvalue() == ""


def test_summary_table() -> None:
    metrics = Metrics()
    metrics.inc("events_dead_lettered_total", 2, output="hec", source="a")
    out = io.StringIO()
    print_summary([SourceResult("a", polled=5, delivered=3, pages=1, done=True),
                   SourceResult("b", error="output hec kept failing: 503")], metrics, out)
    rows = [line.split(None, 6) for line in out.getvalue().splitlines()]
    assert rows[0] == ["SOURCE", "POLLED", "DELIVERED", "QUARANTINED", "DEAD-LETTERED", "PAGES", "STATUS"]
    assert rows[1] == ["a", "5", "3", "0", "2", "1", "ok"]
    assert rows[2][-1] == "FAILED"  # the reason is in the log line; the table stays narrow
    assert "503" not in out.getvalue()


def test_once_says_a_failure_once(tmp_path) -> None:
    """The log line gives the reason; the progress line and the table only say the source failed."""
    from forwarder_core.testing import FakeServer, json_response
    from tests.helpers import run_forwarder

    reason = "the token was refused"
    with FakeServer() as api:
        api.route("GET", "/.*", lambda req: json_response({"errors": [{"message": reason}]}, 401))
        config = {
            "sources": [{"name": "asana", "type": "asana",
                         "options": {"token": "t-0123456789", "workspace_gid": "1", "base_url": api.url}}],
            "outputs": [{"name": "out", "type": "file", "options": {"path": str(tmp_path / "o.jsonl")}}],
        }
        result = run_forwarder(tmp_path, config, "once")
    assert result.returncode != 0
    both = result.stdout + result.stderr
    assert both.count(reason) == 1, both
    assert "[FAILED]" in result.stderr and "FAILED" in result.stdout.splitlines()[1]
    assert max(len(line) for line in result.stdout.splitlines()[:2]) <= 100


def test_the_summary_prints_each_sources_ledger_and_marks_one_that_does_not_balance() -> None:
    from forwarder_core.storage.ledger import Ledger

    good = SourceResult("a", polled=7, delivered=4, done=True,
                        ledger=Ledger(read=7, quarantined=1, already_delivered=2, delivered={"out": 4}))
    bad = SourceResult("b", done=True, ledger=Ledger(read=3, delivered={"out": 2}))
    out = io.StringIO()
    print_summary([good, bad], Metrics(), out)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("ledger ")]
    assert lines[0] == ("ledger a: read 7 = delivered 4 + quarantined 1 + dead-lettered 0 + filtered 0"
                        " + already delivered 2 + held back 0")
    assert lines[1].startswith("ledger b: read 3 = delivered 2 ") and "!! UNBALANCED for out" in lines[1]


def test_events_an_output_dead_lettered_are_not_counted_as_delivered(tmp_path) -> None:
    """3 polled, 1 refused for good: the summary, the progress and OnceRun say 2 delivered, as the ledger does."""
    from typing import Any

    from forwarder_core import hookimpl
    from forwarder_core.plugin_api import Output, SendResult
    from forwarder_core.testing import run_once

    class Picky(Output):
        type_name = "picky"
        options_schema = {"type": "object"}

        def send(self, events: list[dict[str, Any]]) -> SendResult:
            return SendResult(rejected={i: "event too large" for i, e in enumerate(events) if e["id"] == "2"})

    class Plugin:
        @hookimpl
        def forwarder_register_outputs(self, registry: Any) -> None:
            registry.add(Picky)

    run = run_once(tmp_path, output={"type": "picky"}, plugins=[Plugin()],
                   raw_events=[{"id": str(i), "time": f"2026-01-01T00:00:0{i}Z"} for i in (1, 2, 3)])
    assert run.ok and len(run.dead_letters) == 1
    (result,) = run.results
    assert result.ledger.delivered == {"out": 2} and result.ledger.dead_lettered == {"out": 1}
    assert run.delivered == 2 and result.delivered == 2
    out = io.StringIO()
    print_summary(run.results, run.metrics, out)
    header, row = out.getvalue().splitlines()[:2]
    assert dict(zip(header.split(), row.split())) == {
        "SOURCE": "src", "POLLED": "3", "DELIVERED": "2", "QUARANTINED": "0", "DEAD-LETTERED": "1", "PAGES": "1",
        "STATUS": "ok"}


def test_the_summary_says_why_read_exceeds_what_the_vendor_holds() -> None:
    """A fresh Pangea source with 2,000 events reads 2,001: the edge of its last search is read again."""
    from forwarder_core.storage.ledger import Ledger

    result = SourceResult("pangea", polled=2001, delivered=2000, pages=4, done=True,
                          ledger=Ledger(read=2001, already_delivered=1, delivered={"out": 2000}))
    out = io.StringIO()
    print_summary([result], Metrics(), out)
    text = out.getvalue()
    assert "read 2001 = delivered 2000" in text and "already delivered 1" in text
    note = text.splitlines()[-1]
    assert note.startswith("already delivered:") and "read again" in note and "not sent twice" in note, text
    quiet = io.StringIO()
    print_summary([SourceResult("asana", polled=3, delivered=3, ledger=Ledger(read=3, delivered={"out": 3}))],
                  Metrics(), quiet)
    assert "already delivered:" not in quiet.getvalue()
