"""Secret values: wrapped so that no repr, str, log line or exception can show them.

Every :class:`Secret` registers its value with the process-wide redactor, and the log handler
and the HTTP client's error messages pass text through :func:`redact`, so a secret that slips
into a message by some other path is still masked.
"""
from __future__ import annotations

import base64
import threading
from typing import NoReturn

SECRET_OPTION_NAMES = frozenset({"token", "client_secret", "api_key", "password"})
"""Options that are secrets in every plugin; each also accepts ``<name>_file`` and ``${VAR}``."""

MASK = "***"
_lock = threading.Lock()
_known: set[str] = set()


def register_secret_text(value: str) -> None:
    """Mask ``value`` (and its Base64 form) wherever :func:`redact` runs. Short values are ignored."""
    if not value or len(value) < 4:
        return
    with _lock:
        _known.add(value)
        _known.add(base64.b64encode(value.encode()).decode())


def redact(text: str) -> str:
    """Replace every known secret value in ``text`` by ``***``."""
    if not _known or not text:
        return text
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    return text


class Secret:
    """A secret option value. ``str()``/``repr()`` give ``***``; :meth:`reveal` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value
        register_secret_text(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> NoReturn:  # never pickle a secret into a state file by accident
        raise TypeError("Secret values cannot be pickled")


def reveal(value: object) -> str | None:
    """The plain text of a :class:`Secret` (or of a plain string); None stays None."""
    if value is None:
        return None
    if isinstance(value, Secret):
        return value.reveal()
    return str(value)
