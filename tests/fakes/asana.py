"""A local Asana audit-log API: ``GET /api/1.0/workspaces/{gid}/audit_log_events``.

What it does as the real service does (reference: vendor-apis.md §4 and Gotchas 8-9):

* ``Authorization: Bearer <token>`` (a service-account token); anything else is a 401 with
  Asana's error body ``{"errors":[{"message","help"}]}``.
* Events sorted by ``created_at`` ascending (ties by ``gid``); ``start_at`` inclusive, ``end_at``
  exclusive; filters ``event_type``, ``actor_type``, ``actor_gid``, ``resource_gid``.
* ``limit`` 1..100, else a 400; ``offset`` an opaque token from ``next_page``, and ``next_page``
  never becomes null once the query matches anything: the end of data is an empty ``data``.
  Offsets go stale (:meth:`AsanaFake.expire_offsets`, or ``offset_ttl``), which is a 400.
* An offset remembers the position after the last event served, so an event that arrives late
  (its ``created_at`` older than that position) is never served through it: exactly why a
  client needs its lookback.

Events are generated deterministically from a seed; encoded pages are cached by query string.
Tests add events later with :meth:`AsanaFake.add_events`. ``workspaces=N`` serves N workspaces
(gids ``workspace_gid``, ``workspace_gid + 1``, ...), each with its own ``events`` events and
event gids unique across all of them: one process for the benchmark's many-sources scenario.
"""
from __future__ import annotations

import argparse
import base64
import bisect
import json
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from tests.fakes.base import FakeServer, Request, Response, json_response, serve_forever_cli

PREFIX = "/api/1.0"
ACTOR_TYPES = ("user", "asana", "asana_support", "anonymous", "external_administrator")
HELP = ("For more information on API status codes and how to handle them, read the docs on errors: "
        "https://developers.asana.com/docs/errors")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# event_type, event_category, resource_type, resource_subtype
KINDS = (
    ("user_login_succeeded", "logins", "user", None),
    ("user_login_succeeded", "logins", "user", None),
    ("user_login_failed", "logins", "user", None),
    ("user_logged_out", "logins", "user", None),
    ("user_role_changed", "roles", "user", None),
    ("user_invited", "user_access", "user", None),
    ("user_deprovisioned", "user_access", "user", None),
    ("team_privacy_settings_changed", "access_control", "team", None),
    ("workspace_export_started", "content_export", "workspace", None),
    ("app_installed", "apps", "app", None),
    ("task_deleted", "deletion", "task", "default_task"),
    ("project_deleted", "deletion", "project", None),
    ("workspace_saml_settings_changed", "admin_settings", "workspace", None),
)
PEOPLE = (("Greg Sanchez", "greg"), ("Ana Lima", "ana.lima"), ("Kofi Mensah", "kofi"), ("Mei Chen", "mei.chen"),
          ("Olga Petrova", "olga"), ("Ravi Kumar", "ravi"), ("Sara Nilsson", "sara"), ("Tariq Aziz", "tariq"))
AGENTS = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
          "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
          "Asana/2.3.0 (Macintosh; Electron)", "python-asana/5.4.0", "Asana iOS 9.84")


def iso_ms(ms: int) -> str:
    dt = _EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def to_ms(text: str) -> int:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def error(status: int, message: str) -> Response:
    body: dict[str, Any] = {"message": message, "help": HELP}
    if status == 500:
        body["phrase"] = "6 sad squid snuggle softly"
    return json_response({"errors": [body]}, status)


