"""Output ``syslog_cef``: one syslog message per event, its body a CEF line, over UDP, TCP or TLS.

The CEF body comes from :mod:`siem_forwarder_plugins.outputs.syslog.cef`; this module adds the syslog header
(RFC 5424, RFC 3164 or none), the framing (RFC 6587 octet counting or a line feed) and the
delivery rules of the contract: :meth:`SyslogCEF.send` returns only after every byte of the
batch was written to the socket, raises :class:`OutputError` when a connection fails part-way
(the core resends the batch: at least once), reconnects with capped exponential backoff, and
checks for a receiver that went away before writing into a dead connection. UDP has no
delivery guarantee at all; messages over ``max_message_bytes`` are cut in a way that keeps the
CEF valid (:func:`siem_forwarder_plugins.outputs.syslog.cef.truncate`) and counted.
"""
from __future__ import annotations

import os
import socket
import ssl
import time
from typing import Any

from forwarder_core import __version__, hookimpl
from forwarder_core.plugin_api import ComponentConfig, ConfigError, Context, Encoded, Output, OutputError, SendResult
from siem_forwarder_plugins.outputs.syslog import cef
from siem_forwarder_plugins.outputs.syslog.transport import DatagramConnection, Endpoint, StreamConnection, tls_context

FACILITIES: dict[str, int] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13, "alert": 14, "clock": 15,
    **{f"local{i}": 16 + i for i in range(8)},
}

UDP_DEFAULT_MAX = 2048
UDP_HARD_MAX = 65507

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def syslog_severity(cef_severity: int) -> int:
    """CEF 0-10 to a syslog severity: 9-10 critical, 7-8 error, 4-6 warning, 0-3 notice."""
    if cef_severity >= 9:
        return 2
    if cef_severity >= 7:
        return 3
    if cef_severity >= 4:
        return 4
    return 5


def rfc3164_time(timestamp: str) -> str:
    """``Mmm dd hh:mm:ss`` (day padded with a space) of a normalized UTC timestamp."""
    return f"{_MONTHS[int(timestamp[5:7]) - 1]} {int(timestamp[8:10]):2d} {timestamp[11:19]}"


