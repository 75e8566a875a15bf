"""Output ``elastic_bulk``: ECS documents to Elasticsearch ``_bulk``, idempotent by construction.

Each event becomes one ``create`` action into ``index`` (by default the data stream
``logs-{dataset}-default``, ``{dataset}`` being the dataset the event's source declares) with an
``_id`` derived from the source type and the event id
(:func:`document_id`), so a batch sent twice (a crash between delivery and checkpoint) creates
nothing new: the second ``create`` answers 409, which counts as delivered.

Elasticsearch answers ``_bulk`` with HTTP 200 even when items failed; the verdict is per item
(siem-protocols.md §2.2). What this output does with each answer:

* item 2xx, or 409 on ``create``: delivered;
* item 429 and 5xx: sent again alone (only those items), after a short capped backoff, for a few
  rounds inside :meth:`ElasticBulk.send`; what is still refused then goes back to the core as
  ``SendResult.retry`` with the last backoff as ``retry_after``, and the core keeps the cursor
  still until they are in;
* item 400/404 (mapping conflict, unparsable document, missing index): dead-letter file, with
  Elasticsearch's error type and reason;
* item or request 401/403: :class:`OutputError` with ``pause=True``; nothing is dropped;
* request 413: the request is halved and each half sent again, down to a single document,
  which is then dead-lettered (it can never fit);
* request 429/5xx, timeouts, connection errors, a body that is not a bulk answer: the rest of
  the batch is handed back for a later retry (an :class:`OutputError` when nothing of the batch
  got through yet).
"""
from __future__ import annotations

import base64
import hashlib
import json
import string
from collections import Counter, deque
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from forwarder_core import hookimpl
from forwarder_core.plugin_api import (
    Encoded,
    HttpError,
    Output,
    OutputError,
    SendResult,
    SourceTraits,
    compact_json,
    format_time,
    http_output_options_schema,
    parse_retry_after,
    reveal,
    slug,
    snippet,
    traits_of,
)
from siem_forwarder_plugins.outputs.batching import Limits, Retryable, Round, post_round, send_in_rounds, split
from siem_forwarder_plugins.outputs.elastic.ecs import ecs_document

PLACEHOLDERS = frozenset({"vendor", "dataset", "source_type", "source"})
DEFAULT_INDEX = "logs-{dataset}-default"
"""A data stream per dataset: Elasticsearch's built-in ``logs-*-*`` template creates it on first write."""
DATA_STREAM_PATTERNS = ("logs-", "metrics-", "traces-", "synthetics-")
ITEM_RETRY_BASE = 0.5
ITEM_RETRY_CAP = 10.0
GZIP_LEVEL = 1
"""zlib level 1: about 70% of level 3's CPU per document for a body about 6% larger; the
forwarder's CPU, not the link, is what limits a backfill.
Compressed by ISA-L (``isal``) where it is installed, at its level 1: a quarter of zlib's CPU
at level 1 for a body 1% smaller (``batching.gzip_compress``, bench/stages.py)."""
_FILTER_PATH = "errors,items.*.status,items.*.error,error,status"  # error, status: whole-request errors
_PLACEHOLDER = r"\{(?:vendor|dataset|source_type|source)\}"
# A safe subset of what Elasticsearch allows, with only the known placeholders.
_INDEX_PATTERN = rf"^(?:[a-z0-9]|{_PLACEHOLDER})(?:[a-z0-9._+-]|{_PLACEHOLDER})*$"


def document_id(source_type: str, event_id: str) -> str:
    """The ``_id``: first 40 hex digits of SHA-256 of ``"<source_type>:<event_id>"``.

    Deterministic, so every resend of an event targets the same document; 160 bits, so
    unrelated events never collide; short and fixed-length, which keeps the ``_id`` index lean.
    An id holding a lone surrogate (a vendor's ``"\\ud800"``) is hashed with it escaped.
    """
    return hashlib.sha256(f"{source_type}:{event_id}".encode("utf-8", "backslashreplace")).hexdigest()[:40]


