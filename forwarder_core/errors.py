"""Exceptions the core and plugins raise; each says what failed in words an operator can act on."""
from __future__ import annotations


class ForwarderError(Exception):
    """Base of every error the forwarder raises on purpose."""


class ConfigError(ForwarderError):
    """The configuration is invalid; ``problems`` holds one ``file:line: $.path: message`` line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class StateError(ForwarderError):
    """The state directory or checkpoint store cannot be used (corrupt, locked, unwritable)."""


class SourceError(ForwarderError):
    """A poll failed; the cursor stays where it is and the source tries again later."""


class NoProgressError(SourceError):
    """A poll made no progress: its source repeated a cursor, or served an identical page (a vendor
    fault). Raised by the core (:mod:`forwarder_core.engine.noprogress`), never by a plugin."""


class AuthError(ForwarderError):
    """The vendor or SIEM refused the credentials (after one refresh, where the protocol has one)."""


class ResponseError(ForwarderError):
    """A response was not what the protocol promises: HTML instead of JSON, truncated, wrong shape."""


class OutputError(ForwarderError):
    """An output could not take a batch.

    ``pause`` marks errors a retry cannot fix without an operator (bad token, wrong index):
    the pipeline keeps the cursor still, logs once, and keeps retrying slowly.
    """

    def __init__(self, message: str, *, pause: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.pause = pause
        self.retry_after = retry_after


class HttpError(ForwarderError):
    """An HTTP exchange failed for good (after the client's retries, where it retries)."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.body = body
        self.headers = headers or {}


class TransportError(HttpError):
    """No HTTP answer at all: connection refused or reset, TLS failure, timeout."""


class QuarantineEvent(ForwarderError):
    """Raised by :meth:`Source.normalize` to set an event aside with a reason.

    The pipeline writes the raw event to the quarantine (never to an output) with ``reason``,
    counts it and goes on; the page's cursor still moves, so the event is handled, not retried.
    A source uses it when an event is readable but must not be forwarded (e.g. it failed a
    tamper-evidence check).
    """

    def __init__(self, reason: str, event_id: str | None = None, integrity: dict[str, str] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id
        self.integrity = integrity
        """The event's verification verdicts, where the source checks any: kept in the record."""
