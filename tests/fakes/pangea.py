"""A local Pangea Secure Audit Log that computes real hashes, Merkle trees, proofs and signatures.

It speaks the wire protocol of ``/work/shared/reference/vendor-apis.md`` §3: every answer is the
strict six-key envelope; ``POST /v1/search`` freezes a result set (``id``, ``count``,
``expires_at``) ordered by ``received_at``; ``POST /v1/results`` pages it by ``offset``;
``POST /v1/root`` gives roots by size; 202 ``Accepted`` is answered on demand and then served at
``GET /request/{request_id}``. A public-ledger stand-in (``POST /graphql``, ``GET /<tx>/``)
publishes the roots so the consistency check can run without reaching arweave.net.

The log is built the way Pangea builds it: each event's ``hash`` is the SHA-256 of the
canonical JSON of its envelope; events are grouped in buffers (a "hot" Merkle tree each), and
the buffer roots are the leaves of the "cold" tree whose roots get published. Trees use the
RFC 6962 split with no leaf or node prefixes. This module has its own tree code, on purpose
independent of the forwarder's verifier.

Tampering modes, each hitting one event: :meth:`PangeaFake.alter_after_hashing`,
:meth:`PangeaFake.corrupt_proof`, :meth:`PangeaFake.bad_signature`; and protocol modes:
:meth:`PangeaFake.accept_next` (202 first), :meth:`PangeaFake.expire_after` (the result set
vanishes midway), :meth:`PangeaFake.rate_limit` (429 with Pangea's body), :meth:`PangeaFake.server_error`.

Run alone: ``python -m tests.fakes.pangea --events N --port P --ready-file F``.
"""
from __future__ import annotations

import argparse
import base64
import bisect
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.fakes.base import FakeServer, Request, Response, json_response, serve_forever_cli

TOKEN = "pts_fake_pangea_token_0123456789"
TREE_NAME = "fake-tree-0123456789abcdef"
ORDER_BY = ("actor", "action", "message", "received_at", "source", "status", "target", "timestamp")


def canonical(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=True).encode()


