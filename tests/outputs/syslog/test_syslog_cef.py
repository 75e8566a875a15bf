"""The syslog_cef output against a real rsyslog on loopback: UDP, TCP and TLS, both framings,
the three header formats, UDP truncation, and receiver restarts that lose nothing."""
from __future__ import annotations

import logging
import re
import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.errors import ConfigError, OutputError
from forwarder_core.metrics import Metrics
from forwarder_core.plugin_api import ComponentConfig, Context, SendResult, apply_defaults
from siem_forwarder_plugins.outputs.syslog.cef import parse_cef, strip_syslog_header
from siem_forwarder_plugins.outputs.syslog.output import FACILITIES, SyslogCEF, syslog_severity
from tests.rsyslog import Pki, Rsyslog

pytestmark = pytest.mark.rsyslog

HOSTILE_MESSAGES = [
    "plain",
    "pipe | and equals = and backslash \\ end\\",
    "line one\nline two\r\nline three",
    "forged key suser=root act=delete",
    "second message?\n<13>1 - - - - - CEF:0|Evil|Forged|1|x|x|10|src=6.6.6.6",
    "non-ASCII: café, 日本語, emoji 😀, Ω",
    "escapes written out: \\n \\r \\= \\\\",
]


def make_events(marker: str, count: int, **extra: Any) -> list[dict[str, Any]]:
    """Normalized events (shape of schemas/event.schema.json) whose ids carry ``marker``."""
    events = []
    for i in range(count):
        event_id = f"{marker}-{i:05d}" + ("-" + "f" * 40 if i % 3 == 0 else "")
        events.append({
            "id": event_id,
            "timestamp": f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:07.{i % 1000:03d}Z",
            "source": {"name": "asana-main", "type": "asana", "vendor": "Asana", "product": "Asana"},
            "action": ["user_login_succeeded", "task|deleted", "role=admin granted"][i % 3],
            "outcome": "failure" if i % 5 == 0 else "success",
            "message": HOSTILE_MESSAGES[i % len(HOSTILE_MESSAGES)],
            "actor": {"id": f"u\\{i}", "name": f"Zoë \"{i}\" | O'Brien = admin", "email": f"user{i}@example.com",
                      "ip": "203.0.113.7" if i % 2 else "2001:db8::7"},
            "raw": {"gid": event_id},
            **extra,
        })
    return events


