"""Credentials for the HTTP client: headers on every request, one refresh when they are refused.

An :class:`Auth` sets the headers of each request. On a 401 the client calls
:meth:`Auth.refresh` once, passing the refused response so the plugin can say in its error
what the vendor said (``invalid_token: the token has been revoked``), then tries again.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from forwarder_core.errors import AuthError
from forwarder_core.net.bodies import snippet
from forwarder_core.secrets import SECRET_HEADERS, redact, register_header_value, reveal

if TYPE_CHECKING:
    from requests import Response

    from forwarder_core.net.client import HttpClient


class Auth:
    """Sets auth headers on each request; :meth:`refresh` renews them (called once on a 401)."""

    def headers(self, client: HttpClient) -> Mapping[str, str]:
        """Headers to add to each request (called before every attempt, so they may change)."""
        return {}

    def refresh(self, client: HttpClient, response: Response | None = None) -> None:
        """Renew the credentials after ``response`` (the 401) refused them; raise AuthError when impossible.

        The default cannot renew anything, so it raises with the vendor's own words.
        """
        said = f": {snippet(response.text)}" if response is not None and response.text else ""
        raise AuthError(f"credentials were refused and cannot be refreshed{said}")


class BearerAuth(Auth):
    """``Authorization: <scheme> <token>`` with a fixed token (or a callable that reads it afresh).

    ``scheme`` is ``Bearer`` by default; vendors with their own word use it (Okta ``SSWS``,
    Splunk ``Splunk``).
    """

    def __init__(self, token: Any, scheme: str = "Bearer"):
        self._token = token
        self.scheme = scheme

    def _value(self) -> str:
        token = self._token() if callable(self._token) else self._token
        return reveal(token) or ""

    def headers(self, client: HttpClient) -> Mapping[str, str]:
        return {"Authorization": f"{self.scheme} {self._value()}"}


@functools.cache
def _takes_response(refresh: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(refresh).parameters.values())
    except (TypeError, ValueError):
        return True
    if any(p.kind is p.VAR_POSITIONAL for p in params) or any(p.name == "response" for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3  # self, client, response


def call_refresh(auth: Auth, client: HttpClient, response: Response) -> None:
    """``auth.refresh(client, response)``, or ``auth.refresh(client)`` for an Auth written before
    refresh received the response, so existing plugins keep working."""
    if _takes_response(type(auth).refresh):
        auth.refresh(client, response)
    else:
        auth.refresh(client)


def register_sent(seen: set[str], headers: Any, *, credentials: bool = False) -> None:
    """Register each header value built from a secret (and so its Base64, its URL-encoded
    form, ...) with the redactor the first time a client sends it: a server that echoes the
    ``Authorization`` header, or the Base64 of ``user:password``, then leaks nothing.

    A value is a credential when ``credentials`` says so (an Auth's headers), when its name is
    one of :data:`~forwarder_core.secrets.SECRET_HEADERS`, or when it holds a known secret.
    ``seen`` is the client's memory of the values already looked at.
    """
    for name, value in headers:
        if not isinstance(value, str) or value in seen:
            continue
        if len(seen) >= 256:  # tokens renewed every hour for weeks, request ids
            seen.clear()
        seen.add(value)
        if credentials or str(name).lower() in SECRET_HEADERS or redact(value) != value:
            register_header_value(value)


__all__ = ["Auth", "BearerAuth"]  # call_refresh and register_sent are the client's, not a plugin's
