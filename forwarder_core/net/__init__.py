"""HTTP towards vendors and SIEMs: the client every plugin uses, its auth, and how long to wait.

``client`` (HttpClient: one pooled session, timeouts, TLS, retries with backoff, 401 refresh),
``auth`` (Auth, BearerAuth), ``waits`` (Retry-After and rate-limit headers), ``bodies`` (what an
error may quote of a body: short and redacted).

Imports: the top-level helpers only (errors, secrets, metrics, jsoncodec).
"""
