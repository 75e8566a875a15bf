"""How long a server asks a client to wait before it tries again.

``Retry-After`` is the standard answer; many vendors give their own instead (Okta's
``X-Rate-Limit-Reset`` in epoch seconds, a ``retry_after_ms`` field in a JSON body). A plugin
states its vendor's way as a :data:`ResponseWait`, a function from the refused response to
seconds, and hands it to ``context.http(..., response_wait=...)``; the client then waits the
longer of what ``Retry-After`` and the plugin say, so a vendor that sends both is never asked
again too early.

Some vendors signal a rate limit with another status: GitHub answers 403 for its hourly limit
(``x-ratelimit-remaining: 0``, ``x-ratelimit-reset`` epoch) and its secondary limit
(``Retry-After``). A plugin hands ``context.http(..., rate_limit=...)`` a :data:`ResponseWait`
that returns seconds for an answer that *is* a rate limit, whatever its status, and None
otherwise; the client then waits exactly that and retries, instead of reporting refused
credentials. :func:`first_of`, :func:`when_header` and :func:`retry_after` compose one.
"""
from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from requests import Response

MAX_RETRY_AFTER = 900.0
"""No server makes the client wait longer than this per retry (a wrong header must not park a source for days)."""

NO_RETRY_HEADER = "X-Siem-Forwarder-No-Retry"
"""A response carrying this header is not retried, whatever its status: the test fakes
(:mod:`forwarder_core.testing.fakehttp`) set it when a handler crashed, so the test fails at once."""

ResponseWait = Callable[["Response"], "float | None"]
"""Seconds to wait before retrying, read from a refused (429/5xx) response; None when it does not say."""

log = logging.getLogger("siem_forwarder.http")


def _capped(seconds: float) -> float:
    return max(0.0, min(seconds, MAX_RETRY_AFTER))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (now if now is not None else time.time())
    return _capped(seconds)


def server_now(response: Response) -> float:
    """The server's clock from its ``Date`` header (else ours), so an epoch deadline survives clock skew."""
    date = response.headers.get("Date")
    if date:
        try:
            return email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError):
            pass
    return time.time()


def epoch_header(name: str) -> ResponseWait:
    """A :data:`ResponseWait` for a header holding the epoch second the limit resets at (Okta's
    ``X-Rate-Limit-Reset``); measured against the server's ``Date`` so a skewed host clock does
    not shorten or stretch the wait."""

    def wait(response: Response) -> float | None:
        value = response.headers.get(name)
        if not value:
            return None
        try:
            reset = float(value.strip())
        except ValueError:
            return None
        return _capped(reset - server_now(response))

    return wait


def seconds_header(name: str, *, scale: float = 1.0) -> ResponseWait:
    """A :data:`ResponseWait` for a header holding a delay (``scale=0.001`` for milliseconds)."""

    def wait(response: Response) -> float | None:
        value = response.headers.get(name)
        if not value:
            return None
        try:
            return _capped(float(value.strip()) * scale)
        except ValueError:
            return None

    return wait


def retry_after(response: Response) -> float | None:
    """A :data:`ResponseWait` for the standard ``Retry-After`` header, to compose with the others."""
    return parse_retry_after(response.headers.get("Retry-After"))


def first_of(*waits: ResponseWait) -> ResponseWait:
    """A :data:`ResponseWait` answering what the first of ``waits`` that says anything says.

    GitHub's secondary limit sends ``Retry-After`` (a minute) beside the hourly
    ``x-ratelimit-reset``: ``first_of(retry_after, when_header("x-ratelimit-remaining", "0",
    epoch_header("x-ratelimit-reset")))`` waits the minute, not the hour.
    """

    def wait(response: Response) -> float | None:
        for candidate in waits:
            seconds = candidate(response)
            if seconds is not None:
                return seconds
        return None

    return wait


def when_header(name: str, value: str, then: ResponseWait) -> ResponseWait:
    """A :data:`ResponseWait` that applies ``then`` only when header ``name`` equals ``value``
    (GitHub's ``x-ratelimit-remaining: 0``: a 403 with quota left is not a rate limit)."""

    def wait(response: Response) -> float | None:
        found = response.headers.get(name)
        return then(response) if found is not None and found.strip() == value else None

    return wait


def _ask_plugin(response: Response, plugin_wait: ResponseWait, component: str, what: str) -> float | None:
    """What a plugin's function says, capped; one that fails on an unexpected body is logged and
    ignored, so the client falls back to its own policy rather than failing a poll over a hint."""
    try:
        hinted = plugin_wait(response)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("%s: the plugin's %s failed on a %s answer (%s: %s); ignoring it",
                    component, what, response.status_code, type(exc).__name__, exc)
        return None
    return _capped(float(hinted)) if hinted is not None else None


def server_wait(response: Response, plugin_wait: ResponseWait | None, component: str = "") -> float | None:
    """The longer of ``Retry-After`` and the plugin's :data:`ResponseWait`, capped; None if neither says."""
    waits = [parse_retry_after(response.headers.get("Retry-After"))]
    if plugin_wait is not None:
        waits.append(_ask_plugin(response, plugin_wait, component, "response_wait"))
    known = [w for w in waits if w is not None]
    return max(known) if known else None


def rate_limit_wait(response: Response, rate_limit: ResponseWait | None, component: str = "") -> float | None:
    """Seconds the plugin's ``rate_limit`` says this refused answer (any status) asks to wait;
    None when it is not a rate limit. Unlike :func:`server_wait`, the plugin's answer is the wait
    as it is (composed with :func:`first_of`), so a short ``Retry-After`` is not stretched."""
    if rate_limit is None:
        return None
    return _ask_plugin(response, rate_limit, component, "rate_limit")


__all__ = ["MAX_RETRY_AFTER", "NO_RETRY_HEADER", "ResponseWait", "epoch_header", "first_of", "parse_retry_after",
           "retry_after", "seconds_header", "when_header"]
