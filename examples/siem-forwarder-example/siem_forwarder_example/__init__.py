"""Example siem-forwarder plugin.

* ``example_system_log`` source (:mod:`.system_log`): an Okta-style audit API read through the
  core HTTP client, with the vendor's own rate-limit header as the client's wait.
* ``webhook`` output: POSTs each batch as a JSON array to a URL, through the core HTTP client
  (retries, TLS, redaction come for free).
* ``forwarder_configure`` + ``forwarder_transform_events``: adds ``labels.site`` to every
  event, taken from the environment variable named in the config (``SITE`` by default).
"""
from __future__ import annotations

import os
from typing import Any

from forwarder_core import hookimpl
from forwarder_core.plugin_api import BearerAuth, Output, OutputError, SendResult, http_output_options_schema
from siem_forwarder_example.system_log import SystemLogSource

_site = {"value": os.environ.get("SITE", "")}


class WebhookOutput(Output):
    type_name = "webhook"
    options_schema = http_output_options_schema(
        properties={"token": {"type": "string"}}, batch_max_bytes=1_000_000, batch_max_events=500)

    def __init__(self, config, context):
        super().__init__(config, context)
        token = self.options.get("token")
        self.http = context.http(self.options, auth=BearerAuth(token) if token else None)

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        try:
            self.http.request("POST", "", json_body=events)
        except Exception as exc:
            raise OutputError(str(exc)) from None
        return SendResult()


@hookimpl
def forwarder_register_sources(registry):
    registry.add(SystemLogSource)


@hookimpl
def forwarder_register_outputs(registry):
    registry.add(WebhookOutput)


@hookimpl
def forwarder_configure(config):
    _site["value"] = os.environ.get("SITE", _site["value"])


@hookimpl
def forwarder_transform_events(source_name, events):
    if _site["value"]:
        for event in events:
            event.setdefault("labels", {})["site"] = _site["value"]
    return None
