"""How long a server asks a client to wait before it tries again.

``Retry-After`` is the standard answer; many vendors give their own instead (Okta's
``X-Rate-Limit-Reset`` in epoch seconds, a ``retry_after_ms`` field in a JSON body). A plugin
states its vendor's way as a :data:`ResponseWait`, a function from the refused response to
seconds, and hands it to ``context.http(..., response_wait=...)``; the client then waits the
longer of what ``Retry-After`` and the plugin say, so a vendor that sends both is never asked
again too early.
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


def server_wait(response: Response, plugin_wait: ResponseWait | None, component: str = "") -> float | None:
    """The longer of ``Retry-After`` and the plugin's :data:`ResponseWait`, capped; None if neither says.

    A plugin's function that fails on an unexpected body is logged and ignored: the client falls
    back to its own backoff rather than failing a poll over a hint.
    """
    waits = [parse_retry_after(response.headers.get("Retry-After"))]
    if plugin_wait is not None:
        try:
            hinted = plugin_wait(response)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("%s: the plugin's response_wait failed on a %s answer (%s: %s); using backoff",
                        component, response.status_code, type(exc).__name__, exc)
            hinted = None
        waits.append(_capped(float(hinted)) if hinted is not None else None)
    known = [w for w in waits if w is not None]
    return max(known) if known else None


__all__ = ["MAX_RETRY_AFTER", "ResponseWait", "epoch_header", "parse_retry_after", "seconds_header"]
