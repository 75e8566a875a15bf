"""What the HTTP client and plugins say of a vendor's body in an error: a short, redacted excerpt."""
from __future__ import annotations

from forwarder_core.secrets import redact

BODY_SNIPPET = 300
"""Characters of a body an error message quotes at most."""


def snippet(text: str, limit: int = BODY_SNIPPET) -> str:
    """A short, redacted, single-line excerpt of a body for an error message."""
    text = redact(text or "")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = ["BODY_SNIPPET", "snippet"]
