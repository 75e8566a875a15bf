"""A page prepared in a worker is what the main process would have made of it, whatever the page holds.

The worker's side (:class:`forwarder_core.engine.pagework._Worker`) runs here, in this process, and
what crosses between the processes is pickled both ways, as the pool does. The other side is
the in-process path: the same source's :class:`~forwarder_core.engine.prepare.Preparer` and each
output's ``send`` encoding.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder_core.config.components import Leniency, check_components
from forwarder_core.config.problems import Problems
from forwarder_core.config.yamlsource import Located
from forwarder_core.engine.pagework import PageTask, PageWork, PreparedPage, _Worker
from forwarder_core.engine.prepare import Preparer
from forwarder_core.plugin.encoded import EncodedEvents
from forwarder_core.plugin.manager import load_plugins
from forwarder_core.plugin.results import Page, PageBody
from siem_forwarder_plugins.outputs.file import encode_lines

OUTPUTS = ["file", "hec", "es", "cef"]


def _document(tmp: Path) -> dict[str, Any]:
    return {
        "sources": [{"name": "counter", "type": "counter", "options": {"count": 1}}],
        "outputs": [
            {"name": "file", "type": "file", "options": {"path": str(tmp / "out.jsonl")}},
            {"name": "hec", "type": "splunk_hec", "options": {"url": "http://127.0.0.1:9", "token": "t0ken-x"}},
            {"name": "es", "type": "elastic_bulk", "options": {"url": "http://127.0.0.1:9", "index": "audit"}},
            {"name": "cef", "type": "syslog_cef", "options": {"host": "127.0.0.1", "port": 9, "protocol": "tcp"}},
        ],
    }


@pytest.fixture(scope="module")
def sides(testkit_path: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[_Worker, _Worker]:
    """The worker, and a second set of instances from the same config standing for the main process."""
    tmp = tmp_path_factory.mktemp("pagework")
    document = _document(tmp)
    worker = _Worker(document, {"counter"}, set(OUTPUTS), [testkit_path], str(tmp))
    main = _Worker(document, {"counter"}, set(OUTPUTS), [testkit_path], str(tmp))
    return worker, main


raw_event = st.fixed_dictionaries(
    {},
    optional={
        "seq": st.one_of(st.integers(-5, 10**12), st.text(max_size=5), st.none()),
        "time": st.one_of(st.just("2026-01-01T00:00:00Z"), st.just("2026-03-01T12:30:45.123456Z"),
                          st.text(max_size=10)),
        "user": st.one_of(st.text(max_size=12), st.integers()),
        "action": st.one_of(st.sampled_from(["login", "logout"]), st.text(max_size=8), st.floats()),
    },
)
pages = st.lists(raw_event, max_size=40).flatmap(
    lambda items: st.lists(st.sampled_from(items), min_size=len(items), max_size=len(items) + 5) if items
    else st.just([]))  # a vendor page repeats events too


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=pages)
def test_a_page_prepared_in_a_worker_matches_the_in_process_path(sides: tuple[_Worker, _Worker],
                                                                 items: list[dict[str, Any]]) -> None:
    worker, main = sides
    task = pickle.loads(pickle.dumps(PageTask("counter", items, None, OUTPUTS, True)))
    work: PageWork = pickle.loads(pickle.dumps(worker.run(task)))
    here = main.preparers["counter"].prepare(items)

    assert work.origins == here.origins
    assert work.ids == [e["id"] for e in here.events]
    assert work.newest == max((e["timestamp"] for e in here.events), default=None)
    # repr: a NaN a vendor sent is the same NaN on both sides, but never equal to itself
    assert repr([(r.index, r.reason, r.event_id, r.raw) for r in work.rejected]) == \
        repr([(r.index, r.reason, r.event_id, r.raw) for r in here.rejected])
    assert repr(work.events) == repr(here.events)

    page = PreparedPage(work.events, work, items, main.preparers["counter"].raw_of)
    assert len(page) == len(here.events)
    for name in OUTPUTS:
        batch = page.for_output(name)
        assert isinstance(batch, EncodedEvents) and len(batch) == len(here.events)
        # dead letters of an encoded batch carry what those of the in-process path would
        assert repr([batch.raws[i] for i in range(len(batch))]) == repr([e["raw"] for e in here.events])
        mine = main.outputs[name].encode_batch(here.events)
        assert batch.batch.rejected == mine.rejected
        if name in ("file", "hec"):  # the others stamp the time they encode at
            assert batch.batch.parts == mine.parts
    if here.events:
        assert b"".join(page.for_output("file").batch.parts) == encode_lines(here.events)  # type: ignore[union-attr]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=pages, data=st.data())
def test_a_page_that_crosses_as_its_bytes_is_prepared_as_its_events(sides: tuple[_Worker, _Worker],
                                                                   items: list[dict[str, Any]], data: Any) -> None:
    """``Page.body``: the worker decodes the vendor's bytes and picks the page's items out of them
    (a vendor page holds items the source does not deliver, and the source adds some it held)."""
    worker, main = sides
    served = data.draw(st.lists(raw_event, max_size=10))  # the items the source did not deliver
    from_body = data.draw(st.lists(st.booleans(), min_size=len(items), max_size=len(items)))
    listed = list(served)
    picks = []
    for item, in_body in zip(items, from_body):
        if in_body:
            at = data.draw(st.integers(0, len(listed)))
            picks = [p + 1 if p >= at else p for p in picks]
            listed.insert(at, item)
            picks.append(at)
        else:
            picks.append(-1)
    body = PageBody(json.dumps({"next": None, "data": {"items": listed}}).encode(), ("data", "items"), picks)
    task = PageTask.of("counter", Page(items, None, body=body), OUTPUTS, True)
    assert task.items == [] and task.body is body  # the bytes cross, not the decoded items
    task = pickle.loads(pickle.dumps(task))
    work: PageWork = pickle.loads(pickle.dumps(worker.run(task)))
    here = main.preparers["counter"].prepare(items)
    assert work.origins == here.origins
    assert repr([(r.index, r.reason, r.event_id, r.raw) for r in work.rejected]) == \
        repr([(r.index, r.reason, r.event_id, r.raw) for r in here.rejected])
    assert repr(work.events) == repr(here.events)


def test_a_body_that_does_not_fit_its_page_crosses_as_the_items() -> None:
    items = [{"seq": 1}, {"seq": 2}]
    short = PageBody(b'{"items": [{"seq": 1}]}', ("items",), [0])  # one pick for two items
    assert PageTask.of("counter", Page(items, None, body=short), [], False).items == items
    lying = PageTask.of("counter", Page(items, None, body=PageBody(b'{"items": []}', ("items",), [0, -1])), [], False)
    with pytest.raises(IndexError):
        lying.page_items()  # in a worker: the task fails and the main process prepares the page itself


def test_the_worker_builds_only_what_it_is_given(testkit_path: str, tmp_path: Path) -> None:
    """A source or output left out (``process_safe = False``, say) is never constructed in a worker."""
    worker = _Worker(_document(tmp_path), {"counter"}, {"file"}, [testkit_path], str(tmp_path))
    assert set(worker.preparers) == {"counter"} and set(worker.outputs) == {"file"}


def test_worker_counters_reach_the_main_process_once(testkit_path: str, tmp_path: Path) -> None:
    worker = _Worker(_document(tmp_path), {"counter"}, {"file"}, [testkit_path], str(tmp_path))
    worker.metrics.inc("plugin_things_total", 3, source="counter")
    first = worker.run(PageTask("counter", [], None, ["file"], False))
    second = worker.run(PageTask("counter", [], None, ["file"], False))
    assert first.counters == [("siem_forwarder_plugin_things_total", {"source": "counter"}, 3)]
    assert second.counters == []


def test_the_same_config_builds_the_same_components(testkit_path: str, tmp_path: Path) -> None:
    """What a worker builds from the document is what ``check_components`` makes of it in the main process."""
    document = _document(tmp_path)
    plugins = load_plugins([testkit_path])
    nowhere = Located("(config)", document, None)
    comps = check_components(document, "outputs", plugins.outputs, Problems(lambda p: (nowhere, p)), set(), Leniency())
    worker = _Worker(document, {"counter"}, set(OUTPUTS), [testkit_path], str(tmp_path))
    assert {c.name: c.options for c in comps if c is not None} == {n: o.config.options for n, o in worker.outputs.items()}
    assert isinstance(worker.preparers["counter"], Preparer)
