"""Output ``splunk_hec``: events to a Splunk HTTP Event Collector, decided on HEC's own codes.

Each event goes out as ``{"time","host","source","sourcetype","index"?,"fields","event"}`` with
the vendor's event unchanged in ``event`` (so the vendors' Splunk apps keep working) and
``time`` the event's own time in epoch seconds. Requests carry several events concatenated
(HEC's batch format), capped by encoded bytes before gzip and by count.

HEC answers with a ``code`` that says more than the HTTP status, and the difference matters
for never losing or duplicating events (siem-protocols.md §1.4, §5 #10-12):

* busy, internal errors, shutting down, queues full (8, 9, 18-20, 23, 26, 27, any 5xx/429): the
  request is tried again later, with ``Retry-After`` when Splunk gives one;
* token and configuration errors (1-4, 7, 10, 11, 14, 16): :class:`OutputError` with
  ``pause=True``; the core keeps the cursor still until an operator fixes it;
* a bad event (6, 12, 13, 15) with ``invalid-event-number`` N: Splunk has already indexed the
  events before N, so only N goes to the dead-letter file and the events after it are sent again
  (resending the whole request would duplicate the prefix).

With ``ack: true`` every request carries this instance's channel GUID and the batch counts as
delivered only once every ``ackId`` is reported true; an ack still false after ``ack_timeout``
means the indexer lost the request, and its events are sent again.
"""
from __future__ import annotations

import socket
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from forwarder_core import hookimpl
from forwarder_core.plugin_api import (
    BearerAuth,
    ComponentConfig,
    Context,
    Encoded,
    HttpClient,
    HttpError,
    Output,
    OutputError,
    SendResult,
    compact_json,
    http_output_options_schema,
    parse_ms,
    parse_retry_after,
    snippet,
    traits_of,
)
from siem_forwarder_plugins.outputs.batching import Limits, Retryable, Round, post_round, send_in_rounds, split

if TYPE_CHECKING:
    from requests import Response

EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"
HEALTH_PATH = "/services/collector/health"
GZIP_LEVEL = 1
"""zlib level 1: a third of level 5's CPU per event for a body about a fifth larger; the
forwarder's CPU, not the link, is what limits a backfill.
Compressed by ISA-L (``isal``) where it is installed, at its level 1: a quarter of zlib's CPU
at level 1 for a body 1% smaller (``batching.gzip_compress``, bench/stages.py)."""

RETRY_CODES = frozenset({8, 9, 18, 19, 20, 23, 26, 27})
PAUSE_CODES = frozenset({1, 2, 3, 4, 7, 10, 11, 14, 16})
EVENT_CODES = frozenset({6, 12, 13, 15})
RETRY_STATUSES = frozenset({408, 429})

_PAUSE_HINTS = {
    1: "the token is disabled in Splunk; enable it",
    2: "no token reached Splunk; check the output's token / token_file",
    3: "the Authorization header was malformed; check the token for stray spaces",
    4: "Splunk does not know this token; check the output's token / token_file",
    7: "the token may not write to the configured index; fix `index` or the token's allowed indexes",
    10: "the token has indexer acknowledgement on; set `ack: true` on this output",
    11: "Splunk refused the request channel",
    14: "the token has indexer acknowledgement off; set `ack: false` on this output",
    16: "Splunk refused query-string authorization",
}
_SEP = b"\n"
_MAX_ACK_ROUNDS = 3


@dataclass
class _Sent:
    """A request HEC answered code 0 to, waiting for its ack."""

    ack_id: int
    indexes: list[int]
    deadline: float


@dataclass
class _Round(Round):
    """A round of :mod:`~siem_forwarder_plugins.outputs.batching`, with the requests awaiting their acks."""

    sent: list[_Sent] = field(default_factory=list)


