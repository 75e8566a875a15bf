"""YAML documents that remember where each value came from, and ``${VAR}`` expansion.

The YAML is parsed first and variables are expanded inside string values only, so a value can
never create keys or documents. Every problem is reported as ``file:line: $.json.path: message``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class Located:
    """A parsed YAML file: its data and its node tree (for line numbers)."""

    file: str
    data: Any
    node: yaml.Node | None


def json_path(path: tuple[Any, ...] | list[Any]) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def read_yaml(file: str, text: str) -> Located:
    """Parse one YAML file; raise ValueError with ``file:line: $: message`` when it is not YAML."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"{file}:{line}: $: not valid YAML: {problem}") from None
    return Located(file, data, node)


def line_of(node: yaml.Node | None, path: tuple[Any, ...] | list[Any], key: str | None = None) -> int:
    """The line of the value at ``path`` (the line of its key, inside a mapping), 1-based.

    With ``key``, the line of that key inside the mapping at ``path`` if present.
    """
    line = node.start_mark.line + 1 if node is not None else 1
    current = node
    for part in list(path) + ([key] if key is not None else []):
        if isinstance(current, yaml.MappingNode):
            for knode, vnode in current.value:
                if knode.value == part:
                    line = knode.start_mark.line + 1
                    current = vnode
                    break
            else:
                return line
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(current.value):
            current = current.value[part]
            line = current.start_mark.line + 1
        else:
            return line
    return line


def expand_vars(value: Any, env: Mapping[str, str], path: tuple[Any, ...], problems: list[tuple[tuple[Any, ...], str]],
                inline: set[tuple[Any, ...]] | None = None) -> Any:
    """Expand ``${VAR}``, ``${VAR:-default}`` and ``$$`` in every string of ``value``.

    An unset variable without a default is a problem at its path. Paths of strings that held
    no variable at all are added to ``inline`` (used to warn about inline secrets).
    """
    if isinstance(value, dict):
        return {k: expand_vars(v, env, path + (k,), problems, inline) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_vars(v, env, path + (i,), problems, inline) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    if "$" not in value:
        if inline is not None:
            inline.add(path)
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        got = env.get(name)
        if got is None or (got == "" and default is not None):
            if default is not None:
                return default
            problems.append((path, f"environment variable {name} is not set"))
            return ""
        return got

    expanded = _VAR.sub(substitute, value)
    if inline is not None and _VAR.search(value) is None:
        inline.add(path)
    return expanded
