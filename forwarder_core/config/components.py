"""Checking each ``sources:``/``outputs:`` block against its plugin, as far as the block allows.

A block whose own top-level fields are broken (a wrong ``interval`` type, say) is still checked
for its type and its options, so one ``check`` run reports every mistake; only a block that
passed everything becomes a :class:`ComponentConfig`.
"""
from __future__ import annotations

import copy
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from forwarder_core.config.problems import Problems
from forwarder_core.config.schema import explain_errors
from forwarder_core.config.typedvars import coerce
from forwarder_core.config.yamlsource import json_path
from forwarder_core.plugin.context import ComponentConfig
from forwarder_core.plugin.option_schemas import apply_defaults
from forwarder_core.secrets import (
    SECRET_OPTION_NAMES,
    Secret,
    control_character,
    read_secret_file,
    register_secret_text,
)
from forwarder_core.times import parse_time


@dataclass
class Leniency:
    """What a load may leave unresolved.

    ``secrets=False`` is for the read-only commands (``state``, ``quarantine list``): they never
    talk to a vendor or a SIEM, so an unset ``${VAR}`` inside a component's options or an
    unreadable ``<secret>_file`` must not stop an operator from looking at the state.
    ``unresolved`` holds the option paths whose ``${VAR}`` could not be expanded.
    """

    secrets: bool = True
    unresolved: frozenset[tuple[Any, ...]] = frozenset()


def secret_names(cls: type) -> frozenset[str]:
    return SECRET_OPTION_NAMES | frozenset(getattr(cls, "secret_options", ()))


def _start_time(value: str | None) -> datetime:
    if value is None:
        return datetime.now(timezone.utc) - timedelta(hours=24)
    return parse_time(value)


def _resolve_secret_files(options: dict[str, Any], names: frozenset[str], declared: Mapping[str, Any],
                          path: tuple[Any, ...], problems: Problems, report: bool) -> tuple[dict[str, Any], set[str]]:
    """Replace ``X_file`` by the file's content as ``X`` (:func:`~forwarder_core.secrets.read_secret_file`:
    a regular file, size-capped, one trailing newline stripped, no control character).

    Returns the options and the secret names whose file could not be read. Such a name is
    reported once, as the file and the OS's reason; the options schema is then not asked about
    it, since "'token' is a required property" would only repeat the same mistake, wrongly.
    """
    result = dict(options)
    unreadable: set[str] = set()
    for name in names:
        twin = f"{name}_file"
        if twin not in result:
            continue
        file_path = result[twin]
        if name in result:
            problems.add(path, f"give either '{name}' or '{twin}', not both", key=twin)
            continue
        if not isinstance(file_path, str):
            problems.add(path + (twin,), "must be a file path")
            continue
        try:
            content = read_secret_file(file_path)
        except ValueError as exc:
            if report:
                problems.add(path + (twin,), str(exc))
            unreadable.add(name)
            if twin not in declared:
                del result[twin]
            continue
        register_secret_text(content)
        result[name] = content
        if twin not in declared:
            del result[twin]
    return result, unreadable


def _refuse_url_credentials(options: dict[str, Any], path: tuple[Any, ...], problems: Problems) -> set[str]:
    """``url``/``base_url``/``*_url`` options that carry ``user:password@``: a problem each, the
    value never shown. requests would send them as HTTP Basic instead of the configured token,
    and a URL is quoted in every log line about a request."""
    refused = set()
    for key, value in options.items():
        if not (isinstance(value, str) and isinstance(key, str) and (key in ("url", "base_url") or key.endswith("_url"))):
            continue
        netloc = urllib.parse.urlsplit(value.strip()).netloc if "://" in value else ""
        userinfo = netloc.rpartition("@")[0]
        if not userinfo:
            continue
        for part in (userinfo, userinfo.partition(":")[2], urllib.parse.unquote(userinfo.partition(":")[2])):
            register_secret_text(part)
        problems.add(path + (key,), "holds credentials (user:password@host); a URL must not carry them: give the "
                                    "plugin's token, api_key or password option instead (value hidden)")
        refused.add(key)
    return refused


def check_components(document: dict[str, Any], kind: str, registry: Any, problems: Problems,
                     broken: set[tuple[Any, ...]], leniency: Leniency) -> list[ComponentConfig | None]:
    """One entry per block: its ComponentConfig, or None when the block has a problem."""
    blocks = document.get(kind)
    result: list[ComponentConfig | None] = []
    for i, block in enumerate(blocks if isinstance(blocks, list) else []):
        result.append(_check_block(block, kind, (kind, i), registry, problems, (kind, i) in broken, leniency))
    return result


