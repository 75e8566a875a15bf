"""Agilicus audit sources: ``agilicus`` (``GET /v1/audits``) and ``agilicus_auth`` (``GET /v1/auth_audits``).

The API offers no cursor, no page token and no record id: only ``limit`` (at most 500) and a
``dt_from`` (inclusive) / ``dt_to`` (exclusive) window, answered with the newest ``limit``
records of that window. So each poll walks closed windows upward from the cursor to
``now - settle_delay``. A window whose answer is full (``len == limit``) may hold more than
came back; it is halved until every part answers short, and the next window's width adapts to
the density just seen. A single microsecond that holds more than 500 records cannot be read
whole through this API at all: that is logged at ERROR and counted in
``siem_forwarder_agilicus_window_overflow_total``, the records that did come back are
delivered, and the poll moves on rather than loop.

Each poll re-reads ``lookback`` seconds before the cursor for late-arriving records; records
already delivered are recognised by the SHA-256 of their canonical JSON (which is also their
event ``id``), kept in the cursor (see :mod:`siem_forwarder_plugins.sources.agilicus.cursor`).
Identical records are occurrences (``<digest>-<n>``), numbered within one answer: a window is
always read whole in one request and identical records share their instant, so every copy of a
record is in the same answer.

Auth is a bearer ``token``, or a ``token_file`` that an outside job rewrites as tokens expire:
the file is read again whenever it changes and whenever the API answers 401.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from forwarder_core import hookimpl
from forwarder_core.plugin_api import (
    Auth,
    AuthError,
    ComponentConfig,
    ConfigError,
    Context,
    HttpError,
    Page,
    ResponseError,
    Source,
    SourceError,
    content_id,
    format_time,
    iso_us,
    parse_time,
    parse_us,
    read_secret_file,
    reveal,
    source_options_schema,
    to_us,
)
from siem_forwarder_plugins.sources.agilicus.cursor import HASH_CHARS, WindowCursor
from siem_forwarder_plugins.sources.windows import MAX_SEEN

if TYPE_CHECKING:
    from requests import Response

    from forwarder_core.plugin_api import HttpClient

API_MAX_LIMIT = 500
OVERFLOW_METRIC = "agilicus_window_overflow_total"
_RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
_STRING = {"type": "string", "minLength": 1}


# --------------------------------------------------------------------------- auth


class AgilicusAuth(Auth):
    """``Authorization: Bearer`` from a fixed token, or from a file re-read when it changes.

    Agilicus access tokens are short-lived JWTs that nothing in the API renews, so long runs
    hand the forwarder a file that an outside job (the agilicus CLI, a systemd timer) rewrites.
    The file's identity (inode, size, mtime) is checked before each request; a 401 re-reads
    it regardless, in case it was rewritten within the file system's timestamp granularity.
    """

    def __init__(self, *, token: Any = None, token_file: str | None = None, component: str = "agilicus"):
        self.component = component
        self.path = token_file
        self._token = reveal(token) or ""
        self._stamp: tuple[int, int, int] | None = None
        if self.path:
            self._load()
        elif not self._token:
            raise AuthError(f"{component}: neither token nor token_file is set")

    def _load(self) -> None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
            text = read_secret_file(self.path)
        except OSError as exc:
            raise AuthError(f"{self.component}: cannot read token_file {self.path}: {exc.strerror}") from None
        except ValueError as exc:  # not a regular file, too large, a control character: never its content
            raise AuthError(f"{self.component}: {exc}") from None
        self._token = text
        self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns)

    def _changed(self) -> bool:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except OSError:
            return False  # keep the token we have; a 401 will say whether it still works
        return (st.st_ino, st.st_size, st.st_mtime_ns) != self._stamp

    def headers(self, client: "HttpClient") -> Mapping[str, str]:
        if self.path and self._changed():
            self._load()
        return {"Authorization": f"Bearer {self._token}"}

    def refresh(self, client: "HttpClient", response: Response | None = None) -> None:
        if not self.path:
            raise AuthError(
                f"{self.component}: the Agilicus API refused the token (401); tokens are short-lived, "
                "so give a token_file that is renewed outside the forwarder"
            )
        old = self._token
        self._load()
        if self._token == old:
            raise AuthError(
                f"{self.component}: the Agilicus API refused the token in {self.path} (401) "
                "and the file holds no newer one"
            )


# --------------------------------------------------------------------------- sources


class _AgilicusSource(Source):
    """What both endpoints share: windows, splitting, de-duplication, auth. Subclasses name the
    endpoint, its filters and the mapping to the normalized event."""
    declared_metrics = {
        OVERFLOW_METRIC: ("counter", "Instants holding more Agilicus records than the API returns for one query "
                                     "(records may be missed there)."),
    }

    vendor = "Agilicus"
    path: ClassVar[str]
    list_key: ClassVar[str]
    filters: ClassVar[tuple[str, ...]]

    @staticmethod
    def _schema(filters: tuple[str, ...], descriptions: dict[str, str]) -> dict[str, Any]:
        # ``required: token`` also covers ``token_file``: the core reads the file into ``token``
        # before validating, and keeps ``token_file`` (declared here) so the file can be re-read.
        return source_options_schema(
            required=["token"],
            properties={
                "token": {**_STRING, "description": "Bearer access token (a JWT)."},
                "token_file": {**_STRING, "description": "File holding the access token; re-read when it "
                                                         "changes and on every 401."},
                "org_id": {**_STRING, "description": "Organisation whose records to read (default: the token's)."},
                **{f: {**_STRING, "description": descriptions[f]} for f in filters},
            },
            base_url="https://api.agilicus.com",
            page_size_max=API_MAX_LIMIT,
        )

    def __init__(self, config: ComponentConfig, context: Context):
        super().__init__(config, context)
        opts = self.options
        token_file = opts.get("token_file")
        if token_file is not None and not isinstance(token_file, str):
            token_file = reveal(token_file)
        if not opts.get("token") and not token_file:
            raise ConfigError([f"{config.file or 'config'}:{config.line}: $.options: 'token' or 'token_file' is required"])
        self.auth = AgilicusAuth(token=opts.get("token"), token_file=token_file, component=self.name)
        self.http = context.http(opts, auth=self.auth)
        self.limit = int(opts.get("page_size", API_MAX_LIMIT))
        self.settle_us = int(float(opts.get("settle_delay", 60)) * 1_000_000)
        self.lookback_us = int(float(opts.get("lookback", 300)) * 1_000_000)
        self.params = {k: str(opts[k]) for k in ("org_id", *self.filters) if opts.get(k) is not None}
        self.clock: Callable[[], float] = time.time

    # ------------------------------------------------------------------ polling

    def cursor_time(self, cursor: Any) -> datetime | None:
        """The end of the last window read completely (both endpoints share the cursor)."""
        end = cursor.get("end") if isinstance(cursor, dict) else None
        return parse_time(end) if isinstance(end, str) else None

    def poll(self, cursor: Any | None) -> Iterator[Page]:
        now_us = int(self.clock() * 1_000_000)
        window_end = now_us - self.settle_us
        if cursor is None:
            start = self.config.start_time or datetime.now(timezone.utc) - timedelta(hours=24)
            state = WindowCursor.begin(to_us(start))
        else:
            try:
                state = WindowCursor.load(cursor)
            except ValueError as exc:
                raise SourceError(f"{self.name}: {exc}; reset it with `siem-forwarder state reset {self.name}`") from None
        keep_from = window_end - self.lookback_us
        lo = state.reread_from(self.lookback_us)
        width = window_end - lo
        good_width = 1_000_000  # width of the last window that answered short; where to resume after an instant
        while lo < window_end:
            if self.context.stop.is_set():
                return
            hi = min(window_end, lo + width)
            records = self._fetch(lo, hi, self.limit)
            if len(records) >= self.limit:
                if hi - lo > 1:
                    width = _narrower(records, lo, hi)
                    continue
                records = self._read_instant(state, lo, records)
                width = good_width
            else:
                if hi - lo > 1:
                    good_width = hi - lo
                width = _next_width(hi - lo, len(records), self.limit)
            fresh, ids, already, newest = self._fresh(records, state, lo, keep_from)
            state.advance(hi, keep_from)
            dropped = state.cap(MAX_SEEN)
            if dropped:
                self.log.warning(
                    "%s: more than %d records inside lookback; forgot the %d oldest hashes, so late "
                    "records older than %s are no longer looked for",
                    self.name, MAX_SEEN, dropped, iso_us(state.floor),
                )
            # Records below floor have lost their hashes: a re-read there could repeat them.
            lo = max(hi, min(state.floor, window_end))
            if fresh or already or lo >= window_end:
                yield Page(fresh, state.dump(), newest, ids=ids, already_delivered=already)

    def _read_instant(self, state: WindowCursor, at: int, records: list[Any]) -> list[Any]:
        """A full answer for a one-microsecond window: ask for the API's maximum, then give up loudly."""
        if self.limit < API_MAX_LIMIT:
            records = self._fetch(at, at + 1, API_MAX_LIMIT)
            if len(records) < API_MAX_LIMIT:
                return records
        if at in state.reported:
            self.log.debug("%s: instant %s still holds more than %d records", self.name, iso_us(at), API_MAX_LIMIT)
            return records
        state.reported.add(at)
        self.metrics.inc(OVERFLOW_METRIC, source=self.name)
        self.log.error(
            "%s: %d or more records share the instant %s, more than the Agilicus API returns for one "
            "request (limit %d) and a window cannot be narrower than that instant; delivering the %d "
            "it returned, the rest of that instant cannot be read through %s",
            self.name, len(records), iso_us(at), API_MAX_LIMIT, len(records), self.path,
        )
        return records

    def _fetch(self, lo: int, hi: int, limit: int) -> list[Any]:
        params = {**self.params, "dt_from": iso_us(lo), "dt_to": iso_us(hi), "limit": limit}
        try:
            body = self.http.get_json(self.path, params=params)
        except (HttpError, ResponseError) as exc:
            raise SourceError(f"{self.name}: {exc}") from exc
        records = body.get(self.list_key) if isinstance(body, dict) else None
        if not isinstance(records, list):
            keys = sorted(body)[:8] if isinstance(body, dict) else type(body).__name__
            raise SourceError(f"{self.name}: GET {self.path} answered without an {self.list_key!r} list (got {keys})")
        return records

    def _fresh(self, records: list[Any], state: WindowCursor, lo: int,
               keep_from: int) -> tuple[list[Any], list[str | None], int, datetime | None]:
        """The records not delivered before with their occurrence ids, and how many were.

        Remembers the records a later re-read may see again (those inside the poll's lookback).
        """
        fresh: list[Any] = []
        ids: list[str | None] = []
        already = 0
        newest = lo - 1
        met: dict[str, int] = {}
        for raw in records:
            try:
                t = parse_us(raw["time"])
            except (KeyError, TypeError, ValueError):
                t = lo  # the raw schema check will quarantine it; its window start stands in
            try:
                digest = content_id(raw)
                cid: str | None = digest
                key = digest[:HASH_CHARS]
            except (TypeError, ValueError):  # NaN or Infinity: no canonical JSON, so normalize quarantines it
                cid, key = None, hashlib.sha256(repr(raw).encode()).hexdigest()[:HASH_CHARS]
            n = met[key] = met.get(key, 0) + 1
            if n <= state.seen.delivered(key):
                already += 1
                continue
            if t >= keep_from:
                state.seen.add(key, t, n)
            if cid is not None and n > 1:
                cid = f"{cid}-{n}"
            if t > newest:
                newest = t
            fresh.append(raw)
            ids.append(cid)
        newest_dt = datetime.fromtimestamp(newest / 1_000_000, tz=timezone.utc) if fresh else None
        return fresh, ids, already, newest_dt

    def check_connection(self) -> str:
        now = datetime.now(timezone.utc)
        self._fetch(to_us(now - timedelta(minutes=5)), to_us(now), 1)
        return f"read {self.path} at {self.http.base_url}"