def us_z(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_when(text: str) -> datetime:
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


# --------------------------------------------------------------------------- Merkle trees


def _h(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (RFC 6962's k)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class Tree:
    """Subtree hashes over a growing list of leaves. A range's hash depends only on its leaves, so
    it is cached once every leaf in it is final (``frozen`` leaves never change)."""

    def __init__(self) -> None:
        self.leaves: list[bytes] = []
        self.frozen = 0
        self._cache: dict[tuple[int, int], bytes] = {}

    def node(self, lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return self.leaves[lo]
        cached = self._cache.get((lo, hi))
        if cached is None:
            k = _split(hi - lo)
            cached = _h(self.node(lo, lo + k), self.node(lo + k, hi))
            if hi <= self.frozen:
                self._cache[(lo, hi)] = cached
        return cached

    def root(self, size: int) -> bytes:
        return self.node(0, size)

    def path(self, lo: int, hi: int, size: int) -> list[str]:
        """Proof items (``l:``/``r:``) from the node over ``[lo, hi)`` up to the root of ``size``."""
        items: list[str] = []
        a, b = 0, size
        while (a, b) != (lo, hi):
            if b - a <= 1:
                raise ValueError(f"range [{lo},{hi}) is not a node of a tree of size {size}")
            k = _split(b - a)
            if hi <= a + k:
                items.append("r:" + self.node(a + k, b).hex())
                b = a + k
            else:
                items.append("l:" + self.node(a, a + k).hex())
                a = a + k
        items.reverse()
        return items

    def consistency(self, old: int, new: int) -> list[str]:
        """Pangea's consistency proof of the tree of size ``old`` inside the tree of size ``new``:
        the old tree's perfect subtrees, smallest (rightmost) first, each with its path in ``new``."""
        parts: list[tuple[int, int]] = []
        lo = 0
        remaining = old
        while remaining:
            size = 1 << (remaining.bit_length() - 1)
            parts.append((lo, lo + size))
            lo += size
            remaining -= size
        parts.reverse()
        return [",".join(["x:" + self.node(a, b).hex()] + self.path(a, b, new)) for a, b in parts]


# --------------------------------------------------------------------------- the log


@dataclass
class Record:
    envelope: dict[str, Any]
    hash: str
    received_us: int
    proof_override: str | None = None


class PangeaFake(FakeServer):
    """The audit service and a ledger stand-in. Build with events, then :meth:`start`."""

    name = "pangea"

    def __init__(self, events: int = 0, *, token: str = TOKEN, buffer_size: int = 8, signed_every: int = 3,
                 start: datetime | None = None, step: timedelta = timedelta(milliseconds=250),
                 publish_ratio: float = 0.5, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.token = token
        self.buffer_size = buffer_size
        self.signed_every = signed_every
        self.step = step
        self.next_time = start or (datetime.now(timezone.utc) - timedelta(hours=1))
        self.records: list[Record] = []
        self.served_hashes: dict[int, str | None] = {}
        self._times: list[int] = []
        self.cold = Tree()
        self._hot: list[Tree] = []
        self.published = 0  # buffers published to the ledger
        self._sets: dict[str, tuple[list[int], int, int, datetime, bool]] = {}  # id -> (indexes, pub, cold, exp, verbose)
        self._ids = itertools.count(1)
        self._data_lock = threading.RLock()
        self._keys = [Ed25519PrivateKey.generate() for _ in range(2)]
        self._accepted: dict[str, tuple[int, dict[str, Any]]] = {}
        self._accept_next = 0
        self._accept_polls = 1
        self._expire_countdown: int | None = None
        self.result_ttl = timedelta(hours=24)
        for i in range(events):
            self.append(self.sample_event(i), signed=bool(signed_every) and i % signed_every == 1)
        self.publish(int(self.full_buffers() * publish_ratio))
        self.route("POST", "/v1/search", self._search)
        self.route("POST", "/v1/results", self._results)
        self.route("POST", "/v1/root", self._root)
        self.route("GET", "/request/(?P<rid>[^/]+)", self._request)
        self.route("POST", "/graphql", self._graphql)
        self.route("GET", "/(?P<tx>tx-[^/]+)/?", self._ledger_tx)

    # ------------------------------------------------------------------ building the log

    @staticmethod
    def sample_event(i: int) -> dict[str, Any]:
        return {"message": f"user signed in from office {i % 7}", "actor": f"user{i % 13}@example.com",
                "action": ("login", "logout", "update", "delete")[i % 4],
                "status": ("success", "failure")[i % 5 == 0], "target": f"app-{i % 3}", "source": "web",
                "timestamp": us_z(datetime(2026, 11, 1, tzinfo=timezone.utc) + timedelta(seconds=i)),
                "tenant_id": "tenant-a", "new": "é ünïcödé ✓"}

    def public_key_form(self, key_index: int, form: int) -> str:
        public = self._keys[key_index].public_key()
        if form == 0:
            pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            return json.dumps({"algorithm": "ED25519", "key": pem.decode()})
        if form == 1:
            ssh = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            return json.dumps({"algorithm": "ED25519", "key": ssh.decode()})
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode()  # bare Base64: the raw key is its last 32 bytes

    def append(self, event: dict[str, Any], *, signed: bool = False, received_at: datetime | None = None,
               extra_envelope: dict[str, Any] | None = None) -> Record:
        """Log one event as Pangea would: envelope, hash, leaf of the current buffer."""
        with self._data_lock:
            when = received_at or self.next_time
            if self.records and when < parse_when(self.records[-1].envelope["received_at"]):
                raise ValueError("the log is append-only in received_at order")
            self.next_time = when + self.step
            envelope: dict[str, Any] = {"event": event, "received_at": us_z(when)}
            if signed:
                n = len(self.records)
                key = n % 2
                envelope["signature"] = base64.b64encode(self._keys[key].sign(canonical(event))).decode()
                envelope["public_key"] = self.public_key_form(key, n % 3)
            if extra_envelope:
                envelope.update(extra_envelope)
            digest = hashlib.sha256(canonical(envelope)).hexdigest()
            record = Record(envelope, digest, int(when.timestamp() * 1_000_000))
            index = len(self.records)
            self.records.append(record)
            self._times.append(record.received_us)
            buffer, _ = divmod(index, self.buffer_size)
            if buffer == len(self._hot):
                self._hot.append(Tree())
                self.cold.leaves.append(b"")
            hot = self._hot[buffer]
            hot.leaves.append(bytes.fromhex(digest))
            self.cold.leaves[buffer] = hot.root(len(hot.leaves))
            if len(hot.leaves) == self.buffer_size:
                hot.frozen = self.buffer_size
                self.cold.frozen = buffer + 1
            return record

    def full_buffers(self) -> int:
        return len(self.records) // self.buffer_size

    def publish(self, buffers: int) -> None:
        """Publish the first ``buffers`` buffers (only full ones can be)."""
        with self._data_lock:
            self.published = max(0, min(buffers, self.full_buffers()))

    # ------------------------------------------------------------------ tampering modes

    def alter_after_hashing(self, index: int, **changes: Any) -> None:
        """Change an event's content after its hash (and tree leaf) were computed."""
        with self._data_lock:
            event = self.records[index].envelope["event"]
            event.update(changes or {"message": event.get("message", "") + " (edited)"})

    def serve_hash(self, index: int, value: str | None) -> None:
        """Serve this event with ``hash`` set to ``value`` (``""``, say), or without one (None)."""
        self.served_hashes[index] = value

    def corrupt_proof(self, index: int) -> None:
        """Serve a membership proof with one sibling flipped for this event."""
        with self._data_lock:
            self.records[index].proof_override = "corrupt"

    def bad_signature(self, index: int) -> None:
        """Re-sign this event's envelope with a signature over other content (hash stays honest)."""
        with self._data_lock:
            record = self.records[index]
            if "signature" not in record.envelope:
                raise ValueError("event is not signed")
            forged = dict(record.envelope["event"], message="forged")
            record.envelope["signature"] = base64.b64encode(self._keys[0].sign(canonical(forged))).decode()
            # The hash covers the envelope as served, so only the signature check can catch this.
            record.hash = hashlib.sha256(canonical(record.envelope)).hexdigest()
            index_in_buffer = index % self.buffer_size
            buffer = index // self.buffer_size
            hot = self._hot[buffer]
            hot.leaves[index_in_buffer] = bytes.fromhex(record.hash)
            hot._cache.clear()
            self.cold.leaves[buffer] = hot.root(len(hot.leaves))
            self.cold._cache.clear()

    def accept_next(self, count: int = 1, polls: int = 1) -> None:
        """Answer the next ``count`` search/results calls with 202 Accepted; the result is ready at
        ``GET /request/{id}`` after ``polls`` GETs (the earlier ones answer 202 again)."""
        with self._data_lock:
            self._accept_next = count
            self._accept_polls = max(1, polls)

    def expire_after(self, results_calls: int) -> None:
        """After ``results_calls`` more successful results calls, every open result set expires."""
        with self._data_lock:
            self._expire_countdown = results_calls

    def rate_limit(self, count: int = 1, retry_after: str = "0", path: str = "/v1/") -> None:
        """429 with Pangea's own TooManyRequests envelope on the next ``count`` calls."""
        self.fault("status", path=path, count=count, status=429, retry_after=retry_after,
                   body=self.envelope("TooManyRequests", "Too many requests, slow down", None))

    def server_error(self, count: int = 1, status: int = 503, path: str = "/v1/") -> None:
        name = "ServiceNotAvailable" if status == 503 else "InternalError"
        self.fault("status", path=path, count=count, status=status,
                   body=self.envelope(name, "Service temporarily unavailable", None))

    # ------------------------------------------------------------------ protocol

    def envelope(self, status: str, summary: str, result: Any, request_id: str | None = None) -> dict[str, Any]:
        now = datetime.now(timezone.utc)
        return {"request_id": request_id or f"prq_{next(self._ids):08d}{'a' * 24}", "request_time": us_z(now),
                "response_time": us_z(now + timedelta(milliseconds=3)), "status": status, "summary": summary,
                "result": result}

    def _answer(self, status: str, summary: str, result: Any, http: int = 200) -> Response:
        return json_response(self.envelope(status, summary, result), http)

    def _error(self, http: int, status: str, summary: str, detail: str, source: str = "/") -> Response:
        return self._answer(status, summary, {"errors": [{"code": status, "detail": detail, "source": source}]}, http)

    def _authorized(self, req: Request) -> bool:
        return req.headers.get("Authorization") == f"Bearer {self.token}"

    def _body(self, req: Request) -> dict[str, Any] | None:
        try:
            body = req.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _maybe_accept(self, final: Response) -> Response:
        """Turn a final answer into 202 Accepted when asked to; keep it for GET /request/{id}."""
        with self._data_lock:
            if self._accept_next <= 0:
                return final
            self._accept_next -= 1
            body = json.loads(final.encoded())
            rid = body["request_id"]
            self._accepted[rid] = (self._accept_polls, body)
        return json_response(self.envelope(
            "Accepted", "Your request is in progress", {"ttl_mins": 5, "retry_counter": 0,
                                                        "location": f"/request/{rid}", "post_form_data": {}},
            request_id=rid), 202)

    def _request(self, req: Request) -> Response:
        if not self._authorized(req):
            return self._error(401, "Unauthorized", "Not authorized", "invalid token")
        rid = req.path.rsplit("/", 1)[-1]
        with self._data_lock:
            entry = self._accepted.get(rid)
            if entry is None:
                return self._error(404, "NotFound", "Request not found", f"no request {rid}")
            left, body = entry
            if left > 1:
                self._accepted[rid] = (left - 1, body)
                return json_response(self.envelope("Accepted", "Your request is in progress",
                                                   {"ttl_mins": 5, "retry_counter": 1,
                                                    "location": f"/request/{rid}", "post_form_data": {}},
                                                   request_id=rid), 202)
            del self._accepted[rid]
        return json_response(body, 200)

    def _search(self, req: Request) -> Response:
        if not self._authorized(req):
            return self._error(401, "Unauthorized", "Not authorized", "invalid token")
        body = self._body(req)
        if body is None or not isinstance(body.get("query"), str):
            return self._error(400, "ValidationError", "There was an error validating the payload",
                               "'query' is a required string", "/query")
        if body.get("order", "desc") not in ("asc", "desc") or body.get("order_by", "received_at") not in ORDER_BY:
            return self._error(400, "ValidationError", "There was an error validating the payload",
                               "order must be asc/desc and order_by a known field", "/order_by")
        limit = body.get("limit", 20)
        if not isinstance(limit, int) or limit < 1:
            return self._error(400, "ValidationError", "There was an error validating the payload",
                               "limit must be a positive integer", "/limit")
        try:
            start = parse_when(body["start"]) if body.get("start") else None
            end = parse_when(body["end"]) if body.get("end") else None
        except (TypeError, ValueError):
            return self._error(400, "ValidationError", "There was an error validating the payload",
                               "start and end must be RFC 3339 times", "/start")
        with self._data_lock:
            lo = bisect.bisect_left(self._times, int(start.timestamp() * 1_000_000)) if start else 0
            hi = bisect.bisect_right(self._times, int(end.timestamp() * 1_000_000)) if end else len(self._times)
            indexes = [i for i in range(lo, hi) if self._matches(self.records[i].envelope["event"], body)]
            if body.get("order", "desc") == "desc":
                indexes.reverse()
            max_results = body.get("max_results")
            if isinstance(max_results, int) and max_results > 0:
                indexes = indexes[:max_results]
            sid = f"pas_{next(self._ids):08d}{'b' * 24}"
            expires = datetime.now(timezone.utc) + self.result_ttl
            self._sets[sid] = (indexes, self.published, len(self._hot), expires, bool(body.get("verbose")))
            result = {"id": sid, "expires_at": us_z(expires), "count": len(indexes),
                      **self._page(indexes[:limit], self.published, len(self._hot), bool(body.get("verbose")))}
        return self._maybe_accept(self._answer("Success", f"Found {len(indexes)} event(s)", result))

    def _results(self, req: Request) -> Response:
        if not self._authorized(req):
            return self._error(401, "Unauthorized", "Not authorized", "invalid token")
        body = self._body(req)
        if body is None or not isinstance(body.get("id"), str):
            return self._error(400, "ValidationError", "There was an error validating the payload",
                               "'id' is required", "/id")
        offset, limit = body.get("offset", 0), body.get("limit", 20)
        with self._data_lock:
            if self._expire_countdown is not None:
                if self._expire_countdown <= 0:
                    self._sets.clear()
                    self._expire_countdown = None
                else:
                    self._expire_countdown -= 1
            entry = self._sets.get(body["id"])
            if entry is not None and entry[3] < datetime.now(timezone.utc):
                del self._sets[body["id"]]
                entry = None
            if entry is None:
                return self._error(404, "NotFound", "Search results not found or expired",
                                   f"result id {body['id'][:40]} not found", "/id")
            indexes, published, cold_size, _, verbose = entry
            if not isinstance(offset, int) or offset < 0 or offset > len(indexes):
                return self._error(400, "BadOffset", "Offset is out of range",
                                   f"offset {offset} is beyond {len(indexes)} results", "/offset")
            result = {"count": len(indexes),
                      **self._page(indexes[offset:offset + limit], published, cold_size, verbose)}
        return self._maybe_accept(self._answer("Success", f"Found {len(indexes)} event(s)", result))

    def _matches(self, event: dict[str, Any], body: dict[str, Any]) -> bool:
        for term in body["query"].split():
            field, sep, value = term.partition(":")
            if sep:
                if str(event.get(field)) != value:
                    return False
            elif term.lower() not in str(event.get("message", "")).lower():
                return False
        restriction = body.get("search_restriction") or {}
        return all(event.get(field) in values for field, values in restriction.items())

    def _root_obj(self, size: int) -> dict[str, Any]:
        root: dict[str, Any] = {"tree_name": TREE_NAME, "size": size, "root_hash": self.cold.root(size).hex(),
                                "url": f"{self.url}/tx-{size}/", "published_at": us_z(datetime.now(timezone.utc))}
        if size > 1:
            root["consistency_proof"] = self.cold.consistency(size - 1, size)
        return root

    def _page(self, indexes: list[int], published: int, cold_size: int, verbose: bool) -> dict[str, Any]:
        events = []
        for i in indexes:
            record = self.records[i]
            item: dict[str, Any] = {"envelope": record.envelope, "hash": record.hash}
            if i in self.served_hashes:
                served = self.served_hashes[i]
                if served is None:
                    del item["hash"]
                else:
                    item["hash"] = served
            if verbose:
                buffer, pos = divmod(i, self.buffer_size)
                is_published = buffer < published
                size = published if is_published else cold_size
                hot = self._hot[buffer]
                proof = hot.path(pos, pos + 1, len(hot.leaves)) + self.cold.path(buffer, buffer + 1, size)
                if record.proof_override == "corrupt" and proof:
                    side, sib = proof[0].split(":")
                    proof[0] = f"{side}:{sib[:-1]}{'0' if sib[-1] != '0' else '1'}"
                item.update(membership_proof=",".join(proof), published=is_published, imported=False,
                            leaf_index=buffer if is_published else None)
            events.append(item)
        out: dict[str, Any] = {"events": events}
        if verbose:
            out["root"] = self._root_obj(published) if published else None
            out["unpublished_root"] = {"tree_name": TREE_NAME, "size": cold_size,
                                       "root_hash": self.cold.root(cold_size).hex()} if cold_size else None
        return out

    def _root(self, req: Request) -> Response:
        if not self._authorized(req):
            return self._error(401, "Unauthorized", "Not authorized", "invalid token")
        body = self._body(req) or {}
        with self._data_lock:
            size = body.get("tree_size") or self.published
            if not isinstance(size, int) or size < 1 or size > self.published:
                return self._error(404, "TreeNotFound", "Tree not found", f"no published root of size {size}")
            return self._answer("Success", "Root found", {"data": self._root_obj(size)})

    # ------------------------------------------------------------------ ledger stand-in

    def _graphql(self, req: Request) -> Response:
        query = (self._body(req) or {}).get("query", "")
        sizes = re.search(r'name:\s*"tree_size",\s*values:\s*\[([^\]]*)\]', query)
        names = re.search(r'name:\s*"tree_name",\s*values:\s*\[([^\]]*)\]', query)
        if not sizes or not names or TREE_NAME not in names.group(1):
            return json_response({"data": {"transactions": {"edges": []}}})
        edges = []
        with self._data_lock:
            for size in (int(s) for s in re.findall(r'"(\d+)"', sizes.group(1))):
                if 1 <= size <= self.published:
                    edges.append({"node": {"id": f"tx-{size}", "tags": [{"name": "tree_name", "value": TREE_NAME},
                                                                         {"name": "tree_size", "value": str(size)}]}})
        return json_response({"data": {"transactions": {"edges": edges}}})

    def _ledger_tx(self, req: Request) -> Response:
        size = int(req.path.strip("/").split("-", 1)[1])
        with self._data_lock:
            if not 1 <= size <= self.published:
                return json_response({"error": "not found"}, 404)
            root = self._root_obj(size)
        return json_response({k: v for k, v in root.items() if k != "url"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file")
    parser.add_argument("--token", default=TOKEN)
    parser.add_argument("--tamper", type=int, action="append", default=[],
                        help="alter this event (by index) after hashing; repeatable")
    parser.add_argument("--corrupt-proof", type=int, action="append", default=[])
    parser.add_argument("--start", help="received_at of the first event (default: one hour ago)")
    args = parser.parse_args()
    start = parse_when(args.start) if args.start else None
    if start is None and args.events:
        start = datetime.now(timezone.utc) - timedelta(hours=1)
    step = timedelta(seconds=min(0.25, 3000 / max(args.events, 1)))
    fake = PangeaFake(args.events, token=args.token, start=start, step=step, port=args.port)
    for index in args.tamper:
        fake.alter_after_hashing(index)
    for index in args.corrupt_proof:
        fake.corrupt_proof(index)
    serve_forever_cli(fake, args.ready_file)


if __name__ == "__main__":
    main()
