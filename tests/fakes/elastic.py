"""An Elasticsearch 8 that answers ``_bulk`` and a small read API as a real cluster does.

What it speaks (siem-protocols.md §2):

* ``GET /``: the cluster info body (``version.number`` 8.x, ``tagline``), and every answer
  carries ``X-Elastic-Product: Elasticsearch``, which the official client checks. Requests that
  ask for a REST compatibility version (``Accept: application/vnd.elasticsearch+json;
  compatible-with=N``) must ask for 8 or 7, as on a real 8.x node (a 9.x client is refused
  with ``media_type_header_exception``).
* ``POST /_bulk`` and ``/<target>/_bulk``: NDJSON (``application/x-ndjson``, ``application/json``
  or the ``vnd.elasticsearch+x-ndjson`` compatible type; gzip bodies accepted), every line
  ending in ``\\n``. ``create`` and ``index`` actions. Names matching ``logs-*-*`` (and
  ``metrics-*-*``, ``traces-*-*``, ``synthetics-*-*``) become data streams on first write, as
  the built-in index templates do: only ``create`` is allowed there and ``@timestamp`` is
  required and must be a date. Other names become plain indices. ``create`` on an existing
  ``_id`` is an item 409 ``version_conflict_engine_exception``. A small dynamic mapping is kept
  per index (object vs value, number, boolean, ip, date), so a document whose field contradicts
  an earlier one gets the item 400 ``document_parsing_exception`` a real cluster gives (data
  streams of the ``logs`` template ignore malformed values, as ``index.mapping.ignore_malformed``
  makes them, but not object/value conflicts). The answer is ``{"took","errors","items"}``
  with items in request order.
* Auth when any credential is configured: ``Authorization: ApiKey <base64(id:key)>`` or Basic;
  missing or wrong → 401 ``security_exception`` with ``WWW-Authenticate``. Indices listed with
  :meth:`FakeElasticsearch.forbid` answer item 403 ``security_exception`` (a key without the
  ``create_doc`` privilege there).
* Faults: :meth:`FakeElasticsearch.poison` (item 400 for documents holding a marker),
  :meth:`FakeElasticsearch.reject_items` (the next N items 429
  ``es_rejected_execution_exception`` or 503 ``unavailable_shards_exception``),
  :meth:`FakeElasticsearch.reject_requests` (whole request 429/503 with ES's error body),
  ``max_content_length`` (whole request 413 with an empty body, as ``http.max_content_length``
  does), plus the base class's faults (dropped connections, slow answers).
* Read API, enough for the official ``elasticsearch`` client: ``_search`` and ``_count`` (query
  ``match_all``, ``term``, ``terms``, ``ids``, ``match`` and ``bool`` of those; ``size``,
  ``from``, ``sort``), ``GET /<index>/_doc/<id>``, ``GET|HEAD /<index>``,
  ``GET /_data_stream/<name>``, ``POST /<index>/_refresh``. Writes are visible at once.

Documents are kept decoded per index and ``_id`` (:meth:`FakeElasticsearch.documents`); in
benchmark mode (``bench=True``) only the ids are kept and sources are not decoded, so the fake
stays cheap per request. ``GET /_fake/stats`` reports counts for a fake in another process.

Run standalone: ``python -m tests.fakes.elastic --port P --ready-file F [--api-key ID:KEY]
[--user NAME:PASSWORD] [--bench]``.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import fnmatch
import ipaddress
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tests.fakes.base import FakeServer, Request, Response, serve_forever_cli

VERSION = "8.15.3"
DATA_STREAM_PATTERNS = ("logs-*-*", "metrics-*-*", "traces-*-*", "synthetics-*-*")
NDJSON_TYPES = ("application/x-ndjson", "application/json", "application/vnd.elasticsearch+x-ndjson",
                "application/vnd.elasticsearch+json")
_COMPAT = re.compile(r"compatible-with\s*=\s*(\d+)")
_BAD_INDEX_CHARS = set('\\/*?"<>| ,#:')
_SHARDS = {"total": 2, "successful": 1, "failed": 0}
_SIMPLE_ACTION = re.compile(rb'^\{"(create|index)":\{"_index":"([a-z0-9._+-]+)","_id":"([A-Za-z0-9_-]+)"\}\}$')


def es_error(status: int, type_: str, reason: str, headers: dict[str, str] | None = None,
             **extra: Any) -> Response:
    """A whole-request error as Elasticsearch writes it: ``{"error": {...root_cause...}, "status"}``."""
    cause = {"type": type_, "reason": reason, **extra}
    return Response(status=status, body={"error": {"root_cause": [cause], **cause}, "status": status},
                    headers=dict(headers or {}))


def item_error(type_: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "reason": reason, **extra}


@dataclass
class Index:
    """A plain index or a data stream (with its one backing index)."""

    name: str
    data_stream: bool
    created: float = field(default_factory=time.time)
    uuid: str = field(default_factory=lambda: base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22])
    docs: dict[str, Any] = field(default_factory=dict)  # _id -> source (None in bench mode)
    seq_no: int = 0
    mapping: dict[str, str] = field(default_factory=dict)  # dotted path -> object|long|double|boolean|ip|date|keyword

    @property
    def backing(self) -> str:
        if not self.data_stream:
            return self.name
        day = datetime.fromtimestamp(self.created, tz=timezone.utc).strftime("%Y.%m.%d")
        return f".ds-{self.name}-{day}-000001"

    @property
    def ignore_malformed(self) -> bool:
        return self.data_stream and self.name.startswith("logs-")


class FakeElasticsearch(FakeServer):
    """See the module docstring."""

    name = "elasticsearch"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, version: str = VERSION,
                 api_keys: dict[str, str] | None = None, users: dict[str, str] | None = None,
                 bench: bool = False, max_content_length: int = 100 * 1024 * 1024,
                 pipelines: set[str] | None = None):
        super().__init__(host, port)
        self.version = version
        self.major = int(version.split(".")[0])
        self.api_keys: dict[str, str] = dict(api_keys or {})
        self.users: dict[str, str] = dict(users or {})
        self.bench = bench
        self.max_content_length = max_content_length
        self.pipelines: set[str] = set(pipelines or ())
        self.indices: dict[str, Index] = {}
        self.bulk_requests = 0
        self._data_lock = threading.Lock()
        self._bulk_seen = threading.Condition(self._data_lock)
        self._item_faults: list[list[Any]] = []  # [remaining, status]
        self._request_faults: list[list[Any]] = []  # [remaining, status, retry_after, skip first]
        self._forbidden: list[str] = []
        self._poison: list[bytes] = []
        for method in ("GET", "POST", "PUT", "HEAD", "DELETE"):
            self.route(method, "/.*", self._handle)

    # ------------------------------------------------------------------ test controls

    def add_api_key(self, key_id: str, key: str) -> str:
        """Register an API key; return its encoded form (what follows ``ApiKey `` in the header)."""
        self.api_keys[key_id] = key
        return base64.b64encode(f"{key_id}:{key}".encode()).decode()

    def reject_items(self, count: int, status: int = 429) -> None:
        """Answer the next ``count`` write items 429 (queue full) or 503 (shard unavailable)."""
        with self._lock:
            self._item_faults.append([count, status])

    def reject_requests(self, count: int, status: int = 429, retry_after: str | None = None, *,
                        after: int = 0) -> None:
        """Answer ``count`` bulk requests as a whole with ``status`` (429 or 5xx), once ``after`` more
        have been served normally."""
        with self._lock:
            self._request_faults.append([count, status, retry_after, after])

    def poison(self, marker: bytes) -> None:
        """Refuse (item 400) every document whose JSON contains ``marker``, as a mapping conflict would."""
        self._poison.append(marker)

    def forbid(self, pattern: str) -> None:
        """Writes to indices matching ``pattern`` get item 403, as for a key without ``create_doc`` there."""
        self._forbidden.append(pattern)

    def documents(self, index: str) -> dict[str, Any]:
        """``_id`` → source of an index or data stream (empty when it does not exist)."""
        with self._data_lock:
            idx = self.indices.get(index)
            return dict(idx.docs) if idx else {}

    def wait_for_bulk_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until ``n`` bulk requests have been fully processed (a slow one may lag its client)."""
        with self._bulk_seen:
            return self._bulk_seen.wait_for(lambda: self.bulk_requests >= n, timeout)

    def count(self, index: str | None = None) -> int:
        with self._data_lock:
            if index is not None:
                idx = self.indices.get(index)
                return len(idx.docs) if idx else 0
            return sum(len(i.docs) for i in self.indices.values())

    # ------------------------------------------------------------------ dispatch

    def _handle(self, req: Request) -> Response:
        req.headers = {k.lower(): v for k, v in req.headers.items()}  # HTTP header names are case-insensitive
        resp = self._route(req)
        wanted = req.arg("filter_path")
        if wanted and isinstance(resp.body, (dict, list)):
            resp.body = _filter_path(resp.body, [p.split(".") for p in wanted.split(",")])
        resp.headers.setdefault("X-elastic-product", "Elasticsearch")
        if resp.content_type == "application/json" and _COMPAT.search(req.headers.get("accept", "")):
            resp.content_type = f"application/vnd.elasticsearch+json;compatible-with={self.major}"
        return resp

    def _route(self, req: Request) -> Response:
        if req.path == "/_fake/stats":
            with self._data_lock:
                return Response(body={"bulk_requests": self.bulk_requests,
                                      "indices": {n: len(i.docs) for n, i in self.indices.items()}})
        bad = self._check_media_types(req)
        if bad is not None:
            return bad
        denied = self._authenticate(req)
        if denied is not None:
            return denied
        parts = [p for p in req.path.split("/") if p]
        m = req.method
        if not parts:
            return self._info() if m in ("GET", "HEAD") else self._no_handler(req)
        if parts[-1] == "_bulk" and len(parts) <= 2 and m in ("POST", "PUT"):
            return self._bulk(req, parts[0] if len(parts) == 2 else None)
        if parts[0] == "_data_stream" and m in ("GET", "HEAD"):
            return self._get_data_stream(parts[1] if len(parts) > 1 else "*")
        if parts[-1] in ("_search", "_count") and len(parts) <= 2 and m in ("GET", "POST"):
            return self._search(req, parts[0] if len(parts) == 2 else "_all", count=parts[-1] == "_count")
        if parts[-1] == "_refresh" and m in ("GET", "POST"):
            return Response(body={"_shards": {"total": 1, "successful": 1, "failed": 0}})
        if len(parts) == 3 and parts[1] == "_doc" and m in ("GET", "HEAD"):
            return self._get_doc(parts[0], parts[2])
        if len(parts) == 1 and not parts[0].startswith("_") and m in ("GET", "HEAD"):
            return self._get_index(parts[0])
        return self._no_handler(req)

    @staticmethod
    def _no_handler(req: Request) -> Response:
        return Response(status=405 if req.method != "GET" else 400, body={
            "error": f"Incorrect HTTP method for uri [{req.path}] and method [{req.method}]", "status": 405})

    def _check_media_types(self, req: Request) -> Response | None:
        for header in ("Accept", "Content-Type"):
            value = req.headers.get(header.lower(), "")
            m = _COMPAT.search(value)
            if m and int(m.group(1)) not in (self.major, self.major - 1):
                return es_error(400, "media_type_header_exception",
                                f"Invalid media-type value on headers [{header}]",
                                caused_by={"type": "status_exception", "reason":
                                           f"{header} version must be either version {self.major} or "
                                           f"{self.major - 1}, but found {m.group(1)}. {header}={value}"})
        return None

    def _authenticate(self, req: Request) -> Response | None:
        if not self.api_keys and not self.users:
            return None
        header = req.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Basic realm="security", charset="UTF-8", ApiKey'}
        if not header:
            return es_error(401, "security_exception",
                            f"missing authentication credentials for REST request [{req.path}]", challenge,
                            header={"WWW-Authenticate": ['Basic realm="security", charset="UTF-8"', "ApiKey"]})
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        ident, _, secret = decoded.partition(":")
        if scheme.lower() == "apikey":
            if ident in self.api_keys and self.api_keys[ident] == secret:
                return None
            detail = f"unable to find apikey with id {ident}" if ident else "invalid ApiKey value"
            return es_error(401, "security_exception",
                            "unable to authenticate with provided credentials and anonymous access is not "
                            "allowed for this request", challenge,
                            additional_unsuccessful_credentials=f"API key: {detail}")
        if scheme.lower() == "basic":
            if ident in self.users and self.users[ident] == secret:
                return None
            return es_error(401, "security_exception",
                            f"unable to authenticate user [{ident}] for REST request [{req.path}]", challenge)
        return es_error(401, "security_exception",
                        f"missing authentication credentials for REST request [{req.path}]", challenge)

    def _info(self) -> Response:
        return Response(body={
            "name": "fake-node-1", "cluster_name": "fake-cluster", "cluster_uuid": "fAkEcLuStErUuId000000w",
            "version": {"number": self.version, "build_flavor": "default", "build_type": "docker",
                        "build_hash": "0" * 40, "build_date": "2024-10-01T00:00:00.000Z",
                        "build_snapshot": False, "lucene_version": "9.11.1",
                        "minimum_wire_compatibility_version": "7.17.0",
                        "minimum_index_compatibility_version": "7.0.0"},
            "tagline": "You Know, for Search"})

    # ------------------------------------------------------------------ _bulk

    def _take(self, faults: list[list[Any]]) -> list[Any] | None:
        with self._lock:
            if not faults:
                return None
            fault = faults[0]
            if len(fault) > 3 and fault[3] > 0:
                fault[3] -= 1
                return None
            fault[0] -= 1
            if fault[0] <= 0:
                faults.pop(0)
            return fault

    def _bulk(self, req: Request, target: str | None) -> Response:
        ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in NDJSON_TYPES:
            return Response(status=406, body={
                "error": f"Content-Type header [{req.headers.get('content-type', '')}] is not supported",
                "status": 406})
        if len(req.body) > self.max_content_length:
            return Response(status=413, body=b"", content_type="text/plain", headers={"Connection": "close"})
        fault = self._take(self._request_faults)
        if fault is not None:
            headers = {"Retry-After": fault[2]} if fault[2] is not None else {}
            if fault[1] == 429:
                return es_error(429, "es_rejected_execution_exception",
                                "rejected execution of coordinating operation [coordinating_and_primary_bytes="
                                "104857600, replica_bytes=0, all_bytes=104857600, coordinating_operation_bytes="
                                f"{len(req.body)}, max_coordinating_and_primary_bytes=104857600]", headers)
            return es_error(fault[1], "cluster_block_exception",
                            "blocked by: [SERVICE_UNAVAILABLE/2/no master];", headers)
        body = req.body
        if not body:
            return es_error(400, "parse_exception", "request body is required")
        if not body.endswith(b"\n"):
            return es_error(400, "illegal_argument_exception",
                            "The bulk request must be terminated by a newline [\\n]")
        started = time.monotonic()
        lines = body.split(b"\n")
        lines.pop()
        pipeline = req.arg("pipeline")
        items: list[dict[str, Any]] = []
        i = 0
        with self._data_lock:
            self.bulk_requests += 1
            self._bulk_seen.notify_all()  # waiters wake once this request's documents are all stored
            while i < len(lines):
                simple = _SIMPLE_ACTION.match(lines[i])  # the common shape, without a JSON decode
                if simple is not None:
                    if i + 1 >= len(lines):
                        return es_error(400, "illegal_argument_exception",
                                        "The bulk request must be terminated by a newline [\\n]")
                    items.append({simple[1].decode(): self._write_doc(
                        simple[1].decode(), simple[2].decode(), simple[3].decode(), lines[i + 1], pipeline)})
                    i += 2
                    continue
                try:
                    action = json.loads(lines[i])
                    (op, meta), = action.items()
                except (ValueError, AttributeError):
                    return es_error(400, "x_content_parse_exception",
                                    f"[1:1] Malformed action/metadata line [{i + 1}], expected START_OBJECT")
                if op not in ("create", "index", "delete", "update"):
                    return es_error(400, "illegal_argument_exception",
                                    f"Malformed action/metadata line [{i + 1}], expected one of [create, delete, "
                                    f"index, update] but found [{op}]")
                index = meta.get("_index") or target
                if not index:
                    return es_error(400, "action_request_validation_exception",
                                    "Validation Failed: 1: index is missing;")
                if op == "delete":
                    items.append({op: self._delete(index, meta.get("_id"))})
                    i += 1
                    continue
                if i + 1 >= len(lines):
                    return es_error(400, "illegal_argument_exception",
                                    "The bulk request must be terminated by a newline [\\n]")
                items.append({op: self._write_doc(op, index, meta.get("_id"), lines[i + 1],
                                              meta.get("pipeline") or pipeline)})
                i += 2
        took = int((time.monotonic() - started) * 1000)
        errors = any(next(iter(item.values()))["status"] >= 300 for item in items)
        return Response(body={"errors": errors, "took": took, "items": items})

    def _write_doc(self, op: str, name: str, doc_id: str | None, line: bytes, pipeline: str | None) -> dict[str, Any]:
        doc_id = doc_id if doc_id is not None else base64.urlsafe_b64encode(uuid.uuid4().bytes[:15]).decode()
        result: dict[str, Any] = {"_index": name, "_id": doc_id}
        bad_name = _invalid_index_name(name)
        if bad_name:
            return {**result, "status": 400, "error": item_error("invalid_index_name_exception",
                                                                 f"Invalid index name [{name}], {bad_name}",
                                                                 index_uuid="_na_", index=name)}
        if pipeline is not None and pipeline not in self.pipelines:
            return {**result, "status": 400, "error": item_error("illegal_argument_exception",
                                                                 f"pipeline with id [{pipeline}] does not exist")}
        if any(fnmatch.fnmatchcase(name, p) for p in self._forbidden):
            return {**result, "status": 403, "error": item_error(
                "security_exception",
                f"action [indices:data/write/bulk[s]] is unauthorized for API key id [k1] of user [forwarder] "
                f"on indices [{name}], this action is granted by the index privileges "
                f"[create_doc,create,index,write,all]")}
        fault = self._take(self._item_faults)
        if fault is not None:
            if fault[1] == 429:
                err = item_error("es_rejected_execution_exception",
                                 "rejected execution of org.elasticsearch.action.support.replication."
                                 "TransportWriteAction$1/WrappedActionListener on EsThreadPoolExecutor"
                                 "[name = fake-node-1/write, queue capacity = 10000]")
            else:
                err = item_error("unavailable_shards_exception",
                                 f"[{name}][0] primary shard is not active Timeout: [1m]")
            return {**result, "status": fault[1], "error": err}
        idx = self.indices.get(name)
        is_ds = idx.data_stream if idx else any(fnmatch.fnmatchcase(name, p) for p in DATA_STREAM_PATTERNS)
        if is_ds and op != "create":
            return {**result, "status": 400, "error": item_error(
                "illegal_argument_exception",
                "only write ops with an op_type of create are allowed in data streams")}
        if any(marker in line for marker in self._poison):
            return {**result, "status": 400, "error": item_error(
                "document_parsing_exception",
                f"[1:1] failed to parse field [event.original] of type [keyword] in document with id '{doc_id}'",
                caused_by={"type": "illegal_argument_exception", "reason": "poisoned document"})}
        if self.bench:
            source: Any = None
            if is_ds and b'"@timestamp"' not in line:
                return {**result, "status": 400, "error": _missing_timestamp()}
        else:
            try:
                source = json.loads(line)
            except ValueError as exc:
                return {**result, "status": 400, "error": item_error(
                    "document_parsing_exception", f"[1:{getattr(exc, 'pos', 0) + 1}] failed to parse",
                    caused_by={"type": "json_parse_exception", "reason": str(exc)})}
            if not isinstance(source, dict):
                return {**result, "status": 400, "error": item_error(
                    "document_parsing_exception", "[1:1] failed to parse: Malformed content, must start with an object")}
        if idx is None:
            idx = Index(name, is_ds)
        result["_index"] = idx.backing
        if source is not None:  # a document is parsed and mapped before its version is checked
            if is_ds and "@timestamp" not in source:
                return {**result, "status": 400, "error": _missing_timestamp()}
            problem = _map_document(idx, source, doc_id)
            if problem is not None:
                return {**result, "status": 400, "error": problem}
        if doc_id in idx.docs and op == "create":
            return {**result, "status": 409, "error": item_error(
                "version_conflict_engine_exception",
                f"[{doc_id}]: version conflict, document already exists (current version [1])",
                index_uuid=idx.uuid, shard="0", index=idx.backing)}
        self.indices[name] = idx
        updated = doc_id in idx.docs
        idx.docs[doc_id] = source
        idx.seq_no += 1
        return {**result, "_version": 2 if updated else 1, "result": "updated" if updated else "created",
                "_shards": _SHARDS, "_seq_no": idx.seq_no - 1, "_primary_term": 1,
                "status": 200 if updated else 201}

    def _delete(self, name: str, doc_id: str | None) -> dict[str, Any]:
        idx = self.indices.get(name)
        found = idx is not None and doc_id in idx.docs
        if found:
            del idx.docs[doc_id]  # type: ignore[union-attr,arg-type]
        return {"_index": idx.backing if idx else name, "_id": doc_id, "_version": 1,
                "result": "deleted" if found else "not_found", "_shards": _SHARDS,
                "status": 200 if found else 404}

    # ------------------------------------------------------------------ read API

    def _resolve(self, expression: str) -> list[Index] | Response:
        found: list[Index] = []
        for part in expression.split(","):
            if part in ("_all", "*"):
                found.extend(self.indices.values())
                continue
            if "*" in part:
                found.extend(i for n, i in self.indices.items() if fnmatch.fnmatchcase(n, part)
                             or fnmatch.fnmatchcase(i.backing, part))
                continue
            idx = self.indices.get(part) or next((i for i in self.indices.values() if i.backing == part), None)
            if idx is None:
                return _not_found(part)
            found.append(idx)
        return found

    def _search(self, req: Request, expression: str, *, count: bool) -> Response:
        try:
            body = json.loads(req.body) if req.body.strip() else {}
        except ValueError:
            return es_error(400, "parse_exception", "request body is not valid JSON")
        with self._data_lock:
            resolved = self._resolve(expression)
            if isinstance(resolved, Response):
                return resolved
            query = body.get("query", {"match_all": {}})
            hits = [(idx, doc_id, src) for idx in resolved for doc_id, src in idx.docs.items()
                    if _matches(query, doc_id, src)]
        shards = {"total": len(resolved), "successful": len(resolved), "skipped": 0, "failed": 0}
        if count:
            return Response(body={"count": len(hits), "_shards": shards})
        size = int(req.arg("size") or body.get("size", 10))
        start = int(req.arg("from") or body.get("from", 0))
        for spec in reversed(_sort_specs(body.get("sort"))):
            hits.sort(key=lambda h, f=spec[0]: _sort_key(_lookup(h[2], f)), reverse=spec[1])
        page = hits[start:start + size]
        return Response(body={
            "took": 1, "timed_out": False, "_shards": shards,
            "hits": {"total": {"value": len(hits), "relation": "eq"}, "max_score": 1.0 if page else None,
                     "hits": [{"_index": idx.backing, "_id": doc_id, "_score": 1.0, "_source": src}
                              for idx, doc_id, src in page]}})

    def _get_doc(self, name: str, doc_id: str) -> Response:
        with self._data_lock:
            resolved = self._resolve(name)
            if isinstance(resolved, Response):
                return resolved
            idx = resolved[0]
            if doc_id not in idx.docs:
                return Response(status=404, body={"_index": idx.backing, "_id": doc_id, "found": False})
            return Response(body={"_index": idx.backing, "_id": doc_id, "_version": 1, "_seq_no": 0,
                                  "_primary_term": 1, "found": True, "_source": idx.docs[doc_id]})

    def _get_index(self, name: str) -> Response:
        with self._data_lock:
            resolved = self._resolve(name)
            if isinstance(resolved, Response):
                return resolved
            return Response(body={idx.backing: {
                "aliases": {}, "mappings": {"properties": _mapping_tree(idx.mapping)},
                "settings": {"index": {"uuid": idx.uuid, "number_of_shards": "1", "number_of_replicas": "1",
                                       "provided_name": idx.backing}},
                **({"data_stream": idx.name} if idx.data_stream else {})} for idx in resolved})

    def _get_data_stream(self, expression: str) -> Response:
        with self._data_lock:
            streams = [i for i in self.indices.values() if i.data_stream and (
                fnmatch.fnmatchcase(i.name, expression) or expression in ("_all", "*"))]
        if not streams and "*" not in expression:
            return _not_found(expression)
        return Response(body={"data_streams": [{
            "name": s.name, "timestamp_field": {"name": "@timestamp"},
            "indices": [{"index_name": s.backing, "index_uuid": s.uuid}], "generation": 1,
            "status": "GREEN", "template": s.name.split("-")[0], "hidden": False, "system": False,
            "allow_custom_routing": False, "replicated": False} for s in streams]})