class ElasticBulk(Output):
    """Elasticsearch ``_bulk`` with ``create`` actions. See the module docstring."""
    declared_metrics = {
        "bulk_item_status_total": ("counter", "Elasticsearch _bulk items by output and item status (201, 409, 429, "
                                              "400, ...)."),
        "bulk_request_splits_total": ("counter", "_bulk requests split in two after a 413 (request too large)."),
    }

    type_name = "elastic_bulk"
    options_schema = http_output_options_schema(
        properties={
            "index": {
                "type": "string", "minLength": 1, "maxLength": 200, "pattern": _INDEX_PATTERN,
                "default": DEFAULT_INDEX,
                "description": "Data stream or index to write to; may hold {dataset} (the source's declared dataset), "
                               "{vendor} (the dataset's first part), {source_type} and {source}.",
            },
            "api_key": {"type": "string", "minLength": 1,
                        "description": "The encoded API key: the value that follows 'ApiKey ' in the header."},
            "username": {"type": "string", "minLength": 1, "description": "Basic auth user (with password)."},
            "password": {"type": "string", "minLength": 1, "description": "Basic auth password (with username)."},
            "pipeline": {"type": "string", "minLength": 1, "description": "Ingest pipeline to run on each document."},
            "item_retry_rounds": {
                "type": "integer", "minimum": 0, "default": 5,
                "description": "Times items answered 429/5xx are sent again within one delivery before they are "
                               "handed back to the pipeline's slower retry.",
            },
        },
        batch_max_bytes=5_000_000,
        batch_max_events=5_000,
    )
    options_schema["dependentRequired"] = {"username": ["password"], "password": ["username"]}

    def metric_series(self) -> Iterator[tuple[str, dict[str, str]]]:
        """Items are counted by status; 201 (created) and 409 (already there) from start-up."""
        for status in ("201", "409"):
            yield "bulk_item_status_total", {"output": self.name, "status": status}
        yield "bulk_request_splits_total", {"output": self.name}

    def __init__(self, config: Any, context: Any):
        super().__init__(config, context)
        opts = self.options
        self.limits = Limits.from_options(opts)
        self.item_retry_rounds = int(opts.get("item_retry_rounds", 5))
        self.index_template = str(opts.get("index") or DEFAULT_INDEX)
        fields = {f for _, f, _, _ in string.Formatter().parse(self.index_template) if f is not None}
        unknown = fields - PLACEHOLDERS
        if unknown:
            raise OutputError(f"index {self.index_template!r} has unknown placeholders "
                              f"{sorted(unknown)}; known: {sorted(PLACEHOLDERS)}", pause=True)
        self._static_index = None if fields else self.index_template
        self._targets: dict[tuple[str, str, str | None], tuple[str, SourceTraits, bytes]] = {}
        self._headers = {"Content-Type": "application/x-ndjson", "Accept": "application/json"}
        if self.limits.gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._params: dict[str, str] = {"filter_path": _FILTER_PATH}
        if opts.get("pipeline"):
            self._params["pipeline"] = str(opts["pipeline"])
        self.http = context.http(opts)
        authorization = self._authorization()
        if authorization:
            self.http.session.headers["Authorization"] = authorization
        self._warned: set[str] = set()

    def _authorization(self) -> str:
        api_key = reveal(self.options.get("api_key"))
        if api_key:
            if self.options.get("username"):
                self.log.warning("%s: both api_key and username are set; using api_key", self.name)
            return f"ApiKey {api_key}"
        user = self.options.get("username")
        if user:
            token = base64.b64encode(f"{user}:{reveal(self.options.get('password')) or ''}".encode()).decode()
            return f"Basic {token}"
        return ""

    # ------------------------------------------------------------------ formatting

    def _target(self, src: dict[str, Any]) -> tuple[str, SourceTraits, bytes]:
        """(index, the source's traits, action-line prefix) for a source, computed once per source."""
        key = (src["name"], src["type"], src.get("dataset"))
        target = self._targets.get(key)
        if target is None:
            traits = traits_of(src)
            index = self._static_index or self.index_template.format(
                vendor=slug(traits.namespace), dataset=slug(traits.dataset), source_type=slug(src["type"]),
                source=slug(src["name"]))
            prefix = ('{"create":{"_index":' + json.dumps(index) + ',"_id":"').encode()
            target = self._targets[key] = (index, traits, prefix)
        return target

    def encode(self, ev: dict[str, Any], ingested: str) -> bytes:
        """The action line and the ECS document of one event, each ending in a newline."""
        src = ev["source"]
        _, traits, prefix = self._target(src)
        body = compact_json(ecs_document(ev, ingested=ingested, traits=traits), allow_nan=False)
        return prefix + document_id(src["type"], ev["id"]).encode() + b'"}}\n' + body + b"\n"

    # ------------------------------------------------------------------ send

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        return self.send_encoded(self.encode_batch(events))

    def encode_batch(self, events: list[dict[str, Any]]) -> Encoded:
        """Each event's action and document lines; ``_id`` is in the action line, so a resend never duplicates."""
        ingested = format_time(datetime.now(timezone.utc))
        lines: list[bytes] = []
        rejected: dict[int, str] = {}
        for i, ev in enumerate(events):
            try:
                lines.append(self.encode(ev, ingested))
            except (ValueError, TypeError, KeyError) as exc:  # NaN, a value JSON cannot hold, a broken event
                lines.append(b"")
                rejected[i] = f"event cannot be encoded as an Elasticsearch document: {exc!r}"
        return self.limits.build_ahead(Encoded(lines, rejected), [len(line) for line in lines], b"", GZIP_LEVEL)

    def send_encoded(self, batch: Encoded) -> SendResult:
        lines = batch.parts
        result = SendResult(rejected=dict(batch.rejected))
        todo = [i for i in range(len(lines)) if i not in result.rejected]
        sizes = [len(line) for line in lines]

        def give_up(todo: list[int]) -> None:
            self.log.warning("%s: Elasticsearch still refuses %d of %d documents (429/5xx); they will be "
                             "sent again later", self.name, len(todo), len(lines))

        return send_in_rounds(todo, result, lambda indexes: self._round(indexes, sizes, batch, result),
                              rounds=self.item_retry_rounds, stop=self.context.stop, wait=ITEM_RETRY_BASE,
                              wait_cap=ITEM_RETRY_CAP, on_give_up=give_up)

    def _round(self, indexes: list[int], sizes: list[int], batch: Encoded, result: SendResult) -> Round:
        rnd = Round()
        return post_round(self.limits.chunks(indexes, sizes),
                          lambda chunk, queue: self._post_chunk(chunk, queue, rnd, batch, result), rnd)

    def _post_chunk(self, chunk: list[int], queue: deque[list[int]], rnd: Round, batch: Encoded,
                    result: SendResult) -> None:
        """One ``_bulk`` request and what Elasticsearch's answer means for each of its documents."""
        lines = batch.parts
        status, body, headers = self._post(chunk, batch)
        if status == 200:
            self._items(chunk, body, result, rnd)
        elif status == 413:
            self.metrics.inc("bulk_request_splits_total", output=self.name)
            if not split(chunk, queue):
                result.rejected[chunk[0]] = (
                    f"Elasticsearch answered 413 Request Entity Too Large to this document alone "
                    f"({len(lines[chunk[0]])} bytes of NDJSON); it exceeds http.max_content_length")
                rnd.progressed = True
        elif status in (401, 403):
            raise OutputError(self._auth_message(status, body), pause=True)
        else:
            raise Retryable(f"Elasticsearch answered {status} to _bulk: {_describe(body)}",
                            parse_retry_after(headers.get("Retry-After")))

    def _post(self, chunk: list[int], batch: Encoded) -> tuple[int, Any, Any]:
        body = self.limits.body_of(chunk, batch, b"", GZIP_LEVEL)
        try:
            resp = self.http.request("POST", "/_bulk", params=self._params, data=body, headers=self._headers,
                                     retry=False)
        except HttpError as exc:
            raise Retryable(str(exc)) from None
        try:
            decoded = json.loads(resp.content) if resp.content else None
        except ValueError:
            decoded = snippet(resp.text)
        return resp.status_code, decoded, resp.headers

    def _items(self, chunk: list[int], body: Any, result: SendResult, rnd: Round) -> None:
        """Sort the items of a 200 answer into delivered, retry (the round's ``again``) and rejected."""
        if not isinstance(body, dict) or "errors" not in body:
            raise Retryable(f"Elasticsearch's _bulk answer is not a bulk response: {_describe(body)}")
        items = body.get("items")
        if not body["errors"] and items is None:
            items = [{"create": {"status": 201}}] * len(chunk)
        if not isinstance(items, list) or len(items) != len(chunk):
            raise Retryable(f"Elasticsearch answered {len(items) if isinstance(items, list) else 'no'} items "
                              f"for {len(chunk)} documents")
        statuses: Counter[int] = Counter()
        denied: tuple[int, Any] | None = None
        for i, item in zip(chunk, items):
            outcome = next(iter(item.values())) if isinstance(item, dict) and item else {}
            status = int(outcome.get("status", 0))
            statuses[status] += 1
            if 200 <= status < 300 or status == 409:
                rnd.progressed = True
            elif status == 429 or status >= 500:
                rnd.again.append(i)
            elif status in (401, 403):
                denied = (status, outcome)
                rnd.again.append(i)
            else:
                result.rejected[i] = _item_reason(status, outcome.get("error"))
                rnd.progressed = True
                self._warn_once(status, outcome.get("error"))
        for status, n in statuses.items():
            self.metrics.inc("bulk_item_status_total", n, output=self.name, status=str(status))
        if denied is not None:
            raise OutputError(self._auth_message(denied[0], {"error": denied[1].get("error")}), pause=True)

    def _warn_once(self, status: int, error: Any) -> None:
        kind = error.get("type", "") if isinstance(error, dict) else ""
        if kind in self._warned:
            return
        self._warned.add(kind)
        hint = ""
        if status == 404 or kind == "index_not_found_exception":
            hint = " (is automatic index creation off? create the index or data stream, or fix `index`)"
        self.log.warning("%s: Elasticsearch rejected a document (%s); it goes to the dead-letter file%s; "
                         "further %s rejections are only counted", self.name, _item_reason(status, error),
                         hint, kind or status)

    def _auth_message(self, status: int, body: Any, *, delivering: bool = True) -> str:
        what = "refused the credentials" if status == 401 else "denied this write"
        how = ("api_key (the encoded key, the value after 'ApiKey ')" if self.options.get("api_key")
               else "username and password" if self.options.get("username") else "api_key or username/password")
        hint = (f"check {how}" if status == 401
                else "the key or user needs the create_doc (and auto_configure) privilege on the index")
        tail = "; nothing was dropped, delivery resumes once it is fixed" if delivering else ""
        return f"Elasticsearch {what} ({status} {_describe(body)}): {hint}{tail}"

    # ------------------------------------------------------------------ check --connect

    def check_connection(self) -> str:
        """``GET /`` (credentials, product header, version), then whether the target exists."""
        try:
            resp = self.http.request("GET", "/", retry=False)
        except HttpError as exc:
            raise OutputError(f"cannot reach Elasticsearch: {exc}") from None
        body = _json(resp)
        if resp.status_code in (401, 403):
            raise OutputError(self._auth_message(resp.status_code, body, delivering=False), pause=True)
        if resp.status_code != 200 or not isinstance(body, dict):
            raise OutputError(f"GET / answered {resp.status_code}: {_describe(body)}")
        if resp.headers.get("X-Elastic-Product") != "Elasticsearch":
            raise OutputError(f"{self.http.base_url} is not Elasticsearch (no 'X-Elastic-Product: "
                              f"Elasticsearch' header; OpenSearch and proxies that strip it are not supported)")
        version = str((body.get("version") or {}).get("number", "?"))
        try:
            target = self._check_target()
        except HttpError as exc:
            raise OutputError(f"cannot look up the index: {exc}") from None
        return f"Elasticsearch {version} at {self.http.base_url}; {target}"

    def _check_target(self) -> str:
        name = self._static_index
        if name is None:
            return f"index template {self.index_template!r} is resolved per source"
        resp = self.http.request("GET", f"/_data_stream/{name}", retry=False)
        if resp.status_code == 200:
            return f"data stream {name} exists"
        if resp.status_code == 403:
            return f"cannot see whether {name} exists (the key lacks view_index_metadata; writing does not need it)"
        head = self.http.request("HEAD", f"/{name}", retry=False)
        if head.status_code == 200:
            return f"index {name} exists"
        if name.startswith(DATA_STREAM_PATTERNS) and name.count("-") >= 2:
            return (f"data stream {name} does not exist yet; the built-in {name.split('-')[0]}-*-* index template "
                    f"creates it on the first write (the key needs the auto_configure privilege)")
        return (f"index {name} does not exist yet; it is created on the first write if action.auto_create_index "
                f"allows it")


def _json(resp: Any) -> Any:
    try:
        return resp.json()
    except ValueError:
        return snippet(resp.text)


def _describe(body: Any) -> str:
    """``type: reason`` of an Elasticsearch error body, or a short excerpt of anything else."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            extra = error.get("additional_unsuccessful_credentials")
            return snippet(f"{error.get('type', 'error')}: {error.get('reason', '')}" + (f" ({extra})" if extra else ""))
        if isinstance(error, str):
            return snippet(error)
        return snippet(json.dumps(body))
    return snippet(str(body)) if body else "empty body"


def _item_reason(status: int, error: Any) -> str:
    if not isinstance(error, dict):
        return f"Elasticsearch rejected the document ({status})"
    reason = f"Elasticsearch rejected the document ({status} {error.get('type', 'error')}: {error.get('reason', '')}"
    cause = error.get("caused_by")
    if isinstance(cause, dict) and cause.get("reason"):
        reason += f"; caused by {cause.get('type', 'error')}: {cause['reason']}"
    return reason + ")"


@hookimpl
def forwarder_register_outputs(registry: Any) -> None:
    registry.add(ElasticBulk)
