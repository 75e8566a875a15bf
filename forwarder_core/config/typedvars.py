"""``${VAR}`` as a whole scalar takes the type its schema asks for: ``port: ${SYSLOG_PORT}`` is an integer.

The environment only holds strings, so without this a variable could never fill an integer,
number or boolean option. Only a value that was exactly one ``${VAR}`` (or ``${VAR:-default}``)
is converted, and only where the schema does not accept a string there: ``"${A}${B}"`` or
``"port ${P}"`` stay text, and a token that happens to read ``1234`` stays a string.
"""
from __future__ import annotations

from typing import Any

import yaml


class VarText(str):
    """A string that was a whole-scalar ``${VAR}`` in the config (a plain ``str`` everywhere else)."""

    __slots__ = ()


_SCALARS: dict[str, type | tuple[type, ...]] = {"integer": int, "number": (int, float), "boolean": bool}


def _wanted(schema: Any) -> list[str]:
    kind = schema.get("type") if isinstance(schema, dict) else None
    return [kind] if isinstance(kind, str) else [k for k in kind if isinstance(k, str)] if isinstance(kind, list) else []


def _convert(text: str, kinds: list[str]) -> Any:
    try:
        value = yaml.safe_load(text)  # YAML's own reading of a scalar, as if it had been written inline
    except yaml.YAMLError:
        return text
    for kind in kinds:
        want = _SCALARS.get(kind)
        if want is None:
            continue
        if kind != "boolean" and isinstance(value, bool):
            continue
        if isinstance(value, want):
            return value
    return text


def coerce(schema: Any, value: Any) -> Any:
    """``value`` with every whole-scalar ``${VAR}`` converted where ``schema`` wants a number or a boolean.

    Follows ``properties``, ``additionalProperties`` and ``items``, and reads the types of
    ``anyOf``/``oneOf`` branches; a schema that also accepts a string, or names the text as a
    ``const``/``enum``, keeps the text.
    """
    if not isinstance(schema, dict):
        return value
    if isinstance(value, VarText):
        branches = [b for b in schema.get("anyOf") or schema.get("oneOf") or [schema] if isinstance(b, dict)]
        if any(b.get("const") == value or value in (b.get("enum") or ()) for b in branches):
            return value  # a word the schema names (``workers: auto``)
        kinds = [kind for b in branches for kind in _wanted(b)]
        if kinds and "string" not in kinds:
            return _convert(str(value), kinds)
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = coerce(sub, item)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value[:] = [coerce(schema["items"], item) for item in value]
    return value
