"""Config problems as ``file:line: $.path: message`` lines, located through each value's origin.

One collector for the whole load, so every stage (the top-level schema, each plugin's options,
names and routing) adds to the same list and ``check`` prints them all in one run.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from forwarder_core.config.yamlsource import Located, json_path, line_of
from forwarder_core.errors import ConfigError
from forwarder_core.secrets import redact

Origins = Callable[[tuple[Any, ...]], tuple[Located, tuple[Any, ...]]]


class Problems:
    """Collects located problem lines; :meth:`raise_if_any` raises them sorted by file and line."""

    def __init__(self, origins: Origins):
        self.origins = origins
        self.lines: list[tuple[str, int, str]] = []

    def add(self, path: tuple[Any, ...], message: str, key: str | None = None) -> None:
        located, local = self.origins(path)
        line = line_of(located.node, local, key)
        self.lines.append((located.file, line, f"{located.file}:{line}: {json_path(path)}: {redact(message)}"))

    def line(self, path: tuple[Any, ...]) -> tuple[str, int]:
        """The file and line a path was written at."""
        located, local = self.origins(path)
        return located.file, line_of(located.node, local)

    def raise_if_any(self) -> None:
        if self.lines:
            ordered = sorted(dict.fromkeys(self.lines), key=lambda t: (t[0], t[1], t[2]))
            raise ConfigError([text for _, _, text in ordered])
