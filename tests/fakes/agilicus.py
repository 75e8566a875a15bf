"""A local Agilicus API: ``GET /v1/audits`` and ``GET /v1/auth_audits`` as the real one answers.

What it reproduces (see ``shared/reference/vendor-apis.md`` section 2):

* ``Authorization: Bearer <token>``; a token the server does not know, or one past its expiry,
  gets ``401`` (rotate or expire tokens with :meth:`AgilicusFake.rotate_token` and
  :meth:`AgilicusFake.expire_token`).
* ``limit`` 1..500 (default 500); anything else is a ``400``.
* ``dt_from`` inclusive, ``dt_to`` exclusive, as UTC strings, or ``now``, ``today``,
  ``now-1day``-style offsets.
* The vendor filters of each endpoint (exact match on the record's field).
* No cursor and no record id: the answer is the newest ``limit`` records of the window,
  newest first (the order the agilicus CLI's backwards paging relies on), in
  ``{"limit": N, "audits": [...]}`` / ``{"limit": N, "auth_audits": [...]}``.

The data is seeded and deterministic: records spread over a time span, many of them sharing a
timestamp (auth audits carry whole seconds, as the vendor's example does), a burst that needs
window splitting at ``limit`` 500, and optionally one instant holding more records than any
request may return. :meth:`add` appends new or late-arriving records after a first poll.

Every record is JSON-encoded once when created and answers are assembled from those bytes (and
cached per query until the data changes), so a benchmark measures the forwarder, not the fake.

Run standalone: ``python -m tests.fakes.agilicus --events N --port P --ready-file F``.
"""
from __future__ import annotations

import argparse
import bisect
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from tests.fakes.base import FakeServer, Request, Response, json_response, serve_forever_cli

MAX_LIMIT = 500
DEFAULT_TOKEN = "agilicus-fake-token-0001"

AUDIT_FILTERS = ("org_id", "user_id", "action", "api_name", "target_resource_type", "target_id", "token_id")
AUTH_FILTERS = ("org_id", "user_id", "event_name", "result", "upstream_idp", "client_id", "session_id",
                "trace_id", "source_ip", "request_id", "login_org_id", "upstream_user_id")
_AUTH_FILTER_FIELD = {"session_id": "session"}

_ACTIONS = ("CREATE", "UPDATE", "DELETE", "GET")
_RESOURCES = ("users", "groups", "applications", "connectors", "policies", "files")
_EVENT_NAMES = ("Authentication Request", "Identity Provider Authentication", "Identity Provider Callback",
                "Assertion Request", "Policy Evaluation", "Token", "MFA Challenge")
_RESULTS = ("Success", "Success", "Success", "InProgress", "Authenticate", "DoMfa", "Failure", "Denied",
            "Timeout", "CodeIssued", "SessionExpired")
_IDPS = ("google", "azure-ad", "okta", "local")
_CLIENTS = ("admin-portal", "agilicus-builtin-cli", "my-client", "wiki")
_RELATIVE = re.compile(r"^now-(\d+)(second|minute|hour|day|week)s?$")


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_US = timedelta(microseconds=1)


