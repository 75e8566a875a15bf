"""The example source tested as a plugin author tests theirs: the pipeline run once against a fake API.

Run with ``pytest`` once the package is installed next to siem-forwarder (its pytest plugin gives
the ``forwarder_once`` and ``forwarder_fake_api`` fixtures).
"""
from __future__ import annotations

import email.utils
import time

from forwarder_core.testing import json_response

LOGS = "/api/v1/logs"


def _event(n: int) -> dict:
    return {"uuid": f"evt-{n}", "published": f"2026-01-01T00:00:{n:02d}.000Z", "eventType": "user.session.start",
            "displayMessage": "User login to Okta", "actor": {"id": f"u{n}", "displayName": f"User {n}",
                                                              "alternateId": f"user{n}@example.com", "type": "User"},
            "client": {"ipAddress": "192.0.2.7"}, "outcome": {"result": "SUCCESS"},
            "target": [{"id": "app1", "type": "AppInstance", "displayName": "Portal"}]}


def _source(api, **options) -> dict:
    return {"type": "example_system_log", "start_time": "2026-01-01T00:00:00Z",
            "options": {"base_url": api.url, "token": "00abc-secret", "page_size": 2, **options}}


def test_reads_every_page_and_maps_the_event(forwarder_fake_api, forwarder_once) -> None:
    api = forwarder_fake_api
    api.pages("GET", LOGS, [_event(n) for n in range(5)], page_size=100)
    run = forwarder_once(source=_source(api))
    assert run.ok and [e["id"] for e in run.events] == [f"evt-{n}" for n in range(5)]
    assert len(api.calls(LOGS)) == 3  # page_size 2: the source honours it, the Link header leads on
    assert run.metrics.get("example_system_log_pages_total", source="src") == 3
    assert "# TYPE siem_forwarder_example_system_log_pages_total counter" in run.metrics.render()
    assert api.calls(LOGS)[0].headers["Authorization"] == "SSWS 00abc-secret"
    first = run.events[0]
    assert first["actor"] == {"id": "u0", "name": "User 0", "email": "user0@example.com", "type": "User",
                              "ip": "192.0.2.7"}
    assert first["outcome"] == "success" and first["target"]["name"] == "Portal"


def test_a_429_waits_until_the_vendors_reset_header(forwarder_fake_api, forwarder_once) -> None:
    api = forwarder_fake_api
    api.pages("GET", LOGS, [_event(1)])
    now = time.time()
    api.fault("status", path=LOGS, status=429, body={"errorSummary": "API call exceeded rate limit"},
              headers={"X-Rate-Limit-Reset": str(int(now) + 2), "Date": email.utils.formatdate(now, usegmt=True)})
    started = time.monotonic()
    run = forwarder_once(source=_source(api))
    assert run.ok and len(run.events) == 1
    assert time.monotonic() - started >= 1.0
    assert run.metrics.get("rate_limit_waits_total", component="src") == 1


def test_a_refused_token_is_reported_with_the_vendors_words(forwarder_fake_api, forwarder_once) -> None:
    api = forwarder_fake_api
    api.route("GET", LOGS, lambda req: json_response({"errorCode": "E0000011", "errorSummary": "Invalid token provided"},
                                                     401))
    run = forwarder_once(source=_source(api))
    assert not run.ok
    assert "refused the token: Invalid token provided" in run.results[0].error
    assert "00abc-secret" not in run.results[0].error


def test_a_malformed_event_is_set_aside_with_the_schemas_message(forwarder_fake_api, forwarder_once) -> None:
    api = forwarder_fake_api
    broken = {"uuid": "evt-9", "eventType": "user.session.start"}
    api.pages("GET", LOGS, [_event(1), broken])
    run = forwarder_once(source=_source(api))
    assert run.ok and [e["id"] for e in run.events] == ["evt-1"]
    (record,) = run.quarantined
    assert record["id"] == "evt-9" and "'published' is a required property" in record["reason"]
