"""``syslog_cef`` through the real ``siem-forwarder`` process into a real rsyslog."""
from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.storage.checkpoint import CheckpointStore
from siem_forwarder_plugins.outputs.syslog.cef import parse_cef, strip_syslog_header
from tests.fakes.asana import AsanaFake
from tests.helpers import file_output, read_jsonl, run_forwarder
from tests.rsyslog import Pki, Rsyslog

pytestmark = pytest.mark.rsyslog


def config(counter_config: Any, count: int, **options: Any) -> dict[str, Any]:
    cfg = counter_config(count=count, page_size=10)
    cfg["delivery"] = {"once_give_up_after": 2}
    cfg["outputs"] = [{"name": "siem", "type": "syslog_cef", "options": {"host": "127.0.0.1", **options}}]
    return cfg


def test_once_delivers_every_event_over_tls_and_commits(tmp_path: Path, counter_config: Any, rsyslog: Rsyslog,
                                                        pki: Pki) -> None:
    app = "e2e" + uuid.uuid4().hex[:10]
    cfg = config(counter_config, 35, port=rsyslog.tls_port, protocol="tls", ca_file=str(pki.ca), app_name=app)
    done = run_forwarder(tmp_path, cfg)
    assert done.returncode == 0, done.stderr
    lines = rsyslog.wait_for(f" {app} ", 35)
    parsed = [parse_cef(strip_syslog_header(line)) for line in lines]
    assert sorted(ext["externalId"] for _, ext in parsed) == sorted(f"counter-{i}" for i in range(35))
    header, ext = next(p for p in parsed if p[1]["externalId"] == "counter-1")
    assert header[1:3] == ["Testkit", "Counter"] and header[4] == "login"
    assert ext["rt"] == "1767225601000" and ext["suser"] == "user1" and ext["outcome"] == "success"
    assert CheckpointStore(cfg["state_dir"]).get("counter").cursor == {"next": 35}


def test_receiver_down_keeps_the_cursor_then_a_rerun_delivers(tmp_path: Path, counter_config: Any,
                                                              own_rsyslog: Rsyslog) -> None:
    cfg = config(counter_config, 20, port=own_rsyslog.tcp_port, framing="newline", format="rfc3164")
    own_rsyslog.stop()
    down = run_forwarder(tmp_path, cfg)
    assert down.returncode != 0
    assert "cannot connect" in down.stderr
    assert CheckpointStore(cfg["state_dir"]).get("counter") is None

    own_rsyslog.start()
    up = run_forwarder(tmp_path, cfg)
    assert up.returncode == 0, up.stderr
    lines = own_rsyslog.wait_for("externalId=counter-", 20)
    assert sorted(parse_cef(strip_syslog_header(line))[1]["externalId"] for line in lines) == sorted(
        f"counter-{i}" for i in range(20))
    assert CheckpointStore(cfg["state_dir"]).get("counter").cursor == {"next": 20}


def test_check_rejects_bad_syslog_options_with_their_path(tmp_path: Path, counter_config: Any) -> None:
    cfg = config(counter_config, 1, port=514, facility="local9")
    done = run_forwarder(tmp_path, cfg, "check")
    assert done.returncode == 78
    assert "$.outputs[0].options.facility" in done.stdout + done.stderr


def test_asana_events_map_to_cef_as_documented(tmp_path: Path, rsyslog: Rsyslog) -> None:
    """Real normalized events (the Asana source against its fake) next to what rsyslog received."""
    app = "asana" + uuid.uuid4().hex[:10]
    with AsanaFake(events=60, span=300, token="asana-e2e-token") as fake:
        cfg = {
            "sources": [{"name": "asana-main", "type": "asana", "start_time": fake.begin.isoformat(),
                         "options": {"base_url": fake.url + "/api/1.0", "token": "asana-e2e-token",
                                     "workspace_gid": fake.workspace_gid, "settle_delay": 0}}],
            "outputs": [file_output(tmp_path / "normalized.jsonl"),
                        {"name": "siem", "type": "syslog_cef",
                         "options": {"host": "127.0.0.1", "port": rsyslog.tcp_port, "app_name": app}}],
        }
        done = run_forwarder(tmp_path, cfg)
    assert done.returncode == 0, done.stderr
    normalized = {e["id"]: e for e in read_jsonl(tmp_path / "normalized.jsonl")}
    assert len(normalized) == 60
    received = {ext["externalId"]: (header, ext) for header, ext in
                (parse_cef(strip_syslog_header(line)) for line in rsyslog.wait_for(f" {app} ", 60))}
    assert received.keys() == normalized.keys()
    for event_id, ev in normalized.items():
        header, ext = received[event_id]
        actor = ev.get("actor", {})
        assert header[1:3] == ["Asana", "Asana Audit Log"] and header[4] == ev["action"]
        assert header[6] == str(ev["severity"])
        assert int(ext["rt"]) == int(datetime.fromisoformat(ev["timestamp"]).timestamp() * 1000)
        assert ext["act"] == ev["action"] and ext["outcome"] == ev["outcome"] and ext["msg"] == ev["message"]
        assert ext.get("suser") == (actor.get("name") or actor.get("email") or actor.get("id"))
        assert ext.get("suid") == actor.get("id") and ext.get("cs3") == actor.get("email")
        assert ext.get("src") == actor.get("ip")
        assert ext.get("requestClientApplication") == actor.get("user_agent")
        target = ev.get("target", {})
        if target.get("email"):
            assert ext["duid"] == target["id"] and ext["duser"] == (target.get("name") or target["email"])
        elif target:
            assert ext.get("cs6") == target.get("id") and ext.get("cs5") == target.get("type")


def test_unreadable_tls_files_are_named_at_their_config_line(tmp_path, counter_config) -> None:
    from tests.helpers import run_forwarder

    config = counter_config(count=1)
    config["outputs"] = [{"name": "siem", "type": "syslog_cef",
                          "options": {"host": "127.0.0.1", "port": 6514, "protocol": "tls",
                                      "ca_file": str(tmp_path / "missing-ca.pem")}}]
    result = run_forwarder(tmp_path, config)
    assert result.returncode == 78
    # The block is the first item of outputs: its "- name:" line in the YAML written by the helper.
    line = next(n for n, text in enumerate((tmp_path / "config.yaml").read_text().splitlines(), 1)
                if "name: siem" in text)
    assert f"{tmp_path / 'config.yaml'}:{line}: output siem: cannot load the TLS files" in result.stderr + result.stdout
