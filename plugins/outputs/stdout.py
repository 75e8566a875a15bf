"""The ``stdout`` output: one normalized event as JSON per line, to standard output, flushed."""
from __future__ import annotations

import sys
from typing import Any

from forwarder_core import hookimpl
from forwarder_core.plugin_api import Output, OutputError, SendResult
from siem_forwarder_plugins.outputs.file import encode_lines


class StdoutOutput(Output):
    type_name = "stdout"
    options_schema = {"type": "object", "additionalProperties": False, "properties": {}}

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        try:
            out = sys.stdout.buffer
            out.write(encode_lines(events))
            out.flush()
        except (OSError, ValueError) as exc:
            raise OutputError(f"cannot write to standard output: {exc}") from None
        return SendResult()

    def check_connection(self) -> str:
        return "standard output"


@hookimpl
def forwarder_register_outputs(registry: Any) -> None:
    registry.add(StdoutOutput)