class AsanaFake(FakeServer):
    """The fake; see the module docstring."""

    name = "asana"

    def __init__(self, *, events: int = 0, seed: int = 7, start: datetime | None = None, span: float = 3600.0,
                 token: str = "2/1204/1207:fake-service-account", workspace_gid: str = "12345",
                 workspaces: int = 1, offset_ttl: float | None = None, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.token = token
        self.workspace_gid = workspace_gid
        self.workspace_gids = [workspace_gid, *(str(int(workspace_gid) + i) for i in range(1, workspaces))]
        self.offset_ttl = offset_ttl
        self.rng = random.Random(seed)
        self._data_lock = threading.Lock()
        # per workspace gid: (created_at ms, gid) sorted, and the events in that order
        self._keys: dict[str, list[tuple[int, int]]] = {gid: [] for gid in self.workspace_gids}
        self._events: dict[str, list[dict[str, Any]]] = {gid: [] for gid in self.workspace_gids}
        self._next_gid = 1_204_000_000_000_000
        self._generation = 0
        self._pages: dict[str, bytes] = {}
        if start is None:
            start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=span + 120)
        self.begin = start
        if events:
            begin = to_ms(iso_ms((start - _EPOCH) // timedelta(milliseconds=1)))
            step = span * 1000.0 / events
            for gid in self.workspace_gids:
                self.add_events([self.make_event(begin + int(i * step + self.rng.random() * step))
                                 for i in range(events)], workspace=gid)
        self.route("GET", PREFIX + r"/workspaces/([^/]+)/audit_log_events", self._audit_log_events)

    # ------------------------------------------------------------------ the data set

    def make_event(self, at: int | datetime, **overrides: Any) -> dict[str, Any]:
        """A realistic event at ``at`` (epoch ms or datetime) with the next gid; not yet added."""
        if isinstance(at, datetime):
            at = (at - _EPOCH) // timedelta(milliseconds=1)
        rng = self.rng
        self._next_gid += rng.randint(1, 40)
        event_type, category, resource_type, subtype = rng.choice(KINDS)
        name, user = rng.choice(PEOPLE)
        actor_gid = str(1_100_000_000_000_000 + PEOPLE.index((name, user)))
        actor_type = "user" if rng.random() < 0.9 else rng.choice(ACTOR_TYPES[1:])
        actor: dict[str, Any] = {"actor_type": actor_type}
        if actor_type in ("user", "external_administrator"):
            actor.update(gid=actor_gid, name=name, email=f"{user}@example.com")
        elif actor_type == "asana_support":
            actor.update(gid="1000000000000001", name="Asana Support")
        if resource_type == "user":
            other_name, other = (name, user) if event_type.startswith("user_log") else rng.choice(PEOPLE)
            resource: dict[str, Any] = {"resource_type": "user", "gid": str(1_100_000_000_000_000 + PEOPLE.index((other_name, other))),
                                        "name": other_name, "email": f"{other}@example.com"}
        else:
            resource = {"resource_type": resource_type, "gid": str(1_203_000_000_000_000 + rng.randint(0, 10**9)),
                        "name": None if rng.random() < 0.1 else f"{resource_type.title()} {rng.randint(1, 999)}"}
            if subtype:
                resource["resource_subtype"] = subtype
        details: dict[str, Any] = {}
        if event_type == "user_role_changed":
            details = {"old_value": "member", "new_value": "admin"}
        elif event_type == "team_privacy_settings_changed":
            details = {"old_value": "public_to_domain", "new_value": "request_to_join", "group": {"gid": "55", "name": "Security", "resource_type": "team"}}
        elif event_type == "workspace_saml_settings_changed":
            details = {"old_value": "optional", "new_value": "required"}
        context_type = rng.choice(("web", "web", "desktop", "mobile", "api"))
        context: dict[str, Any] = {"context_type": context_type,
                                   "client_ip_address": f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                                   "user_agent": rng.choice(AGENTS)}
        if context_type == "api":
            context["api_authentication_method"] = rng.choice(("oauth", "personal_access_token", "service_account"))
            if context["api_authentication_method"] == "oauth":
                context["oauth_app_name"] = "Acme Sync"
        if event_type == "app_installed":
            context["oauth_app_name"] = "Acme Sync"
        event = {"gid": str(self._next_gid), "created_at": iso_ms(at), "event_type": event_type,
                 "event_category": category, "actor": actor, "resource": resource, "details": details,
                 "context": context}
        event.update(overrides)
        return event

    def add_events(self, events: list[dict[str, Any]], workspace: str | None = None) -> None:
        """Add events to a workspace (the first by default); their ``created_at`` decides where they
        fall (older than served is allowed)."""
        with self._data_lock:
            keys, stored = self._keys[workspace or self.workspace_gid], self._events[workspace or self.workspace_gid]
            for event in events:
                key = (to_ms(event["created_at"]), int(event["gid"]))
                at = bisect.bisect_right(keys, key)
                keys.insert(at, key)
                stored.insert(at, event)
            self._pages.clear()

    def events(self, workspace: str | None = None) -> list[dict[str, Any]]:
        with self._data_lock:
            return list(self._events[workspace or self.workspace_gid])

    def expire_offsets(self) -> None:
        """Every offset handed out so far becomes stale (a 400 when used)."""
        with self._data_lock:
            self._generation += 1
            self._pages.clear()

    # ------------------------------------------------------------------ the endpoint

    def _offset(self, position: tuple[int, int], query: str) -> str:
        raw = json.dumps({"p": list(position), "q": query, "g": self._generation, "t": time.time()})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def _read_offset(self, token: str, query: str) -> tuple[int, int] | None:
        try:
            raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            position = (int(raw["p"][0]), int(raw["p"][1]))
        except (ValueError, KeyError, TypeError, IndexError):
            return None
        if raw.get("q") != query or raw.get("g") != self._generation:
            return None
        if self.offset_ttl is not None and time.time() - float(raw.get("t", 0)) > self.offset_ttl:
            return None
        return position

    def _audit_log_events(self, req: Request) -> Response:
        if req.headers.get("Authorization") != f"Bearer {self.token}":
            return error(401, "Not Authorized")
        workspace = req.path.split("/")[-2]
        if workspace not in self._keys:
            return error(404, f"workspace: Not a recognized ID: {workspace}")
        keys, events = self._keys[workspace], self._events[workspace]
        args = {k: v[0] for k, v in req.query.items()}
        try:
            limit = int(args.get("limit", "100"))
        except ValueError:
            return error(400, "limit: Value is not an integer")
        if not 1 <= limit <= 100:
            return error(400, "limit: Must be between 1 and 100")
        try:
            start = to_ms(args["start_at"]) if "start_at" in args else None
            end = to_ms(args["end_at"]) if "end_at" in args else None
        except ValueError:
            return error(400, "start_at/end_at: Not a valid date-time")
        if args.get("actor_type") and args["actor_type"] not in ACTOR_TYPES:
            return error(400, f"actor_type: Not a valid enum value: {args['actor_type']}")
        query = "&".join(f"{k}={args[k]}" for k in sorted(args) if k not in ("offset", "limit"))
        cache_key = f"{self._generation}/{workspace}?{req.query.get('offset', [''])[0]}&{query}&limit={limit}"
        with self._data_lock:
            cached = self._pages.get(cache_key)
            if cached is not None:
                return Response(body=cached)
            position: tuple[int, int] | None = None
            if "offset" in args:
                position = self._read_offset(args["offset"], query)
                if position is None:
                    return error(400, "offset: Your pagination token is invalid or has expired. "
                                      "Please restart pagination without an offset.")
            lo = 0 if start is None else bisect.bisect_left(keys, (start, -1))
            if position is not None:
                lo = max(lo, bisect.bisect_right(keys, position))
            hi = len(keys) if end is None else bisect.bisect_left(keys, (end, -1))
            wanted = [(k, v) for k, v in (("event_type", args.get("event_type")), ("actor_gid", args.get("actor_gid")),
                                          ("resource_gid", args.get("resource_gid")),
                                          ("actor_type", args.get("actor_type"))) if v]
            page: list[bytes] = []
            last = position
            i = lo
            while i < hi and len(page) < limit:
                event = events[i]
                if not wanted or _matches(event, wanted):
                    page.append(json.dumps(event, separators=(",", ":")).encode())
                    last = keys[i]
                i += 1
            anything = bool(page) or position is not None or any(
                not wanted or _matches(events[j], wanted)
                for j in range(0 if start is None else bisect.bisect_left(keys, (start, -1)), hi))
            if anything:
                offset = self._offset(last if last is not None else (start if start is not None else 0, -1), query)
                path = f"/workspaces/{workspace}/audit_log_events?limit={limit}&offset={offset}"
                next_page = json.dumps({"offset": offset, "path": path, "uri": f"https://app.asana.com/api/1.0{path}"})
            else:
                next_page = "null"
            payload = b'{"data":[' + b",".join(page) + b'],"next_page":' + next_page.encode() + b"}"
            if len(self._pages) > 256:
                self._pages.clear()
            self._pages[cache_key] = payload
        return Response(body=payload)


def _matches(event: dict[str, Any], wanted: list[tuple[str, str]]) -> bool:
    for key, value in wanted:
        if key == "event_type" and event.get("event_type") != value:
            return False
        if key == "actor_gid" and (event.get("actor") or {}).get("gid") != value:
            return False
        if key == "actor_type" and (event.get("actor") or {}).get("actor_type") != value:
            return False
        if key == "resource_gid" and (event.get("resource") or {}).get("gid") != value:
            return False
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the local Asana audit-log fake until killed.")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--span", type=float, default=86_400.0, help="seconds the events spread over, ending ~2 min ago")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="2/1204/1207:fake-service-account")
    parser.add_argument("--workspace-gid", default="12345")
    parser.add_argument("--workspaces", type=int, default=1,
                        help="serve this many workspaces (gids counting up from --workspace-gid), --events each")
    parser.add_argument("--ready-file")
    args = parser.parse_args(argv)
    fake = AsanaFake(events=args.events, seed=args.seed, span=args.span, token=args.token,
                     workspace_gid=args.workspace_gid, workspaces=args.workspaces, port=args.port)
    serve_forever_cli(fake, args.ready_file)


if __name__ == "__main__":
    main()
