"""Canaries: one secret per secret option, echoed back by every vendor and SIEM in every encoding.

Every server here refuses every request and echoes the credentials it was sent (and the ones a
vendor knows anyway) as given, JSON-escaped (``\\/`` and ``\\uXXXX``), URL-encoded, HTML-escaped,
Base64-encoded, inside the whole ``Authorization`` value and its Base64, and the Base64 of
``user:password`` (:mod:`tests.fakes.echo`). The forwarder runs ``check``, ``check --connect``,
``once``, ``run`` (with ``/metrics`` and ``/health`` scraped), ``state`` and ``quarantine`` at
debug level; then every output, log line, scraped body and file under the state directory is
searched for every form of every canary.
"""
from __future__ import annotations

import base64
import re
import signal
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fakes.echo import EchoServer, echo_forms
from tests.helpers import run_forwarder, start_forwarder
from tests.reliability.harness import _drain_stderr, wait_until

CANARIES = {
    "asana token": "cnry/asana+tok=01:AAA",
    "agilicus token_file": "cnry/agil+tok=02:BBB",
    "pangea token": "pts_cnry/pang+tok=03",
    "incydr client_secret": "cnry/incy+sec=04:DDD",
    "counter token_file": "cnry/cntr+tok=05",
    "splunk_hec token": "cnry/hec+tok=06:FFF",
    "elastic_bulk api_key": "cnry/es+key=07:GGG",
    "elastic_bulk password": "cnry/es+pass=08:HHH",
}
USERS = {"incydr client_secret": "key-1", "elastic_bulk password": "forwarder"}
ENV = {"SIEM_FORWARDER_LOG_LEVEL": "debug", "CANARY_ASANA": CANARIES["asana token"],
       "CANARY_PANGEA": CANARIES["pangea token"], "CANARY_ES_PASSWORD": CANARIES["elastic_bulk password"]}


def canary_forms(name: str) -> set[str]:
    """Every encoding of a canary: its own forms, those of each Authorization value built from it,
    and those of ``user:password``; plus its first 12 characters (a secret cut by a length limit)."""
    secret = CANARIES[name]
    values = [secret, f"Bearer {secret}", f"Splunk {secret}", f"ApiKey {secret}"]
    if name in USERS:
        pair = f"{USERS[name]}:{secret}"
        values += [pair, "Basic " + base64.b64encode(pair.encode()).decode()]
    forms = {form for value in values for form in echo_forms(value)}
    forms.add(secret[:12])
    return forms


def assert_no_canary(where: str, data: bytes | str) -> None:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for name in CANARIES:
        for form in canary_forms(name):
            assert form not in text, f"the {name} canary appears in {where} as {form[:60]!r}"


@pytest.fixture
def echoes() -> Iterator[dict[str, EchoServer]]:
    servers = {
        "401": EchoServer(401, extra=[CANARIES["incydr client_secret"]]).start(),
        "400": EchoServer(400).start(),
        "403": EchoServer(403).start(),
    }
    yield servers
    for server in servers.values():
        server.stop()


