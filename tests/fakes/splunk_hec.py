"""A Splunk HTTP Event Collector that answers as a real one does, codes and all.

What it speaks (siem-protocols.md §1):

* ``POST /services/collector/event`` (also ``/services/collector`` and ``/event/1.0``): a body of
  JSON objects **concatenated** (whitespace between them allowed, never an array), optionally
  gzip-compressed. Auth ``Authorization: Splunk <token>`` (Basic with the token as password
  also works). Each object needs ``event`` (code 12 missing, 13 blank), ``fields`` must be flat
  (code 15), ``index`` must be one the token allows (code 7), and an object that does not parse
  is code 6. Events are processed in order and the ones before a bad event are already indexed
  when the 400 with ``invalid-event-number`` comes back, as Splunk does.
* Tokens: missing header → 401 code 2, malformed → 401 code 3, unknown → 403 code 4, disabled →
  403 code 1.
* Indexer acknowledgement per token: every request then needs a channel
  (``X-Splunk-Request-Channel`` or ``?channel=``; missing → 400 code 10, not a GUID → code 11),
  success carries an ``ackId`` (per channel, from 0), and ``POST /services/collector/ack`` with
  ``{"acks":[...]}`` answers ``{"acks":{"0":true,...}}``; a true ack is then forgotten, and an
  unknown id is false. :meth:`SplunkHecFake.lose_acks` makes acks stay false forever (the
  request's events are never indexed: an indexer died before replicating them).
* ``GET /services/collector/health``: 200 code 17, 503 code 18 while busy, 400 code 21/22 for a
  bad token when one is sent.
* :meth:`SplunkHecFake.busy` answers the next requests 503 code 9 "Server is busy".

Indexed events land in :attr:`SplunkHecFake.events` (decoded); in benchmark mode
(``keep_events=False``) only a count and the ``fields.event_id`` values are kept, so the fake
stays cheap per request. ``GET /_fake/stats`` reports the counts for a fake in another process.

Run standalone: ``python -m tests.fakes.splunk_hec --port P --ready-file F [--token T] [--ack]``.
"""
from __future__ import annotations

import argparse
import base64
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.base import FakeServer, Request, Response, json_response, serve_forever_cli

DEFAULT_TOKEN = "11111111-2222-3333-4444-555555555555"
EVENT_PATHS = r"/services/collector(/event(/1\.0)?)?"

def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(parse_constant=_no_constants)  # strict, as Splunk's parser is
_WS = re.compile(r"[ \t\n\r]*")
_EVENT_ID = re.compile(r'"event_id":"([^"\\]*)"')
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def parse_body(text: str) -> tuple[list[Any], list[int], int | None]:
    """The JSON values concatenated in a HEC body, their sizes in characters, and the number of
    the first one that does not parse (None when all do).

    Most senders write one value per line, and that parses as a single JSON array in C, which
    keeps the fake cheap in benchmarks. It is exact: a comma inserted at any whitespace *inside*
    a valid JSON value makes it invalid, so when the array parses with one item per line, the
    items are the body's values. Anything else takes the value-by-value path.
    """
    lines = [line for line in text.split("\n") if line.strip()]
    try:
        values = _decoder.decode("[" + ",".join(lines) + "]")
    except ValueError:
        pass
    else:
        if len(values) == len(lines):
            return values, [len(line) for line in lines], None
    values, sizes = [], []
    pos, end = _WS.match(text, 0).end(), len(text)
    while pos < end:
        start = pos
        try:
            obj, pos = _decoder.raw_decode(text, pos)
        except ValueError:
            return values, sizes, len(values)
        values.append(obj)
        sizes.append(pos - start)
        pos = _WS.match(text, pos).end()
    return values, sizes, None


def hec(code: int, text: str, status: int, **extra: Any) -> Response:
    """A HEC answer: ``{"text": ..., "code": N}`` plus extras (``ackId``, ``invalid-event-number``)."""
    return json_response({"text": text, "code": code, **extra}, status)


