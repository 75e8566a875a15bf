"""Source ``pangea``: Pangea Secure Audit Log, with its tamper evidence checked before forwarding.

Reading: ``POST v1/search`` (``order: asc``, ``order_by: received_at``, ``verbose: true`` so
every event comes with its Merkle proof and the roots) freezes a result set; ``POST v1/results``
pages through it by ``offset`` until ``count`` is read. When the set expires before it is read
(``NotFound``/``BadOffset``), the source searches again from where it got to. Each poll covers
``[through - lookback, now - settle_delay]`` and drops the events it already delivered (see
:mod:`siem_forwarder_plugins.sources.pangea.cursor`).

Checking: every event's hash, Merkle membership and Ed25519 signature
(:mod:`siem_forwarder_plugins.sources.pangea.verify`), and optionally the consistency of published roots
(:mod:`siem_forwarder_plugins.sources.pangea.ledger`). A failure is a security WARNING and a metric; with
``on_verification_failure: quarantine`` (the default) the event is set aside and reaches no
output, with ``forward`` it goes on carrying the failed verdict in ``integrity``.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from forwarder_core import hookimpl
from forwarder_core.plugin_api import (
    BearerAuth,
    ComponentConfig,
    Context,
    Page,
    QuarantineEvent,
    ResponseError,
    Source,
    SourceError,
    canonical_json,
    format_time,
    from_us,
    iso_us,
    parse_time,
    source_options_schema,
    to_us,
)
from siem_forwarder_plugins.sources.pangea.api import PangeaApi, PangeaError, ResultSetExpired
from siem_forwarder_plugins.sources.pangea.cursor import Cursor
from siem_forwarder_plugins.sources.pangea.ledger import Ledger, consistency_verdict, sizes_needed
from siem_forwarder_plugins.sources.pangea.verify import (
    FAIL,
    NONE,
    PASS,
    SignatureVerifier,
    envelope_hash,
    root_hash,
    verify_hash_value,
    verify_membership,
)

DEFAULT_BASE_URL = "https://audit.aws.us.pangea.cloud"
DEFAULT_LEDGER_URL = "https://arweave.net"
_MAX_EXPIRED_RESEARCHES = 3
_RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
_SUCCESS = frozenset({"success", "succeeded", "successful", "ok", "allowed", "allow", "pass", "passed", "approved"})
_FAILURE = frozenset({"failure", "failed", "fail", "error", "denied", "deny", "blocked", "rejected", "forbidden",
                      "unauthorized"})

# Keys the source adds to each SearchEvent, named as the Pangea SDK names them.
VERDICT_KEYS = (("hash", "hash_verification"), ("membership", "membership_verification"),
                ("signature", "signature_verification"), ("consistency", "consistency_verification"))

OPTIONS_SCHEMA = source_options_schema(
    properties={
        "token": {"type": "string", "minLength": 1,
                  "description": "Pangea service token (pts_...) with access to Secure Audit Log."},
        "domain": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9.-]*$",
                   "description": "Pangea domain, e.g. aws.eu.pangea.cloud: the API is then https://audit.<domain>. "
                                  "base_url wins when both are given."},
        "config_id": {"type": "string", "minLength": 1,
                      "description": "Audit configuration id, for projects with several audit configurations."},
        "query": {"type": "string", "default": "",
                  "description": "Search query, e.g. 'actor:alice action:login'; empty reads every event."},
        "search_restriction": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "description": "Field to allowed values, e.g. {\"source\": [\"web\"]}: sent as search_restriction.",
        },
        "on_verification_failure": {
            "enum": ["quarantine", "forward"], "default": "quarantine",
            "description": "What to do with an event that fails a tamper-evidence check: set it aside in the "
                           "quarantine (default), or forward it with the failure in integrity.",
        },
        "verify_consistency": {
            "type": "boolean", "default": False,
            "description": "Also check published events' roots against the public ledger (needs to reach it).",
        },
        "ledger_url": {"type": "string", "pattern": "^https?://[^\\s]+$", "default": DEFAULT_LEDGER_URL,
                       "description": "The public ledger (Arweave gateway) for verify_consistency."},
    },
    required=["token"],
    base_url=DEFAULT_BASE_URL,
    page_size_max=1000,
)
# base_url's default depends on domain, so it is applied in code, not by the schema.
OPTIONS_SCHEMA["properties"]["base_url"] = {
    k: v for k, v in OPTIONS_SCHEMA["properties"]["base_url"].items() if k != "default"}
OPTIONS_SCHEMA["properties"]["base_url"]["description"] = (
    f"The audit service URL; default {DEFAULT_BASE_URL}, or https://audit.<domain> when domain is set.")


class PangeaSource(Source):
    """Pangea Secure Audit Log search, verified event by event."""
    declared_metrics = {
        "pangea_verifications_total": ("counter", "Pangea tamper-evidence verdicts by check and result (pass, fail, none)."),
        "pangea_verification_failures_total": ("counter", "Pangea events that failed a tamper-evidence check, by check."),
    }

    type_name = "pangea"
    vendor = "Pangea"
    product = "Secure Audit Log"
    event_schema = "pangea.event.schema.json"
    dataset = "pangea.audit"
    splunk_sourcetype = "pangea:audit"
    cef_name = "Pangea audit event"
    varying_fields = frozenset({"event.message", "event.new", "event.old"})
    """Free-form in Pangea's schema: text in one event, an object or a number in the next."""
    options_schema = OPTIONS_SCHEMA
    replay_refusal = (
        "Pangea events are not replayed from the quarantine: their tamper evidence (hash, Merkle proof, "
        "signature) can only be checked against a live search result, and replaying would forward an event "
        "nobody re-verified. To forward events that fail verification, flagged in 'integrity', set "
        "on_verification_failure: forward and reset the source's checkpoint (siem-forwarder state reset NAME)")
    """Read by ``siem-forwarder quarantine replay``, which keeps this source's records and says why."""
    event_id_key = "hash"

    def metric_series(self) -> Iterator[tuple[str, dict[str, str]]]:
        """Every check's verdicts and failures from start-up (consistency only where the ledger is read)."""
        for check, _ in VERDICT_KEYS:
            if check == "consistency" and self.ledger is None:
                continue
            for verdict in (PASS, FAIL, NONE):
                yield "pangea_verifications_total", {"source": self.name, "check": check, "result": verdict}
            yield "pangea_verification_failures_total", {"source": self.name, "check": check}

    def __init__(self, config: ComponentConfig, context: Context):
        super().__init__(config, context)
        opts = self.options
        base_url = opts.get("base_url")
        if base_url and opts.get("domain"):
            self.log.warning("%s: both base_url and domain are set; using base_url %s", self.name, base_url)
        if not base_url:
            base_url = f"https://audit.{opts['domain']}" if opts.get("domain") else DEFAULT_BASE_URL
        self.base_url = base_url.rstrip("/")
        self.client = context.http(opts, auth=BearerAuth(opts["token"]), base_url=self.base_url)
        self.api = PangeaApi(self.client, config_id=opts.get("config_id"))
        self.page_size = int(opts.get("page_size", 1000))
        self.settle = timedelta(seconds=float(opts.get("settle_delay", 60)))
        self.lookback_us = int(float(opts.get("lookback", 300)) * 1_000_000)
        self.quarantine = opts.get("on_verification_failure", "quarantine") == "quarantine"
        self.signatures = SignatureVerifier(self.log, self.name)
        self._poll_tally: Counter[tuple[str, str]] = Counter()
        self.ledger: Ledger | None = None
        if opts.get("verify_consistency"):
            ledger_opts: dict[str, Any] = {k: opts[k] for k in ("tls_verify", "ca_file") if k in opts}
            ledger_opts["timeout"] = min(float(opts.get("timeout", 30)), 10.0)
            ledger_client = context.http(ledger_opts, base_url=opts.get("ledger_url") or DEFAULT_LEDGER_URL)
            ledger_client.max_tries = 1  # an unreachable ledger is skipped, not waited for
            self.ledger = Ledger(ledger_client, self._server_root, self.log, self.name)

    # ------------------------------------------------------------------ polling

    def poll(self, cursor: Any | None) -> Iterator[Page]:
        try:
            state = Cursor.load(cursor, self._first_start())
        except ValueError as exc:
            raise SourceError(f"{self.name}: the stored cursor cannot be used ({exc}); "
                              f"reset it with 'siem-forwarder state reset {self.name}'") from None
        end_us = to_us(datetime.now(timezone.utc) - self.settle)
        start_us = state.start(self.lookback_us)
        if start_us >= end_us:
            return
        if self.ledger is not None:
            self.ledger.new_poll()
        self._poll_tally = Counter()
        while True:
            new = 0
            for page in self._window(start_us, end_us, state):
                new += len(page.events)
                yield page
            if self.context.stop.is_set():
                return  # shutting down: the pages yielded so far carry the cursor
            if new == 0:
                break
            # The span before ``through`` was just read: only its edge needs reading again.
            start_us = max(state.through, state.floor or state.through)
            if start_us >= end_us:
                break
        if self._poll_tally:
            self.log.info("%s: verified %d new event(s): %s", self.name, sum(
                n for (check, _), n in self._poll_tally.items() if check == "hash"), _summary(self._poll_tally))
        if state.through < end_us:
            state.through = end_us
            state.prune(self.lookback_us)
            yield Page([], state.dump())

    def _first_start(self) -> datetime:
        return self.config.start_time or (datetime.now(timezone.utc) - timedelta(hours=24))

    def _search_body(self, start_us: int, end_us: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "query": self.options.get("query", ""),
            "order": "asc",
            "order_by": "received_at",
            "start": iso_us(start_us),
            "end": iso_us(end_us),
            "limit": self.page_size,
            "verbose": True,
        }
        if self.options.get("search_restriction"):
            body["search_restriction"] = self.options["search_restriction"]
        return body

    def _window(self, start_us: int, end_us: int, state: Cursor) -> Iterator[Page]:
        """Read one search's result set, page by page; search again if it expires midway."""
        body = self._search_body(start_us, end_us)
        result = self.api.search(body)
        search_id, count = _result_set(result)
        offset = 0
        expired_in_a_row = 0
        while True:
            items = _events(result)
            yield self._page(items, result, state)
            offset += len(items)
            if offset >= count or not items or self.context.stop.is_set():
                return
            try:
                result = self.api.results(search_id, offset, self.page_size)
                expired_in_a_row = 0
            except ResultSetExpired as exc:
                expired_in_a_row += 1
                if expired_in_a_row > _MAX_EXPIRED_RESEARCHES:
                    raise SourceError(f"{self.name}: Pangea result sets keep expiring before they are read "
                                      f"({exc}); trying again next poll") from None
                restart = max(state.through, state.floor or state.through, start_us)
                self.log.info("%s: the search result set expired at offset %d of %d (%s); searching again "
                              "from %s", self.name, offset, count, exc, iso_us(restart))
                body["start"] = iso_us(restart)
                result = self.api.search(body)
                search_id, count = _result_set(result)
                offset = 0

    # ------------------------------------------------------------------ verification

    def _page(self, items: list[Any], result: dict[str, Any], state: Cursor) -> Page:
        """Verify and de-duplicate one response's events; advance the cursor past them."""
        published_root = root_hash(result.get("root"))
        unpublished_root = root_hash(result.get("unpublished_root"))
        out: list[Any] = []
        already = 0
        tally: Counter[tuple[str, str]] = Counter()
        newest: int | None = None
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("envelope"), dict):
                out.append(item)  # normalize raises on it: the core quarantines it with the reason
                continue
            envelope = item["envelope"]
            claimed = item.get("hash")
            try:
                actual = envelope_hash(envelope)
            except (TypeError, ValueError):
                actual = None
            key = actual or (claimed if isinstance(claimed, str) else None)
            if key is not None and state.is_seen(key):
                already += 1
                continue
            item["hash_verification"] = verify_hash_value(actual, claimed)
            item["membership_verification"] = verify_membership(
                claimed, item.get("membership_proof"), published_root if item.get("published") else unpublished_root)
            item["signature_verification"] = self.signatures.verify(envelope)
            item["consistency_verification"] = NONE
            out.append(item)
            received_us = _received_us(envelope)
            if key is not None and received_us is not None:
                state.add(key, received_us)
                if newest is None or received_us > newest:
                    newest = received_us
        if self.ledger is not None and out:
            self._check_consistency(out, result)
        for item in out:
            if isinstance(item, dict) and "hash_verification" in item:
                self._account(item, tally)
        self._poll_tally.update(tally)
        for (check, verdict), n in tally.items():
            self.metrics.inc("pangea_verifications_total", n, source=self.name, check=check, result=verdict)
        state.prune(self.lookback_us)
        return Page(out, state.dump(), from_us(newest) if newest is not None else None, already_delivered=already)

    def _check_consistency(self, items: list[Any], result: dict[str, Any]) -> None:
        assert self.ledger is not None
        root = result.get("root")
        tree_name = root.get("tree_name") if isinstance(root, dict) else None
        verified = [i for i in items if isinstance(i, dict) and "hash_verification" in i]
        sizes = sizes_needed(verified)
        if not isinstance(tree_name, str) or not sizes:
            return
        roots = self.ledger.roots(tree_name, sizes)
        for item in verified:
            item["consistency_verification"] = consistency_verdict(item, roots)

    def _account(self, item: dict[str, Any], tally: Counter[tuple[str, str]]) -> None:
        failed = []
        for check, key in VERDICT_KEYS:
            verdict = item[key]
            if check != "consistency" or self.ledger is not None:
                tally[(check, verdict)] += 1
            if verdict == FAIL:
                failed.append(check)
        if failed:
            for check in failed:
                self.metrics.inc("pangea_verification_failures_total", source=self.name, check=check)
            self.log.warning(
                "SECURITY: %s: Pangea event hash=%s received_at=%s failed tamper-evidence check(s): %s; %s",
                self.name, str(item.get("hash"))[:64], str(item["envelope"].get("received_at"))[:40],
                ", ".join(failed),
                "quarantined (not forwarded)" if self.quarantine else "forwarded flagged in integrity")

    def _server_root(self, size: int) -> dict[str, Any] | None:
        """A root Pangea itself serves (``v1/root``), for sizes the ledger lacks."""
        try:
            data = self.api.root(size).get("data")
        except SourceError:
            return None
        return data if isinstance(data, dict) and isinstance(data.get("root_hash"), str) else None

    # ------------------------------------------------------------------ normalizing

    def cursor_time(self, cursor: Any) -> datetime | None:
        """``through``: every event received before it has been searched for."""
        through = cursor.get("through") if isinstance(cursor, dict) else None
        return parse_time(through) if isinstance(through, str) else None

    def raw_event(self, item: Any) -> Any:
        """The envelope: what the raw schema describes and the event's ``raw`` carries (its hash covers it)."""
        return item.get("envelope") if isinstance(item, dict) else item

    def normalize(self, raw: Any) -> dict[str, Any]:
        integrity = self._integrity(raw)
        claimed = raw.get("hash") if isinstance(raw, dict) else None
        event_id = claimed if isinstance(claimed, str) and claimed else None  # else the envelope's digest
        if self.quarantine and integrity is not None and FAIL in integrity.values():
            failed = ", ".join(k for k, v in integrity.items() if v == FAIL)
            raise QuarantineEvent(f"Pangea tamper evidence failed: {failed} check(s) did not verify",
                                  str(claimed)[:128] if event_id else None, integrity)
        try:
            return self._event(raw, event_id, integrity)
        except (KeyError, TypeError, ValueError) as exc:
            # the verdicts go with the record, so the quarantine shows what was (not) verified
            raise QuarantineEvent(f"normalize failed: {type(exc).__name__}: {exc}",
                                  str(claimed)[:128] if event_id else None, integrity) from None

    def _integrity(self, raw: Any) -> dict[str, str] | None:
        if not isinstance(raw, dict) or "hash_verification" not in raw:
            return None
        integrity = {"hash": raw["hash_verification"], "membership": raw["membership_verification"],
                     "signature": raw["signature_verification"]}
        if self.ledger is not None:
            integrity["consistency"] = raw["consistency_verification"]
        return integrity

    def _event(self, raw: Any, event_id: str | None, integrity: dict[str, str] | None) -> dict[str, Any]:
        envelope = raw["envelope"]
        event = envelope["event"]
        if not isinstance(event, dict):
            raise TypeError("envelope.event is not an object")
        if integrity is None:
            raise KeyError("hash_verification")
        actor = event.get("actor")
        target = event.get("target")
        message = event.get("message")
        tenant = event.get("tenant_id")
        return self.make_event(
            envelope,
            id=event_id,
            timestamp=_timestamp(event.get("timestamp"), envelope.get("received_at")),
            action=_text(event.get("action")),
            outcome=_outcome(event.get("status")),
            actor={"name": actor} if isinstance(actor, str) and actor else None,
            target={"name": target} if isinstance(target, str) and target else None,
            organization={"id": tenant} if isinstance(tenant, str) and tenant else None,
            message=message if isinstance(message, str) else (canonical_json(message) if message is not None else None),
            integrity=integrity,
        )

    # ------------------------------------------------------------------ lifecycle

    def check_connection(self) -> str:
        try:
            root = self.api.root()
        except PangeaError as exc:
            if exc.status == "TreeNotFound":
                return f"authenticated to Pangea Secure Audit Log at {self.base_url} (the audit log is empty)"
            raise
        size = (root.get("data") or {}).get("size") if isinstance(root.get("data"), dict) else None
        return f"authenticated to Pangea Secure Audit Log at {self.base_url} (tree size {size})"