# --------------------------------------------------------------------------- documents and mapping


def _missing_timestamp() -> dict[str, Any]:
    return item_error("document_parsing_exception",
                      "[1:1] failed to parse: data stream timestamp field [@timestamp] is missing",
                      caused_by={"type": "illegal_argument_exception",
                                 "reason": "data stream timestamp field [@timestamp] is missing"})


def _not_found(name: str) -> Response:
    return es_error(404, "index_not_found_exception", f"no such index [{name}]", index_uuid="_na_",
                    **{"resource.type": "index_or_alias", "resource.id": name}, index=name)


def _invalid_index_name(name: str) -> str | None:
    if name != name.lower():
        return "must be lowercase"
    if name.startswith(("_", "-", "+")):
        return "must not start with '_', '-', or '+'"
    if name in (".", "..") or any(c in _BAD_INDEX_CHARS for c in name):
        return 'must not contain the following characters [ , ", *, \\, <, |, ,, >, /, ?]'
    if len(name.encode()) > 255:
        return "index name is too long"
    return None


def _value_type(path: str, value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if path == "@timestamp" or path.endswith((".created", ".ingested")):
        return "date"
    if path.endswith(".ip"):
        return "ip"
    return "keyword"


def _fits(kind: str, value: Any) -> bool:
    """Whether ``value`` can be indexed into a field mapped as ``kind`` (ES coerces strings to numbers)."""
    if kind == "keyword":
        return True
    if kind in ("long", "double"):
        if isinstance(value, bool):
            return False
        if isinstance(value, (int, float)):
            return True
        try:
            float(value)
            return True
        except (TypeError, ValueError):
            return False
    if kind == "boolean":
        return isinstance(value, bool) or value in ("true", "false", "")
    if kind == "ip":
        try:
            ipaddress.ip_address(value)
            return True
        except ValueError:
            return False
    if kind == "date":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        try:
            datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            return True
        except ValueError:
            return False
    return False


def _map_document(idx: Index, source: dict[str, Any], doc_id: str) -> dict[str, Any] | None:
    """Extend ``idx.mapping`` from ``source``; return the item error of a conflicting document."""
    new: dict[str, str] = {}
    stack: list[tuple[str, Any]] = [(k, v) for k, v in source.items()]
    while stack:
        path, value = stack.pop()
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v is None:
                continue
            kind = idx.mapping.get(path) or new.get(path)
            vtype = _value_type(path, v)
            if kind is None:
                new[path] = kind = vtype
            if kind == "object":
                if not isinstance(v, dict):
                    return item_error("document_parsing_exception",
                                      f"[1:1] object mapping for [{path}] tried to parse field [{path}] as "
                                      f"object, but found a concrete value")
                stack.extend((f"{path}.{k}", sub) for k, sub in v.items())
            elif isinstance(v, dict):
                return item_error("document_parsing_exception",
                                  f"[1:1] failed to parse field [{path}] of type [{kind}] in document with id "
                                  f"'{doc_id}'. Preview of field's value: '{v}'",
                                  caused_by={"type": "illegal_state_exception",
                                             "reason": "Can't get text on a START_OBJECT at 1:1"})
            elif not _fits(kind, v) and not idx.ignore_malformed:
                return item_error("document_parsing_exception",
                                  f"[1:1] failed to parse field [{path}] of type [{kind}] in document with id "
                                  f"'{doc_id}'. Preview of field's value: '{v}'")
    idx.mapping.update(new)
    return None


def _mapping_tree(mapping: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, kind in sorted(mapping.items()):
        node = tree
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {"properties": {}})["properties"]
        if kind == "object":
            node.setdefault(parts[-1], {"properties": {}})
        else:
            node[parts[-1]] = {"type": kind}
    return tree


def _lookup(source: Any, path: str) -> Any:
    """A field by dotted path, through objects and dotted keys alike, as ES resolves it."""
    if not isinstance(source, dict):
        return None
    if path in source:
        return source[path]
    head, _, rest = path.partition(".")
    while rest:
        if head in source:
            found = _lookup(source[head], rest)
            if found is not None:
                return found
        nxt, _, rest = rest.partition(".")
        head = f"{head}.{nxt}"
    return source.get(head)


def _equal(value: Any, wanted: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    return any(v == wanted or (v is not None and str(v) == str(wanted)) for v in values)


def _matches(query: dict[str, Any], doc_id: str, source: Any) -> bool:
    (kind, spec), = query.items()
    if kind == "match_all":
        return True
    if kind == "ids":
        return doc_id in spec.get("values", [])
    if kind in ("term", "match", "match_phrase"):
        (fname, wanted), = spec.items()
        if isinstance(wanted, dict):
            wanted = wanted.get("value", wanted.get("query"))
        return doc_id == wanted if fname == "_id" else _equal(_lookup(source, fname), wanted)
    if kind == "terms":
        (fname, wanted), = spec.items()
        return any(_equal(_lookup(source, fname), w) for w in wanted)
    if kind == "exists":
        return _lookup(source, spec["field"]) is not None
    if kind == "bool":
        def listed(key: str) -> list[dict[str, Any]]:
            value = spec.get(key, [])
            return value if isinstance(value, list) else [value]
        return (all(_matches(q, doc_id, source) for q in listed("must") + listed("filter"))
                and not any(_matches(q, doc_id, source) for q in listed("must_not"))
                and (not listed("should") or any(_matches(q, doc_id, source) for q in listed("should"))))
    raise ValueError(f"the fake does not support query [{kind}]")


def _filter_path(value: Any, patterns: list[list[str]]) -> Any:
    """The ``filter_path`` response filter: keep only keys on a matching path (``*`` per level)."""
    if isinstance(value, list):
        kept = [_filter_path(v, patterns) if isinstance(v, (dict, list)) else v for v in value]
        return [v for v in kept if v != {}]
    out: dict[str, Any] = {}
    for key, sub in value.items():
        matching = [p for p in patterns if p[0] == "*" or p[0] == key or ("*" in p[0] and fnmatch.fnmatchcase(key, p[0]))]
        if not matching:
            continue
        deeper = [p[1:] for p in matching if len(p) > 1]
        if any(len(p) == 1 for p in matching):
            out[key] = sub
        elif deeper and isinstance(sub, (dict, list)):
            filtered = _filter_path(sub, deeper)
            if filtered not in ({}, []):
                out[key] = filtered
    return out


def _sort_specs(sort: Any) -> list[tuple[str, bool]]:
    specs: list[tuple[str, bool]] = []
    for entry in sort if isinstance(sort, list) else ([sort] if sort else []):
        if isinstance(entry, str):
            name, _, order = entry.partition(":")
            specs.append((name, order == "desc"))
        else:
            (name, opts), = entry.items()
            order = opts.get("order", "asc") if isinstance(opts, dict) else opts
            specs.append((name, order == "desc"))
    return specs


def _sort_key(value: Any) -> tuple[int, Any]:
    return (1, "") if value is None else (0, str(value) if not isinstance(value, (int, float)) else value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local fake Elasticsearch 8 (bulk and read API).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file")
    parser.add_argument("--api-key", action="append", default=[], metavar="ID:KEY")
    parser.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD")
    parser.add_argument("--bench", action="store_true", help="keep only document ids (cheap per request)")
    parser.add_argument("--max-content-length", type=int, default=100 * 1024 * 1024)
    args = parser.parse_args(argv)
    fake = FakeElasticsearch(args.host, args.port, bench=args.bench, max_content_length=args.max_content_length,
                             api_keys=dict(k.split(":", 1) for k in args.api_key),
                             users=dict(u.split(":", 1) for u in args.user))
    serve_forever_cli(fake, args.ready_file)


if __name__ == "__main__":
    main()
