"""What the HTTP client and plugins say of a vendor's body in an error: a short, redacted excerpt."""
from __future__ import annotations

from forwarder_core.secrets import redact_cut

BODY_SNIPPET = 300
"""Characters of a body an error message quotes at most."""


def snippet(text: str, limit: int = BODY_SNIPPET) -> str:
    """A short, redacted, single-line excerpt of a body for an error message.

    Redacted before it is cut (a cut secret is no longer recognisable) and read only as far as
    the excerpt needs, so a huge body costs no more than a small one.
    """
    text = redact_cut(text or "", 4 * limit)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = ["BODY_SNIPPET", "snippet"]
