"""Source ``incydr``: the Code42 Incydr audit log (``POST /v1/audit/search-audit-log``).

Incydr's search is a 0-based page window over a live result set, with no sort order and no
event id (vendor-apis.md §1 and Gotchas 1-5). So this source:

* reads closed ``dateRange`` windows (:mod:`siem_forwarder_plugins.sources.windows`) that end
  ``settle_delay`` before now and start ``lookback`` early, de-duplicating on a hash of each
  event's canonical JSON, identical events being numbered occurrences (``<digest>-<n>``);
* holds back a copy of an event that an earlier page of the same pass already showed until it
  is confirmed (a shifted page shows one event twice, which looks just like a real copy). Pages
  shift only when events arrive or leave while paging, so the copies are real when the window
  counts the same before and after the pass and the pass met that many events; otherwise the
  window is read again, and they are real when a pass holds the same ones as the pass before
  and meets as many events as the count says (or when the re-reads run out); after a
  restart in the middle of a window it counts that window's earlier pages again, delivering
  none, so copies split across pages keep their numbers;
* keeps each window small enough to page safely: it asks ``search-results-count`` first and
  narrows a window that holds more than :attr:`IncydrSource.WINDOW_PAGES` pages;
* after a window read over several requests, counts again: if the count differs from the
  distinct events met (an event arrived or left while paging, which shifts pages), it reads the
  window again, skipping what it already delivered;
* ends a window on a short page or on a page without ``events``;
* authenticates with OAuth client credentials (:class:`IncydrOAuth`), renewing the token before
  it expires and once on a 401.
"""
from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from forwarder_core import hookimpl
from forwarder_core.plugin_api import (
    Auth,
    AuthError,
    ForwarderError,
    HttpError,
    Page,
    PageBody,
    SourceError,
    content_id,
    format_time,
    ms_datetime,
    now_ms,
    parse_ms,
    parse_time,
    register_secret_text,
    reveal,
    source_options_schema,
)
from siem_forwarder_plugins.sources.windows import KEY_CHARS, EdgeDedup, WindowCursor, WindowedSource, WindowTally

if TYPE_CHECKING:
    from requests import Response

    from forwarder_core.plugin_api import ComponentConfig, Context, HttpClient

SEARCH = "/v1/audit/search-audit-log"
COUNT = "/v1/audit/search-results-count"
TOKEN = "/v1/oauth"
USER_TYPES = ("USER", "SUPPORT_USER", "API_CLIENT", "SYSTEM", "UNKNOWN")
FILTERS = {  # option -> request field
    "actor_ids": "actorIds",
    "actor_ip_addresses": "actorIpAddresses",
    "actor_names": "actorNames",
    "event_types": "eventTypes",
    "resource_ids": "resourceIds",
    "user_types": "userTypes",
}
Held = tuple[Any, str, int]  # a raw event, its digest, its time (ms)


def _string_list(description: str, items: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "items": items or {"type": "string", "minLength": 1},
            "description": description}


class IncydrOAuth(Auth):
    """OAuth client credentials: ``POST /v1/oauth`` with HTTP Basic and an empty body.

    The token is fetched at first use and renewed a margin before ``expires_in`` runs out (a
    tenth of its life, at most a minute), so a long poll never sends a token about to expire;
    the HTTP client calls :meth:`refresh` once on a 401 (a token revoked early, clock skew).
    """

    def __init__(self, client_id: str, client_secret: str, *, clock: Callable[[], float] = time.monotonic):
        self._basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        register_secret_text(self._basic[6:])
        self._clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self.fetches = 0

    def headers(self, client: "HttpClient") -> Mapping[str, str]:
        if self._token is None or self._clock() >= self._renew_at:
            self.refresh(client)
        return {"Authorization": f"Bearer {self._token}"}

    def refresh(self, client: "HttpClient", response: Response | None = None) -> None:
        received = self._clock()
        response = client.request("POST", TOKEN, headers={"Authorization": self._basic}, data=b"",
                                  auth_required=False, expect_json=True)
        body = response.parsed  # type: ignore[attr-defined]
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthError(f"POST {TOKEN}: the answer holds no access_token")
        try:
            lifetime = float(body.get("expires_in") or 900)
        except (TypeError, ValueError):
            lifetime = 900.0
        register_secret_text(token)
        self._token = token
        self._renew_at = received + lifetime - min(60.0, lifetime / 10)
        self.fetches += 1