class SplunkHec(Output):
    """Splunk HTTP Event Collector. See the module docstring."""
    declared_metrics = {
        "hec_responses_total": ("counter", "Splunk HEC answers by output and HEC code (http_<status> when the answer "
                                           "was not HEC's)."),
    }

    type_name = "splunk_hec"
    options_schema = http_output_options_schema(
        properties={
            "token": {"type": "string", "minLength": 1, "description": "The HEC token (secret)."},
            "index": {"type": "string", "minLength": 1, "description": "Index to write to (default: the token's)."},
            "sourcetype": {"type": "string", "minLength": 1,
                           "description": "Overrides the sourcetype each source declares (`<type>:audit` by default)."},
            "host": {"type": "string", "minLength": 1, "description": "Default: this machine's host name."},
            "source": {"type": "string", "minLength": 1, "description": "Default: the source's name."},
            "ack": {"type": "boolean", "default": False, "description": "Wait for indexer acknowledgement."},
            "ack_timeout": {"type": "number", "exclusiveMinimum": 0, "default": 300,
                            "description": "Seconds an ack may stay false before the request is sent again."},
            "ack_poll_interval": {"type": "number", "exclusiveMinimum": 0, "default": 1,
                                  "description": "Seconds between ack status queries."},
        },
        required=["token"],
        batch_max_bytes=1_000_000,
        batch_max_events=5_000,
    )

    def metric_series(self) -> Iterator[tuple[str, dict[str, str]]]:
        """HEC answers are counted by code; code 0 (success) is exported from start-up."""
        yield "hec_responses_total", {"output": self.name, "code": "0"}

    def __init__(self, config: ComponentConfig, context: Context):
        super().__init__(config, context)
        opts = self.options
        self.limits = Limits.from_options(opts)
        self.ack = bool(opts["ack"])
        self.ack_timeout = float(opts["ack_timeout"])
        self.ack_poll_interval = float(opts["ack_poll_interval"])
        self.channel = str(uuid.uuid4())
        self.host = opts.get("host") or socket.gethostname()
        self.index = opts.get("index")
        self.source = opts.get("source")
        self.sourcetype = opts.get("sourcetype")
        self._headers = {"Content-Type": "application/json"}
        if self.limits.gzip:
            self._headers["Content-Encoding"] = "gzip"
        if self.ack:
            self._headers["X-Splunk-Request-Channel"] = self.channel
        self._ack_headers = {k: v for k, v in self._headers.items() if k != "Content-Encoding"}
        self._warned_no_ack = False
        self.http: HttpClient = context.http(opts, auth=_SplunkAuth(opts["token"], scheme="Splunk"))

    # ------------------------------------------------------------------ formatting

    def encode(self, ev: dict[str, Any]) -> bytes:
        """The HEC envelope of one normalized event, encoded once."""
        src = ev["source"]
        fields: dict[str, Any] = {
            "event_id": ev["id"],
            "forwarder_source": src["name"],
            "source_type": src["type"],
            "vendor": src["vendor"],
        }
        for key in ("action", "outcome"):
            if key in ev:
                fields[key] = ev[key]
        integrity = ev.get("integrity")
        if integrity:
            for key, value in integrity.items():
                fields["integrity_" + key] = value
        labels = ev.get("labels")
        if labels:
            for key, value in labels.items():
                fields["label_" + key] = value
        seconds = parse_ms(ev["timestamp"]) / 1000
        envelope: dict[str, Any] = {
            "host": self.host,
            "source": self.source or src["name"],
            "sourcetype": self.sourcetype or src.get("splunk_sourcetype") or traits_of(src).splunk_sourcetype,
        }
        if self.index:
            envelope["index"] = self.index
        envelope["fields"] = fields
        envelope["event"] = ev["raw"]
        # The bytes json.dumps gave: "time" first, spelled by float repr as json does; the rest
        # through compact_json, at C speed unless the raw event holds floats.
        return b'{"time":' + repr(seconds).encode() + b"," + compact_json(envelope, allow_nan=False)[1:]

    # ------------------------------------------------------------------ send

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        """Deliver ``events``: every one ends accepted, rejected (dead letter) or in ``retry``.

        Raises :class:`OutputError` when nothing of the batch got through (``pause=True`` for
        token and configuration errors).
        """
        return self.send_encoded(self.encode_batch(events))

    def encode_batch(self, events: list[dict[str, Any]]) -> Encoded:
        """Each event's HEC envelope; those that have no JSON form or exceed ``batch_max_bytes`` rejected."""
        payloads: list[bytes] = []
        rejected: dict[int, str] = {}
        for i, ev in enumerate(events):
            try:
                data = self.encode(ev)
            except (ValueError, TypeError) as exc:  # NaN/Infinity, or a value JSON has no form for
                payloads.append(b"")
                rejected[i] = f"event cannot be encoded as HEC JSON: {exc}"
                continue
            payloads.append(data)
            if len(data) > self.limits.max_bytes:
                rejected[i] = (
                    f"event is {len(data)} bytes as HEC JSON, over batch_max_bytes ({self.limits.max_bytes})")
        return self.limits.build_ahead(Encoded(payloads, rejected), _sizes(payloads), _SEP, GZIP_LEVEL)

    def send_encoded(self, batch: Encoded) -> SendResult:
        result = SendResult(rejected=dict(batch.rejected))
        todo = [i for i in range(len(batch.parts)) if i not in result.rejected]
        sizes = _sizes(batch.parts)
        return send_in_rounds(todo, result, lambda indexes: self._round(indexes, sizes, batch, result),
                              rounds=_MAX_ACK_ROUNDS - 1, stop=self.context.stop)

    def _round(self, indexes: list[int], sizes: list[int], batch: Encoded, result: SendResult) -> _Round:
        """Post ``indexes`` in capped requests, then wait for the acks of what HEC took.

        Events whose ack never came are the round's ``again``. Rejected events are recorded in
        ``result``; pause errors raise.
        """
        rnd = _Round()
        post_round(self.limits.chunks(indexes, sizes),
                   lambda chunk, queue: self._post_chunk(chunk, queue, rnd, batch, result), rnd)
        if rnd.sent:
            confirmed, lost = self._await_acks(rnd.sent)
            rnd.progressed = rnd.progressed or confirmed
            rnd.again = lost
            if lost and rnd.failure is None:
                self.log.warning(
                    "%s: %d events not acknowledged by Splunk within ack_timeout (%gs); sending them again",
                    self.name, len(lost), self.ack_timeout)
        return rnd

    def _post_chunk(self, chunk: list[int], queue: deque[list[int]], rnd: _Round, batch: Encoded,
                    result: SendResult) -> None:
        """One request and what HEC's answer means for each of its events."""
        status, body, headers = self._post(chunk, batch)
        code = body.get("code") if isinstance(body, dict) else None
        text = snippet(str(body.get("text", "")) if isinstance(body, dict) else str(body))
        self.metrics.inc("hec_responses_total", output=self.name,
                         code=str(code) if code is not None else f"http_{status}")
        kind = classify(status, code)
        if kind == "ok":
            ack_id = body.get("ackId")
            if self.ack and isinstance(ack_id, int):
                rnd.sent.append(_Sent(ack_id, chunk, time.monotonic() + self.ack_timeout))
                return
            rnd.progressed = True
            if self.ack and not self._warned_no_ack:
                self._warned_no_ack = True
                self.log.warning("%s: ack is true but Splunk returned no ackId (the token has indexer "
                                 "acknowledgement off); delivery is confirmed on code 0 only", self.name)
        elif kind == "event":
            bad = body.get("invalid-event-number") if isinstance(body, dict) else None
            reason = f"HEC code {code}: {text}" if code is not None else "HEC answered 413: request too large"
            if isinstance(bad, int) and 0 <= bad < len(chunk):
                # Splunk indexed the events before `bad`; only the rest goes again.
                rnd.progressed = True
                result.rejected[chunk[bad]] = reason
                if bad + 1 < len(chunk):
                    queue.appendleft(chunk[bad + 1:])
            elif not split(chunk, queue):  # no position given: nothing was indexed; halve until it is alone
                rnd.progressed = True
                result.rejected[chunk[0]] = reason
        elif kind == "pause":
            hint = _PAUSE_HINTS.get(code or 0) or _status_hint(status)
            what = f'code {code} "{text}"' if code is not None else text
            raise OutputError(
                f"Splunk HEC refused the request ({status}, {what}): {hint}",
                pause=True,
            )
        else:
            what = f'code {code} "{text}"' if code is not None else text
            raise Retryable(f"Splunk HEC answered {status} ({what})", parse_retry_after(headers.get("Retry-After")))

    def _post(self, chunk: list[int], batch: Encoded) -> tuple[int, Any, Any]:
        """One request; returns (status, decoded body or its text, headers)."""
        body = self.limits.body_of(chunk, batch, _SEP, GZIP_LEVEL)
        try:
            resp = self.http.request("POST", EVENT_PATH, data=body, headers=self._headers, retry=False)
        except HttpError as exc:
            raise Retryable(str(exc)) from None
        decoded = _json_or_none(resp)
        return resp.status_code, decoded if decoded is not None else resp.text, resp.headers

    # ------------------------------------------------------------------ indexer acknowledgement

    def _await_acks(self, sent: list[_Sent]) -> tuple[bool, list[int]]:
        """Poll until every ack is true or past its deadline; return (any confirmed, indexes lost)."""
        waiting = {s.ack_id: s for s in sent}
        confirmed = False
        lost: list[int] = []
        while waiting:
            if self.context.stop.wait(self.ack_poll_interval):
                raise OutputError("stopped while waiting for Splunk's indexer acknowledgements")
            for ack_id, done in self._query_acks(list(waiting)).items():
                if done and ack_id in waiting:
                    del waiting[ack_id]
                    confirmed = True
            now = time.monotonic()
            for ack_id in [a for a, s in waiting.items() if s.deadline <= now]:
                lost.extend(waiting.pop(ack_id).indexes)
        return confirmed, lost

    def _query_acks(self, ack_ids: list[int]) -> dict[int, bool]:
        try:
            resp = self.http.request("POST", ACK_PATH, params={"channel": self.channel},
                                     json_body={"acks": ack_ids}, headers=self._ack_headers, retry=False)
        except HttpError as exc:
            self.log.debug("%s: ack query failed: %s; polling again", self.name, exc)
            return {}
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code == 200 and isinstance(body, dict) and isinstance(body.get("acks"), dict):
            return {int(k): v is True for k, v in body["acks"].items()}
        code = body.get("code") if isinstance(body, dict) else None
        if code in PAUSE_CODES:
            text = snippet(str(body.get("text", ""))) if isinstance(body, dict) else ""
            raise OutputError(
                f"Splunk HEC refused the ack query ({resp.status_code}, code {code} \"{text}\"): "
                f"{_PAUSE_HINTS.get(code, 'check the output configuration')}",
                pause=True,
            )
        self.log.debug("%s: ack query answered %s; polling again", self.name, resp.status_code)
        return {}

    # ------------------------------------------------------------------ check --connect

    def check_connection(self) -> str:
        """Health endpoint, then an empty event POST: Splunk checks the token (and the channel
        when the token wants acks) before it sees there is no data, so code 5 "No data" proves
        the token works without indexing anything."""
        try:
            health = self.http.request("GET", HEALTH_PATH, retry=False)
        except HttpError as exc:
            raise OutputError(f"HEC health check failed: {exc}") from None
        hbody = _json_or_none(health)
        hcode = hbody.get("code") if isinstance(hbody, dict) else None
        if health.status_code == 400 or hcode in (21, 22):
            raise OutputError(f"HEC health check: the token was refused "
                              f"({'disabled' if hcode == 22 else 'invalid token'})", pause=True)
        if health.status_code != 200:
            raise OutputError(f"HEC is unhealthy: {health.status_code} {snippet(health.text)}")
        headers = {k: v for k, v in self._headers.items() if k != "Content-Encoding"}
        try:
            probe = self.http.request("POST", EVENT_PATH, data=b"", headers=headers, retry=False)
        except HttpError as exc:
            raise OutputError(f"HEC token check failed: {exc}") from None
        body = _json_or_none(probe)
        code = body.get("code") if isinstance(body, dict) else None
        if code in PAUSE_CODES:
            raise OutputError(f"HEC refused the token (code {code} \"{snippet(str(body.get('text', '')))}\"): "
                              f"{_PAUSE_HINTS.get(code, '')}", pause=True)
        if code != 5:
            raise OutputError(f"unexpected answer to the token check: "
                              f"{probe.status_code} {snippet(probe.text)}")
        detail = ""
        if self.ack:
            resp = self.http.request("POST", ACK_PATH, params={"channel": self.channel},
                                     json_body={"acks": []}, headers=headers, retry=False)
            abody = _json_or_none(resp)
            if isinstance(abody, dict) and abody.get("code") == 14:
                raise OutputError(f"{_PAUSE_HINTS[14]}", pause=True)
            detail = "; indexer acknowledgement available"
        return f"HEC healthy at {self.http.base_url}; token accepted{detail}"


