"""FakeServer as a plugin author meets it: routing, gzip request bodies, a crashing handler."""
from __future__ import annotations

import gzip

import pytest
import requests

from forwarder_core.errors import HttpError
from forwarder_core.metrics import Metrics
from forwarder_core.net.client import HttpClient
from forwarder_core.testing import FakeServer, HandlerCrashed, Request, json_response

pytest_plugins: list[str] = []  # forwarder_core.testing is loaded through the pytest11 entry point


def test_routes_match_the_whole_path_first_added_wins_and_can_be_replaced() -> None:
    with FakeServer() as fake:
        fake.route("GET", r"/logs/\d+", lambda r: json_response({"by": "number"}))
        fake.route("GET", r"/logs/.*", lambda r: json_response({"by": "any"}))
        assert requests.get(fake.url + "/logs/7?x=1", timeout=5).json() == {"by": "number"}
        assert requests.get(fake.url + "/logs/abc", timeout=5).json() == {"by": "any"}
        assert requests.get(fake.url + "/v1/logs/7", timeout=5).status_code == 404  # anchored at the start
        fake.route("GET", r"/logs/\d+", lambda r: json_response({"by": "replaced"}), replace=True)
        assert requests.get(fake.url + "/logs/7", timeout=5).json() == {"by": "replaced"}


def test_a_gzip_body_is_inflated_and_the_raw_bytes_kept() -> None:
    seen: list[Request] = []

    def handler(req: Request):
        seen.append(req)
        return json_response({})

    raw = gzip.compress(b'{"a":1}')
    with FakeServer() as fake:
        fake.route("POST", "/in", handler)
        requests.post(fake.url + "/in", data=raw, headers={"Content-Encoding": "gzip"}, timeout=5)
        requests.post(fake.url + "/in", data=b"plain", timeout=5)
    assert seen[0].body == b'{"a":1}' and seen[0].raw_body == raw
    assert seen[0].headers["Content-Encoding"] == "gzip"
    assert seen[1].body == seen[1].raw_body == b"plain"


def test_a_crashing_handler_is_not_retried_and_fails_the_test_at_stop() -> None:
    fake = FakeServer().start()
    fake.route("GET", "/logs", lambda r: {}["missing"])
    client = HttpClient(component="t", options={"base_url": fake.url, "timeout": 5}, metrics=Metrics())
    with pytest.raises(HttpError, match="500"):
        client.get_json("/logs")
    assert len(fake.calls("/logs")) == 1  # answered once, not retried for half a minute
    with pytest.raises(HandlerCrashed, match="KeyError") as caught:
        fake.stop()
    assert isinstance(caught.value.__cause__, KeyError)


def test_a_with_block_fails_when_a_handler_crashed() -> None:
    # as the forwarder_fake_api fixture ends
    with pytest.raises(HandlerCrashed, match="ZeroDivisionError"), FakeServer() as fake:
        fake.route("GET", "/x", lambda r: 1 / 0)
        assert requests.get(fake.url + "/x", timeout=5).status_code == 500
