"""The Pangea Secure Audit Log wire protocol: the strict envelope, status strings, 202 polling.

Every answer is ``{"request_id","request_time","response_time","status","summary","result"}``,
nothing more and nothing less (the SDK refuses extra keys, and so do we: a proxy's or a
different API's answer must not be taken for events). Pangea's meaning is in the ``status``
string, not the HTTP code, so that is what is dispatched on. Transport retries (429 with
``Retry-After``, 5xx, dropped connections) are the core HTTP client's; this module adds only
what is Pangea's own: ``TooManyRequests`` in a body the client did not retry, ``Accepted`` (HTTP
202) polled at ``GET request/{request_id}``, and an expired result set told apart from other
errors so the source can search again.
"""
from __future__ import annotations

import json
import time
from typing import Any

from forwarder_core.plugin_api import AuthError, HttpClient, HttpError, ResponseError, SourceError, snippet

ENVELOPE_KEYS = frozenset({"request_id", "request_time", "response_time", "status", "summary", "result"})
EXPIRED_STATUSES = frozenset({"NotFound", "BadOffset"})
_ANSWERED_STATUSES = frozenset({400, 404})  # Pangea puts ValidationError/BadOffset/NotFound in these
_ACCEPTED_TIMEOUT = 30.0
_RATE_LIMIT_TRIES = 3


class ResultSetExpired(SourceError):
    """``v1/results`` answered that the search id is gone or the offset is past its end."""


class PangeaError(SourceError):
    """Pangea answered with a status other than Success; ``status`` holds the string."""

    def __init__(self, message: str, status: str):
        super().__init__(message)
        self.status = status


def check_envelope(body: Any, where: str) -> dict[str, Any]:
    """The body when it is exactly Pangea's envelope; ResponseError naming what is wrong otherwise."""
    if not isinstance(body, dict):
        raise ResponseError(f"{where}: expected Pangea's response envelope (an object), got {type(body).__name__}")
    keys = set(body)
    if keys != ENVELOPE_KEYS:
        missing = sorted(ENVELOPE_KEYS - keys)
        extra = sorted(keys - ENVELOPE_KEYS)
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected {', '.join(k[:40] for k in extra[:5])}"] if extra else [])
        raise ResponseError(f"{where}: not Pangea's response envelope ({'; '.join(parts)})")
    if not isinstance(body["status"], str) or not (body["result"] is None or isinstance(body["result"], dict)):
        raise ResponseError(f"{where}: Pangea envelope has a non-string status or a non-object result")
    return body


def describe(body: dict[str, Any]) -> str:
    """``status: summary (error details)`` from an envelope, short and redacted."""
    text = f"{body['status']}: {body.get('summary') or ''}".rstrip(": ")
    errors = (body.get("result") or {}).get("errors") if isinstance(body.get("result"), dict) else None
    if isinstance(errors, list) and errors:
        details = "; ".join(
            f"{e.get('source') or e.get('path') or ''} {e.get('detail') or e.get('code') or ''}".strip()
            for e in errors[:3] if isinstance(e, dict))
        if details:
            text += f" ({details})"
    return snippet(text)


class PangeaApi:
    """One Pangea audit service endpoint, over the core :class:`HttpClient`."""

    def __init__(self, client: HttpClient, *, config_id: str | None = None,
                 accepted_timeout: float = _ACCEPTED_TIMEOUT):
        self.client = client
        self.config_id = config_id
        self.accepted_timeout = accepted_timeout

    def search(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("v1/search", body)

    def results(self, search_id: str, offset: int, limit: int) -> dict[str, Any]:
        return self.call("v1/results", {"id": search_id, "offset": offset, "limit": limit})

    def root(self, tree_size: int | None = None) -> dict[str, Any]:
        return self.call("v1/root", {} if tree_size is None else {"tree_size": tree_size})

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` and return the envelope's ``result`` on ``Success``; raise otherwise."""
        if self.config_id:
            body = {**body, "config_id": self.config_id}
        for attempt in range(1, _RATE_LIMIT_TRIES + 1):
            envelope, http_status = self._post(path, body)
            status = envelope["status"]
            if http_status == 202 or status == "Accepted":
                envelope = self._await_accepted(path, envelope)
                status = envelope["status"]
            if status == "Success":
                result = envelope["result"]
                if not isinstance(result, dict):
                    raise ResponseError(f"POST {path}: Pangea answered Success without a result object")
                return result
            if status == "TooManyRequests" and attempt < _RATE_LIMIT_TRIES:
                self.client.sleep(float(attempt * attempt))
                continue
            raise self._error(path, envelope)
        raise AssertionError("unreachable")

    def _post(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        try:
            response = self.client.request("POST", path, json_body=body, expect_json=True,
                                           ok_statuses=_ANSWERED_STATUSES)
        except HttpError as exc:
            raise self._from_http_error(path, exc) from None
        return check_envelope(response.parsed, f"POST {path}"), response.status_code  # type: ignore[attr-defined]

    def _await_accepted(self, path: str, envelope: dict[str, Any]) -> dict[str, Any]:
        """Poll ``GET request/{request_id}`` (waits 1, 4, 9 ... s) until the answer is final."""
        request_id = envelope.get("request_id")
        if not isinstance(request_id, str) or not request_id or "/" in request_id:
            raise ResponseError(f"POST {path}: Pangea answered Accepted without a usable request_id")
        started = time.monotonic()
        retry = 0
        while True:
            retry += 1
            wait = float(retry * retry)
            if time.monotonic() - started + wait > self.accepted_timeout:
                raise SourceError(
                    f"POST {path}: Pangea was still processing request {request_id} after "
                    f"{time.monotonic() - started:.0f}s; trying again next poll")
            self.client.sleep(wait)
            try:
                response = self.client.request("GET", f"request/{request_id}", expect_json=True,
                                               ok_statuses=_ANSWERED_STATUSES)
            except HttpError as exc:
                raise self._from_http_error(f"request/{request_id}", exc) from None
            answer = check_envelope(response.parsed, f"GET request/{request_id}")  # type: ignore[attr-defined]
            if response.status_code != 202 and answer["status"] != "Accepted":
                return answer

    def _error(self, path: str, envelope: dict[str, Any]) -> Exception:
        status = envelope["status"]
        text = f"POST {path}: Pangea answered {describe(envelope)}"
        if status == "Unauthorized":
            return AuthError(text + "; check the token and that it may use the Secure Audit Log service")
        if status in EXPIRED_STATUSES and path == "v1/results":
            return ResultSetExpired(text)
        return PangeaError(text, status)

    def _from_http_error(self, path: str, exc: HttpError) -> Exception:
        """An HTTP failure the client gave up on, explained with Pangea's own body when it sent one."""
        try:
            body = check_envelope(json.loads(exc.body), path)
        except (ValueError, ResponseError):
            return SourceError(str(exc))
        if body["status"] == "TooManyRequests" or exc.status == 429:
            return PangeaError(f"POST {path}: still rate limited after retrying: {describe(body)}", "TooManyRequests")
        return self._error(path, body)
