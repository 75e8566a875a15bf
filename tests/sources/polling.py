"""Driving a source in-process, as the pipeline does: poll pages, normalize, keep the cursor."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema

from forwarder_core.metrics import Metrics
from forwarder_core.plugin_api import ComponentConfig, Context, Page, Source, apply_defaults

REPO = Path(__file__).resolve().parents[2]


def make_source(cls: type[Source], options: dict[str, Any], start: datetime, tmp_path: Path,
                name: str = "src") -> Source:
    """A source built the way the core builds it, with quick retries so fault tests stay fast."""
    jsonschema.validate(options, cls.options_schema)
    config = ComponentConfig(name=name, type=cls.type_name, options=apply_defaults(cls.options_schema, options),
                             start_time=start)
    context = Context(name=name, state_dir=str(tmp_path), logger=logging.getLogger(f"test.{name}"), metrics=Metrics())
    source = cls(config, context)
    http = source.http  # type: ignore[attr-defined]
    http.backoff_factor = 0.01
    http.max_backoff = 0.05
    return source


class Drain:
    """Every normalized event a source delivered, and the last cursor it handed out."""

    def __init__(self, source: Source, cursor: Any = None):
        self.source = source
        self.cursor = cursor
        self.events: list[dict[str, Any]] = []
        self.pages = 0
        self.filled = 0  # pages with events
        self.bodies = 0  # pages that came with the bytes they were decoded from (Page.body)
        self.extras = 0  # items of those pages that did not come from the page's own bytes

    def pages_of(self, cursor: Any = None) -> Iterator[Page]:
        for page in self.source.poll(cursor if cursor is not None else self.cursor):
            json.dumps(page.cursor)  # every cursor must be JSON as it is
            self.pages += 1
            self.filled += bool(page.events)
            if page.body is not None:  # a worker process rebuilds the page from these bytes
                self.bodies += 1
                assert len(page.body.picks) == len(page.events)
                extras = [item for item, pick in zip(page.events, page.body.picks) if pick < 0]
                self.extras += len(extras)
                assert repr(page.body.items(extras)) == repr(page.events)  # repr: NaN is never equal to itself
            ids = page.ids or [None] * len(page.events)
            self.events.extend(self.source.normalize_as(raw, pid) for raw, pid in zip(page.events, ids))
            self.cursor = page.cursor
            yield page

    def poll(self) -> list[dict[str, Any]]:
        """One whole poll from the current cursor; returns what it delivered."""
        before = len(self.events)
        for _ in self.pages_of():
            pass
        return self.events[before:]

    def ids(self) -> list[str]:
        return [e["id"] for e in self.events]


def start_fake_process(module: str, tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """Run ``python -m <module> --ready-file F ...``; return the process and its URL once it listens."""
    ready = tmp_path / f"{module.rsplit('.', 1)[-1]}.ready"
    proc = subprocess.Popen([sys.executable, "-m", module, "--port", "0", "--ready-file", str(ready), *args],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{module} exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"{module} did not become ready")
        time.sleep(0.02)
    return proc, ready.read_text()


def fault_kinds(truncated_body: Any) -> dict[str, dict[str, Any]]:
    """The faults every HTTP source must survive, keyed by name; ``truncated_body`` is cut in half."""
    return {
        "429": dict(kind="status", status=429, retry_after="0"),
        "500": dict(kind="status", status=500),
        "html": dict(kind="html"),
        "html200": dict(kind="html200"),
        "truncated": dict(kind="truncate", body=truncated_body),
        "dropped": dict(kind="drop"),
    }


def drain_through_faults(drain: Drain, fake: Any, path: str, fault: dict[str, Any]) -> None:
    """Read one page, make the next two requests to ``path`` fail, read the rest.

    Asserts that both faults were met and retried (two requests more than pages); the caller
    then checks what was delivered.
    """
    pages = drain.pages_of()
    next(pages)
    before = len(fake.calls(path))
    fake.fault(path=path, count=2, **fault)
    for _ in pages:
        pass
    assert len(fake.calls(path)) - before == drain.pages - 1 + 2
