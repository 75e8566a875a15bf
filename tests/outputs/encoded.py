"""Batches encoded as in a worker process, for the tests of the outputs that build their requests there."""
from __future__ import annotations

import pickle
from typing import Any

import pytest


class CompressHere:
    """Switches compressing a request body in this process into a test failure, and back."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self._monkeypatch = monkeypatch

    def forbid(self) -> None:
        from siem_forwarder_plugins.outputs import batching

        def compress(*args: Any, **kwargs: Any) -> bytes:
            raise AssertionError("the main process compressed a request that was built ahead")

        self._monkeypatch.setattr(batching, "gzip_compress", compress)

    def allow(self) -> None:
        self._monkeypatch.undo()


def from_a_worker(output: Any, events: list[dict[str, Any]]) -> Any:
    """``output.encode_batch(events)`` as it comes back from a worker process: pickled."""
    return pickle.loads(pickle.dumps(output.encode_batch(events)))
