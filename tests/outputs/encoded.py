"""Batches encoded as in a worker process, for the tests of the outputs that build their requests there."""
from __future__ import annotations

import pickle
from typing import Any

import pytest

from siem_forwarder_plugins.outputs import batching


class CompressHere:
    """Switches compressing a request body in this process into a test failure, and back."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self._monkeypatch = monkeypatch
        self._compress = batching.gzip_compress

    def forbid(self) -> None:
        def compress(*args: Any, **kwargs: Any) -> bytes:
            raise AssertionError("the main process compressed a request that was built ahead")

        self._monkeypatch.setattr(batching, "gzip_compress", compress)

    def allow(self) -> None:
        """Only this switch back: other patches of the test stay."""
        self._monkeypatch.setattr(batching, "gzip_compress", self._compress)


def from_a_worker(output: Any, events: list[dict[str, Any]]) -> Any:
    """``output.encode_batch(events)`` as it comes back from a worker process: pickled."""
    return pickle.loads(pickle.dumps(output.encode_batch(events)))
