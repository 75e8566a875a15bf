"""Source ``asana``: the Asana audit log (``GET /workspaces/{gid}/audit_log_events``).

Asana serves events in ``created_at`` order and pages with an opaque ``next_page.offset`` that
never runs out: the end of the data is an empty ``data``, not a null ``next_page``
(vendor-apis.md §4, Gotchas 8-9). Offsets expire, and an event indexed late lands behind an
offset already handed out. So this source:

* reads closed windows ``[start_at, end_at)`` (:mod:`siem_forwarder_plugins.sources.windows`)
  that end ``settle_delay`` before now and start ``lookback`` early, de-duplicated by ``gid``;
* inside a window follows ``next_page.offset`` until ``data`` comes back empty, keeping the
  offset in the cursor so a restart resumes where the last delivered page ended;
* when an offset is refused (400, stale), starts again at ``start_at`` = the newest
  ``created_at`` it has seen in the window, skipping the ``gid`` s it already has at that instant;
* asks at most 100 events a page (``limit``); 429 and ``Retry-After`` are the HTTP client's job.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from forwarder_core import hookimpl
from forwarder_core.plugin_api import (
    AuthError,
    BearerAuth,
    ForwarderError,
    HttpClient,
    HttpError,
    Page,
    SourceError,
    content_id,
    format_time,
    iso_ms,
    ms_datetime,
    now_ms,
    parse_ms,
    parse_time,
    source_options_schema,
)
from siem_forwarder_plugins.sources.windows import EdgeDedup, WindowCursor, WindowedSource

if TYPE_CHECKING:
    from requests import Response

    from forwarder_core.plugin_api import ComponentConfig, Context

ACTOR_TYPES = ("user", "asana", "asana_support", "anonymous", "external_administrator")
MAX_EDGE_IDS = 1000
Kind = tuple[list[str], list[str], int, bool]


def _classify(event_type: str, category: str) -> Kind:
    """ECS category, ECS type, severity (0-10) and "is a failure" for an Asana event."""
    failed = "failed" in event_type or "denied" in event_type
    kind = ("creation" if any(w in event_type for w in ("created", "added", "invited", "installed", "provisioned"))
            and "deprovisioned" not in event_type
            else "deletion" if any(w in event_type for w in ("deleted", "removed", "deprovisioned", "uninstalled"))
            else "change")
    if category == "logins" or "login" in event_type:
        return ["authentication"], ["end" if "logged_out" in event_type else "start"], (5 if failed else 3), failed
    if category in ("roles", "user_access"):
        return ["iam"], ["user", kind], 6 if category == "roles" else 5, failed
    if category == "access_control":
        return ["iam"], [kind], 5, failed
    if category in ("admin_settings", "security", "domain_settings"):
        return ["configuration"], [kind], 6, failed
    if category == "content_export":
        return ["file"], ["access"], 6, failed
    if category == "apps":
        return ["configuration"], [kind], 4, failed
    if category == "deletion":
        return ["configuration"], ["deletion"], 4, failed
    return ["configuration"], [kind if kind != "change" else "info"], 3, failed


def _content_key(raw: Any) -> str:
    try:
        return "sha256:" + content_id(raw)[:16]
    except (TypeError, ValueError):  # NaN and the like: canonical JSON refuses it
        return "repr:" + repr(raw)[:64]


class AsanaTokenAuth(BearerAuth):
    """A service-account token: nothing to renew, so a 401 says plainly what to fix."""

    def refresh(self, client: HttpClient, response: Response | None = None) -> None:
        raise AuthError("Asana answered 401 Not Authorized: the token was refused; the audit log needs a "
                        "service-account token of the Enterprise domain")


class AsanaSource(WindowedSource):
    """Asana audit log; see the module docstring."""
    declared_metrics = {
        "source_offset_restarts_total": ("counter", "Asana offsets refused as stale; the window is read again "
                                                    "from the last position."),
    }

    type_name = "asana"
    vendor = "Asana"
    product = "Asana Audit Log"
    event_schema = "asana.event.schema.json"
    dataset = "asana.audit"
    splunk_sourcetype = "asana:audit"
    cef_name = "Asana audit event"
    varying_fields = frozenset({"details.old_value", "details.new_value"})
    """A setting's old and new values: a string for one setting, a number or an object for another."""
    event_id_key = "gid"
    options_schema = source_options_schema(
        base_url="https://app.asana.com/api/1.0",
        page_size_max=100,
        required=["token", "workspace_gid"],
        properties={
            "token": {"type": "string", "minLength": 1,
                      "description": "A service-account token of the Enterprise domain (only those may read the audit log)."},
            "workspace_gid": {"type": "string", "pattern": "^[0-9]+$", "description": "The workspace (domain) gid."},
            "event_type": {"type": "string", "minLength": 1, "description": "Only this event type, e.g. user_login_succeeded."},
            "actor_type": {"enum": list(ACTOR_TYPES),
                           "description": "Only events by this kind of actor (not sent when actor_gid is given, as Asana asks)."},
            "actor_gid": {"type": "string", "pattern": "^[0-9]+$", "description": "Only events by this actor."},
            "resource_gid": {"type": "string", "pattern": "^[0-9]+$", "description": "Only events about this resource."},
        },
    )

    def __init__(self, config: "ComponentConfig", context: "Context"):
        super().__init__(config, context)
        opts = self.options
        self.http = context.http(opts, auth=AsanaTokenAuth(opts["token"]))
        self.path = f"/workspaces/{opts['workspace_gid']}/audit_log_events"
        self._filters: dict[str, Any] = {key: opts[key] for key in ("event_type", "actor_gid", "resource_gid")
                                         if key in opts}
        if "actor_type" in opts and "actor_gid" not in opts:
            self._filters["actor_type"] = opts["actor_type"]
        self._kinds: dict[tuple[Any, Any], Kind] = {}
        self._organization = {"id": str(opts["workspace_gid"])}

    # ------------------------------------------------------------------ polling

    def open_window(self, start: int, end: int) -> dict[str, Any]:
        return {"start": start, "end": end, "from": start, "offset": None, "pos": None, "pos_ids": []}

    def read_window(self, state: WindowCursor) -> Iterator[Page]:
        win = state.window
        assert win is not None
        end = win["end"]
        dedup = EdgeDedup(state, end, self.lookback)
        base = {**self._filters, "limit": self.page_size, "end_at": iso_ms(end)}
        while not self.context.stop.is_set():
            params = {**base, "start_at": iso_ms(win["from"])}
            if win["offset"]:
                params["offset"] = win["offset"]
            try:
                answer = self.http.get_json(self.path, params=params)
            except HttpError as exc:
                if exc.status == 400 and "offset" in params:
                    if win.get("refused", 0) >= 3:
                        raise SourceError(f"{self.name}: Asana refused offsets {win['refused'] + 1} times in a row "
                                          f"without the restarts getting past {iso_ms(win['pos'] or win['start'])}; "
                                          f"will try again on the next poll: {exc}") from None
                    win["refused"] = win.get("refused", 0) + 1
                    restart = win["pos"] if win["pos"] is not None else win["start"]
                    self.log.warning("%s: Asana refused the saved offset (%s); reading again from start_at=%s, "
                                     "skipping events already delivered", self.name, exc.status, iso_ms(restart))
                    self.metrics.inc("source_offset_restarts_total", source=self.name)
                    win["offset"] = None
                    win["from"] = restart
                    continue
                raise SourceError(f"{self.name}: Asana audit log: {exc}") from None
            except ForwarderError as exc:
                raise SourceError(f"{self.name}: Asana audit log: {exc}") from None
            data = answer.get("data") if isinstance(answer, dict) else None
            if not isinstance(data, list):
                raise SourceError(f"{self.name}: Asana audit log: the answer has no 'data' list")
            if not data:  # caught up with this window: the offset would go on forever
                state.finish_window(end, self.lookback)
                yield Page([], state.dump())
                return
            before = win["pos"]
            fresh, newest = self._admit(data, dedup, win)
            if win["pos"] != before:
                win["refused"] = 0
            next_page = answer.get("next_page")
            win["offset"] = next_page.get("offset") if isinstance(next_page, dict) else None
            restarted_at_pos = "offset" not in params and before is not None and win["from"] == before
            if not win["offset"] or (restarted_at_pos and win["pos"] == before and len(data) < self.page_size):
                # No next page, or a restart at the last instant found nothing after it: were the
                # offset followed, it would only lead to the empty page (and offsets keep failing).
                state.finish_window(end, self.lookback)
            yield Page(fresh, state.dump(), newest, already_delivered=dedup.take_already())
            if state.window is None:
                return

    def _admit(self, data: list[Any], dedup: EdgeDedup, win: dict[str, Any]) -> tuple[list[Any], datetime | None]:
        fresh: list[Any] = []
        pos: int | None = win["pos"]
        pos_ids = set(win["pos_ids"])
        newest = -1
        for raw in data:
            if not isinstance(raw, dict):
                fresh.append(raw)  # malformed: the core quarantines it
                continue
            gid, stamp = raw.get("gid"), raw.get("created_at")
            try:
                t = parse_ms(stamp) if isinstance(stamp, str) else None
            except ValueError:
                t = None
            if t is None or gid is None or isinstance(gid, (dict, list)):
                # Drifted beyond placing it: the core quarantines it; the hash keeps a re-read from
                # repeating it. It says nothing trustworthy about the position in the window.
                if dedup.admit(_content_key(raw), t if t is not None else win["end"] - 1):
                    fresh.append(raw)
                continue
            gid = str(gid)
            if t == pos and gid in pos_ids:
                dedup.already += 1
                continue
            if pos is None or t > pos:
                pos, pos_ids = t, {gid}
            elif t == pos:
                pos_ids.add(gid)
            if dedup.admit(gid, t):
                fresh.append(raw)
                if t > newest:
                    newest = t
        if len(pos_ids) > MAX_EDGE_IDS:
            self.log.warning("%s: more than %d events share the instant %s; a stale offset there may resend some",
                             self.name, MAX_EDGE_IDS, iso_ms(pos or 0))
            pos_ids = set(sorted(pos_ids)[-MAX_EDGE_IDS:])
        win["pos"] = pos
        win["pos_ids"] = sorted(pos_ids)
        return fresh, (ms_datetime(newest) if newest >= 0 else None)

    # ------------------------------------------------------------------ events

    def normalize(self, raw: Any) -> dict[str, Any]:
        gid = raw["gid"]
        created = raw["created_at"]
        if not isinstance(gid, str) or not isinstance(created, str):
            raise TypeError("gid and created_at must be strings")
        timestamp = created if created.endswith("Z") and "T" in created else format_time(parse_time(created))
        event_type = raw["event_type"]
        category_name = raw.get("event_category")
        kind = self._kinds.get((event_type, category_name))
        if kind is None:
            kind = self._kinds[(event_type, category_name)] = _classify(str(event_type), str(category_name))
        category, types, severity, failed = kind
        actor = raw.get("actor") or {}
        resource = raw.get("resource") or {}
        context = raw.get("context") or {}
        who = actor.get("name") or actor.get("email") or actor.get("gid") or actor.get("actor_type") or "unknown actor"
        message = f"{event_type} by {who}"
        what = resource.get("name") or resource.get("email") or resource.get("gid")
        if what:
            message += f" on {resource.get('resource_type') or 'resource'} {what}"
        return self.make_event(
            raw,
            id=gid,
            timestamp=timestamp,
            action=event_type,
            category=category[:],  # copies: the cached lists must not be shared by events a plugin may edit
            type=types[:],
            outcome="failure" if failed else "success",
            severity=severity,
            actor={"id": actor.get("gid"), "name": actor.get("name"), "email": actor.get("email"),
                   "type": actor.get("actor_type"), "ip": context.get("client_ip_address"),
                   "user_agent": context.get("user_agent")},
            target={"id": resource.get("gid"), "type": resource.get("resource_type"), "name": resource.get("name"),
                    "email": resource.get("email")},
            organization=self._organization,
            message=message,
        )

    # ------------------------------------------------------------------ lifecycle

    def check_connection(self) -> str:
        start = iso_ms(now_ms() - 3_600_000)
        try:
            answer = self.http.get_json(self.path, params={**self._filters, "limit": 1, "start_at": start})
        except ForwarderError as exc:
            raise SourceError(f"cannot read the Asana audit log of workspace {self.options['workspace_gid']}: {exc}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
            raise SourceError("the Asana audit log answered without a 'data' list")
        return f"authenticated to {self.http.base_url}; audit log of workspace {self.options['workspace_gid']} readable"


@hookimpl
def forwarder_register_sources(registry: Any) -> None:
    registry.add(AsanaSource)