class Harness:
    """Builds syslog_cef outputs the way the core does, and closes them after the test."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.outputs: list[SyslogCEF] = []
        self.metrics = Metrics()

    def output(self, **options: Any) -> SyslogCEF:
        opts = apply_defaults(SyslogCEF.options_schema, {"host": "127.0.0.1", **options})
        out = SyslogCEF(ComponentConfig(name="cef", type="syslog_cef", options=opts),
                        Context(name="cef", state_dir=str(self.tmp_path), logger=logging.getLogger("test.syslog_cef"),
                                metrics=self.metrics))
        out.backoff_initial = 0.05
        self.outputs.append(out)
        return out


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    for out in h.outputs:
        out.close()


@pytest.fixture
def marker() -> str:
    return "m" + uuid.uuid4().hex[:12]


RFC5424 = re.compile(r"^<(\d+)>1 (\S+) (\S+) (\S+) (\d+) (\S+) - (CEF:.*)$")
RFC3164 = re.compile(r"^<(\d+)>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (\S+) (\S+): (CEF:.*)$")


def check_delivery(lines: list[str], events: list[dict[str, Any]], fmt: str, *, hostname: str = "test-host",
                   app_name: str = "siem-forwarder", facility: int = FACILITIES["local4"]) -> None:
    """Every event arrived exactly once, with a valid syslog header and every value intact."""
    by_id = {ev["id"]: ev for ev in events}
    seen: list[str] = []
    for line in lines:
        if fmt == "rfc5424":
            match = RFC5424.match(line)
            assert match, line
            pri, timestamp, host, app, _procid, msgid, body = match.groups()
            assert (host, app, msgid) == (hostname, app_name, "asana")
        elif fmt == "rfc3164":
            match = RFC3164.match(line)
            assert match, line
            pri, timestamp, host, app, body = match.groups()
            assert (host, app) == (hostname, app_name)
        else:
            assert line.startswith("CEF:0|"), line
            pri, timestamp, body = None, None, line
        header, ext = parse_cef(body)
        event_id = ext.get("cs1", ext["externalId"])
        ev = by_id[event_id]
        seen.append(event_id)
        if fmt == "rfc5424":
            assert timestamp == ev["timestamp"]
        if pri is not None:
            assert int(pri) == facility * 8 + syslog_severity(int(header[6]))
        assert header[4] == ev["action"] and header[5] == ev["action"]
        assert ext["msg"] == ev["message"]
        assert ext["act"] == ev["action"]
        assert ext["suser"] == ev["actor"]["name"] and ext["suid"] == ev["actor"]["id"]
        assert ext["src"] == ev["actor"]["ip"] and ext["cs3"] == ev["actor"]["email"]
        assert ext["externalId"] == event_id[:40]
        assert header[6] == ("5" if ev["outcome"] == "failure" else "3")
    assert sorted(seen) == sorted(by_id), "missing or duplicated events"


# --------------------------------------------------------------------------- every transport and format


@pytest.mark.parametrize("protocol, framing, fmt", [
    ("udp", "octet-counting", "rfc5424"),
    ("udp", "octet-counting", "rfc3164"),
    ("udp", "octet-counting", "none"),
    ("tcp", "octet-counting", "rfc5424"),
    ("tcp", "octet-counting", "rfc3164"),
    ("tcp", "octet-counting", "none"),
    ("tcp", "newline", "rfc5424"),
    ("tcp", "newline", "rfc3164"),
    ("tcp", "newline", "none"),
    ("tls", "octet-counting", "rfc5424"),
    ("tls", "newline", "rfc3164"),
])
def test_every_event_arrives_as_strict_cef_with_values_intact(
        rsyslog: Rsyslog, pki: Pki, harness: Harness, marker: str, protocol: str, framing: str, fmt: str) -> None:
    port = {"udp": rsyslog.udp_port, "tcp": rsyslog.tcp_port, "tls": rsyslog.tls_port}[protocol]
    out = harness.output(port=port, protocol=protocol, framing=framing, format=fmt, hostname="test-host",
                         ca_file=str(pki.ca))
    events = make_events(marker, 60)
    for start in range(0, len(events), 20):
        assert out.send(events[start:start + 20]) == SendResult()
    check_delivery(rsyslog.wait_for(marker, len(events)), events, fmt)
    assert harness.metrics.get("syslog_messages_total", output="cef") == len(events)
    assert harness.metrics.get("cef_truncated_total", output="cef") == 0


def test_tls_with_client_certificate_and_custom_facility(rsyslog: Rsyslog, pki: Pki, harness: Harness,
                                                         marker: str) -> None:
    out = harness.output(port=rsyslog.mtls_port, protocol="tls", ca_file=str(pki.ca), client_cert=str(pki.client_cert),
                         client_key=str(pki.client_key), facility="authpriv", app_name="cef-test", hostname="test-host")
    events = make_events(marker, 25)
    assert out.send(events) == SendResult()
    check_delivery(rsyslog.wait_for(marker, len(events)), events, "rfc5424", app_name="cef-test",
                   facility=FACILITIES["authpriv"])


def test_tls_refuses_a_server_its_ca_did_not_sign(rsyslog: Rsyslog, pki: Pki, harness: Harness, marker: str) -> None:
    out = harness.output(port=rsyslog.tls_port, protocol="tls", ca_file=str(pki.other_ca))
    with pytest.raises(OutputError, match="not trusted") as err:
        out.send(make_events(marker, 1))
    assert err.value.pause
    assert rsyslog.wait_for(marker, 1, timeout=0) == []


def test_tls_verify_false_encrypts_without_checking_the_server(rsyslog: Rsyslog, pki: Pki, harness: Harness,
                                                              marker: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    out = harness.output(port=rsyslog.tls_port, protocol="tls", ca_file=str(pki.other_ca), tls_verify=False,
                         hostname="test-host")
    events = make_events(marker, 5)
    assert out.send(events) == SendResult()
    check_delivery(rsyslog.wait_for(marker, 5), events, "rfc5424")
    assert "without verifying" in out.check_connection()
    assert "TLS certificate verification is OFF" in caplog.text


def test_receiver_that_rejects_the_client_after_the_handshake_is_an_error_not_a_silent_loss(
        rsyslog: Rsyslog, pki: Pki, harness: Harness, marker: str) -> None:
    # The mutual-TLS listener drops clients without a certificate once the (TLS 1.3) handshake is done.
    out = harness.output(port=rsyslog.mtls_port, protocol="tls", ca_file=str(pki.ca))
    out.verdict_wait_min = out.verdict_wait_max = 5.0  # the rejection ends the wait as soon as it arrives, even on a loaded machine
    with pytest.raises(OutputError, match="client certificate") as err:
        out.send(make_events(marker, 3))
    assert err.value.pause


def test_unreadable_tls_files_are_a_config_error(tmp_path: Path, harness: Harness) -> None:
    with pytest.raises(ConfigError, match="ca_file"):
        harness.output(port=6514, protocol="tls", ca_file=str(tmp_path / "missing.pem"))


# --------------------------------------------------------------------------- UDP size cap


def test_udp_truncation_keeps_valid_cef_and_is_counted(rsyslog: Rsyslog, harness: Harness, marker: str) -> None:
    long_message = "é\\=|\n" * 400 + "END"
    events = make_events(marker, 12, message=long_message)
    out = harness.output(port=rsyslog.udp_port, protocol="udp", max_message_bytes=700, hostname="test-host")
    assert out.send(events) == SendResult()
    lines = rsyslog.wait_for(marker, len(events))
    assert len(lines) == len(events)
    for line in lines:
        assert len(line.encode("utf-8")) <= 700
        _header, ext = parse_cef(strip_syslog_header(line))
        assert ext["externalId"].startswith(marker) and "rt" in ext and "act" in ext
        if "msg" in ext:
            assert long_message.startswith(ext["msg"]) and len(ext["msg"]) < len(long_message)
    assert harness.metrics.get("cef_truncated_total", output="cef") == len(events)


def test_udp_default_cap_is_2048_bytes(rsyslog: Rsyslog, harness: Harness, marker: str) -> None:
    events = make_events(marker, 3, message="x" * 1023, actor={"id": "u1", "user_agent": "a" * 1023})
    out = harness.output(port=rsyslog.udp_port, protocol="udp")
    assert out.send(events) == SendResult()
    lines = rsyslog.wait_for(marker, len(events))
    assert len(lines) == 3 and all(2000 < len(line.encode()) <= 2048 for line in lines)
    for line in lines:
        ext = parse_cef(strip_syslog_header(line))[1]
        assert ext["requestClientApplication"] == "a" * 1023 and 500 < len(ext["msg"]) < 1023


def test_event_whose_header_cannot_fit_is_rejected_alone(rsyslog: Rsyslog, harness: Harness, marker: str) -> None:
    events = make_events(marker, 3)
    events[1]["action"] = "a" * 900  # EventClassID and Name alone exceed the cap
    out = harness.output(port=rsyslog.udp_port, protocol="udp", max_message_bytes=1024)
    result = out.send(events)
    assert list(result.rejected) == [1] and "max_message_bytes" in result.rejected[1]
    assert len(rsyslog.wait_for(marker, 2)) == 2


def test_tcp_sends_long_messages_whole_by_default(rsyslog: Rsyslog, harness: Harness, marker: str) -> None:
    events = make_events(marker, 2, message="y" * 1000, actor={"id": "i" * 1000, "name": "n\n" * 500})
    out = harness.output(port=rsyslog.tcp_port)
    assert out.send(events) == SendResult()
    lines = rsyslog.wait_for(marker, 2)
    assert all(parse_cef(strip_syslog_header(line))[1]["suser"] == "n\n" * 500 for line in lines)
    assert harness.metrics.get("cef_truncated_total", output="cef") == 0


# --------------------------------------------------------------------------- receiver restarts


def send_like_the_core(out: SyslogCEF, batch: list[dict[str, Any]], attempts: int = 200) -> int:
    """Send until accepted, as the pipeline does after an OutputError; returns the failures seen."""
    failures = 0
    for _ in range(attempts):
        try:
            assert out.send(batch) == SendResult()
            return failures
        except OutputError:
            failures += 1
    raise AssertionError(f"batch not accepted after {attempts} attempts")


def restart_mid_run(receiver: Rsyslog, out: SyslogCEF, marker: str, restarts: tuple[int, ...]) -> None:
    events = make_events(marker, 200)
    batches = [events[i:i + 25] for i in range(0, len(events), 25)]
    sent = failures = 0
    for number, batch in enumerate(batches):
        failures += send_like_the_core(out, batch)
        sent += len(batch)
        if number in restarts:
            # The receiver has stored what it was sent, then restarts between two batches: the
            # next batch must not be written into the dead connection.
            assert len(receiver.wait_for(marker, sent)) == sent
            receiver.restart()
    check_delivery(receiver.wait_for(marker, len(events)), events, "rfc5424")
    assert failures == 0, "the closed connection was noticed only by a failed write, not before it"


@pytest.mark.parametrize("framing", ["octet-counting", "newline"])
def test_tcp_receiver_restart_mid_run_loses_nothing(own_rsyslog: Rsyslog, harness: Harness, marker: str,
                                                    framing: str) -> None:
    out = harness.output(port=own_rsyslog.tcp_port, framing=framing, hostname="test-host")
    restart_mid_run(own_rsyslog, out, marker, restarts=(2, 3, 5))


def test_tls_receiver_restart_mid_run_loses_nothing(own_tls_rsyslog: Rsyslog, pki: Pki, harness: Harness,
                                                    marker: str) -> None:
    out = harness.output(port=own_tls_rsyslog.tls_port, protocol="tls", ca_file=str(pki.ca), hostname="test-host")
    restart_mid_run(own_tls_rsyslog, out, marker, restarts=(3,))


def test_receiver_down_then_back_raises_then_delivers(own_rsyslog: Rsyslog, harness: Harness, marker: str) -> None:
    out = harness.output(port=own_rsyslog.tcp_port, hostname="test-host")
    first, second = make_events(marker, 10), make_events(marker + "b", 10)
    assert out.send(first) == SendResult()
    own_rsyslog.wait_for(marker, 10)
    own_rsyslog.stop()
    assert out.send([]) == SendResult()  # a page with no events needs no receiver
    with pytest.raises(OutputError, match="cannot connect") as err:
        out.send(second)
    assert err.value.retry_after and err.value.retry_after > 0
    with pytest.raises(OutputError, match="next try in"):
        out.send(second)  # backoff grows while the receiver stays down
    own_rsyslog.start()
    send_like_the_core(out, second)
    check_delivery(own_rsyslog.wait_for(marker + "b", 10), second, "rfc5424")


def test_without_the_dead_peer_check_a_restart_would_lose_a_batch(
        own_rsyslog: Rsyslog, harness: Harness, marker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control experiment: proves the restart test above can fail, and why the checks exist."""
    out = harness.output(port=own_rsyslog.tcp_port, hostname="test-host")
    assert out.send(make_events(marker + "a", 5)) == SendResult()
    assert len(own_rsyslog.wait_for(marker + "a", 5)) == 5
    own_rsyslog.restart()
    monkeypatch.setattr(out.conn, "peer_closed", lambda: False)
    monkeypatch.setattr(out.conn, "wait_acknowledged", lambda: None)
    assert out.send(make_events(marker + "b", 5)) == SendResult()  # "succeeds" into the dead connection
    send_like_the_core(out, make_events(marker + "c", 5))
    assert len(own_rsyslog.wait_for(marker + "c", 5)) == 5
    assert own_rsyslog.wait_for(marker + "b", 1, timeout=0) == []