def _sizes(payloads: list[bytes]) -> list[int]:
    """What each payload adds to a request body, as the requests are cut (``batch_max_bytes``)."""
    sep = len(_SEP)
    return [len(p) + sep for p in payloads]


def _status_hint(status: int) -> str:
    if status in (401, 403):
        return "Splunk refused the credentials; check the output's token / token_file"
    if status == 404:
        return "no HEC endpoint at this URL; `url` is the base (https://host:8088), without /services/collector"
    return "check `url` and the token"


def classify(status: int, code: int | None) -> str:
    """What to do with a HEC answer: ``ok``, ``retry``, ``pause`` or ``event`` (one event is bad).

    HEC's code decides where there is one; the HTTP status is the fallback for answers that are
    not HEC's (a proxy's error page). An unknown 4xx pauses rather than drops: someone must look.
    """
    if code == 0:
        return "ok"
    if code in EVENT_CODES:
        return "event"
    if code in PAUSE_CODES:
        return "pause"
    if code in RETRY_CODES:
        return "retry"
    if status == 413:
        return "event"
    if status in (401, 403):
        return "pause"
    if status in RETRY_STATUSES or status >= 500:
        return "retry"
    if 200 <= status < 300:
        return "ok" if code is not None else "retry"
    return "pause"


class _SplunkAuth(BearerAuth):
    """``Authorization: Splunk <token>``. A HEC token cannot be refreshed: a 401 is read as HEC
    code 2/3 by the output, so the client's one refresh attempt just sends the request again."""

    def refresh(self, client: HttpClient, response: Response | None = None) -> None:
        return None


def _json_or_none(resp: Any) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


@hookimpl
def forwarder_register_outputs(registry: Any) -> None:
    registry.add(SplunkHec)
