"""The ``file`` output: one normalized event as JSON per line, appended, fsynced before success.

The lines are strict UTF-8 (I-JSON): a lone surrogate a vendor sent (``"\\ud800"``) is written as
U+FFFD, since the tools that read such files (jq, Filebeat, Go and Rust JSON decoders) refuse or
replace its escape anyway; the event's ``id`` is still the one computed from what the vendor sent.

A partial last line left by a crash is cut off before the first append (:mod:`forwarder_core.storage.durable`),
so the file holds only whole JSON lines. A symlink at ``path`` is refused, never written or cut
through: the file may sit in a directory another user can write to (the state directory is one).
"""
from __future__ import annotations

import os
from typing import Any

from forwarder_core import hookimpl
from forwarder_core.plugin_api import (
    REPLACE,
    ComponentConfig,
    Context,
    Encoded,
    LineAppender,
    Output,
    OutputError,
    SendResult,
    compact_json,
)


def encode_line(event: dict[str, Any]) -> bytes:
    """One event as a compact JSON line (non-ASCII kept, a lone surrogate as U+FFFD), without its newline."""
    return compact_json(event, surrogates=REPLACE)


def encode_lines(events: list[dict[str, Any]]) -> bytes:
    """Every event as one compact JSON line, in one buffer."""
    return b"\n".join(map(encode_line, events)) + b"\n"


class FileOutput(Output):
    type_name = "file"
    options_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": "File to append JSON lines to."},
            "fsync": {"type": "boolean", "default": True,
                      "description": "fsync after each batch (turning it off risks losing the last batch on power loss)."},
        },
    }

    def __init__(self, config: ComponentConfig, context: Context):
        super().__init__(config, context)
        self.path = os.path.abspath(self.options["path"])
        self._file = context.closing(LineAppender(self.path, mode=0o640, fsync=self.options.get("fsync", True)))

    def send(self, events: list[dict[str, Any]]) -> SendResult:
        return self._append(encode_lines(events))

    def encode_batch(self, events: list[dict[str, Any]]) -> Encoded:
        return Encoded([line + b"\n" for line in map(encode_line, events)])

    def send_encoded(self, batch: Encoded) -> SendResult:
        return self._append(b"".join(batch.parts)) if batch.parts else SendResult()

    def _append(self, data: bytes) -> SendResult:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._file.append(data)
        except OSError as exc:
            raise OutputError(f"cannot append to {self.path}: {exc.strerror or exc}") from None
        return SendResult()

    def check_connection(self) -> str:
        directory = os.path.dirname(self.path)
        if not os.access(directory if os.path.isdir(directory) else os.path.dirname(directory), os.W_OK):
            raise OutputError(f"{directory} is not writable")
        return f"can append to {self.path}"


@hookimpl
def forwarder_register_outputs(registry: Any) -> None:
    registry.add(FileOutput)