@dataclass
class TokenConfig:
    """What Splunk stores per HEC token: enabled, indexer ack, allowed indexes, default index."""

    ack: bool = False
    disabled: bool = False
    indexes: frozenset[str] | None = None  # None = any index
    default_index: str = "main"


@dataclass
class _Channel:
    next_id: int = 0
    pending: dict[int, bool] = field(default_factory=dict)  # ackId -> indexed yet
    queries: dict[int, int] = field(default_factory=dict)  # ackId -> polls still to answer false


class SplunkHecFake(FakeServer):
    """See the module docstring. Tests read :attr:`events` or wait with :meth:`wait_for_events`."""

    name = "splunk-hec"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, tokens: dict[str, TokenConfig] | None = None,
                 keep_events: bool = True):
        super().__init__(host, port)
        self.tokens: dict[str, TokenConfig] = tokens if tokens is not None else {DEFAULT_TOKEN: TokenConfig()}
        self.keep_events = keep_events
        self.events: list[dict[str, Any]] = []
        self.event_ids: list[str] = []
        self.indexed_count = 0
        self.responses: list[tuple[int, int]] = []  # (HTTP status, HEC code) per event request
        self._cond = threading.Condition()
        self._channels: dict[str, _Channel] = {}
        self._busy = 0
        self._busy_retry_after: str | None = None
        self._lose_acks = 0
        self.ack_delay_polls = 0
        """Polls that answer false before an ack turns true (a slow indexer, not a lost one)."""
        self.max_event_bytes: int | None = None
        """Per-event size limit; a bigger event is code 6 "Invalid data format" (Splunk's is ~5 MB)."""
        self.route("POST", EVENT_PATHS, self._event)
        self.route("POST", r"/services/collector/ack(/1\.0)?", self._ack)
        self.route("GET", r"/services/collector/health(/1\.0)?", self._health)
        self.route("GET", r"/_fake/stats", self._stats)

    # ------------------------------------------------------------------ switches for tests

    def busy(self, count: int = 1, retry_after: str | None = None) -> None:
        """Answer the next ``count`` event requests 503 code 9 "Server is busy"."""
        with self._cond:
            self._busy = count
            self._busy_retry_after = retry_after

    def lose_acks(self, count: int = 1) -> None:
        """The next ``count`` successful requests get an ackId that never turns true; their events are lost."""
        with self._cond:
            self._lose_acks = count

    def wait_for_events(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` events are indexed; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.indexed_count >= count, timeout)

    def event_requests(self) -> list[Request]:
        return self.calls(EVENT_PATHS + "$", "POST")

    # ------------------------------------------------------------------ auth and channel

    def _token(self, req: Request) -> tuple[str | None, Response | None]:
        return self._check_token(req.headers.get("Authorization"))

    def _check_token(self, header: str | None) -> tuple[str | None, Response | None]:
        if header is None:
            return None, hec(2, "Token is required", 401)
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme == "Basic":
            try:
                value = base64.b64decode(value, validate=True).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                return None, hec(3, "Invalid authorization", 401)
        elif scheme != "Splunk":
            return None, hec(3, "Invalid authorization", 401)
        if not value or " " in value:
            return None, hec(3, "Invalid authorization", 401)
        config = self.tokens.get(value)
        if config is None:
            return None, hec(4, "Invalid token", 403)
        if config.disabled:
            return None, hec(1, "Token disabled", 403)
        return value, None

    def _channel(self, req: Request, config: TokenConfig) -> tuple[str | None, Response | None]:
        channel = req.headers.get("X-Splunk-Request-Channel") or req.arg("channel")
        if not config.ack:
            return channel, None
        if not channel:
            return None, hec(10, "Data channel is missing", 400)
        if not _GUID.match(channel):
            return None, hec(11, "Invalid data channel", 400)
        return channel, None

    # ------------------------------------------------------------------ routes

    def _event(self, req: Request) -> Response:
        resp = self._event_answer(req)
        code = resp.body.get("code", -1) if isinstance(resp.body, dict) else -1
        with self._cond:
            self.responses.append((resp.status, code))
        return resp

    def _event_answer(self, req: Request) -> Response:
        token, err = self._token(req)
        if err is not None:
            return err
        config = self.tokens[token]  # type: ignore[index]
        channel, err = self._channel(req, config)
        if err is not None:
            return err
        with self._cond:
            if self._busy > 0:
                self._busy -= 1
                headers = {"Retry-After": self._busy_retry_after} if self._busy_retry_after else {}
                return json_response({"text": "Server is busy", "code": 9}, 503, headers)
        try:
            text = req.body.decode("utf-8")
        except UnicodeDecodeError:
            return hec(6, "Invalid data format", 400, **{"invalid-event-number": 0})
        if not text.strip():
            return hec(5, "No data", 400)

        accepted: list[dict[str, Any]] = []
        failure: Response | None = None
        skimmed = self._skim(text, config)
        if skimmed is None:
            values, sizes, unparseable = parse_body(text)
            for number, obj in enumerate(values):
                if self.max_event_bytes is not None and sizes[number] > self.max_event_bytes:
                    problem: tuple[int, str] | None = (6, "Invalid data format")
                else:
                    problem = self._check_event(obj, config)
                if problem is not None:
                    failure = hec(problem[0], problem[1], 400, **{"invalid-event-number": number})
                    break
                accepted.append(obj)
            else:
                if unparseable is not None:
                    failure = hec(6, "Invalid data format", 400, **{"invalid-event-number": unparseable})

        lost = False
        with self._cond:
            if failure is None and config.ack and self._lose_acks > 0:
                self._lose_acks -= 1
                lost = True
            if not lost:
                if skimmed is not None:
                    self._count(*skimmed)
                else:
                    self._index(accepted, config)
            if failure is not None:
                return failure
            if not config.ack:
                return hec(0, "Success", 200)
            chan = self._channels.setdefault(channel, _Channel())  # type: ignore[arg-type]
            ack_id = chan.next_id
            chan.next_id += 1
            chan.pending[ack_id] = not lost
            chan.queries[ack_id] = self.ack_delay_polls
            return hec(0, "Success", 200, ackId=ack_id)

    @staticmethod
    def _check_event(obj: Any, config: TokenConfig) -> tuple[int, str] | None:
        if not isinstance(obj, dict):
            return 6, "Invalid data format"
        if "event" not in obj:
            return 12, "Event field is required"
        event = obj["event"]
        if event is None or (isinstance(event, str) and not event.strip()):
            return 13, "Event field cannot be blank"
        fields = obj.get("fields")
        if fields is not None:
            if not isinstance(fields, dict):
                return 15, "Error in handling indexed fields"
            for value in fields.values():
                nested = isinstance(value, dict) or (
                    isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value))
                if nested:
                    return 15, "Error in handling indexed fields"
        index = obj.get("index")
        if index is not None and config.indexes is not None and index not in config.indexes:
            return 7, "Incorrect index"
        return None

    def _skim(self, text: str, config: TokenConfig) -> tuple[int, list[str]] | None:
        """Benchmark mode: (events, ids) from a body of one ``{"time":...}`` envelope per line,
        without decoding it; None sends the body through the full checks.

        Only for ``keep_events=False`` (the benchmark fake), where the sender under test writes
        one JSON object per line: decoding every event would make the fake the bottleneck.
        Anything that does not look like that is decoded and checked as usual.
        """
        if self.keep_events or self.max_event_bytes is not None or config.indexes is not None:
            return None
        count, ids = 0, []
        for line in text.split("\n"):
            line = line.strip()
            if not line:
                continue
            if not (line.startswith('{"time":') and line[-1] == "}" and '"event":' in line) \
                    or line.count('{"time":') != 1 or "}{" in line or '"event":""' in line:
                return None  # not one plain envelope per line: decode it properly
            count += 1
            found = _EVENT_ID.search(line)  # the first is in `fields`, which comes before `event`
            if found:
                ids.append(found.group(1))
        return count, ids

    def _count(self, count: int, ids: list[str]) -> None:
        """Record skimmed events (caller holds the lock)."""
        self.event_ids.extend(ids)
        self.indexed_count += count
        self._cond.notify_all()

    def _index(self, accepted: list[dict[str, Any]], config: TokenConfig) -> None:
        """Store what was indexed (caller holds the lock)."""
        if not accepted:
            return
        if self.keep_events:
            for obj in accepted:
                obj.setdefault("index", config.default_index)
            self.events.extend(accepted)
        for obj in accepted:
            fields = obj.get("fields")
            if isinstance(fields, dict) and "event_id" in fields:
                self.event_ids.append(fields["event_id"])
        self.indexed_count += len(accepted)
        self._cond.notify_all()

    def _ack(self, req: Request) -> Response:
        token, err = self._token(req)
        if err is not None:
            return err
        config = self.tokens[token]  # type: ignore[index]
        if not config.ack:
            return hec(14, "ACK is disabled", 400)
        channel, err = self._channel(req, config)
        if err is not None:
            return err
        try:
            wanted = req.json()["acks"]
            ids = [int(a) for a in wanted]
        except (ValueError, KeyError, TypeError):
            return hec(6, "Invalid data format", 400)
        answer: dict[str, bool] = {}
        with self._cond:
            chan = self._channels.setdefault(channel, _Channel())  # type: ignore[arg-type]
            for ack_id in ids:
                done = False
                if chan.pending.get(ack_id):
                    left = chan.queries.get(ack_id, 0)
                    if left > 0:
                        chan.queries[ack_id] = left - 1
                    else:
                        done = True
                        del chan.pending[ack_id]  # Splunk forgets an ack once it said true
                        chan.queries.pop(ack_id, None)
                answer[str(ack_id)] = done
        return json_response({"acks": answer})

    def _health(self, req: Request) -> Response:
        header = req.headers.get("Authorization")
        if header is None and req.arg("token"):
            header = f"Splunk {req.arg('token')}"
        if header is not None:
            _, err = self._check_token(header)
            if err is not None:
                disabled = isinstance(err.body, dict) and err.body.get("code") == 1
                return hec(22, "Token disabled", 400) if disabled else hec(21, "Invalid token", 400)
        with self._cond:
            busy = self._busy > 0
        if busy:
            return hec(18, "HEC is unhealthy, queues are full", 503)
        return hec(17, "HEC is healthy", 200)

    def _stats(self, req: Request) -> Response:
        with self._cond:
            ids = self.event_ids
            return json_response({
                "indexed": self.indexed_count,
                "distinct_ids": len(set(ids)),
                "requests": len(self.responses),
            })


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local Splunk HEC that speaks the real protocol.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", help="write the URL here once listening")
    parser.add_argument("--token", action="append", help=f"accepted token (repeatable; default {DEFAULT_TOKEN})")
    parser.add_argument("--ack", action="store_true", help="tokens require indexer acknowledgement")
    parser.add_argument("--index", action="append", help="indexes the tokens may write (default any)")
    parser.add_argument("--keep-events", action="store_true", help="keep every event decoded (not for benchmarks)")
    args = parser.parse_args(argv)
    indexes = frozenset(args.index) if args.index else None
    tokens = {t: TokenConfig(ack=args.ack, indexes=indexes) for t in (args.token or [DEFAULT_TOKEN])}
    serve_forever_cli(SplunkHecFake(args.host, args.port, tokens=tokens, keep_events=args.keep_events), args.ready_file)


if __name__ == "__main__":
    main()
