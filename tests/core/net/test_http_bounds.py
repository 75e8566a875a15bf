"""The client's bounds against a hostile server: bytes per response (wire and inflated), time per
request, and a stop that cuts off a request in flight. Each is refused with an error naming the
bound and its option, counted, and never retried."""
from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from forwarder_core.errors import AuthError, ResponseError, TransportError
from forwarder_core.metrics import Metrics
from forwarder_core.net.auth import BearerAuth
from forwarder_core.net.client import HttpClient
from forwarder_core.net.failures import DeadlineExceeded, ResponseTooLarge
from forwarder_core.net.limits import DEFAULT_MAX_RESPONSE_BYTES
from tests.fakes.asana import PREFIX
from tests.fakes.base import FakeServer, Response
from tests.fakes.hostile_http import HostileAsana

TOKEN = "2/1204/1207:fake-service-account"
PATH = PREFIX + "/workspaces/12345/audit_log_events"
MIB = 1024 * 1024


@pytest.fixture
def vendor() -> Iterator[HostileAsana]:
    with HostileAsana(events=20, token=TOKEN, trickle=0.2) as fake:
        assert isinstance(fake, HostileAsana)
        yield fake


def client(url: str, stop: threading.Event | None = None, **options: Any) -> HttpClient:
    return HttpClient(component="vendor", options={"base_url": url, "timeout": 5, **options},
                      auth=BearerAuth(TOKEN), metrics=Metrics(), stop=stop, backoff_factor=0.01)


def refused(c: HttpClient, reason: str) -> float:
    assert c.metrics is not None
    return c.metrics.get("http_responses_refused_total", component="vendor", reason=reason)


def test_the_default_bound_is_the_contracts_64_mib(vendor: HostileAsana) -> None:
    assert DEFAULT_MAX_RESPONSE_BYTES == 64 * MIB
    assert client(vendor.url).max_response_bytes == 64 * MIB


def test_a_huge_streamed_page_is_refused_past_the_limit_and_not_retried(vendor: HostileAsana) -> None:
    vendor.hostile("huge", every=True)
    c = client(vendor.url, max_response_bytes=4 * MIB)
    with pytest.raises(ResponseTooLarge, match=r"max_response_bytes \(4,194,304 bytes\)") as caught:
        c.get_json(PATH)
    assert "Raise the option max_response_bytes" in str(caught.value)
    assert vendor.hostile_answers == 1
    assert refused(c, "too_large") == 1


def test_a_gzip_bomb_is_refused_once_inflated_past_the_limit(vendor: HostileAsana) -> None:
    vendor.bomb_bytes = 256 * MIB
    vendor.hostile("bomb", every=True)
    c = client(vendor.url, max_response_bytes=8 * MIB)
    with pytest.raises(ResponseTooLarge, match="once decompressed"):
        c.get_json(PATH)
    assert vendor.hostile_answers == 1
    assert refused(c, "too_large") == 1


def test_a_declared_content_length_over_the_limit_is_refused_unread() -> None:
    with FakeServer() as server:
        server.route("GET", "/big", lambda r: Response(body=b"[" + b" " * (2 * MIB) + b"]"))
        c = client(server.url, max_response_bytes=MIB)
        with pytest.raises(ResponseTooLarge, match=r"Content-Length of 2,097,154 bytes is over max_response_bytes"):
            c.get_json("/big")


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_a_compressed_answer_within_the_limit_is_inflated(encoding: str) -> None:
    payload = b'{"data":[' + b'{"gid":"1"},' * 5000 + b'{"gid":"2"}]}'
    if encoding == "gzip":
        body = gzip.compress(payload)
    elif encoding == "deflate":
        body = zlib.compress(payload)
    else:
        squeeze = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = squeeze.compress(payload) + squeeze.flush()
    with FakeServer() as server:
        header = "gzip" if encoding == "gzip" else "deflate"
        server.route("GET", "/z", lambda r: Response(body=body, headers={"Content-Encoding": header}))
        answer = client(server.url, max_response_bytes=len(payload) + 1024).get_json("/z")
        assert len(answer["data"]) == 5001
        assert server.calls("/z")[0].headers["Accept-Encoding"] == "gzip, deflate"
        with pytest.raises(ResponseTooLarge, match="once decompressed"):
            client(server.url, max_response_bytes=len(payload) // 2).get_json("/z")


def test_a_slowloris_is_cut_off_at_the_request_deadline(vendor: HostileAsana) -> None:
    vendor.hostile("slowloris", every=True)
    c = client(vendor.url, timeout=1, request_deadline=1.5)
    with pytest.raises(DeadlineExceeded, match=r"within the request deadline of 1\.5s \(option request_deadline"):
        c.get_json(PATH)
    assert vendor.hostile_answers == 1
    assert refused(c, "deadline") == 1


def test_the_deadline_defaults_to_five_timeouts(vendor: HostileAsana) -> None:
    vendor.hostile("slowloris", every=True)
    with pytest.raises(DeadlineExceeded, match=r"deadline of 2\.5s"):
        client(vendor.url, timeout=0.5).get_json(PATH)


def _request_in_thread(c: HttpClient) -> tuple[threading.Thread, list[BaseException]]:
    raised: list[BaseException] = []

    def run() -> None:
        try:
            c.get_json(PATH)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, raised


def test_stop_cuts_off_a_request_reading_a_slow_body(vendor: HostileAsana) -> None:
    vendor.trickle = 1.0
    vendor.hostile("slowloris", every=True)
    stop = threading.Event()
    thread, raised = _request_in_thread(client(vendor.url, stop=stop, timeout=60))
    assert vendor.answering.wait(30)
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(raised[0], TransportError) and "stopped during GET" in str(raised[0])


def test_stop_cuts_off_a_request_waiting_for_the_headers() -> None:
    arrived = threading.Event()
    release = threading.Event()

    def silent(req: Any) -> Response:
        arrived.set()
        release.wait(60)
        return Response(body=b"{}")

    with FakeServer() as server:
        server.route("GET", PATH, silent)
        stop = threading.Event()
        thread, raised = _request_in_thread(client(server.url, stop=stop, timeout=60))
        assert arrived.wait(30)
        stop.set()
        thread.join(30)
        release.set()
        assert not thread.is_alive()
        assert isinstance(raised[0], TransportError) and "stopped during GET" in str(raised[0])


def test_a_redirect_to_another_host_drops_the_authorization(vendor: HostileAsana) -> None:
    vendor.hostile("redirect", every=True)
    with pytest.raises(AuthError):  # the other host does not know us: it never saw the token
        client(vendor.url).get_json(PATH)
    assert vendor.elsewhere, "the redirect was not followed"
    assert all("Authorization" not in r.headers for r in vendor.elsewhere)


def test_an_html_page_and_a_truncated_body_fail_with_what_came(vendor: HostileAsana) -> None:
    vendor.hostile("html", every=True)
    with pytest.raises(ResponseError, match="expected JSON, got an HTML page"):
        client(vendor.url).get_json(PATH)
    vendor.hostile("truncated", every=True)
    with pytest.raises(TransportError, match=r"truncated|closed by the server"):
        client(vendor.url).get_json(PATH)