def _narrower(records: list[Any], lo: int, hi: int) -> int:
    """The width to try after ``[lo, hi)`` came back full: cut just before a dominant instant.

    When most of a full answer shares one time, that instant is what overflows the window, so
    the next window stops right before it (and the one after reads it alone); otherwise halve.
    Any cut is correct, whatever order the API returns records in; this one only saves requests.
    """
    counts: Counter[int] = Counter()
    for raw in records:
        try:
            counts[parse_us(raw["time"])] += 1
        except (KeyError, TypeError, ValueError):
            pass
    if counts:
        instant, count = counts.most_common(1)[0]
        if 2 * count >= len(records) and lo <= instant < hi:
            return max(1, instant - lo)
    return max(1, (hi - lo) // 2)


def _next_width(width: int, count: int, limit: int) -> int:
    """Aim the next window at about 60% of ``limit`` records, judging by the density just seen."""
    if count == 0:
        return width * 4
    factor = min(4.0, max(0.5, 0.6 * limit / count))
    return max(1, int(width * factor))


def _timestamp(raw: Any) -> str:
    if not isinstance(raw, dict):
        raise TypeError(f"an Agilicus record is a JSON object, not {type(raw).__name__}")
    value = raw["time"]
    if isinstance(value, str) and _RFC3339_Z.match(value):
        return value
    return format_time(parse_time(value))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class AgilicusAudits(_AgilicusSource):
    """``GET /v1/audits``: changes made through the Agilicus API."""

    type_name = "agilicus"
    product = "Audit"
    dataset = "agilicus.audit"
    splunk_sourcetype = "agilicus:audit"
    cef_name = "Agilicus audit event"
    path = "/v1/audits"
    list_key = "audits"
    event_schema = "agilicus.event.schema.json"
    filters = ("user_id", "action", "api_name", "target_resource_type")
    options_schema = _AgilicusSource._schema(filters, {
        "user_id": "Only records of this user id.",
        "action": "Only this action (e.g. CREATE, UPDATE, DELETE).",
        "api_name": "Only this API (e.g. users, applications).",
        "target_resource_type": "Only records about this resource type.",
    })

    _TYPES: ClassVar[dict[str, list[str]]] = {
        "CREATE": ["creation"], "POST": ["creation"], "UPDATE": ["change"], "PUT": ["change"],
        "PATCH": ["change"], "DELETE": ["deletion"],
    }
    _SEVERITY: ClassVar[dict[str, int]] = {"DELETE": 5, "CREATE": 3, "UPDATE": 3, "PUT": 3, "PATCH": 3, "POST": 3}
    _IAM: ClassVar[frozenset[str]] = frozenset({"users", "groups", "roles", "permissions", "user", "group",
                                                "service_accounts", "api_keys", "tokens"})

    def normalize(self, raw: Any) -> dict[str, Any]:
        timestamp = _timestamp(raw)
        user = _text(raw.get("user_id"))
        action = _text(raw.get("action"))
        verb = (action or "").upper()
        resource = _text(raw.get("target_resource_type"))
        target_name = _text(raw.get("target_resource_name"))
        message = _text(raw.get("description")) or " ".join(
            x for x in (action, resource, target_name or _text(raw.get("target_id"))) if x
        ) or None
        return self.make_event(
            raw,
            timestamp=timestamp,
            action=action,
            category=["iam"] if resource in self._IAM else ["configuration"],
            type=self._TYPES.get(verb, ["info"]),
            severity=self._SEVERITY.get(verb, 2),
            actor={"id": user, "ip": _text(raw.get("source_ip")), "type": "user" if user else None},
            target={"id": _text(raw.get("target_id")), "type": resource, "name": target_name},
            organization={"id": _text(raw.get("org_id"))},
            message=message,
        )


class AgilicusAuthAudits(_AgilicusSource):
    """``GET /v1/auth_audits``: every step of every sign-in through Agilicus."""

    type_name = "agilicus_auth"
    product = "Authentication Audit"
    dataset = "agilicus.auth_audit"
    splunk_sourcetype = "agilicus:auth_audit"
    cef_name = "Agilicus authentication event"
    path = "/v1/auth_audits"
    list_key = "auth_audits"
    event_schema = "agilicus_auth.event.schema.json"
    filters = ("user_id", "event_name", "result", "upstream_idp", "client_id")
    options_schema = _AgilicusSource._schema(filters, {
        "user_id": "Only records of this user id.",
        "event_name": "Only this step (e.g. Token, Policy Evaluation).",
        "result": "Only this result (e.g. Success, Denied).",
        "upstream_idp": "Only sign-ins through this upstream identity provider.",
        "client_id": "Only sign-ins into this OIDC client.",
    })

    _OUTCOME: ClassVar[dict[str, str]] = {
        "Success": "success", "CodeIssued": "success",
        "Failure": "failure", "Denied": "failure", "Timeout": "failure", "SessionExpired": "failure",
    }
    _SEVERITY: ClassVar[dict[str, int]] = {
        "Denied": 6, "Failure": 5, "Timeout": 4, "SessionExpired": 3, "DoMfa": 2,
    }

    def normalize(self, raw: Any) -> dict[str, Any]:
        timestamp = _timestamp(raw)
        user = _text(raw.get("user_id"))
        event_name = _text(raw.get("event_name")) or _text(raw.get("event"))
        result = _text(raw.get("result"))
        outcome = self._OUTCOME.get(result or "", "unknown")
        if result == "SessionExpired":
            kind = ["end"]
        elif outcome == "success" and event_name == "Token":
            kind = ["start"]
        else:
            kind = ["info"]
        app = _text(raw.get("application_name"))
        upstream = _text(raw.get("upstream_user_id"))
        client = _text(raw.get("client_id"))
        message = " ".join(x for x in (event_name or "authentication", result or "") if x)
        if app:
            message += f" for {app}"
        return self.make_event(
            raw,
            timestamp=timestamp,
            action=event_name,
            category=["authentication"],
            type=kind,
            outcome=outcome,
            severity=self._SEVERITY.get(result or "", 1 if outcome == "success" else 2),
            actor={"id": user, "ip": _text(raw.get("source_ip")), "type": "user" if user else None,
                   "email": upstream if upstream and "@" in upstream else None,
                   "user_agent": _text(raw.get("user_agent"))},
            target={"id": client, "type": "application", "name": app} if client or app else None,
            organization={"id": _text(raw.get("org_id")), "name": _text(raw.get("org_name"))},
            message=message,
        )


@hookimpl
def forwarder_register_sources(registry: Any) -> None:
    registry.add(AgilicusAudits)
    registry.add(AgilicusAuthAudits)