def _config(tmp_path: Path, echoes: dict[str, EchoServer], testkit_path: str) -> dict[str, Any]:
    files = tmp_path / "secrets"
    files.mkdir(exist_ok=True)
    (files / "agilicus").write_text(CANARIES["agilicus token_file"] + "\n")
    (files / "counter").write_text(CANARIES["counter token_file"] + "\r\n")
    (files / "hec").write_text(CANARIES["splunk_hec token"] + "\n")
    (files / "hec").chmod(0o600)
    start = (datetime.now(timezone.utc) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    e401, e400, e403 = (echoes[s].url for s in ("401", "400", "403"))
    return {
        "state_dir": str(tmp_path / "state"),
        "plugin_paths": [testkit_path],
        "delivery": {"once_give_up_after": 3, "max_backoff": 0.5},
        "sources": [
            {"name": "asana", "type": "asana", "start_time": start,
             "options": {"base_url": e401 + "/api/1.0", "token": "${CANARY_ASANA}", "workspace_gid": "12345"}},
            {"name": "agilicus", "type": "agilicus", "start_time": start,
             "options": {"base_url": e400, "token_file": str(files / "agilicus")}},
            {"name": "pangea", "type": "pangea", "start_time": start,
             "options": {"base_url": e403, "token": "${CANARY_PANGEA}"}},
            {"name": "incydr", "type": "incydr", "start_time": start,
             "options": {"base_url": e401, "client_id": USERS["incydr client_secret"],
                         "client_secret": CANARIES["incydr client_secret"]}},
            {"name": "counter", "type": "counter", "interval": 1,
             "options": {"count": 30, "page_size": 10, "invalid_every": 7, "token_file": str(files / "counter")}},
        ],
        "outputs": [
            {"name": "hec", "type": "splunk_hec", "options": {"url": e403, "token_file": str(files / "hec")}},
            {"name": "es-key", "type": "elastic_bulk",
             "options": {"url": e401, "index": "logs-canary-default", "api_key": CANARIES["elastic_bulk api_key"]}},
            {"name": "es-basic", "type": "elastic_bulk",
             "options": {"url": e400, "index": "logs-canary-default", "username": USERS["elastic_bulk password"],
                         "password": "${CANARY_ES_PASSWORD}"}},
        ],
    }


def test_no_canary_leaves_in_any_encoding_through_any_command(tmp_path: Path, echoes: dict[str, EchoServer],
                                                              testkit_path: str) -> None:
    config = _config(tmp_path, echoes, testkit_path)
    said: dict[str, str] = {}

    check = run_forwarder(tmp_path, config, "check", env=ENV)
    assert check.returncode == 0, check.stdout + check.stderr
    connect = run_forwarder(tmp_path, config, "check", "--connect", env=ENV, timeout=120)
    assert connect.returncode == 1, connect.stdout + connect.stderr
    once = run_forwarder(tmp_path, config, "once", env=ENV, timeout=180)
    assert once.returncode == 1, once.stdout + once.stderr
    for name, done in (("check", check), ("check --connect", connect), ("once", once)):
        said[f"{name} stdout"], said[f"{name} stderr"] = done.stdout, done.stderr
    # the servers did echo the canaries back, in every form: the test would otherwise prove nothing
    assert "DEBUG" in once.stderr and "401" in connect.stdout + connect.stderr
    assert sum(len(s.requests) for s in echoes.values()) >= 8

    config["metrics"] = {"listen": "127.0.0.1:0"}
    config["outputs"][0]["buffer"] = "disk"  # events rest in the buffer's files as well
    proc = start_forwarder(tmp_path, config, env=ENV)
    log: list[str] = []
    pump = _drain_stderr(proc, log)
    try:
        wait_until(lambda: any("metrics and health on" in line for line in log), 30, "the metrics listener", proc, log)
        port = int(re.search(r"127\.0\.0\.1:(\d+)/metrics", "".join(log)).group(1))  # type: ignore[union-attr]

        def failed_everywhere() -> bool:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            return all(f'poll_errors_total{{source="{s}"}}' in text for s in ("asana", "agilicus", "pangea", "incydr"))
        wait_until(failed_everywhere, 60, "every vendor to refuse", proc, log)
        said["/metrics"] = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        said["/health"] = requests.get(f"http://127.0.0.1:{port}/health", timeout=5).text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        pump.join(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said["run stderr"] = "".join(log)
    assert proc.stdout is not None
    said["run stdout"] = proc.stdout.read()

    for args in (("state",), ("quarantine",), ("quarantine", "list", "--dead-letter")):
        done = run_forwarder(tmp_path, config, *args, env=ENV)
        said[" ".join(args)] = done.stdout + done.stderr

    for where, text in said.items():
        assert_no_canary(where, text)
    files = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert any(p.name == "checkpoints.sqlite" for p in files)
    for path in files:
        assert_no_canary(str(path.relative_to(tmp_path)), path.read_bytes())
