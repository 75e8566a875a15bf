"""A local Code42 Incydr audit-log API: OAuth client credentials, search, count.

What it does as the real service does (reference: vendor-apis.md §1):

* ``POST /v1/oauth`` with HTTP Basic ``client_id:client_secret`` and an empty body answers
  ``{"access_token","token_type","expires_in"}``; tokens really expire (``token_ttl``, which can be
  shorter than the ``expires_in`` it announces, so a client meets a 401) and can be revoked.
* ``POST /v1/audit/search-audit-log`` takes ``QueryAuditLogRequest``: 0-based ``page``,
  ``pageSize`` up to 10,000, ``dateRange`` in float epoch seconds (start inclusive, end
  exclusive), and the list filters. Events come back in an order that is not by time (a fixed
  pseudo-random order, so a late event lands at a random place and shifts deep pages), and a page
  past the end leaves ``events`` out altogether.
* ``POST /v1/audit/search-results-count`` answers ``{"totalResultCount": n}`` for the same body.

Events are generated deterministically from a seed and kept compactly: a time array, an order
key array, and every event encoded once into one byte buffer (a million events take about 300 MB
and some seconds before the fake reports ready); encoded pages are cached by request body, so the
fake costs little while a benchmark measures the forwarder. Tests add events later with
:meth:`IncydrFake.add_events` (new ones, or late ones older than what was already served).
"""
from __future__ import annotations

import argparse
import base64
import bisect
import json
import random
import secrets
import threading
import time
from array import array
from datetime import datetime, timedelta, timezone
from typing import Any

from tests.fakes.base import FakeServer, Request, Response, json_response, serve_forever_cli

SEARCH = "/v1/audit/search-audit-log"
COUNT = "/v1/audit/search-results-count"
MAX_PAGE_SIZE = 10_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_M64 = (1 << 64) - 1

ACTOR_TYPES = ("USER", "USER", "USER", "API_CLIENT", "SYSTEM", "SUPPORT_USER", "UNKNOWN")
AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Apache-HttpAsyncClient/4.1.4 (Java/11.0.3)",
    "incydr-sdk 2.12.5 python 3.11",
    "py42 1.29.1 python 3.11.4",
)
NAMES = ("arthur.pendragon", "gwen.lancaster", "darnell.waters", "sean.cassidy", "maria.ortiz", "li.wei",
         "amara.okafor", "jonas.berg", "priya.nair", "tom.hughes", "ines.duarte", "kenji.sato")
EVENT_TYPES = (
    "audit_log::logged_in/1",
    "audit_log::logged_in/1",
    "audit_log::search_issued/1",
    "audit_log::user_role_added/1",
    "audit_log::user_deactivated/1",
    "audit_log::federation_metadata_updated/1",
    "audit_log::case_created/1",
    "audit_log::login_failed/1",
)


