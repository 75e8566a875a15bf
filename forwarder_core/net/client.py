"""The one HTTP client every plugin uses: retries, timeouts, TLS, auth refresh, redaction.

One :class:`HttpClient` (one ``requests.Session``) per plugin instance, its connections drawn
from one pool for the whole process (:func:`shared_adapter`). It retries connection
errors, timeouts, 5xx and 429 with exponential backoff and full jitter (``backoff``'s
generators), and waits exactly what the server says when it says it: ``Retry-After`` (seconds
or an HTTP date) or the vendor's own signal, read by the plugin's ``response_wait``
(:mod:`forwarder_core.net.waits`). It never retries other 4xx. On a 401 it asks the
:class:`~forwarder_core.net.auth.Auth` to refresh once, handing it the refused response, and tries
again. Every message it produces passes through :func:`forwarder_core.secrets.redact`.

Each response is read as a stream within ``max_response_bytes`` (:mod:`forwarder_core.net.limits`)
and each attempt is cut off at its total deadline, or at once when the halt event is set
(:mod:`forwarder_core.net.inflight`); neither is retried. The stop event ends retry waits and
no attempt but the first starts once it is set; the halt event (the stop event unless one is given) also cuts
off the attempt in flight. An output's client gets a halt that is set only once
``shutdown_timeout`` has passed, so a batch being sent when SIGTERM arrives is finished, not cut.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import backoff
import requests
import requests.adapters

from forwarder_core import __version__
from forwarder_core.errors import AuthError, HttpError, ResponseError, TransportError
from forwarder_core.metrics import PER_CLIENT
from forwarder_core.net import waits as _waits
from forwarder_core.net.auth import Auth, BearerAuth, call_refresh, register_sent
from forwarder_core.net.bodies import snippet
from forwarder_core.net.failures import cut_off, decode_json
from forwarder_core.net.inflight import InFlight, WatchedAdapter, current, watching
from forwarder_core.net.limits import ACCEPT_ENCODING, DEADLINE_FACTOR, DEFAULT_MAX_RESPONSE_BYTES, consume
from forwarder_core.net.waits import MAX_RETRY_AFTER, ResponseWait, parse_retry_after, rate_limit_wait, server_wait
from forwarder_core.secrets import redact, redact_cut

if TYPE_CHECKING:
    from forwarder_core.metrics import Metrics

USER_AGENT = f"siem-forwarder/{__version__}"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_warned_insecure: set[str] = set()
SHARED_POOL_SIZE = 64
"""Idle connections kept per host, and hosts kept, by the process's one connection pool."""


@functools.cache
def shared_adapter() -> requests.adapters.HTTPAdapter:
    """The connection pool every client's session mounts: one per process, keyed by host and TLS settings.

    A host forwarding for 2,000 tenants of one vendor held a keep-alive socket per source (2,008
    descriptors, past the 1,024 that systemd allows a service by default, where polls failed
    with "connection failed"). Shared, the sockets are bounded by the polls running at once and
    one source's idle connection serves the next. Only connections are shared: each session
    keeps its own headers and cookies, and urllib3 keys a pool by the TLS verification, CA
    file and client certificate as well as the host, so no two settings share a socket.
    """
    return WatchedAdapter(pool_connections=SHARED_POOL_SIZE, pool_maxsize=SHARED_POOL_SIZE)