# --------------------------------------------------------------------------- helpers


def _result_set(result: dict[str, Any]) -> tuple[str, int]:
    search_id, count = result.get("id"), result.get("count")
    if not isinstance(search_id, str) or not isinstance(count, int) or not isinstance(result.get("events", []), list):
        raise ResponseError("Pangea search result lacks an 'id' string, a 'count' integer or an 'events' list")
    return search_id, count


def _events(result: dict[str, Any]) -> list[Any]:
    events = result.get("events")
    if events is None:
        return []
    if not isinstance(events, list):
        raise ResponseError("Pangea result 'events' is not a list")
    return events


def _summary(tally: Counter[tuple[str, str]]) -> str:
    """``hash 59 pass 1 fail; membership 60 pass; ...`` for the per-poll log line."""
    parts = []
    for check in ("hash", "membership", "signature", "consistency"):
        counts = [f"{tally[(check, v)]} {v}" for v in ("pass", "fail", "none") if tally[(check, v)]]
        if counts:
            parts.append(f"{check} {' '.join(counts)}")
    return "; ".join(parts)


def _received_us(envelope: dict[str, Any]) -> int | None:
    value = envelope.get("received_at")
    if not isinstance(value, str):
        return None
    try:
        return to_us(parse_time(value))
    except ValueError:
        return None


def _timestamp(event_time: Any, received_at: Any) -> str:
    """The event's own time when it has a usable one, else when Pangea received it."""
    for value in (event_time, received_at):
        if isinstance(value, str):
            if _RFC3339_Z.match(value):
                return value
            try:
                return format_time(parse_time(value))
            except ValueError:
                continue
    raise ValueError("the event has neither a usable timestamp nor received_at")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _outcome(status: Any) -> str | None:
    if not isinstance(status, str):
        return None
    word = status.strip().lower()
    if word in _SUCCESS:
        return "success"
    if word in _FAILURE:
        return "failure"
    return None


@hookimpl
def forwarder_register_sources(registry: Any) -> None:
    registry.add(PangeaSource)