def _first_ip(value: Any) -> str | None:
    """The first address of ``actorIpAddress`` ("a, b" lists several; "null" means none)."""
    if not isinstance(value, str):
        return None
    first = value.split(",", 1)[0].strip()
    return None if not first or first == "null" else first


Kind = tuple[list[str], list[str], int, bool, str]


def _classify(event_type: str) -> Kind:
    """ECS category, ECS type, severity (0-10), "is a failure", and the short name of an event type."""
    name = event_type.split("::")[-1].split("/")[0]
    return _kind(name) + (name,)


def _kind(name: str) -> tuple[list[str], list[str], int, bool]:
    if "failed" in name or "failure" in name:
        return (["authentication"] if "log" in name or "auth" in name else ["configuration"]), ["start"], 6, True
    if "logged_in" in name or "login" in name:
        return ["authentication"], ["start"], 3, False
    if "logged_out" in name or "logout" in name:
        return ["authentication"], ["end"], 2, False
    if "search" in name or "export" in name or "download" in name:
        return ["database"], ["access"], 3, False
    kind = "creation" if ("created" in name or "added" in name) else "deletion" if (
        "deleted" in name or "removed" in name or "deactivated" in name) else "change"
    if "user" in name or "role" in name:
        return ["iam"], ["user", kind], 5, False
    if "federation" in name or "sso" in name or "setting" in name or "api_client" in name:
        return ["configuration"], [kind], 6, False
    return ["configuration"], [kind], 4, False