class HttpClient:
    """A ``requests.Session`` with the forwarder's policies. See the module docstring."""

    def __init__(
        self,
        *,
        component: str,
        options: Mapping[str, Any],
        auth: Auth | None = None,
        base_url: str | None = None,
        response_wait: ResponseWait | None = None,
        rate_limit: ResponseWait | None = None,
        metrics: "Metrics | None" = None,
        logger: logging.Logger | None = None,
        stop: threading.Event | None = None,
        halt: threading.Event | None = None,
        max_tries: int = 6,
        max_backoff: float = 60.0,
        backoff_factor: float = 0.5,
        single_attempt: bool = False,
    ):
        self.component = component
        self.auth = auth
        self.response_wait = response_wait
        self.rate_limit = rate_limit
        self.base_url = (base_url or options.get("base_url") or options.get("url") or "").rstrip("/")
        self.timeout = float(options.get("timeout", 30))
        self.max_response_bytes = int(options.get("max_response_bytes") or DEFAULT_MAX_RESPONSE_BYTES)
        self.request_deadline = float(options["request_deadline"]) if options.get("request_deadline") else None
        self.metrics = metrics
        if metrics is not None:
            for name in PER_CLIENT:
                metrics.zero(name, component=component)
            metrics.zero("http_requests_total", component=component, status="200")
            for reason in ("too_large", "deadline"):
                metrics.zero("http_responses_refused_total", component=component, reason=reason)
        self.log = logger or logging.getLogger(f"siem_forwarder.{component}")
        self.stop = stop or threading.Event()
        self.halt = halt or self.stop
        self.max_tries = max_tries
        self.max_backoff = max_backoff
        self.backoff_factor = backoff_factor
        self.single_attempt = single_attempt
        self._seen_headers: set[str] = set()
        self.session = requests.Session()
        for prefix in ("https://", "http://"):
            self.session.mount(prefix, shared_adapter())
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers["Accept-Encoding"] = ACCEPT_ENCODING
        self.session.hooks["response"].append(self._read_body)
        self.session.trust_env = True
        verify: bool | str = bool(options.get("tls_verify", True))
        if verify and options.get("ca_file"):
            verify = str(options["ca_file"])
        self.session.verify = verify
        if verify is False and component not in _warned_insecure:
            _warned_insecure.add(component)
            self.log.warning(
                "%s: TLS certificate verification is OFF (tls_verify: false); anyone on the path "
                "can read and alter this traffic",
                component,
            )

    # ------------------------------------------------------------------ helpers

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def _count(self, status: int) -> None:
        if self.metrics is not None:
            self.metrics.inc("http_requests_total", component=self.component, status=str(status))

    def _read_body(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        """requests' response hook (every response, redirects included): the body, bounded."""
        flight = current()
        consume(response, flight, flight.limit if flight is not None else self.max_response_bytes)
        return response

    def _refused(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.inc("http_responses_refused_total", component=self.component, reason=reason)

    def sleep(self, seconds: float) -> None:
        """Wait, but wake at once on shutdown (then raise, so no half-done work is committed)."""
        if self.stop.wait(seconds):
            raise TransportError(f"{self.component}: stopped while waiting to retry")

    def close(self) -> None:
        self.session.adapters.clear()  # the shared pool outlives any one client
        self.session.close()

    # ------------------------------------------------------------------ the request loop

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        auth_required: bool = True,
        retry: bool = True,
        ok_statuses: frozenset[int] | None = None,
        max_tries: int | None = None,
        timeout: float | None = None,
        expect_json: bool = False,
    ) -> requests.Response:
        """Send a request with the retry policy; return the response or raise :class:`HttpError`.

        ``path`` is joined to the client's base URL unless it is a full URL (a vendor's ``next``
        link). ``params``, ``json_body``, ``data`` and ``headers`` go to ``requests`` as they are;
        the :class:`Auth` headers are added unless ``auth_required=False`` (a token endpoint).
        A 2xx (or a status in ``ok_statuses``) is returned. With ``retry=False`` every HTTP
        answer is returned as it is (the caller decides, as outputs do with HEC codes) and only
        transport failures raise. With ``expect_json`` a 2xx body that is not JSON (an HTML
        error page from a proxy, a truncated body) is retried like a 5xx, and the decoded value
        is left on ``response.parsed``. ``max_tries`` and ``timeout`` override the client's.
        """
        url = self.url(path)
        tries = 1 if self.single_attempt else (max_tries or self.max_tries)
        waits = backoff.expo(base=2, factor=self.backoff_factor, max_value=self.max_backoff)
        next(waits)  # backoff's generators start with a priming None
        refreshed = False
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            if self.halt.is_set() or (self.stop.is_set() and attempt > 1):
                raise TransportError(f"{self.component}: stopped before {method} {redact(url)}")
            req_headers = dict(headers or {})
            if self.auth is not None and auth_required:
                credentials = self.auth.headers(self)
                register_sent(self._seen_headers, credentials.items(), credentials=True)
                req_headers.update(credentials)
            register_sent(self._seen_headers, (*self.session.headers.items(), *req_headers.items()))
            flight = InFlight(seconds=self.request_deadline or DEADLINE_FACTOR * (timeout or self.timeout),
                              stop=self.halt, limit=self.max_response_bytes)
            try:
                with watching(flight):
                    response = self.session.request(
                        method,
                        url,
                        params=params,
                        json=json_body,
                        data=data,
                        headers=req_headers,
                        timeout=timeout or self.timeout,
                        # Explicit, because requests lets $REQUESTS_CA_BUNDLE override session.verify,
                        # which would silently ignore the configured ca_file.
                        verify=self.session.verify,
                        stream=True,  # the body is read by _read_body, bounded
                    )
            except Exception as exc:
                self._count(0)
                reason = cut_off(f"{method} {redact(url)}", self.component, flight, exc, self._refused)
                if not retry or attempt >= tries:
                    raise TransportError(
                        f"{method} {redact(url)}: {reason}"
                        + (f" (after {attempt} attempts over {time.monotonic() - started:.0f}s)" if attempt > 1 else "")
                    ) from None
                self._retry_wait(method, url, reason, backoff.full_jitter(next(waits)), attempt)
                continue

            status = response.status_code
            self._count(status)
            if status == 401 and self.auth is not None and auth_required and not refreshed:
                refreshed = True
                self.log.info("%s: %s %s answered 401; refreshing credentials once", self.component, method, redact(url))
                call_refresh(self.auth, self, response)
                attempt -= 1
                continue
            if not retry:
                return response
            if 200 <= status < 300 or (ok_statuses and status in ok_statuses):
                if expect_json:
                    try:
                        response.parsed = decode_json(response)  # type: ignore[attr-defined]
                    except ResponseError as exc:
                        if attempt >= tries:
                            raise
                        self._retry_wait(method, url, str(exc), backoff.full_jitter(next(waits)), attempt)
                        continue
                return response
            limited = rate_limit_wait(response, self.rate_limit, self.component)
            if limited is not None and attempt < tries:
                self._rate_limited(limited)
                next(waits)
                self._retry_wait(method, url, f"{status} {response.reason} (rate limited)", limited, attempt)
                continue
            if status in (401, 403) and limited is None:
                raise AuthError(
                    f"{method} {redact(url)}: {status} {response.reason}: credentials refused: {snippet(response.text)}"
                )
            if status in RETRY_STATUSES and attempt < tries and _waits.NO_RETRY_HEADER not in response.headers:
                wait = server_wait(response, self.response_wait, self.component)
                if status == 429:
                    self._rate_limited(wait or 0)
                if wait is None:
                    wait = backoff.full_jitter(next(waits))
                else:
                    next(waits)
                self._retry_wait(method, url, f"{status} {response.reason}", wait, attempt)
                continue
            raise HttpError(
                f"{method} {redact(url)}: {status} {response.reason}"
                + (f" after {attempt} attempts" if attempt > 1 else "")
                + f": {snippet(response.text)}",
                status=status,
                body=redact_cut(response.text, 4096),
                headers={k: redact(v) for k, v in response.headers.items()},
            )

    def _rate_limited(self, wait: float) -> None:
        if self.metrics is not None:
            self.metrics.inc("rate_limit_waits_total", component=self.component)
            self.metrics.inc("rate_limit_wait_seconds_total", wait, component=self.component)

    def _retry_wait(self, method: str, url: str, reason: str, wait: float, attempt: int) -> None:
        if self.metrics is not None:
            self.metrics.inc("http_retries_total", component=self.component)
        log = self.log.warning if attempt == 1 else self.log.debug
        log("%s: %s %s: %s; retrying in %.1fs", self.component, method, redact(url), reason, wait)
        self.sleep(wait)

    def get_json(self, path: str, **kwargs: Any) -> Any:
        """GET and decode JSON; non-JSON 2xx bodies are retried, then raise ResponseError."""
        return self.request("GET", path, expect_json=True, **kwargs).parsed  # type: ignore[attr-defined]

    def post_json(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        """POST a JSON body and decode the JSON answer (same retry policy as :meth:`get_json`)."""
        return self.request("POST", path, json_body=body, expect_json=True, **kwargs).parsed  # type: ignore[attr-defined]

    def json(self, response: requests.Response) -> Any:
        """Decode a JSON body, or raise :class:`ResponseError` saying what came instead."""
        return decode_json(response)


__all__ = [
    "MAX_RETRY_AFTER", "RETRY_STATUSES", "Auth", "BearerAuth", "HttpClient", "ResponseWait", "decode_json",
    "parse_retry_after", "snippet",
]