def _check_block(block: Any, kind: str, path: tuple[Any, ...], registry: Any, problems: Problems,
                 broken: bool, leniency: Leniency) -> ComponentConfig | None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return None  # the top-level schema has said why
    registered = registry.get(block["type"]) if registry is not None else None
    if registered is None:
        installed = ", ".join(registry.names()) if registry is not None else ""
        problems.add(path + ("type",), f"unknown {kind[:-1]} type {block['type']!r} (installed: {installed or 'none'})")
        return None
    raw_options = block.get("options") or {}
    if not isinstance(raw_options, dict):
        return None
    cls = registered.cls
    names = secret_names(cls)
    declared = cls.options_schema.get("properties", {})
    for name in names:  # register secret text before any message could show it
        if isinstance(raw_options.get(name), str):
            register_secret_text(raw_options[name])
    opt_path = path + ("options",)
    coerce(cls.options_schema, raw_options)
    skip = _refuse_url_credentials(raw_options, opt_path, problems)
    options, unreadable = _resolve_secret_files(raw_options, names, declared, opt_path, problems, leniency.secrets)
    skip |= unreadable
    for name in names:
        value = options.get(name)
        if name not in unreadable and isinstance(value, str) and control_character(value) is not None:
            problems.add(opt_path + (name,), "holds a control character or a line break (hidden, it is a secret)")
            skip.add(name)
    # An option whose ${VAR} is unset was reported as such (or forgiven, for a read-only command):
    # what the schema says of the empty value in its place would say the same thing again.
    skip |= {p[len(opt_path)] for p in leniency.unresolved if p[:len(opt_path)] == opt_path and len(p) > len(opt_path)}
    before = len(problems.lines)
    for error in explain_errors(cls.options_schema, options, schema_id=f"{cls.type_name} options"):
        if error.path and error.path[0] in skip:
            continue
        if not error.path and any(error.message == f"{name!r} is a required property" for name in skip):
            continue
        problems.add(opt_path + tuple(error.path), error.message, key=error.key)
    if broken or len(problems.lines) > before:
        return None
    options = apply_defaults(cls.options_schema, options)
    for name in names:
        if isinstance(options.get(name), str):
            options[name] = Secret(options[name])
    if not _plugin_rules(cls, options, opt_path, problems):
        return None
    try:
        start = _start_time(block.get("start_time"))
    except ValueError as exc:
        problems.add(path + ("start_time",), f"not an RFC 3339 time: {exc}")
        return None
    file, line = problems.line(path)
    return ComponentConfig(
        name=block["name"], type=block["type"], options=options,
        interval=float(block.get("interval", 60)), start_time=start,
        sources=block.get("sources"), buffer=block.get("buffer", "memory"),
        buffer_max_bytes=block.get("buffer_max_bytes"), file=file, line=line, path=json_path(path),
    )


def plugin_view(document: dict[str, Any], plugins: Any) -> dict[str, Any]:
    """A copy of the config document as ``forwarder_configure`` hands it to plugins: each
    component's secret options (the standard names and its plugin's ``secret_options``) wrapped
    in :class:`Secret`, so a plugin that logs, raises with or prints the document shows ``***``."""
    view = copy.deepcopy(document)
    for kind, registry in (("sources", plugins.sources), ("outputs", plugins.outputs)):
        blocks = view.get(kind)
        for block in blocks if isinstance(blocks, list) else []:
            options = block.get("options") if isinstance(block, dict) else None
            if not isinstance(options, dict):
                continue
            registered = registry.get(block.get("type")) if registry is not None else None
            names = secret_names(registered.cls) if registered is not None else SECRET_OPTION_NAMES
            for name in names:
                if isinstance(options.get(name), str):
                    options[name] = Secret(options[name])
    return view
def _plugin_rules(cls: Any, options: dict[str, Any], opt_path: tuple[Any, ...], problems: Problems) -> bool:
    """The plugin's own cross-option rules (``check_options``), each reported at its option; False if any."""
    try:
        found = list(cls.check_options(options))
    except Exception as exc:  # a plugin's bug is reported at the block, never a crash of check
        problems.add(opt_path, f"{cls.type_name}.check_options failed: {type(exc).__name__}: {exc}")
        return False
    for where, message in found:
        where = tuple(where) if isinstance(where, (tuple, list)) else (where,)
        problems.add(opt_path + where, str(message))
    return not found


def check_names_and_routes(document: dict[str, Any], problems: Problems) -> None:
    """Duplicate names, and output ``sources:`` filters naming no source, read from the blocks themselves
    so that a block with another mistake still takes part."""
    source_names: set[str] = set()
    for kind in ("sources", "outputs"):
        seen: set[str] = set()
        blocks = document.get(kind)
        for i, block in enumerate(blocks if isinstance(blocks, list) else []):
            name = block.get("name") if isinstance(block, dict) else None
            if not isinstance(name, str):
                continue
            if name in seen:
                problems.add((kind, i, "name"), f"duplicate {kind[:-1]} name {name!r}")
            seen.add(name)
        if kind == "sources":
            source_names = seen
    outputs = document.get("outputs")
    for i, block in enumerate(outputs if isinstance(outputs, list) else []):
        wanted = block.get("sources") if isinstance(block, dict) else None
        for j, name in enumerate(wanted if isinstance(wanted, list) else []):
            if isinstance(name, str) and name not in source_names:
                problems.add(("outputs", i, "sources", j), f"no source named {name!r}")