def test_the_acknowledgement_wait_alone_catches_a_restarted_receiver(
        own_rsyslog: Rsyslog, harness: Harness, marker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the dead-peer check before the batch, waiting for the receiver's TCP
    acknowledgement after it still sees the reset, so the batch is sent again, not lost. (The
    bytes to the gone receiver are never acknowledged: the wait ends at ``timeout``, 3 s here.)"""
    out = harness.output(port=own_rsyslog.tcp_port, hostname="test-host", timeout=3)
    assert out.send(make_events(marker + "a", 5)) == SendResult()
    assert len(own_rsyslog.wait_for(marker + "a", 5)) == 5
    own_rsyslog.restart()
    monkeypatch.setattr(out.conn, "peer_closed", lambda: False)
    with pytest.raises(OutputError):
        out.send(make_events(marker + "b", 5))
    monkeypatch.undo()
    send_like_the_core(out, make_events(marker + "b", 5))
    assert len(own_rsyslog.wait_for(marker + "b", 5)) == 5


def test_tls_close_sends_close_notify(rsyslog: Rsyslog, pki: Pki, harness: Harness, marker: str) -> None:
    """rsyslog logs GnuTLS error -110 for a TLS connection closed without close_notify."""
    error = "GnuTLS error -110"
    before = rsyslog.log_count(error)
    out = harness.output(port=rsyslog.tls_port, protocol="tls", ca_file=str(pki.ca))
    assert out.send(make_events(marker, 3)) == SendResult()
    out.close()
    # A control connection closed abruptly after ours: once its -110 is logged, ours was handled too.
    context = ssl.create_default_context(cafile=str(pki.ca))
    abrupt = context.wrap_socket(socket.create_connection(("127.0.0.1", rsyslog.tls_port)),
                                 server_hostname="127.0.0.1")
    abrupt.sendall(b"4 ping")
    abrupt.close()
    assert rsyslog.wait_for_log(error, before + 1) == before + 1
    assert len(rsyslog.wait_for(marker, 3)) == 3


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("options, problem", [
    ({"port": 514, "protocol": "sctp"}, "protocol"),
    ({"port": 514, "framing": "crlf"}, "framing"),
    ({"port": 70000}, "port"),
    ({"port": 514, "facility": "local9"}, "facility"),
    ({"port": 514, "app_name": "has space"}, "app_name"),
    ({"port": 514, "max_message_bytes": 100}, "max_message_bytes"),
    ({"port": 514, "client_key": "k.pem"}, "client_cert"),
    ({"host": "h"}, "port"),
])
def test_options_schema_rejects_bad_options(options: dict[str, Any], problem: str) -> None:
    import jsonschema

    errors = list(jsonschema.Draft202012Validator(SyslogCEF.options_schema).iter_errors({"host": "h", **options}))
    assert errors and any(problem in (str(e.path) + e.message) for e in errors), errors


def test_check_connection_reaches_the_receiver(rsyslog: Rsyslog, pki: Pki, harness: Harness) -> None:
    tls = harness.output(port=rsyslog.tls_port, protocol="tls", ca_file=str(pki.ca))
    assert "verified" in tls.check_connection()
    closed = harness.output(port=1, protocol="tcp")
    with pytest.raises(OutputError, match="cannot connect"):
        closed.check_connection()
    no_client_cert = harness.output(port=rsyslog.mtls_port, protocol="tls", ca_file=str(pki.ca))
    no_client_cert.verdict_wait_min = no_client_cert.verdict_wait_max = 5.0
    with pytest.raises(OutputError, match="client certificate"):
        no_client_cert.check_connection()

