"""Pangea Secure Audit Log (``pangea``): the API client, the cursor, and tamper-evidence verification
(hash, membership proof against the published root, signature)."""