class IncydrSource(WindowedSource):
    """Code42 Incydr audit log; see the module docstring."""
    declared_metrics = {
        "source_window_rereads_total": ("counter", "Incydr windows read again because they changed while "
                                                   "being paged (events met differ from the count)."),
    }

    type_name = "incydr"
    vendor = "Code42"
    product = "Incydr"
    event_schema = "incydr.event.schema.json"
    dataset = "incydr.audit"
    splunk_sourcetype = "incydr:audit"
    cef_name = "Incydr audit event"
    severity = 5
    options_schema = source_options_schema(
        base_url=None,
        page_size_max=10_000,
        required=["client_id", "client_secret"],
        properties={
            "base_url": {"type": "string", "pattern": "^https?://[^\\s]+$",
                         "description": "The tenant's API host, e.g. https://api.us.code42.com (console.<r> -> api.<r>)."},
            "client_id": {"type": "string", "minLength": 1, "description": "API client id."},
            "client_secret": {"type": "string", "minLength": 1, "description": "API client secret."},
            "event_types": _string_list("Only these event types (type$), e.g. audit_log::logged_in/1."),
            "actor_ids": _string_list("Only events by these actor ids."),
            "actor_names": _string_list("Only events by these actor names."),
            "actor_ip_addresses": _string_list("Only events from these IP addresses."),
            "resource_ids": _string_list("Only events about these resource ids."),
            "user_types": _string_list("Only these actor types.", {"enum": list(USER_TYPES)}),
        },
    )

    WINDOW_PAGES = 10
    """A window that holds more than this many pages is narrowed before it is read."""
    MAX_REREADS = 2

    def __init__(self, config: "ComponentConfig", context: "Context"):
        super().__init__(config, context)
        opts = self.options
        self.auth = IncydrOAuth(reveal(opts["client_id"]) or "", reveal(opts["client_secret"]) or "")
        self.http = context.http(opts, auth=self.auth)
        # The SDK sends every key, null where unset; so do we.
        self._filters: dict[str, Any] = {field: (list(opts[opt]) if opt in opts else None)
                                         for opt, field in FILTERS.items()}
        self._span: int | None = None
        self._count_works = True
        self._tally: tuple[tuple[int, int], WindowTally] | None = None
        self._held: list[Held] = []
        self._last_held: list[str] = []  # the digests the previous pass of the open window held
        self._kinds: dict[str, Kind] = {}

    # ------------------------------------------------------------------ polling

    def poll(self, cursor: Any | None) -> Iterator[Page]:
        # A poll resumes from the committed cursor: what this process met on pages after it (a
        # page fetched ahead, one whose delivery failed) must not count as delivered.
        self._tally = None
        return super().poll(cursor)

    def open_window(self, start: int, end: int) -> dict[str, Any]:
        first, last, count = self._narrow(start, end)
        return {"start": first, "end": last, "page": 0, "met": 0, "pass": 0, "count": count}

    def _narrow(self, start: int, end: int) -> tuple[int, int, int | None]:
        """Shrink ``[start, end)`` until it holds at most WINDOW_PAGES pages (counted, not read).

        Returns the window and how many events it held when counted (None: no count endpoint).
        """
        cap = self.page_size * self.WINDOW_PAGES
        limited = self._span is not None and start + 2 * self._span < end
        if limited:
            end = start + 2 * self._span  # type: ignore[operator]
        narrowed = False
        while True:
            count = self._count(start, end)
            if count is None or count <= cap or end - start <= 1:
                break
            narrowed = True
            end = start + max(1, (end - start) * cap * 3 // (4 * count))
        self._span = end - start if (narrowed or limited) else None
        return start, end, count

    def read_window(self, state: WindowCursor) -> Iterator[Page]:
        win = state.window
        assert win is not None
        start, end = win["start"], win["end"]
        base = {**self._filters, "dateRange": {"startTime": start / 1000, "endTime": end / 1000},
                "pageSize": self.page_size}
        if self._tally is None or self._tally[0] != (start, end):
            self._tally = ((start, end), WindowTally())
            self._held, self._last_held = [], []
            if win["page"]:
                self._recount_pages(base, win["page"], end)
        tally = self._tally[1]
        dedup = EdgeDedup(state, end, self.lookback, tally=tally)
        while not self.context.stop.is_set():
            answer, data = self._search({**base, "page": win["page"]})
            events = self._events(answer)
            held_before = len(self._held)
            fresh, ids, newest, picks = self._admit(events, dedup, end)
            body = _body(data, picks)
            held = len(self._held) - held_before
            win["met"] = sum(tally.met.values()) - len(self._held)
            win["page"] += 1
            counted = win.get("count")
            if counted is not None and win["page"] > counted // self.page_size + self.WINDOW_PAGES + 1:
                raise SourceError(f"{self.name}: Incydr served {win['page']} full pages for a window of {counted} "
                                  f"events ({ms_datetime(start)}..{ms_datetime(end)}); giving up on this poll")
            if len(events) < self.page_size:
                if win["page"] > 1 and win["pass"] < self.MAX_REREADS and not self._confirmed(win):
                    total = self._count(start, end)
                    if total is not None and total != win["met"] and not self._stable(win, total) \
                            and not self._confirmed(win, total):
                        self.log.info("%s: window %s..%s changed while paging (%d events met, %d counted); "
                                      "reading it again", self.name, ms_datetime(start), ms_datetime(end),
                                      win["met"], total)
                        self.metrics.inc("source_window_rereads_total", source=self.name)
                        win["pass"] += 1
                        win["page"] = 0
                        win["count"] = total
                        tally.new_pass()
                        self._last_held = sorted(cid for _, cid, _ in self._held)
                        self._held = []  # the new pass meets them again, and the recount decides
                        yield Page(fresh, state.dump(), newest, ids=ids,
                                   already_delivered=dedup.take_already(), held_back=held, body=body)
                        continue
                released = len(self._held)
                newest = self._release_held(dedup, fresh, ids, newest, picks)
                state.finish_window(end, self.lookback)
                self._tally = None
                self._last_held = []
                # held_back is what this page kept minus what it now releases, so the ledger of
                # every page balances and the window's held copies net out once delivered
                yield Page(fresh, state.dump(), newest, ids=ids, already_delivered=dedup.take_already(),
                           held_back=held - released, body=body)
                return
            yield Page(fresh, state.dump(), newest, ids=ids, already_delivered=dedup.take_already(),
                       held_back=held, body=body)

    def _stable(self, win: dict[str, Any], total: int) -> bool:
        """True when the window's result set did not change while this pass paged it: counted the
        same before and after, and the pass met exactly that many events. Pages shift only when
        events arrive or leave, so every held copy of such a pass is a real one."""
        return bool(self._held) and total == win.get("count") and total == win["met"] + len(self._held)

    def _confirmed(self, win: dict[str, Any], total: int | None = -1) -> bool:
        """True when this pass's held copies are real: the previous pass held exactly the same
        ones and this pass met every event the count holds (a shifted page does not repeat itself)."""
        if not self._held or sorted(cid for _, cid, _ in self._held) != self._last_held:
            return False
        return total == -1 or total == win["met"] + len(self._held)

    def _events(self, answer: dict[str, Any]) -> list[Any]:
        events = answer.get("events")
        if events is None:
            return []
        if not isinstance(events, list):
            raise SourceError(f"{self.name}: {SEARCH}: 'events' is a {type(events).__name__}, not a list")
        return events

    def _recount_pages(self, base: dict[str, Any], pages: int, end: int) -> None:
        """After a restart inside a window: count its first ``pages`` pages again, delivering none.

        Their events were delivered before the restart (their pages' cursors were committed), but
        how many copies of each were met lives only in memory; a copy on a later page needs it
        to get its number. Copies that were still held back are held again.
        """
        tally = self._tally[1] if self._tally is not None else WindowTally()
        for page in range(pages):
            events = self._events(self._post(SEARCH, {**base, "page": page}))
            on_page: set[str] = set()
            for raw in events:
                try:
                    cid = content_id(raw)
                except (TypeError, ValueError):
                    continue
                key = cid[:KEY_CHARS]
                n = tally.met.get(key, 0) + 1
                tally.met[key] = n
                if n > 1 and key not in on_page:
                    self._held.append((raw, cid, self._time(raw, end)))
                    continue
                on_page.add(key)
                tally.most[key] = max(tally.most.get(key, 0), n)

    @staticmethod
    def _time(raw: Any, end: int) -> int:
        stamp = raw.get("timestamp") if isinstance(raw, dict) else None
        try:
            return parse_ms(stamp) if isinstance(stamp, str) else end
        except ValueError:
            return end

    def _admit(self, events: list[Any], dedup: EdgeDedup, end: int
               ) -> tuple[list[Any], list[str | None], datetime | None, list[int]]:
        """The page's new events, their occurrence ids, the newest one's time, and where each
        is on the page (``PageBody.picks``); copies first met on an earlier page are held."""
        fresh: list[Any] = []
        ids: list[str | None] = []
        picks: list[int] = []
        newest = -1
        tally = dedup.tally
        on_page: set[str] = set()
        for index, raw in enumerate(events):
            try:
                cid = content_id(raw)
            except (TypeError, ValueError):
                fresh.append(raw)  # unhashable (NaN...): let normalize fail and the core quarantine it
                ids.append(None)
                picks.append(index)
                continue
            t = self._time(raw, end)
            key = cid[:KEY_CHARS]
            if key not in on_page and tally.met.get(key, 0) and tally.met[key] >= tally.most.get(key, 0):
                tally.met[key] += 1  # a copy of an event an earlier page showed: wait for the recount
                self._held.append((raw, cid, t))
                continue
            on_page.add(key)
            oid = dedup.occurrence(cid, t)
            if oid is not None:
                fresh.append(raw)
                ids.append(oid)
                picks.append(index)
                if t > newest:
                    newest = t
        return fresh, ids, (ms_datetime(newest) if newest >= 0 else None), picks

    def _release_held(self, dedup: EdgeDedup, fresh: list[Any], ids: list[str | None],
                      newest: datetime | None, picks: list[int]) -> datetime | None:
        """The window's pass is confirmed: the held copies are real; number them and deliver the new."""
        held, self._held = self._held, []
        tally = dedup.tally
        for _raw, cid, _ in held:
            tally.met[cid[:KEY_CHARS]] -= 1  # occurrence() counts it again
        latest = -1
        for raw, cid, t in held:
            oid = dedup.occurrence(cid, t)
            if oid is not None:
                fresh.append(raw)
                ids.append(oid)
                picks.append(-1)  # met on an earlier page: it crosses to a worker as it is
                latest = max(latest, t)
        if latest >= 0 and (newest is None or ms_datetime(latest) > newest):
            return ms_datetime(latest)
        return newest

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request(path, body)[0]

    def _search(self, body: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """A search page decoded, and the bytes it was decoded from (a worker decodes them again)."""
        return self._request(SEARCH, body)

    def _request(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        try:
            response = self.http.request("POST", path, json_body=body, expect_json=True)
        except ForwarderError as exc:
            raise SourceError(_failed(self.name, path, exc)) from None
        answer = response.parsed  # type: ignore[attr-defined]
        if not isinstance(answer, dict):
            raise SourceError(f"{self.name}: Incydr {path}: expected a JSON object, got {type(answer).__name__}")
        return answer, response.content

    def _count(self, start: int, end: int) -> int | None:
        """Events in ``[start, end)``; None when this tenant does not offer the count endpoint."""
        if not self._count_works:
            return None
        body = {**self._filters, "dateRange": {"startTime": start / 1000, "endTime": end / 1000}}
        try:
            answer = self.http.post_json(COUNT, body)
        except HttpError as exc:
            if exc.status in (404, 405, 501):
                self._count_works = False
                self.log.warning("%s: %s answered %s; reading windows without narrowing or a recount",
                                 self.name, COUNT, exc.status)
                return None
            raise SourceError(_failed(self.name, COUNT, exc)) from None
        except ForwarderError as exc:
            raise SourceError(_failed(self.name, COUNT, exc)) from None
        total = answer.get("totalResultCount") if isinstance(answer, dict) else None
        if not isinstance(total, int) or isinstance(total, bool):
            raise SourceError(f"{self.name}: Incydr {COUNT}: no integer totalResultCount in the answer")
        return total

    # ------------------------------------------------------------------ events

    def normalize(self, raw: Any) -> dict[str, Any]:
        stamp = raw["timestamp"]
        if not isinstance(stamp, str):
            raise TypeError("timestamp is not a string")
        timestamp = stamp if stamp.endswith("Z") and "T" in stamp else format_time(parse_time(stamp))
        event_type = raw["type$"]
        kind = self._kinds.get(event_type)
        if kind is None:
            kind = self._kinds[event_type] = _classify(str(event_type))
        category, types, severity, failed, short = kind
        success = raw.get("success")
        outcome = "failure" if success is False or (success is None and failed) else "success"
        actor_name = raw.get("actorName")
        actor_id = raw.get("actorId")
        target: dict[str, Any] | None = None
        if raw.get("userId") is not None or raw.get("userName") is not None:
            user_name = raw.get("userName")
            target = {"id": raw.get("userId"), "name": user_name, "type": "user",
                      "email": user_name if isinstance(user_name, str) and "@" in user_name else None}
        elif raw.get("resourceId") is not None:
            target = {"id": raw.get("resourceId"), "type": "resource"}
        elif raw.get("federationId") is not None:
            target = {"id": raw.get("federationId"), "type": "federation"}
        message = f"{short} by {actor_name or actor_id or 'unknown actor'}"
        if target is not None and (target.get("name") or target.get("id")):
            message += f" on {target.get('name') or target.get('id')}"
        return self.make_event(
            raw,
            timestamp=timestamp,
            action=event_type,
            category=category[:],  # copies: the cached lists must not be shared by events a plugin may edit
            type=types[:],
            outcome=outcome,
            severity=severity,
            actor={"id": actor_id, "name": actor_name, "type": raw.get("actorType"),
                   "email": actor_name if isinstance(actor_name, str) and "@" in actor_name else None,
                   "ip": _first_ip(raw.get("actorIpAddress")), "user_agent": raw.get("actorAgent")},
            target=target,
            message=message,
        )

    # ------------------------------------------------------------------ lifecycle

    def check_connection(self) -> str:
        end = now_ms()
        date_range = {"startTime": (end - 3_600_000) / 1000, "endTime": end / 1000}
        try:
            count = self._count(end - 3_600_000, end)
            if count is None:
                self._post(SEARCH, {**self._filters, "dateRange": date_range, "page": 0, "pageSize": 1})
        except SourceError as exc:
            raise SourceError(f"cannot read the Incydr audit log: {exc}") from None
        counted = f"{count} audit events in the last hour" if count is not None else "audit log readable"
        return f"authenticated to {self.http.base_url} as API client {reveal(self.options['client_id'])}; {counted}"


def _body(data: bytes, picks: list[int]) -> PageBody | None:
    """The bytes of a search page for a worker to decode, when the page delivers some of its events
    (``picks`` is the list the page goes on filling: copies released later are added as -1)."""
    return PageBody(data, ("events",), picks) if picks else None


def _failed(name: str, path: str, exc: Exception) -> str:
    """The error of a request to ``path``; the core client's messages already name the request
    that failed (the token endpoint, when authentication was what failed), so only other errors
    get ``path`` as well: a message naming two endpoints sends an operator to the wrong one."""
    text = str(exc)
    return f"{name}: {text}" if text.startswith(("GET ", "POST ")) else f"{name}: Incydr {path}: {text}"


@hookimpl
def forwarder_register_sources(registry: Any) -> None:
    registry.add(IncydrSource)

