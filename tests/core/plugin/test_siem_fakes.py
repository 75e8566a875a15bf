"""A plugin author shows the built-in outputs rendering their source's events, through ``forwarder_core.testing`` only."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from forwarder_core import hookimpl
from forwarder_core.plugin_api import Page, Source
from forwarder_core.testing import ElasticBulkFake, SplunkHecFake, SyslogReceiver

pytest_plugins: list[str] = []  # forwarder_core.testing is loaded through the pytest11 entry point


class GadgetAudit(Source):
    """A third-party source as an author would write it: two events, one page."""

    type_name = "gadget_audit"
    vendor = "Gadget"
    product = "Audit"
    options_schema = {"type": "object", "properties": {}}

    paths: list[str] = []

    def poll(self, cursor: Any) -> Iterator[Page]:
        self.paths.append(self.config.path)  # where check would point at this block
        if cursor is None:
            yield Page([{"uid": "g-1", "at": "2026-01-01T00:00:01Z", "what": "login"},
                        {"uid": "g-2", "at": "2026-01-01T00:00:02Z", "what": "logout"}], {"done": True})

    def normalize(self, raw: dict[str, Any]) -> dict[str, Any]:
        return self.make_event(raw, id=raw["uid"], timestamp=raw["at"], action=raw["what"])


class GadgetPlugin:
    @hookimpl
    def forwarder_register_sources(self, registry: Any) -> None:
        registry.add(GadgetAudit)


SOURCE = {"type": "gadget_audit"}


def test_splunk_hec_renders_a_plugin_source(forwarder_once) -> None:
    with SplunkHecFake() as hec:
        run = forwarder_once(source=SOURCE, output=hec.output(), plugins=[GadgetPlugin()])
    assert run.ok and run.delivered == 2
    assert [e["event"]["uid"] for e in hec.events] == ["g-1", "g-2"]  # the vendor's record, as it came
    assert [e["fields"]["action"] for e in hec.events] == ["login", "logout"]
    assert {e["sourcetype"] for e in hec.events} == {"gadget_audit:audit"}
    assert GadgetAudit.paths[-1] == "$.sources[0]"


def test_elastic_bulk_renders_a_plugin_source(forwarder_once) -> None:
    with ElasticBulkFake() as es:
        run = forwarder_once(source=SOURCE, output=es.output(), plugins=[GadgetPlugin()])
    assert run.ok and run.delivered == 2
    docs = es.all_documents()
    assert len(docs) == 2 and all("@timestamp" in d for d in docs)
    assert sorted(d["event"]["action"] for d in docs) == ["login", "logout"]


@pytest.mark.parametrize("framing", ["octet-counting", "newline"])
def test_syslog_cef_renders_a_plugin_source(forwarder_once, framing: str) -> None:
    with SyslogReceiver(framing) as receiver:
        run = forwarder_once(source=SOURCE, output=receiver.output(), plugins=[GadgetPlugin()])
        assert receiver.wait_for(2)
    assert run.ok and run.delivered == 2
    assert all("CEF:0|Gadget|Audit|" in m for m in receiver.messages)
    assert any("login" in m for m in receiver.messages)


def test_syslog_receiver_fails_the_test_on_the_wrong_framing(forwarder_once) -> None:
    receiver = SyslogReceiver("octet-counting").start()
    run = forwarder_once(source=SOURCE, output=receiver.output(framing="newline"), plugins=[GadgetPlugin()])
    assert run.ok
    receiver.wait_for(1)
    with pytest.raises(AssertionError, match="not octet-counting framing"):
        receiver.stop()


def test_hec_fake_refuses_a_wrong_token(forwarder_once) -> None:
    with SplunkHecFake(token="right") as hec:
        run = forwarder_once(source=SOURCE, output=hec.output(token="wrong"), plugins=[GadgetPlugin()],
                             delivery={"once_give_up_after": 0})
    assert not run.ok and hec.events == []
