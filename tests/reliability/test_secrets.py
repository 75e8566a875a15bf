"""No secret in anything the forwarder produces, even while everything fails.

Known secrets go into every secret option of several plugins, each way the contract allows
(inline, ``${VAR}``, ``<option>_file``); every one of them is wrong or its peer is down, so the
forwarder logs 401s, 403s, refused connections and schema errors. Then everything it produced is
searched for each secret in the forms it could leak in (as is, base64, URL-encoded, inside an
HTTP Basic or ApiKey credential): stdout and stderr of ``check``, ``check --connect``,
``once`` and ``run``, a refused config, every file in ``state_dir``, ``/metrics`` and ``/health``.
"""
from __future__ import annotations

import base64
import re
import signal
import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fakes.agilicus import AgilicusFake
from tests.fakes.asana import AsanaFake
from tests.fakes.elastic import FakeElasticsearch
from tests.fakes.incydr import IncydrFake
from tests.fakes.pangea import PangeaFake
from tests.fakes.splunk_hec import SplunkHecFake
from tests.helpers import run_forwarder, start_forwarder, write_config
from tests.reliability.harness import _drain_stderr, wait_until

SECRETS = {
    "incydr_inline": "S3cr3t-incydr-inline-7f3a9",
    "asana_env": "2/1204/1207:S3cr3t-asana-env-91bd2",
    "agilicus_file": "S3cr3t-agilicus-file-c04e1",
    "pangea_env": "pts_S3cr3t_pangea_env_55aa0",
    "hec_file": "5ec12e7a-0000-4bad-8000-5ec12e7a0001",
    "es_key_inline": "S3cr3t-es-apikey-e7d10",
    "es_password_env": "S3cr3t-es-password-b2c3d",
    "counter_token_file": "S3cr3t-counter-file-0a0a0",
}
ES_KEY_ID = "leaky"


def _forms(secret: str) -> set[bytes]:
    """Every form in which ``secret`` could show up in text the forwarder writes."""
    raw = secret.encode()
    forms = {raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw).rstrip(b"="),
             urllib.parse.quote(secret, safe="").encode(), urllib.parse.quote_plus(secret).encode()}
    for user in ("key-1", ES_KEY_ID, "forwarder"):
        forms.add(base64.b64encode(f"{user}:{secret}".encode()))
    if len(raw) > 12:  # a secret cut by a length limit still leaks its first characters
        forms.add(raw[:12])
    return forms


def assert_no_secret(where: str, data: bytes | str) -> None:
    blob = data.encode("utf-8", "replace") if isinstance(data, str) else data
    for name, secret in SECRETS.items():
        for form in _forms(secret):
            assert form not in blob, f"secret {name} appears in {where} (as {form[:40]!r})"


@pytest.fixture
def fakes() -> Iterator[dict[str, Any]]:
    es_down = FakeElasticsearch().start()
    down_url = es_down.url
    es_down.stop()  # nothing listens there any more: connection refused
    started = {
        "incydr": IncydrFake(events=20).start(),
        "asana": AsanaFake(events=20).start(),
        "agilicus": AgilicusFake(events=20).start(),
        "pangea": PangeaFake(events=10).start(),
        "hec": SplunkHecFake().start(),
        "es": FakeElasticsearch(api_keys={ES_KEY_ID: "the-right-key"}).start(),
    }
    started["es_down_url"] = down_url
    yield started
    for fake in started.values():
        if hasattr(fake, "stop"):
            fake.stop()