def _mix(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-spread hash so event n is rebuilt from n alone."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def iso_ms(ms: int) -> str:
    dt = _EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def event_ms(event: dict[str, Any]) -> int:
    dt = datetime.fromisoformat(event["timestamp"])
    return (dt - _EPOCH) // timedelta(milliseconds=1)


class IncydrFake(FakeServer):
    """The fake; see the module docstring. ``events`` generated ones spread over ``span`` seconds."""

    name = "incydr"

    def __init__(self, *, events: int = 0, seed: int = 42, start: datetime | None = None, span: float = 3600.0,
                 client_id: str = "key-1", client_secret: str = "secret-1", token_ttl: float = 900.0,
                 expires_in: int | None = None, tenant: str = "1af25e70-6993-498f-ab78-65c520259d95",
                 omit_events_past_end: bool = True, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.seed = seed
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.expires_in = expires_in
        self.next_token_ttls: list[float] = []  # lifetimes of the next tokens handed out, then token_ttl
        self.tenant = tenant
        self.omit_events_past_end = omit_events_past_end
        self._tokens: dict[str, float] = {}
        self._data_lock = threading.Lock()
        self._ts = array("q")  # event time (ms), sorted
        self._key = array("q")  # the order the API returns events in
        self._spec = array("q")  # >= 0: generated event n; < 0: self._custom[-spec - 1]
        self._custom: list[dict[str, Any]] = []
        self._next_n = 0
        self._made = 0
        self._seconds: dict[int, str] = {}
        self._blob = bytearray()  # generated events, encoded once, back to back
        self._offsets = array("q", [0])  # generated event n is _blob[_offsets[n]:_offsets[n + 1]]
        self._version = 0
        self._orders: dict[Any, list[int]] = {}
        self._pages: dict[bytes, bytes] = {}
        if start is None:
            start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=span + 120)
        self.begin = start
        if events:
            self.add_generated(events, start, span)
        self.route("POST", "/v1/oauth", self._oauth)
        self.route("POST", SEARCH, self._search)
        self.route("POST", COUNT, self._count)

    # ------------------------------------------------------------------ the data set

    def add_generated(self, count: int, start: datetime, span: float) -> None:
        """Add ``count`` generated events spread evenly (with jitter) over ``[start, start+span)``."""
        start_ms = (start - _EPOCH) // timedelta(milliseconds=1)
        step = max(1.0, span * 1000.0 / max(count, 1))
        rows = []
        blob, offsets, encode = self._blob, self._offsets, self._generated_json
        for i in range(count):
            n = self._next_n + i
            h = _mix(self.seed * 1_000_003 + n)
            ts = start_ms + int(i * step + (h & 0xFFFF) / 65536.0 * (step - 1))
            rows.append((ts, _mix(h) >> 2, n))
            blob += encode(n, ts)
            offsets.append(len(blob))
        self._next_n += count
        self._insert(rows)

    def add_events(self, events: list[dict[str, Any]]) -> None:
        """Add explicit events (their ``timestamp`` decides where they fall; any time is allowed)."""
        rows = []
        for event in events:
            self._custom.append(event)
            spec = -len(self._custom)
            try:
                ts = event_ms(event)
            except (KeyError, TypeError, ValueError):
                ts = 0  # a malformed event still exists; it sorts first
            rows.append((ts, _mix(self.seed ^ len(self._custom) << 20) >> 2, spec))
        self._insert(rows)

    def add_copies(self, event: dict[str, Any], copies: int) -> None:
        """Add ``copies`` more events equal in every byte to ``event`` (same ``timestamp``): a
        SYSTEM ``logged_in`` twice in one millisecond. Each is served at its own place in the
        API's order, so copies can fall on different pages."""
        self.add_events([dict(event) for _ in range(copies)])

    def make_event(self, at: datetime, **overrides: Any) -> dict[str, Any]:
        """A realistic event at ``at`` (not yet added), for tests that add events later."""
        self._made += 1
        n = 10_000_000 + self._made
        event = self._generated(n, (at - _EPOCH) // timedelta(milliseconds=1))
        event.update(overrides)
        return event

    def _insert(self, rows: list[tuple[int, int, int]]) -> None:
        if not rows:
            return
        with self._data_lock:
            rows.sort()
            if not len(self._ts) or rows[0][0] >= self._ts[-1]:
                for ts, key, spec in rows:
                    self._ts.append(ts)
                    self._key.append(key)
                    self._spec.append(spec)
            else:
                for ts, key, spec in rows:
                    at = bisect.bisect_right(self._ts, ts)
                    self._ts.insert(at, ts)
                    self._key.insert(at, key)
                    self._spec.insert(at, spec)
            self._version += 1
            self._orders.clear()
            self._pages.clear()

    def __len__(self) -> int:
        return len(self._ts)

    def events(self) -> list[dict[str, Any]]:
        """Every event the fake holds, in time order."""
        return [self._event(i) for i in range(len(self._ts))]

    def events_at(self, positions: list[int]) -> list[dict[str, Any]]:
        """The events at these positions of the time order."""
        return [self._event(i) for i in positions]

    def _event(self, i: int) -> dict[str, Any]:
        spec = self._spec[i]
        return self._custom[-spec - 1] if spec < 0 else json.loads(self._encoded(i))

    def _encoded(self, i: int) -> bytes:
        spec = self._spec[i]
        if spec < 0:
            return json.dumps(self._custom[-spec - 1], separators=(",", ":")).encode()
        return bytes(self._blob[self._offsets[spec]:self._offsets[spec + 1]])

    def _generated(self, n: int, ts: int) -> dict[str, Any]:
        return json.loads(self._generated_json(n, ts))

    def _generated_json(self, n: int, ts: int) -> bytes:
        """Generated event ``n`` at ``ts``, encoded straight from a template: serving a
        million-event backlog must cost the fake little, so the benchmark measures the forwarder."""
        h = _mix(self.seed * 7919 + n)
        name = NAMES[h % len(NAMES)]
        actor_type = ACTOR_TYPES[(h >> 8) % len(ACTOR_TYPES)]
        event_type = EVENT_TYPES[(h >> 16) % len(EVENT_TYPES)]
        ip_form = (h >> 24) % 10
        ip = f"{(h >> 32) % 223 + 1}.{(h >> 40) % 256}.{(h >> 48) % 256}.{(h >> 56) % 254 + 1}"
        if ip_form == 0:
            ip = "null"
        elif ip_form < 3:
            ip = f"{ip}, 64.252.{(h >> 12) % 256}.{(h >> 4) % 254 + 1}"
        actor_id = 1_004_000_000_000_000_000 + (h >> 20) % 1_000_000_000_000
        actor_name = f"{name}@example.com" if actor_type != "API_CLIENT" else f"key-{(h >> 3) % 97}"
        other = NAMES[(h >> 36) % len(NAMES)]
        extra = ""
        if event_type == "audit_log::search_issued/1":
            request = json.dumps(json.dumps({"groups": [{"filters": [{"term": "deviceUserName", "operator": "IS",
                                                                      "value": f"{other}@example.com"}]}],
                                             "pgSize": 100, "pgNum": 1}))
            extra = f',"success":true,"type":"query","resultCount":{(h >> 44) % 500},"requestJson":{request}'
        elif event_type in ("audit_log::user_role_added/1", "audit_log::user_deactivated/1"):
            other_id = 1_004_000_000_000_000_000 + (h >> 24) % 1_000_000_000_000
            extra = f',"userId":"{other_id}","userName":"{other}@example.com"'
            if event_type == "audit_log::user_role_added/1":
                role = ("Security Center User", "Alert Manager", "Customer Cloud Admin")[(h >> 50) % 3]
                extra += f',"roleName":"{role}"'
        elif event_type == "audit_log::federation_metadata_updated/1":
            extra = f',"federationId":"fed-{(h >> 40) % 1000}","metadataUrl":"https://idp.example.com/metadata.xml"'
        elif event_type == "audit_log::case_created/1":
            case = (h >> 40) % 100000
            extra = f',"resourceId":"case-{case}","caseNumber":{case}'
        elif event_type == "audit_log::login_failed/1":
            extra = ',"success":false,"reason":"INVALID_CREDENTIALS"'
        return (f'{{"type$":"{event_type}","actorId":"{actor_id}","actorName":"{actor_name}",'
                f'"actorAgent":"{AGENTS[(h >> 28) % len(AGENTS)]}","actorIpAddress":"{ip}",'
                f'"timestamp":"{self._iso(ts)}","actorType":"{actor_type}"{extra}}}').encode()

    def _iso(self, ms: int) -> str:
        second = ms // 1000
        text = self._seconds.get(second)
        if text is None:
            if len(self._seconds) > 100_000:
                self._seconds.clear()
            text = self._seconds[second] = iso_ms(second * 1000)[:-4]
        return f"{text}{ms % 1000:03d}Z"

    # ------------------------------------------------------------------ auth

    def revoke_tokens(self) -> None:
        """Invalidate every token handed out (the next search gets a 401)."""
        with self._lock:
            self._tokens.clear()

    def _oauth(self, req: Request) -> Response:
        header = req.headers.get("Authorization", "")
        ok = False
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                ok = user == self.client_id and password == self.client_secret
            except ValueError:
                ok = False
        if not ok:
            return json_response({"error": "invalid_client", "error_description": "Bad credentials"}, 401,
                                 {"WWW-Authenticate": 'Basic realm="code42"'})
        payload = base64.urlsafe_b64encode(json.dumps(
            {"tenantUid": self.tenant, "sub": self.client_id, "jti": secrets.token_hex(8)}).encode()).rstrip(b"=")
        token = "eyJhbGciOiJSUzI1NiJ9." + payload.decode() + "." + secrets.token_urlsafe(24)
        with self._lock:
            ttl = self.next_token_ttls.pop(0) if self.next_token_ttls else self.token_ttl
            self._tokens[token] = time.monotonic() + ttl
        announced = self.expires_in if self.expires_in is not None else int(self.token_ttl)
        return json_response({"access_token": token, "token_type": "bearer", "expires_in": announced})

    def _authorized(self, req: Request) -> Response | None:
        header = req.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        with self._lock:
            expiry = self._tokens.get(token)
        if expiry is None or expiry < time.monotonic():
            return json_response({"error": "invalid_token", "error_description": "Access token expired or invalid"},
                                 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return None

    # ------------------------------------------------------------------ search

    @staticmethod
    def _bad_request(path: str, message: str) -> Response:
        return json_response({"timestamp": datetime.now(timezone.utc).isoformat(), "status": 400,
                              "error": "Bad Request", "message": message, "path": path}, 400)

    def _parse(self, req: Request, paged: bool) -> dict[str, Any] | Response:
        try:
            body = req.json()
        except ValueError:
            return self._bad_request(req.path, "Malformed JSON request body")
        if not isinstance(body, dict):
            return self._bad_request(req.path, "Request body must be a JSON object")
        if paged:
            page, size = body.get("page"), body.get("pageSize")
            if not isinstance(page, int) or page < 0:
                return self._bad_request(req.path, "page must be an integer >= 0")
            if not isinstance(size, int) or not 1 <= size <= MAX_PAGE_SIZE:
                return self._bad_request(req.path, f"pageSize must be between 1 and {MAX_PAGE_SIZE}")
        date_range = body.get("dateRange")
        if date_range is not None:
            if not isinstance(date_range, dict):
                return self._bad_request(req.path, "dateRange must be an object")
            for key in ("startTime", "endTime"):
                value = date_range.get(key)
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    return self._bad_request(req.path, f"dateRange.{key} must be epoch seconds")
        for key in ("actorIds", "actorIpAddresses", "actorNames", "eventTypes", "resourceIds", "userTypes"):
            value = body.get(key)
            if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                return self._bad_request(req.path, f"{key} must be a list of strings")
        return body

    def _order(self, body: dict[str, Any]) -> list[int]:
        """Positions of the matching events, in the order the API serves them (cached per query)."""
        query = {k: v for k, v in body.items() if k not in ("page", "pageSize")}
        cache_key = json.dumps(query, sort_keys=True)
        with self._data_lock:
            cached = self._orders.get(cache_key)
            if cached is not None:
                return cached
            date_range = body.get("dateRange") or {}
            start, end = date_range.get("startTime"), date_range.get("endTime")
            lo = 0 if start is None else bisect.bisect_left(self._ts, _ceil_ms(start))
            hi = len(self._ts) if end is None else bisect.bisect_left(self._ts, _ceil_ms(end))
            positions: Any = range(lo, max(lo, hi))
            filters = _filters(body)
            if filters:
                positions = [i for i in positions if _matches(self._event(i), filters)]
            key = self._key
            order = sorted(positions, key=key.__getitem__)
            if len(self._orders) > 64:
                self._orders.clear()
            self._orders[cache_key] = order
            return order

    def _search(self, req: Request) -> Response:
        denied = self._authorized(req)
        if denied is not None:
            return denied
        parsed = self._parse(req, paged=True)
        if isinstance(parsed, Response):
            return parsed
        cache_key = req.body
        with self._data_lock:
            cached = self._pages.get(cache_key)
        if cached is not None:
            return Response(body=cached)
        order = self._order(parsed)
        page, size = parsed["page"], parsed["pageSize"]
        first = page * size
        total = len(order)
        if first >= total:
            # Past the end the API leaves "events" out altogether (vendor-apis.md, Gotcha 3); the
            # official CLIs crash on that, so a benchmark against them may ask for "events": [].
            answer: dict[str, Any] = {} if self.omit_events_past_end else {"events": []}
            answer.update(paginationRangeStartIndex=first, paginationRangeEndIndex=first, totalResultCount=total)
            payload = json.dumps(answer).encode()
        else:
            last = min(first + size, total)
            with self._data_lock:
                encoded = [self._encoded(i) for i in order[first:last]]
            payload = (b'{"events":[' + b",".join(encoded) + b'],"paginationRangeStartIndex":' + str(first).encode()
                       + b',"paginationRangeEndIndex":' + str(last).encode()
                       + b',"totalResultCount":' + str(total).encode() + b"}")
        with self._data_lock:
            if len(self._pages) > 32:
                self._pages.clear()
            self._pages[cache_key] = payload
        return Response(body=payload)

    def _count(self, req: Request) -> Response:
        denied = self._authorized(req)
        if denied is not None:
            return denied
        parsed = self._parse(req, paged=False)
        if isinstance(parsed, Response):
            return parsed
        return json_response({"totalResultCount": self._total(parsed)})

    def _total(self, body: dict[str, Any]) -> int:
        """How many events match, without putting them in order (a count must stay cheap)."""
        if _filters(body):
            return len(self._order(body))
        date_range = body.get("dateRange") or {}
        start, end = date_range.get("startTime"), date_range.get("endTime")
        with self._data_lock:
            lo = 0 if start is None else bisect.bisect_left(self._ts, _ceil_ms(start))
            hi = len(self._ts) if end is None else bisect.bisect_left(self._ts, _ceil_ms(end))
        return max(0, hi - lo)


def _ceil_ms(seconds: float) -> int:
    """The first whole millisecond at or after ``seconds`` (event times are whole ms)."""
    ms = seconds * 1000.0
    whole = int(ms)
    return whole if whole >= ms - 1e-6 else whole + 1


def _filters(body: dict[str, Any]) -> list[tuple[str, frozenset[str]]]:
    fields = (("actorIds", "actorId"), ("actorNames", "actorName"), ("eventTypes", "type$"),
              ("userTypes", "actorType"), ("resourceIds", "resourceId"), ("actorIpAddresses", "actorIpAddress"))
    return [(field, frozenset(body[key])) for key, field in fields if body.get(key)]


def _matches(event: dict[str, Any], filters: list[tuple[str, frozenset[str]]]) -> bool:
    for field, wanted in filters:
        value = event.get(field)
        if field == "actorIpAddress":
            ips = {ip.strip() for ip in str(value).split(",")}
            if not ips & wanted:
                return False
        elif value not in wanted:
            return False
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the local Incydr audit-log fake until killed.")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--span", type=float, default=86_400.0, help="seconds the events spread over, ending ~2 min ago")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--client-id", default="key-1")
    parser.add_argument("--client-secret", default="secret-1")
    parser.add_argument("--empty-events-past-end", action="store_true",
                        help='answer "events": [] past the end instead of leaving the key out (the official CLIs need it)')
    parser.add_argument("--identical", type=int, default=0,
                        help="give this many of the events 1-3 copies equal in every byte (seeded)")
    parser.add_argument("--ready-file")
    args = parser.parse_args(argv)
    fake = IncydrFake(events=args.events, seed=args.seed, span=args.span, client_id=args.client_id,
                      client_secret=args.client_secret, omit_events_past_end=not args.empty_events_past_end,
                      port=args.port)
    if args.identical:
        picker = random.Random(args.seed)
        for n, i in enumerate(sorted(picker.sample(range(len(fake)), min(args.identical, len(fake))))):
            fake.add_copies(fake.events_at([i])[0], 1 + n % 3)
    serve_forever_cli(fake, args.ready_file)


if __name__ == "__main__":
    main()
