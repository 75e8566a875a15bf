"""Fuzzing every source's page parsing with hypothesis, over real HTTP.

Each source polls a local server whose page endpoint answers a generated body: arbitrary JSON,
page-shaped JSON whose fields hold arbitrary values, truncated JSON, or bytes that are not JSON
at all (authentication and counting endpoints answer correctly, so the page parser is reached).
The promise checked: ``poll`` either yields pages (a list of events and a cursor that JSON can
store) or raises a :class:`ForwarderError` with a message; never a ``TypeError``, ``KeyError``,
``RecursionError``...; and every event it yields can be normalized or fails in a way the
pipeline quarantines, and the schema validator can explain it. Cases hypothesis found are kept
as ``@example``s, as are the huge and deeply nested bodies it would not generate by itself.
"""
from __future__ import annotations

import copy
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from forwarder_core.config.schema import EventValidator
from forwarder_core.errors import ForwarderError, QuarantineEvent
from forwarder_core.metrics import Metrics
from forwarder_core.plugin_api import ComponentConfig, Context, Source, apply_defaults
from siem_forwarder_plugins.sources.agilicus.source import AgilicusAudits
from siem_forwarder_plugins.sources.asana import AsanaSource
from siem_forwarder_plugins.sources.incydr import IncydrSource
from siem_forwarder_plugins.sources.pangea.source import PangeaSource
from tests.fakes.base import FakeServer, Request, Response, json_response

