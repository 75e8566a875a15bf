"""syslog_cef's default HOSTNAME names this machine, as splunk_hec's default ``host`` does, never ``localhost``."""
from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from forwarder_core.config.loader import load_config
from forwarder_core.metrics import Metrics
from forwarder_core.plugin.manager import load_plugins
from forwarder_core.plugin.registry import instantiate


def _outputs(tmp_path: Path, fmt: str) -> tuple[Any, Any]:
    path = tmp_path / "config.yaml"
    path.write_text(f"state_dir: {tmp_path}/state\nsources: []\noutputs:\n"
                    "  - {name: hec, type: splunk_hec, options: {url: 'http://127.0.0.1:9', token: t-0123456789}}\n"
                    f"  - {{name: cef, type: syslog_cef, options: {{host: 127.0.0.1, port: 9, format: {fmt}}}}}\n")
    config, plugins = load_config(str(path), load_plugins)
    made = [instantiate(plugins.outputs, comp, str(tmp_path), Metrics(), threading.Event()) for comp in config.outputs]
    for output in made:
        output.close()
    return made[0], made[1]


@pytest.mark.parametrize("fmt", ["rfc5424", "rfc3164"])
def test_the_default_hostname_is_this_machines_name_as_hec_sends_it(tmp_path: Path, fmt: str) -> None:
    hec, cef = _outputs(tmp_path, fmt)
    name = socket.gethostname()
    assert hec.host == name
    if fmt == "rfc3164":
        assert cef.header.hostname == name.split(".")[0]
    else:
        assert cef.header.hostname == name or cef.header.hostname.startswith(name.split(".")[0] + ".")
    if name != "localhost":
        assert cef.header.hostname != "localhost"


def test_a_resolver_that_answers_localhost_does_not_rename_the_machine(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """/etc/hosts in containers maps the host name to 127.0.0.1 after ``localhost``: getfqdn() says localhost."""
    monkeypatch.setattr(socket, "gethostname", lambda: "fwd-01")
    monkeypatch.setattr(socket, "getfqdn", lambda name="": "localhost")
    hec, cef = _outputs(tmp_path, "rfc5424")
    assert (hec.host, cef.header.hostname) == ("fwd-01", "fwd-01")
    monkeypatch.setattr(socket, "getfqdn", lambda name="": "fwd-01.example.net")
    _, cef = _outputs(tmp_path, "rfc5424")
    assert cef.header.hostname == "fwd-01.example.net"  # RFC 5424 prefers the FQDN where there is one
