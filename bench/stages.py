"""CPU per event of each per-event stage, in process, on one 10,000-event Incydr page.

The end-to-end benchmark (``bench/run.py``) says how fast the forwarder is; this says where the
time goes, stage by stage, with process CPU time (so a busy machine disturbs it less than wall
time). Each figure is the best of ``--repeat`` passes over the same page.

Last, the memory one page holds in each form (JSON, decoded, normalized, encoded).

Usage: ``.venv/bin/python bench/stages.py [--events N] [--repeat R]``
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import pickle
import sys
import time
from collections.abc import Callable
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import orjson

try:
    from isal.igzip import compress as isal_compress
except ImportError:  # where isal has no wheel the outputs use zlib
    isal_compress = None  # type: ignore[assignment]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forwarder_core.config.schema import EventValidator
from forwarder_core.engine.pagework import PageTask
from forwarder_core.engine.prepare import Preparer
from forwarder_core.metrics import Metrics
from forwarder_core.plugin_api import ComponentConfig, Context, Page, PageBody, apply_defaults, content_id
from forwarder_core.times import parse_ms
from siem_forwarder_plugins.outputs.elastic.bulk import ElasticBulk
from siem_forwarder_plugins.outputs.file import encode_lines
from siem_forwarder_plugins.outputs.splunk_hec import SplunkHec
from siem_forwarder_plugins.outputs.syslog.output import SyslogCEF
from siem_forwarder_plugins.sources.incydr import IncydrSource
from siem_forwarder_plugins.sources.windows import EdgeDedup, WindowCursor, WindowTally
from tests.fakes.incydr import IncydrFake


def component(cls: Any, options: dict[str, Any], name: str = "bench") -> Any:
    config = ComponentConfig(name=name, type=cls.type_name, options=apply_defaults(cls.options_schema, options))
    return cls(config, Context(name=name, state_dir="/tmp", logger=logging.getLogger("bench"), metrics=Metrics()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    n = args.events

    fake = IncydrFake(events=n, span=3600)
    page = b'{"events":[' + b",".join(fake._encoded(i) for i in range(len(fake))) + b"]}"

    def stage(label: str, fn: Callable[[], Any]) -> None:
        best = float("inf")
        for _ in range(args.repeat):
            start = time.process_time()
            fn()
            best = min(best, time.process_time() - start)
        print(f"{label:34s} {best * 1e6 / n:7.2f} us/event")

    source = component(IncydrSource, {"base_url": "http://127.0.0.1:9", "client_id": "a", "client_secret": "b"},
                       "code42")
    stage("decode the page (json.loads)", lambda: json.loads(page))
    stage("decode the page (orjson, not used)", lambda: orjson.loads(page))
    raws = json.loads(page)["events"]
    stage("content_id (canonical JSON + SHA-256)", lambda: [content_id(r) for r in raws])
    stage("parse_ms (event time)", lambda: [parse_ms(r["timestamp"]) for r in raws])
    end = max(parse_ms(r["timestamp"]) for r in raws) + 1

    def admit() -> None:  # a fresh cursor each pass, so every event is new, as on a first read
        source._held = []
        source._admit(raws, EdgeDedup(WindowCursor.load(None, 0), end, 3_600_000, tally=WindowTally()), end)

    stage("admit (content id, time, de-dup)", admit)
    task = PageTask("code42", raws, None, ["siem"], False)
    stage("page to a worker (pickle, main)", lambda: ForkingPickler.dumps(task))
    sent = bytes(ForkingPickler.dumps(task))
    stage("page in a worker (unpickle)", lambda: pickle.loads(sent))
    as_bytes = PageTask.of("code42", Page(raws, None, body=PageBody(page, ("events",), list(range(len(raws))))),
                           ["siem"], False)
    stage("page to a worker as its bytes (main)", lambda: ForkingPickler.dumps(as_bytes))
    sent_bytes = bytes(ForkingPickler.dumps(as_bytes))
    stage("page in a worker from its bytes", lambda: pickle.loads(sent_bytes).page_items())
    stage("normalize (content_id included)", lambda: [source.normalize(r) for r in raws])
    events = [source.normalize(r) for r in raws]
    validator = EventValidator(IncydrSource.event_schema)
    stage("validate (event + raw schema)", lambda: [validator.is_valid(e) for e in events])
    preparer = Preparer(source)
    stage("prepare (raw schema, normalize, event)", lambda: preparer.prepare(raws))
    source._held = []
    ids = source._admit(raws, EdgeDedup(WindowCursor.load(None, 0), end, 3_600_000, tally=WindowTally()), end)[1]
    stage("prepare with the page's ids (pipeline)", lambda: preparer.prepare(raws, ids))
    cef = component(SyslogCEF, {"host": "127.0.0.1", "port": 9, "hostname": "bench"})
    stage("syslog_cef encode (RFC 5424 + CEF)", lambda: cef.encode(events))
    hec = component(SplunkHec, {"url": "http://127.0.0.1:9", "token": "t"})
    stage("splunk_hec encode (envelope)", lambda: [hec.encode(e) for e in events])
    stage("splunk_hec encode_batch (+ gzip bodies)", lambda: hec.encode_batch(events))
    bulk = component(ElasticBulk, {"url": "http://127.0.0.1:9", "index": "bench"})
    stage("elastic_bulk encode (action + ECS)", lambda: [bulk.encode(e, "2024-01-01T00:00:00.000Z") for e in events])
    stage("elastic_bulk encode_batch (+ gzip bodies)", lambda: bulk.encode_batch(events))
    ndjson = b"".join(bulk.encode(e, "2024-01-01T00:00:00.000Z") for e in events)
    stage("gzip the bulk page (zlib, level 1)", lambda: gzip.compress(ndjson, compresslevel=1, mtime=0))
    if isal_compress is not None:
        stage("gzip the bulk page (ISA-L, level 1)", lambda: isal_compress(ndjson, compresslevel=1, mtime=0))
    sizes = {name: len(fn(ndjson, compresslevel=1, mtime=0)) for name, fn in
             (("zlib", gzip.compress), ("ISA-L", isal_compress)) if fn is not None}
    print(f"{'  bulk page gzipped, bytes':34s} " + ", ".join(f"{k} {v:,}" for k, v in sizes.items())
          + f" (of {len(ndjson):,})")
    stage("file encode (JSON lines)", lambda: encode_lines(events))
    page_memory(page, source, cef)
    return 0


def page_memory(page: bytes, source: Any, cef: Any) -> None:
    """What one page holds in each of its forms, as ``tracemalloc`` counts the allocations."""
    import tracemalloc

    tracemalloc.start()
    try:
        sizes = [("the page's JSON", len(page))]
        mark = tracemalloc.get_traced_memory()[0]
        raws = json.loads(page)["events"]
        sizes.append(("decoded", tracemalloc.get_traced_memory()[0] - mark))
        mark = tracemalloc.get_traced_memory()[0]
        events = [source.normalize(r) for r in raws]
        sizes.append(("normalized", tracemalloc.get_traced_memory()[0] - mark))
        mark = tracemalloc.get_traced_memory()[0]
        encoded = cef.encode(events)
        sizes.append(("encoded as syslog_cef", tracemalloc.get_traced_memory()[0] - mark))
        del raws, events, encoded
    finally:
        tracemalloc.stop()
    print(f"{'  one page in memory, MB':34s} " + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in sizes))


if __name__ == "__main__":
    sys.exit(main())