NOW = datetime.now(timezone.utc)
STAMP = (NOW - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
FUZZ = settings(max_examples=int(os.environ.get("SIEM_FORWARDER_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------------------------ strategies

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


def _samples() -> dict[str, Any]:
    """Real records and a real Pangea answer, from the vendor fakes: the starting points to break."""
    import requests

    from tests.fakes.agilicus import AgilicusFake
    from tests.fakes.asana import AsanaFake
    from tests.fakes.incydr import IncydrFake
    from tests.fakes.pangea import TOKEN, PangeaFake

    at = NOW - timedelta(minutes=30)
    incydr = IncydrFake(events=8, start=at - timedelta(minutes=5), span=120).events()
    asana_fake = AsanaFake()
    asana = [asana_fake.make_event(at + timedelta(seconds=i)) for i in range(8)]
    agilicus = AgilicusFake(events=0)
    us = int(at.timestamp() * 1_000_000)
    audits = [agilicus.make_record("audits", us + i) for i in range(8)]
    with PangeaFake(events=6, start=at) as pangea:
        answer = requests.post(f"{pangea.url}/v1/search", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10,
                               json={"query": "", "limit": 6, "verbose": True, "order": "asc",
                                     "order_by": "received_at"}).json()
    return {"incydr": incydr, "asana": asana, "audits": audits, "pangea": answer}


SAMPLES = _samples()


@st.composite
def _broken(draw: st.DrawFn, samples: list[Any]) -> Any:
    """A real record with a few fields removed or replaced by any JSON value, or a key added."""
    record = copy.deepcopy(draw(st.sampled_from(samples)))
    if not isinstance(record, dict):
        return record
    for key in draw(st.lists(st.sampled_from(sorted(record)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del record[key]
        else:
            record[key] = draw(json_values)
    if draw(st.booleans()):
        record[draw(st.text(max_size=6))] = draw(json_values)
    return record


def _records(samples: list[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(samples), _broken(samples), _broken(samples), json_values)


def _pages(shape: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """The body: page-shaped JSON, any JSON, that JSON cut short, or bytes that are no JSON at all."""
    encoded = st.one_of(shape, shape, shape, json_values).map(lambda v: json.dumps(v).encode())
    cut = st.tuples(encoded, st.floats(0, 1)).map(lambda t: t[0][: int(len(t[0]) * t[1])])
    return st.one_of(encoded, encoded, encoded, cut, st.binary(max_size=40))


def _listing(key: str, records: st.SearchStrategy[Any], **extra: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({key: st.one_of(st.lists(records, max_size=6), st.lists(records, max_size=6),
                                                 json_values)}, optional=extra)


def _pangea_answer() -> st.SearchStrategy[Any]:
    """Pangea's real search answer with its events list and some result fields broken."""
    @st.composite
    def build(draw: st.DrawFn) -> Any:
        answer = copy.deepcopy(SAMPLES["pangea"])
        result = answer["result"]
        result["events"] = draw(st.lists(_records(SAMPLES["pangea"]["result"]["events"]), max_size=6))
        for key in draw(st.lists(st.sampled_from(sorted(result)), max_size=2, unique=True)):
            result[key] = draw(json_values)
        if draw(st.integers(0, 9)) == 0:
            answer[draw(st.sampled_from(sorted(answer)))] = draw(json_values)
        return answer
    return build()


INCYDR_PAGES = _pages(_listing("events", _records(SAMPLES["incydr"]), totalResultCount=json_values))
ASANA_PAGES = _pages(_listing("data", _records(SAMPLES["asana"]), next_page=st.one_of(
    st.none(), st.fixed_dictionaries({"offset": st.one_of(st.text(max_size=8), json_values)}), json_values)))
AGILICUS_PAGES = _pages(_listing("audits", _records(SAMPLES["audits"]), limit=json_values))
PANGEA_PAGES = _pages(_pangea_answer())

DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
HUGE = "x" * 5_000_000

# ------------------------------------------------------------------------------------ the server


class PageServer(FakeServer):
    """Answers one endpoint with :attr:`body` and the rest as the vendor would."""

    name = "fuzz"

    def __init__(self) -> None:
        super().__init__()
        self.body = b"{}"
        self.route("POST", "/v1/oauth", lambda r: json_response({"access_token": "t", "token_type": "bearer",
                                                                 "expires_in": 900}))
        self.route("POST", "/v1/audit/search-results-count", lambda r: json_response({"totalResultCount": 3}))
        for method, path in (("POST", "/v1/audit/search-audit-log"), ("GET", "/api/1.0/workspaces/1/audit_log_events"),
                             ("GET", "/v1/audits"), ("POST", "/v1/search"), ("POST", "/v1/results")):
            self.route(method, path, self._page)

    def _page(self, req: Request) -> Response:
        return Response(body=self.body)


@pytest.fixture(scope="module")
def server() -> Iterator[PageServer]:
    with PageServer() as fake:
        yield fake  # type: ignore[misc]


def _build(cls: type[Source], options: dict[str, Any], tmp_path: Any) -> Source:
    comp = ComponentConfig(name="fuzzed", type=cls.type_name, options=apply_defaults(cls.options_schema, options),
                           start_time=NOW - timedelta(hours=1))
    source = cls(comp, Context(name="fuzzed", state_dir=str(tmp_path), logger=logging.getLogger("fuzz"),
                               metrics=Metrics()))
    for attr in ("http", "client"):
        client = getattr(source, attr, None)
        if client is not None and hasattr(client, "max_tries"):
            client.max_tries = 1  # a bad body is retried in production; here one answer is the case
    return source


def _drive(source: Source) -> None:
    """Poll a few pages and push every event through normalize and the schema, as the pipeline does."""
    validator = EventValidator(source.event_schema)
    try:
        for page in itertools.islice(source.poll(None), 4):
            assert isinstance(page.events, list)
            json.dumps(page.cursor)  # the checkpoint store must be able to keep it
            event("a page")
            for raw in page.events:
                try:
                    normalized = source.normalize(raw)
                except QuarantineEvent:
                    event("an event quarantined by the source")
                    continue
                except Exception:  # noqa: BLE001 - the pipeline quarantines it as "normalize failed"
                    event("an event normalize failed on")
                    continue
                if validator.is_valid(normalized):
                    event("a valid event")
                else:
                    event("an event the schema refused")
                    assert validator.explain(normalized)
    except ForwarderError as exc:
        event(f"{type(exc).__name__}")
        assert str(exc)
    finally:
        source.close()


Case = Callable[[Any], Source]


@pytest.fixture
def incydr(server: PageServer, tmp_path: Any) -> Case:
    return lambda: _build(IncydrSource, {"base_url": server.url, "client_id": "c", "client_secret": "s",
                                         "page_size": 5, "settle_delay": 0, "lookback": 0}, tmp_path)


@pytest.fixture
def asana(server: PageServer, tmp_path: Any) -> Case:
    return lambda: _build(AsanaSource, {"base_url": server.url + "/api/1.0", "token": "t", "workspace_gid": "1",
                                        "page_size": 5, "settle_delay": 0, "lookback": 0}, tmp_path)


@pytest.fixture
def agilicus(server: PageServer, tmp_path: Any) -> Case:
    return lambda: _build(AgilicusAudits, {"base_url": server.url, "token": "t", "page_size": 5,
                                                "settle_delay": 0, "lookback": 0}, tmp_path)


@pytest.fixture
def pangea(server: PageServer, tmp_path: Any) -> Case:
    return lambda: _build(PangeaSource, {"base_url": server.url, "token": "t", "page_size": 5,
                                         "settle_delay": 0, "lookback": 0}, tmp_path)


@FUZZ
@given(body=INCYDR_PAGES)
@example(body=DEEP)
@example(body=DEEP_OBJECT)
@example(body=json.dumps({"events": [{"type$": HUGE, "timestamp": STAMP, "actorName": HUGE}]}).encode())
@example(body=json.dumps({"events": [{"timestamp": STAMP, "type$": "x", "actorName": {"a" * 10: [1] * 1000}}]}).encode())
def test_incydr_pages(server: PageServer, incydr: Case, body: bytes) -> None:
    server.body = body
    _drive(incydr())


@FUZZ
@given(body=ASANA_PAGES)
@example(body=DEEP)
@example(body=json.dumps({"data": [{"gid": HUGE, "created_at": STAMP, "details": {"x": HUGE}}]}).encode())
def test_asana_pages(server: PageServer, asana: Case, body: bytes) -> None:
    server.body = body
    _drive(asana())


@FUZZ
@given(body=AGILICUS_PAGES)
@example(body=DEEP_OBJECT)
@example(body=json.dumps({"audits": [{"time": STAMP, "user_id": HUGE}] * 3}).encode())
def test_agilicus_pages(server: PageServer, agilicus: Case, body: bytes) -> None:
    server.body = body
    _drive(agilicus())


@FUZZ
@given(body=PANGEA_PAGES)
@example(body=DEEP)
@example(body=json.dumps({"status": "Success", "request_id": "r", "result": {
    "id": "pit_1", "count": 1, "expires_at": STAMP,
    "events": [{"envelope": {"event": {"message": HUGE}, "received_at": STAMP}, "hash": "ab"}]}}).encode())
def test_pangea_pages(server: PageServer, pangea: Case, body: bytes) -> None:
    server.body = body
    _drive(pangea())