def _nil_or(value: str, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, or ``-``."""
    cleaned = "".join(c for c in value if "!" <= c <= "~")[:limit]
    return cleaned or "-"


class SyslogHeader:
    """Builds the syslog header of one message; everything but the time and priority is computed once."""

    def __init__(self, fmt: str, facility: int, hostname: str, app_name: str):
        self.fmt = fmt
        self.pri = [f"<{facility * 8 + syslog_severity(sev)}>" for sev in range(11)]
        self.hostname = hostname
        self.app_name = app_name
        self.procid = str(os.getpid())
        self._middle: dict[str, str] = {}

    def __call__(self, event: dict[str, Any], severity: int) -> str:
        if self.fmt == "none":
            return ""
        if self.fmt == "rfc5424":
            return self.rfc5424(event, severity)
        timestamp = event["timestamp"]
        return f"{self.pri[severity]}{rfc3164_time(timestamp)} {self.hostname} {self.app_name}: "

    def rfc5424(self, event: dict[str, Any], severity: int) -> str:
        """The RFC 5424 header: what :meth:`__call__` gives for that format, one call the fewer."""
        timestamp = event["timestamp"]
        source_type = event["source"]["type"]
        middle = self._middle.get(source_type)
        if middle is None:
            middle = f" {self.hostname} {self.app_name} {self.procid} {_nil_or(source_type, 32)} - "
            self._middle[source_type] = middle
        pri = self.pri[severity]
        if len(timestamp) > 27 and timestamp[19] == ".":
            timestamp = timestamp[:26] + "Z"
        return f"{pri}1 {timestamp}{middle}"


class SyslogCEF(Output):
    """Sends each event as ``[syslog header] CEF:0|...`` to a syslog receiver or SIEM collector."""
    declared_metrics = {
        "syslog_messages_total": ("counter", "Syslog messages a syslog_cef output wrote to its socket."),
        "cef_truncated_total": ("counter", "CEF messages cut to fit max_message_bytes (UDP by default)."),
    }

    type_name = "syslog_cef"
    options_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["host", "port"],
        "properties": {
            "host": {"type": "string", "minLength": 1, "description": "Receiver host name or IP."},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "protocol": {"enum": ["udp", "tcp", "tls"], "default": "tcp"},
            "framing": {"enum": ["octet-counting", "newline"], "default": "octet-counting",
                        "description": "TCP/TLS framing (RFC 6587); UDP sends one message per datagram."},
            "format": {"enum": ["rfc5424", "rfc3164", "none"], "default": "rfc5424",
                       "description": "Syslog header before the CEF body; none sends the bare CEF line."},
            "facility": {"anyOf": [{"enum": sorted(FACILITIES)}, {"type": "integer", "minimum": 0, "maximum": 23}],
                         "default": "local4"},
            "app_name": {"type": "string", "pattern": "^[!-~]{1,48}$", "default": "siem-forwarder"},
            "hostname": {"type": "string", "pattern": "^[!-~]{1,255}$",
                         "description": "HOSTNAME of the syslog header (default: this machine's name, its FQDN where "
                                        "the resolver knows one; the short name for rfc3164)."},
            "max_message_bytes": {"type": "integer", "minimum": 480, "maximum": UDP_HARD_MAX,
                                  "description": "Cap on one message (syslog header + CEF). Default 2048 for UDP, "
                                                 "none for TCP/TLS."},
            "ca_file": {"type": "string", "minLength": 1, "description": "PEM CAs to verify the TLS server against."},
            "client_cert": {"type": "string", "minLength": 1, "description": "PEM client certificate for TLS."},
            "client_key": {"type": "string", "minLength": 1, "description": "PEM key of client_cert, if not in it."},
            "tls_verify": {"type": "boolean", "default": True},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "default": 30,
                        "description": "Seconds for connecting and for each write."},
        },
        "dependentRequired": {"client_key": ["client_cert"]},
    }

    backoff_initial = 0.5
    backoff_max = 30.0
    verdict_wait_min = 0.05
    verdict_wait_max = 0.5
    verdict_rtt_factor = 4.0
    """A new TCP/TLS connection is watched for the receiver's rejection before its first write, for
    ``verdict_rtt_factor`` times what connecting (and the TLS handshake) took, kept within
    ``verdict_wait_min`` and ``verdict_wait_max`` seconds: a rejection comes about one round trip
    after the handshake. It overlaps with formatting the batch, and a rejection ends it at once."""

    def __init__(self, config: ComponentConfig, context: Context):
        super().__init__(config, context)
        opts = self.options
        self.protocol: str = opts.get("protocol", "tcp")
        self.octet_counting = opts.get("framing", "octet-counting") == "octet-counting"
        fmt = opts.get("format", "rfc5424")
        facility = opts.get("facility", "local4")
        facility_code = FACILITIES[facility] if isinstance(facility, str) else int(facility)
        hostname = opts.get("hostname") or self._default_hostname(fmt)
        self.header = SyslogHeader(fmt, facility_code, hostname, opts.get("app_name", "siem-forwarder"))
        max_bytes = opts.get("max_message_bytes")
        self.max_bytes: int | None = max_bytes if max_bytes else (UDP_DEFAULT_MAX if self.protocol == "udp" else None)
        endpoint = Endpoint(opts["host"], int(opts["port"]), float(opts.get("timeout", 30)))
        self.endpoint = endpoint
        if self.protocol == "udp":
            self.conn: StreamConnection | DatagramConnection = context.closing(DatagramConnection(endpoint))
        else:
            context_ = None
            if self.protocol == "tls":
                context_ = self._tls_context(opts)
                if not opts.get("tls_verify", True):
                    self.log.warning("output %s: TLS certificate verification is OFF (tls_verify: false); anyone on "
                                     "the path to %s can read and alter these audit events", self.name, endpoint)
            self.conn = context.closing(StreamConnection(endpoint, context_))
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._verdict_deadline: float | None = None

    def _tls_context(self, opts: dict[str, Any]) -> ssl.SSLContext:
        try:
            return tls_context(ca_file=opts.get("ca_file"), client_cert=opts.get("client_cert"),
                               client_key=opts.get("client_key"), verify=opts.get("tls_verify", True))
        except (OSError, ssl.SSLError) as exc:
            where = f"{self.config.file}:{self.config.line}: " if self.config.file else ""
            raise ConfigError([f"{where}output {self.name}: cannot load the TLS files "
                               f"(ca_file, client_cert, client_key): {exc}"]) from exc

    @staticmethod
    def _default_hostname(fmt: str) -> str:
        """This machine's name, as splunk_hec's default ``host``: RFC 5424 takes its FQDN where the
        resolver knows one for it. A resolver's answer that is another name (``localhost``, where
        /etc/hosts lists the machine's name on 127.0.0.1 after it) does not rename the machine."""
        name = socket.gethostname() or "-"
        short = name.split(".")[0]
        if fmt == "rfc3164":
            return _nil_or(short, 255)
        if "." not in name:
            fqdn = socket.getfqdn()
            if fqdn.startswith(short + ".") and len(fqdn) > len(short) + 1:
                name = fqdn
        return _nil_or(name, 255)

    # ------------------------------------------------------------------ formatting

    def encode(self, events: list[dict[str, Any]]) -> tuple[list[bytes], dict[int, str], int]:
        """Frames ready for the wire, the events that could not be formatted, and how many were cut."""
        frames: list[bytes] = []
        rejected: dict[int, str] = {}
        truncated = 0
        header_of = self.header.rfc5424 if self.header.fmt == "rfc5424" else self.header
        format_line = cef.format_line
        max_bytes = self.max_bytes
        octets = self.octet_counting and self.protocol != "udp"
        newline = not self.octet_counting and self.protocol != "udp"
        for index, event in enumerate(events):
            try:
                head, parts, severity, line = format_line(event, __version__)
                prefix = header_of(event, severity)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                rejected[index] = f"cannot format as CEF: {type(exc).__name__}: {exc}"
                continue
            data = f"{prefix}{head}{line}".encode("utf-8")
            if max_bytes is not None and len(data) > max_bytes:
                room = max_bytes - len(prefix.encode("utf-8"))
                cut = cef.truncate(head, parts, room)
                if cut is None:
                    rejected[index] = (f"message does not fit max_message_bytes={max_bytes} even with every "
                                       "optional CEF value cut (header too long)")
                    continue
                data = (prefix + cut).encode("utf-8")
                truncated += 1
            if octets:
                data = b"%d %b" % (len(data), data)
            elif newline:
                data += b"\n"
            frames.append(data)
        return frames, rejected, truncated

    # ------------------------------------------------------------------ delivery

    def encode_batch(self, events: list[dict[str, Any]]) -> Encoded:
        """The frames of :meth:`encode`, one part per event (``b""`` where it cannot be formatted)."""
        frames, rejected, truncated = self.encode(events)
        given = iter(frames)
        parts = [b"" if i in rejected else next(given) for i in range(len(events))]
        return Encoded(parts, rejected, {"truncated": truncated} if truncated else {})

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        return self.send_encoded(self.encode_batch(events))

    def send_encoded(self, batch: Encoded) -> SendResult:
        if not batch.parts:
            return SendResult()
        self._ensure_connected()
        rejected = batch.rejected
        frames = [p for i, p in enumerate(batch.parts) if i not in rejected] if rejected else batch.parts
        truncated = batch.counts.get("truncated", 0)
        if truncated:
            self.metrics.inc("cef_truncated_total", truncated, output=self.name)
        if frames:
            self._await_verdict()
            try:
                self.conn.write(frames)
            except OSError as exc:
                self.conn.close()
                raise OutputError(f"syslog {self.protocol} {self.endpoint}: write failed, "
                                  f"the batch will be sent again: {exc}") from exc
            self.metrics.inc("syslog_messages_total", len(frames), output=self.name)
        if rejected:
            first = next(iter(rejected.values()))
            self.log.warning("output %s: %d event(s) of the batch cannot be sent as CEF (to the dead-letter file); "
                             "first: %s", self.name, len(rejected), first)
        return SendResult(rejected=dict(rejected))

    def _ensure_connected(self) -> None:
        """Reuse the connection unless the receiver closed it; otherwise connect (after the backoff)."""
        if self.conn.connected and not self.conn.peer_closed():
            return
        if self.conn.connected:
            self.log.info("output %s: receiver %s closed the connection; reconnecting", self.name, self.endpoint)
            self.conn.close()
        wait = self._next_attempt - time.monotonic()
        if wait > 0 and self.context.stop.wait(wait):
            raise OutputError(f"syslog {self.endpoint}: stopping before reconnecting")
        started = time.monotonic()
        try:
            self.conn.connect()
        except ssl.SSLCertVerificationError as exc:
            self._failed()
            raise OutputError(f"syslog tls {self.endpoint}: the server certificate is not trusted "
                              f"(check ca_file and host): {exc.verify_message}", pause=True,
                              retry_after=self._backoff) from exc
        except OSError as exc:
            self._failed()
            retry = "" if self.context.probe else f" (next try in {self._backoff:.1f} s)"
            raise OutputError(f"syslog {self.protocol} {self.endpoint}: cannot connect{retry}: {exc}",
                              retry_after=self._backoff) from exc
        if self.protocol == "udp":
            self._backoff = 0.0
            self._next_attempt = 0.0
        else:
            took = time.monotonic() - started
            wait = min(self.verdict_wait_max, max(self.verdict_wait_min, self.verdict_rtt_factor * took))
            self._verdict_deadline = time.monotonic() + wait

    def _await_verdict(self) -> None:
        """On a fresh connection: wait out the receiver's accept-then-drop verdict before writing."""
        deadline, self._verdict_deadline = self._verdict_deadline, None
        if deadline is None:
            return
        if self.conn.closed_within(max(0.0, deadline - time.monotonic())):
            self._failed()
            hint = ("it may require a client certificate (client_cert) or refuse the one given"
                    if self.protocol == "tls" else "it may not allow this sender")
            raise OutputError(f"syslog {self.protocol} {self.endpoint}: the receiver closed the connection right "
                              f"after accepting it; {hint}", pause=True, retry_after=self._backoff)
        self._backoff = 0.0
        self._next_attempt = 0.0

    def _failed(self) -> None:
        self.conn.close()
        self._backoff = min(self.backoff_max, self._backoff * 2 if self._backoff else self.backoff_initial)
        self._next_attempt = time.monotonic() + self._backoff

    def check_connection(self) -> str:
        self._ensure_connected()
        self._await_verdict()
        self.conn.close()
        if self.protocol == "udp":
            return f"UDP to {self.endpoint}: address resolved (UDP cannot confirm a receiver)"
        verified = ""
        if self.protocol == "tls":
            verified = (" with a verified TLS handshake" if self.options.get("tls_verify", True)
                        else " over TLS without verifying the server (tls_verify: false)")
        return f"connected to {self.endpoint} over {self.protocol}{verified}; the receiver kept the connection open"


@hookimpl
def forwarder_register_outputs(registry: Any) -> None:
    registry.add(SyslogCEF)