def to_us(dt: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    return (dt - EPOCH) // ONE_US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def iso_us(us: int) -> str:
    """``2024-01-01T00:00:01.123456Z``: how the vendor writes an audit's ``time``."""
    return from_us(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time_us(text: str) -> int:
    return to_us(datetime.fromisoformat(text.replace("Z", "+00:00")))


def iso_s(us: int) -> str:
    """``2024-01-01T00:00:00Z``: how the vendor's example writes an auth audit's ``time``."""
    return from_us(us).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Stream:
    """One endpoint's records, kept sorted by time (stable for equal times)."""

    key: str  # "audits" or "auth_audits"
    times: list[int] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)
    seq: int = 0

    def insert(self, us: int, record: dict[str, Any], encoded: bytes | None = None) -> None:
        i = bisect.bisect_right(self.times, us)
        self.times.insert(i, us)
        self.records.insert(i, record)
        self.encoded.insert(i, encoded if encoded is not None else json.dumps(record, separators=(",", ":")).encode())

    def extend_sorted(self, items: list[tuple[int, dict[str, Any]]]) -> None:
        """Bulk load (the standalone fake's millions of records) without quadratic inserts."""
        merged = sorted(
            list(zip(self.times, self.records, self.encoded))
            + [(us, rec, json.dumps(rec, separators=(",", ":")).encode()) for us, rec in items],
            key=lambda item: item[0],
        )
        self.times = [m[0] for m in merged]
        self.records = [m[1] for m in merged]
        self.encoded = [m[2] for m in merged]


class AgilicusFake(FakeServer):
    """The fake. ``events`` records per endpoint, spread over ``span`` seconds from ``base_time``.

    ``burst``: that many extra records crowded into one second (needs splits at limit 500).
    ``dense``: that many extra records sharing one single instant per endpoint; more than 500
    makes an instant no request can read whole.
    """

    name = "agilicus"

    def __init__(
        self,
        *,
        events: int = 1000,
        base_time: datetime | None = None,
        span: float = 3600.0,
        seed: int = 7,
        burst: int = 0,
        dense: int = 0,
        org_id: str = "o1",
        token: str = DEFAULT_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        super().__init__(host, port)
        self.base_us = to_us(base_time or datetime(2024, 1, 1, tzinfo=timezone.utc))
        self.span_us = int(span * 1_000_000)
        self.org_id = org_id
        self.rng = random.Random(seed)
        self.tokens: dict[str, float | None] = {token: None}  # token -> expiry (epoch s) or None
        self.streams = {"audits": Stream("audits"), "auth_audits": Stream("auth_audits")}
        self._data_lock = threading.Lock()
        self._cache: dict[tuple[str, str], bytes] = {}
        self.cache_answers = True
        self.dense_us: int | None = None
        self.burst_us: int | None = None
        self.route("GET", "/v1/audits", lambda r: self._list(r, "audits", AUDIT_FILTERS))
        self.route("GET", "/v1/auth_audits", lambda r: self._list(r, "auth_audits", AUTH_FILTERS))
        self._seed(events, burst, dense)

    # ------------------------------------------------------------------ data

    def _seed(self, events: int, burst: int, dense: int) -> None:
        for key in self.streams:
            items: list[tuple[int, dict[str, Any]]] = []
            t = self.base_us
            step = max(1, self.span_us // max(1, events))
            for _ in range(events):
                # Clusters: about a third of the records share the previous record's timestamp.
                if items and self.rng.random() < 0.35:
                    us = items[-1][0]
                else:
                    t += self.rng.randint(1, 2 * step)
                    us = self._vendor_time(key, min(t, self.base_us + self.span_us - 1))
                items.append((us, self.make_record(key, us)))
            if burst:
                # Auth audits have whole-second times, so their burst spreads over more seconds.
                self.burst_us = self.base_us + self.span_us // 3
                width = 1_000_000 if key == "audits" else max(1, burst // 100) * 1_000_000
                for _ in range(burst):
                    us = self._vendor_time(key, self.burst_us + self.rng.randrange(width))
                    items.append((us, self.make_record(key, us)))
            if dense:
                self.dense_us = self.base_us + (2 * self.span_us) // 3 + 123_456
                us = self._vendor_time(key, self.dense_us)
                for _ in range(dense):
                    items.append((us, self.make_record(key, us)))
            self.streams[key].extend_sorted(items)

    @staticmethod
    def _vendor_time(key: str, us: int) -> int:
        """Auth audits carry whole seconds (``2024-01-01T00:00:00Z``), audits microseconds."""
        return us - us % 1_000_000 if key == "auth_audits" else us

    def make_record(self, key: str, us: int, **overrides: Any) -> dict[str, Any]:
        """A record as the vendor writes it, unique by its trace id.

        One 64-bit draw per record feeds every field (a benchmark seeds millions of them).
        """
        stream = self.streams[key]
        stream.seq += 1
        n = stream.seq
        bits = self.rng.getrandbits(64)

        def pick(k: int) -> int:
            nonlocal bits
            bits, value = divmod(bits, k)
            return value

        user = f"u{1 + pick(40)}"
        org = self.org_id if pick(10) else "o2"
        ip = f"192.0.2.{1 + pick(254)}"
        token_id = f"jti{1 + pick(200)}"
        session = f"s{1 + pick(300)}"
        if key == "audits":
            resource = _RESOURCES[pick(len(_RESOURCES))]
            action = _ACTIONS[pick(len(_ACTIONS))]
            target = f"{resource[:3]}-{1 + pick(500)}"
            record: dict[str, Any] = {
                "user_id": user, "org_id": org, "time": iso_us(us), "action": action,
                "api_name": resource, "target_resource_type": resource, "target_id": target,
                "target_resource_org_id": org,
                "target_resource_name": None if pick(5) == 0 else f"{resource} {target}",
                "source_ip": ip, "token_id": token_id, "trace_id": f"tr-a{n}",
                "session": session, "secondary_id": "", "tertiary_id": "", "parent_id": "",
                "grandparent_id": "", "description": f"{action.lower()} {resource} {target}",
                "audit_attributes": [{"attribute_id": f"a{1 + pick(50)}", "attribute_type": "user",
                                      "attribute_org_id": org, "attribute_name": None if pick(3) == 0 else "bob"}],
            }
        else:
            record = {
                "user_id": user, "upstream_user_id": f"{user}@example.com", "org_id": org, "org_name": f"org {org}",
                "time": iso_s(us), "event_name": _EVENT_NAMES[pick(len(_EVENT_NAMES))],
                "result": _RESULTS[pick(len(_RESULTS))],
                "source_ip": ip, "token_id": token_id, "trace_id": f"tr-b{n}",
                "session": session, "issuer": "https://auth.example.com",
                "client_id": _CLIENTS[pick(len(_CLIENTS))], "application_name": ("wiki", "portal", "cli")[pick(3)],
                "login_org_id": org, "login_org_name": f"org {org}", "upstream_idp": _IDPS[pick(len(_IDPS))],
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64)", "request_id": f"rq{n}",
            }
        record.update(overrides)
        return record

    def add(self, key: str, at: datetime | int, count: int = 1, **overrides: Any) -> list[dict[str, Any]]:
        """Insert ``count`` new records at ``at`` (now-ish for new events, the past for late ones).

        Auth audit records are written with whole seconds, so ``at`` is floored to its second
        for them, as the vendor's own times are.
        """
        us = self._vendor_time(key, at if isinstance(at, int) else to_us(at))
        added = []
        with self._data_lock:
            for _ in range(count):
                record = self.make_record(key, us, **overrides)
                self.streams[key].insert(us, record)
                added.append(record)
            self._cache.clear()
        return added

    def add_raw(self, key: str, at: datetime | int, record: dict[str, Any]) -> None:
        """Insert a record verbatim (e.g. one whose shape drifted from the schema)."""
        us = at if isinstance(at, int) else to_us(at)
        with self._data_lock:
            self.streams[key].insert(us, record)
            self._cache.clear()

    def add_copies(self, key: str, record: dict[str, Any], copies: int) -> None:
        """Insert ``copies`` more records equal in every byte to ``record`` (at its own ``time``), as
        the API serves when one actor does the same thing twice in one instant."""
        us = parse_time_us(record["time"])
        with self._data_lock:
            for _ in range(copies):
                self.streams[key].insert(us, dict(record))
            self._cache.clear()

    def all(self, key: str) -> list[dict[str, Any]]:
        """Every record of an endpoint (what a complete backfill must deliver)."""
        with self._data_lock:
            return list(self.streams[key].records)

    def newest_us(self, key: str) -> int:
        return self.streams[key].times[-1]

    # ------------------------------------------------------------------ tokens

    def rotate_token(self, new: str) -> None:
        """Accept only ``new`` from now on: clients holding the old token get 401."""
        with self._lock:
            self.tokens = {new: None}

    def expire_token(self, token: str, at: float | None = None) -> None:
        with self._lock:
            self.tokens[token] = time.time() if at is None else at

    def _authorized(self, req: Request) -> bool:
        header = req.headers.get("Authorization") or req.headers.get("authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        with self._lock:
            if token not in self.tokens:
                return False
            expiry = self.tokens[token]
        return expiry is None or time.time() < expiry

    # ------------------------------------------------------------------ the endpoint

    def _list(self, req: Request, key: str, filters: tuple[str, ...]) -> Response:
        if not self._authorized(req):
            return json_response({"error": "unauthorized: token invalid or expired"}, 401,
                                 {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        raw_limit = req.arg("limit", str(MAX_LIMIT))
        try:
            limit = int(raw_limit or "")
        except ValueError:
            return json_response({"error": f"limit: {raw_limit!r} is not an integer"}, 400)
        if not 1 <= limit <= MAX_LIMIT:
            return json_response({"error": f"limit: {limit} must be between 1 and {MAX_LIMIT}"}, 400)
        try:
            lo = _parse_dt(req.arg("dt_from")) if req.arg("dt_from") else None
            hi = _parse_dt(req.arg("dt_to")) if req.arg("dt_to") else None
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        wanted = {(_AUTH_FILTER_FIELD.get(f, f) if key == "auth_audits" else f): req.arg(f)
                  for f in filters if req.arg(f) is not None}
        cache_key = (key, json.dumps([limit, lo, hi, sorted(wanted.items())]))
        with self._data_lock:
            cached = self._cache.get(cache_key) if self.cache_answers else None
            if cached is None:
                cached = self._answer(self.streams[key], limit, lo, hi, wanted)
                if self.cache_answers:
                    self._cache[cache_key] = cached
        return Response(200, cached)

    @staticmethod
    def _answer(stream: Stream, limit: int, lo: int | None, hi: int | None, wanted: dict[str, str]) -> bytes:
        start = 0 if lo is None else bisect.bisect_left(stream.times, lo)
        stop = len(stream.times) if hi is None else bisect.bisect_left(stream.times, hi)
        picked: list[bytes] = []
        # Newest first: walk the window backwards and stop at ``limit``.
        for i in range(stop - 1, start - 1, -1):
            if wanted:
                record = stream.records[i]
                if any(record.get(f) != v for f, v in wanted.items()):
                    continue
            picked.append(stream.encoded[i])
            if len(picked) >= limit:
                break
        return b'{"limit":%d,"%s":[' % (limit, stream.key.encode()) + b",".join(picked) + b"]}"


def _parse_dt(text: str | None) -> int:
    """A ``dt_from``/``dt_to`` value as epoch microseconds (UTC; naive times are UTC)."""
    assert text is not None
    value = text.strip()
    now = datetime.now(timezone.utc)
    if value == "now":
        return to_us(now)
    if value == "today":
        return to_us(now.replace(hour=0, minute=0, second=0, microsecond=0))
    match = _RELATIVE.match(value)
    if match:
        return to_us(now - timedelta(**{match.group(2) + "s": int(match.group(1))}))
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"invalid date-time {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return to_us(dt)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake Agilicus audit API on loopback.")
    parser.add_argument("--events", type=int, default=1000, help="records per endpoint")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", help="write the base URL here once listening")
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--span", type=float, default=22 * 3600.0,
                        help="seconds the records spread over, ending about an hour ago")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--burst", type=int, default=0)
    args = parser.parse_args(argv)
    base = datetime.now(timezone.utc) - timedelta(seconds=args.span + 3600)
    fake = AgilicusFake(events=args.events, base_time=base, span=args.span, seed=args.seed,
                        burst=args.burst, token=args.token, port=args.port)
    serve_forever_cli(fake, args.ready_file)


if __name__ == "__main__":
    main()
