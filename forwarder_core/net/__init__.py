"""HTTP towards vendors and SIEMs: the client every plugin uses, its auth, and how long to wait.

``client`` (HttpClient: one pooled session, timeouts, TLS, retries with backoff, 401 refresh),
``auth`` (Auth, BearerAuth), ``waits`` (Retry-After and rate-limit headers), ``bodies`` (what an
error may quote of a body: short and redacted), ``limits`` (a body read within
``max_response_bytes``, wire and inflated), ``inflight`` (each attempt cut off at its deadline or
on stop), ``failures`` (what went wrong, in words: no JSON, no answer, too big, too slow).

Imports: the top-level helpers only (errors, secrets, metrics, jsoncodec).
"""