def _config(tmp_path: Path, fakes: dict[str, Any], testkit_path: str) -> dict[str, Any]:
    files = tmp_path / "secrets"
    files.mkdir(exist_ok=True)
    (files / "agilicus").write_text(SECRETS["agilicus_file"] + "\n")
    (files / "hec").write_text(SECRETS["hec_file"] + "\n")
    (files / "counter").write_text(SECRETS["counter_token_file"] + "\n")
    start = (datetime.now(timezone.utc) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    es_key = base64.b64encode(f"{ES_KEY_ID}:{SECRETS['es_key_inline']}".encode()).decode()
    return {
        "state_dir": str(tmp_path / "state"),
        "plugin_paths": [testkit_path],
        "delivery": {"once_give_up_after": 3, "max_backoff": 0.5},
        "sources": [
            {"name": "incydr", "type": "incydr", "start_time": start,
             "options": {"base_url": fakes["incydr"].url, "client_id": "key-1",
                         "client_secret": SECRETS["incydr_inline"]}},
            {"name": "asana", "type": "asana", "start_time": start,
             "options": {"base_url": fakes["asana"].url + "/api/1.0", "token": "${LEAK_ASANA}",
                         "workspace_gid": "12345"}},
            {"name": "agilicus", "type": "agilicus", "start_time": start,
             "options": {"base_url": fakes["agilicus"].url, "token_file": str(files / "agilicus")}},
            {"name": "pangea", "type": "pangea", "start_time": start,
             "options": {"base_url": fakes["pangea"].url, "token": "${LEAK_PANGEA}"}},
            {"name": "counter", "type": "counter", "interval": 1,
             "options": {"count": 30, "page_size": 10, "token_file": str(files / "counter")}},
        ],
        "outputs": [
            {"name": "hec", "type": "splunk_hec", "options": {"url": fakes["hec"].url,
                                                               "token_file": str(files / "hec")}},
            {"name": "es", "type": "elastic_bulk", "options": {"url": fakes["es"].url, "index": "logs-leak-default",
                                                                "api_key": es_key}},
            {"name": "es-down", "type": "elastic_bulk",
             "options": {"url": fakes["es_down_url"], "index": "logs-leak-default", "username": "forwarder",
                         "password": "${LEAK_ES_PASSWORD}"}},
        ],
    }


ENV = {"LEAK_ASANA": SECRETS["asana_env"], "LEAK_PANGEA": SECRETS["pangea_env"],
       "LEAK_ES_PASSWORD": SECRETS["es_password_env"]}


def _state_files(state: Path) -> list[Path]:
    return [p for p in state.rglob("*") if p.is_file()]


def test_no_secret_in_output_logs_state_or_metrics_while_everything_fails(
        tmp_path: Path, fakes: dict[str, Any], testkit_path: str) -> None:
    config = _config(tmp_path, fakes, testkit_path)

    check = run_forwarder(tmp_path, config, "check", env=ENV)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "inline secret" in check.stderr  # the config is world-readable and holds two inline secrets
    connect = run_forwarder(tmp_path, config, "check", "--connect", env=ENV, timeout=120)
    assert connect.returncode == 1
    once = run_forwarder(tmp_path, config, "once", env=ENV, timeout=180)
    assert once.returncode == 1
    assert "401" in once.stdout + once.stderr and "refused" in once.stdout + once.stderr
    for name, done in (("check", check), ("check --connect", connect), ("once", once)):
        assert_no_secret(f"{name} stdout", done.stdout)
        assert_no_secret(f"{name} stderr", done.stderr)

    config["metrics"] = {"listen": "127.0.0.1:0"}
    for output in config["outputs"]:
        output["buffer"] = "disk"  # each output fails on its own, and events rest in the buffer's files too
    proc = start_forwarder(tmp_path, config, env=ENV)
    log: list[str] = []
    pump = _drain_stderr(proc, log)
    try:
        wait_until(lambda: any("metrics and health on" in line for line in log), 30, "the metrics listener", proc, log)
        port = int(re.search(r"127\.0\.0\.1:(\d+)/metrics", "".join(log)).group(1))  # type: ignore[union-attr]

        def failed_everywhere() -> bool:
            # every series is on /metrics at 0 from start-up: wait for each to have counted a failure
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text

            def counted(series: str) -> bool:
                found = re.search(re.escape(series) + r" ([0-9.e+]+)", text)
                return found is not None and float(found.group(1)) > 0
            return all(counted(f'siem_forwarder_output_errors_total{{output="{o}"}}') for o in ("hec", "es", "es-down")) \
                and all(counted(f'siem_forwarder_poll_errors_total{{source="{s}"}}')
                        for s in ("incydr", "asana", "agilicus", "pangea"))
        wait_until(failed_everywhere, 60, "every source and output to fail", proc, log)
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        health = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert health.status_code == 503
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        pump.join(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_no_secret("/metrics", metrics)
    assert_no_secret("/health", health.text)
    assert_no_secret("run stderr", "".join(log))
    assert proc.stdout is not None
    assert_no_secret("run stdout", proc.stdout.read())

    state = tmp_path / "state"
    files = _state_files(state)
    assert any(p.name == "checkpoints.sqlite" for p in files)
    for path in files:
        assert_no_secret(str(path.relative_to(tmp_path)), path.read_bytes())


def test_a_refused_config_never_echoes_the_secret_it_refused(tmp_path: Path, fakes: dict[str, Any],
                                                             testkit_path: str) -> None:
    config = _config(tmp_path, fakes, testkit_path)
    # Secrets where the schema wants something else: a message quoting the value would leak it.
    config["sources"][0]["options"]["client_secret"] = [SECRETS["incydr_inline"]]
    config["sources"][1]["options"]["token"] = {"value": "${LEAK_ASANA}"}
    config["outputs"][1]["options"]["api_key"] = 12345
    config["outputs"][2]["options"]["password"] = SECRETS["es_password_env"] + "\u0000"
    config["outputs"][0]["options"]["unknown_option"] = SECRETS["hec_file"]
    for args in (("check",), ("once",), ("run",)):
        done = run_forwarder(tmp_path, config, *args, env=ENV, timeout=60)
        assert done.returncode == 78, (args, done.stdout, done.stderr)
        said = done.stdout + done.stderr
        assert said.count("invalid value (hidden, it is a secret)") == 3 and "unknown option 'unknown_option'" in said
        assert_no_secret(f"{args[0]} refusing a bad config (stdout)", done.stdout)
        assert_no_secret(f"{args[0]} refusing a bad config (stderr)", done.stderr)
    write_config(tmp_path / "config.yaml", config)
    for path in _state_files(tmp_path / "state") if (tmp_path / "state").exists() else []:
        assert_no_secret(str(path), path.read_bytes())
