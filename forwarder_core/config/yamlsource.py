"""YAML documents that remember where each value came from, and ``${VAR}`` expansion.

The YAML is parsed first and variables are expanded inside string values only, so a value can
never create keys or documents. Every problem is reported as ``file:line: $.json.path: message``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from forwarder_core.config.typedvars import VarText

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


MAX_VALUES = 200_000
"""Values a config may hold once its YAML aliases are expanded (a 2,000-tenant config holds ~30,000).

An alias is cheap to write and costly to expand: nine nested aliases of nine (a 1 KB "billion
laughs") stand for 10**9 values, which took 3 GiB and 40 s before failing. The count is made
on the parsed node graph, where each anchored node is counted once per use without being
copied, so the refusal costs no more than parsing the file.
"""


@dataclass
class Located:
    """A parsed YAML file: its data and its node tree (for line numbers)."""

    file: str
    data: Any
    node: yaml.Node | None
    problems: list[str] = field(default_factory=list)
    """Duplicate keys, each as ``file:line: $.path: duplicate key 'k' (first at line n)``."""


def json_path(path: tuple[Any, ...] | list[Any]) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def read_yaml(file: str, text: str) -> Located:
    """Parse one YAML file; raise ValueError with ``file:line: $: message`` when it is not YAML,
    holds a recursive alias, or stands for more than :data:`MAX_VALUES` values once its aliases
    are expanded. Duplicate keys are left on :attr:`Located.problems`."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Located(file, None, None)
        _bound_aliases(file, node)
        problems = _duplicate_keys(file, node)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"{file}:{line}: $: not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    return Located(file, data, node, problems)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _bound_aliases(file: str, root: yaml.Node) -> None:
    """Count the values ``root`` stands for, each shared (aliased) node once per use; refuse a
    node that contains itself and a total over :data:`MAX_VALUES`. Linear in the distinct nodes."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            if total > MAX_VALUES:
                raise ValueError(f"{file}:{node.start_mark.line + 1}: $: more than {MAX_VALUES} values once the "
                                 f"YAML aliases are expanded; refusing (an alias bomb?)")
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in active:
            raise ValueError(f"{file}:{node.start_mark.line + 1}: $: a YAML alias that refers to itself; refusing")
        active.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in active:
                raise ValueError(f"{file}:{child.start_mark.line + 1}: $: a YAML alias that refers to itself; refusing")
            if id(child) not in sizes:
                stack.append((child, False))


def _duplicate_keys(file: str, root: yaml.Node) -> list[str]:
    """Each key written twice in one mapping (the last would silently win), with both lines.
    Keys merged in by ``<<`` may be overridden, as YAML means them to."""
    problems: list[tuple[int, str]] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for knode, vnode in node.value:
                if isinstance(knode, yaml.ScalarNode) and knode.tag != "tag:yaml.org,2002:merge":
                    line = knode.start_mark.line + 1
                    key = (knode.tag, knode.value)
                    if key in first:
                        problems.append((line, f"{file}:{line}: {json_path(path)}: duplicate key {knode.value!r} "
                                               f"(first at line {first[key]})"))
                    else:
                        first[key] = line
                    stack.append((vnode, path + (knode.value,)))
                else:
                    stack.append((vnode, path))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, path + (i,)) for i, child in enumerate(node.value))
    return [text for _, text in sorted(problems)]


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
    whole = _VAR.fullmatch(value)
    if whole is not None and whole.group(0) != "$$":
        return VarText(expanded)  # its schema may ask for a number or a boolean (typedvars.coerce)
    return expanded
