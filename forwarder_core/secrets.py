"""Secret values: wrapped so that no repr, str, log line or exception can show them.

Every :class:`Secret` registers its value with the process-wide redactor, and the log handler
and the HTTP client's error messages pass text through :func:`redact`, so a secret that slips
into a message by some other path is still masked. A vendor that echoes a credential back
seldom echoes it as given: it comes back JSON-escaped (``2\\/1204``), URL-encoded, HTML-escaped,
Base64-encoded or inside an ``Authorization`` value, so each registered value brings its
derived forms (:func:`derived_forms`) and the HTTP client registers every credential header
it sends (:func:`register_header_value`).
"""
from __future__ import annotations

import base64
import binascii
import html
import json
import os
import re
import stat
import threading
import urllib.parse
from typing import NoReturn

SECRET_OPTION_NAMES = frozenset({"token", "client_secret", "api_key", "password"})
"""Options that are secrets in every plugin; each also accepts ``<name>_file`` and ``${VAR}``."""

SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "x-auth-token"})
"""Request headers whose values are credentials whatever a plugin put in them."""

SECRET_FILE_MAX_BYTES = 64 * 1024
"""The largest ``<secret>_file`` read (a secret is a line; this leaves room for a PEM key or a JWT)."""

MASK = "***"
MIN_LENGTH = 4
"""Shorter values are not registered: masking every ``abc`` would garble the logs and hide nothing."""

_lock = threading.Lock()
_known: set[str] = set()
_by_head: dict[str, tuple[str, ...]] = {}
"""Each registered form under its first :data:`MIN_LENGTH` characters, so that :func:`redact`
looks only at the forms whose head occurs in the text: 2,000 tenants' tokens are ~10,000 forms."""
_longest = 0
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_HEX = re.compile(r"%[0-9A-F]{2}")


def derived_forms(value: str) -> set[str]:
    """``value`` and each form a server or a library could turn it into before it reaches a message:
    JSON-escaped (``\\/`` and ``\\uXXXX`` escapes too), Python ``repr``, URL-encoded (``quote`` and
    ``quote_plus``, upper- and lower-case hex), HTML-escaped, and Base64 (standard and URL-safe,
    padded or not)."""
    forms = {value, html.escape(value), repr(value)[1:-1]}
    for ascii_only in (True, False):
        escaped = json.dumps(value, ensure_ascii=ascii_only)[1:-1]
        forms |= {escaped, escaped.replace("/", "\\/")}
    forms.add("".join(f"\\u{ord(c):04x}" for c in value))
    forms.add("".join(f"\\u{ord(c):04X}" for c in value))
    for quoted in (urllib.parse.quote(value, safe=""), urllib.parse.quote(value), urllib.parse.quote_plus(value),
                   urllib.parse.quote_plus(value, safe="/")):
        forms |= {quoted, _HEX.sub(lambda m: m.group(0).lower(), quoted)}
    raw = value.encode("utf-8", "surrogatepass")
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        forms |= {encoded, encoded.rstrip("=")}
    return {f for f in forms if len(f) >= MIN_LENGTH}


def register_secret_text(value: str) -> None:
    """Mask ``value`` and its derived forms wherever :func:`redact` runs. Short values are ignored."""
    if not isinstance(value, str) or len(value) < MIN_LENGTH:
        return
    forms = derived_forms(value)
    global _longest
    with _lock:
        for form in forms - _known:
            _known.add(form)
            head = form[:MIN_LENGTH]
            _by_head[head] = tuple(sorted((*_by_head.get(head, ()), form), key=len, reverse=True))
            _longest = max(_longest, len(form))


def register_header_value(value: str) -> None:
    """Register a credential header's value: the whole value (its Base64 is what an echo of the
    header encodes), the credential after its scheme word, and, for ``Basic``, the decoded
    ``user:password``."""
    register_secret_text(value)
    scheme, _, credential = value.partition(" ")
    if not credential:
        return
    register_secret_text(credential.strip())
    if scheme.lower() == "basic":
        try:
            register_secret_text(base64.b64decode(credential.strip(), validate=True).decode("utf-8"))
        except (binascii.Error, UnicodeDecodeError):
            pass


def redact(text: str) -> str:
    """Replace every known secret value, in every derived form, in ``text`` by ``***``."""
    if not _known or not text:
        return text
    heads = {text[i:i + MIN_LENGTH] for i in range(len(text) - MIN_LENGTH + 1)}
    with _lock:
        found = [form for head in heads & _by_head.keys() for form in _by_head[head]]
    for form in sorted(found, key=len, reverse=True):  # a longer form may contain a shorter one
        if form in text:
            text = text.replace(form, MASK)
    return text


def redact_cut(text: str, limit: int) -> str:
    """``redact(text)[:limit]`` without redacting all of a huge text, and without leaving the
    head of a secret that a plain cut would have split in two."""
    longest = _longest
    n = limit + longest
    while n < len(text):
        masked = redact(text[:n])
        # Only the last ``longest`` characters can hold the head of a secret the cut split.
        safe = masked[:max(0, len(masked) - longest)]
        if len(safe) >= limit:
            return safe[:limit]
        n *= 2
    return redact(text)[:limit]


def control_character(value: str) -> int | None:
    """The position of the first control character (or line separator) in ``value``, or None."""
    found = _CONTROL.search(value)
    return found.start() if found else None


def read_secret_file(path: str) -> str:
    """The secret in ``path``: a regular file of at most :data:`SECRET_FILE_MAX_BYTES`, UTF-8,
    one trailing newline (``\\n`` or ``\\r\\n``) removed, no other control character.

    Raises ValueError with a message that names the file and never quotes its content: a
    ``token_file: /etc/shadow`` must not print a line of it. A FIFO, a device (``/dev/zero``)
    or a directory is refused without reading from it, so it cannot hang or exhaust anything.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ValueError(f"cannot read the secret file {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"the secret file {path} is not a regular file")
        if st.st_size > SECRET_FILE_MAX_BYTES:
            raise ValueError(f"the secret file {path} is larger than {SECRET_FILE_MAX_BYTES} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= SECRET_FILE_MAX_BYTES:
            chunk = os.read(fd, SECRET_FILE_MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ValueError(f"cannot read the secret file {path}: {exc.strerror or type(exc).__name__}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > SECRET_FILE_MAX_BYTES:
        raise ValueError(f"the secret file {path} is larger than {SECRET_FILE_MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"the secret file {path} is not UTF-8 text") from None
    register_secret_text(text)
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    register_secret_text(text)
    if not text:
        raise ValueError(f"the secret file {path} is empty")
    where = control_character(text)
    if where is not None:
        what = "a line break" if text[where] in "\r\n" else "a control character"
        raise ValueError(f"the secret file {path} holds {what} at character {where + 1} (only one trailing "
                         f"newline is removed; the value is not shown)")
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
