"""Reading, merging and validating the configuration.

Order of work: parse YAML (``config.yaml``, then ``conf.d/*.yaml`` merged by component ``name``),
expand ``${VAR}`` in strings, validate against ``schemas/config.schema.json``, load plugins,
resolve ``<secret>_file`` twins, validate each component's options against its plugin's schema,
wrap secrets. Every problem is collected and reported at once; nothing half-valid runs.
"""
from __future__ import annotations

import glob
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from forwarder_core.errors import ConfigError
from forwarder_core.plugin_api import ComponentConfig, apply_defaults, parse_time
from forwarder_core.schema import explain_errors, load_schema
from forwarder_core.secrets import SECRET_OPTION_NAMES, Secret, redact, register_secret_text
from forwarder_core.yamlsource import Located, expand_vars, json_path, line_of, read_yaml

DEFAULT_CONFIG = "/etc/siem-forwarder/config.yaml"
DEFAULT_STATE_DIR = "/var/lib/siem-forwarder"
DEFAULT_PLUGIN_PATHS = ("/usr/local/lib/siem-forwarder/plugins",)


@dataclass
class Config:
    path: str
    files: list[str]
    state_dir: str
    sources: list[ComponentConfig]
    outputs: list[ComponentConfig]
    settings: dict[str, Any]
    document: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def setting(self, section: str, key: str, default: Any) -> Any:
        return (self.settings.get(section) or {}).get(key, default)


class _Problems:
    """Collects ``file:line: $.path: message`` lines, located through each value's origin."""

    def __init__(self, origins: Callable[[tuple[Any, ...]], tuple[Located, tuple[Any, ...]]]):
        self.origins = origins
        self.lines: list[tuple[str, int, str]] = []

    def add(self, path: tuple[Any, ...], message: str, key: str | None = None) -> None:
        located, local = self.origins(path)
        line = line_of(located.node, local, key)
        self.lines.append((located.file, line, f"{located.file}:{line}: {json_path(path)}: {redact(message)}"))

    def raise_if_any(self) -> None:
        if self.lines:
            ordered = sorted(dict.fromkeys(self.lines), key=lambda t: (t[0], t[1], t[2]))
            raise ConfigError([text for _, _, text in ordered])


def config_files(path: str) -> list[str]:
    """``config.yaml`` merges ``conf.d/*.yaml`` beside it; ``NAME.yaml`` merges ``NAME.d/*.yaml``."""
    directory, base = os.path.split(path)
    stem = os.path.splitext(base)[0]
    drop_in = os.path.join(directory, "conf.d" if stem == "config" else f"{stem}.d")
    return [path] + sorted(glob.glob(os.path.join(drop_in, "*.yaml")) + glob.glob(os.path.join(drop_in, "*.yml")))


def _read_files(files: list[str]) -> list[Located]:
    docs: list[Located] = []
    problems: list[str] = []
    for file in files:
        try:
            with open(file, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            problems.append(f"{file}:0: $: cannot read the config file: {exc.strerror or exc}")
            continue
        try:
            located = read_yaml(file, text)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if located.data is None:
            located.data = {}
        if not isinstance(located.data, dict):
            problems.append(f"{file}:1: $: the config must be a mapping (sources:, outputs:, ...)")
            continue
        docs.append(located)
    if problems:
        raise ConfigError(problems)
    return docs


def _merge(docs: list[Located]) -> tuple[dict[str, Any], dict[tuple[Any, ...], tuple[Located, tuple[Any, ...]]], list[str]]:
    """Merge documents: top-level keys replaced by later files; components merged by ``name``."""
    merged: dict[str, Any] = {}
    origin: dict[tuple[Any, ...], tuple[Located, tuple[Any, ...]]] = {(): (docs[0], ())}
    notes: list[str] = []
    for doc in docs:
        for key, value in doc.data.items():
            if key in ("sources", "outputs") and isinstance(value, list):
                items = merged.setdefault(key, [])
                for j, item in enumerate(value):
                    name = item.get("name") if isinstance(item, dict) else None
                    idx = next((i for i, old in enumerate(items) if isinstance(old, dict) and name is not None
                                and old.get("name") == name), None)
                    if idx is None or doc is docs[0]:
                        idx = len(items)
                        items.append(item)
                    else:
                        notes.append(f"{doc.file}: {key[:-1]} {name!r} replaces the one defined earlier")
                        items[idx] = item
                    origin[(key, idx)] = (doc, (key, j))
                origin[(key,)] = (doc, (key,))
            else:
                merged[key] = value
                origin[(key,)] = (doc, (key,))
    return merged, origin, notes


def _origin_lookup(origin: dict[tuple[Any, ...], tuple[Located, tuple[Any, ...]]]) -> Callable[[tuple[Any, ...]], tuple[Located, tuple[Any, ...]]]:
    def lookup(path: tuple[Any, ...]) -> tuple[Located, tuple[Any, ...]]:
        for n in range(len(path), -1, -1):
            if path[:n] in origin:
                located, local = origin[path[:n]]
                return located, local + tuple(path[n:])
        return origin[()]
    return lookup


def _resolve_secret_files(options: dict[str, Any], secret_names: frozenset[str], declared: Mapping[str, Any],
                          path: tuple[Any, ...], problems: _Problems) -> dict[str, Any]:
    """Replace ``X_file`` by the file's content as ``X`` (one trailing newline stripped)."""
    result = dict(options)
    for name in secret_names:
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
            with open(file_path, encoding="utf-8") as fh:
                content = fh.read()
        except OSError as exc:
            problems.add(path + (twin,), f"cannot read the secret file {file_path}: {exc.strerror or exc}")
            continue
        if content.endswith("\n"):
            content = content[:-1]
        register_secret_text(content)
        result[name] = content
        if twin not in declared:
            del result[twin]
    return result


def _secret_names(cls: type) -> frozenset[str]:
    return SECRET_OPTION_NAMES | frozenset(getattr(cls, "secret_options", ()))


def _start_time(value: str | None) -> datetime:
    if value is None:
        return datetime.now(timezone.utc) - timedelta(hours=24)
    return parse_time(value)


def resolve_state_dir(document: Mapping[str, Any], env: Mapping[str, str]) -> str:
    if document.get("state_dir"):
        state_dir: str = document["state_dir"]  # the config schema requires a string
        return os.path.abspath(state_dir)
    if env.get("STATE_DIRECTORY"):
        return env["STATE_DIRECTORY"].split(":")[0]
    return DEFAULT_STATE_DIR


def default_plugin_paths() -> list[str]:
    """The standard plugin directories that exist on this host."""
    return [p for p in DEFAULT_PLUGIN_PATHS if os.path.isdir(p)]


def plugin_paths_of(path: str) -> list[str]:
    """The plugin directories a config names (read leniently: for ``plugins``, not for running)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = read_yaml(path, fh.read()).data
    except (OSError, ValueError):
        return []
    paths = data.get("plugin_paths") if isinstance(data, dict) else None
    found = [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []
    return found + default_plugin_paths()


def load_config(path: str, plugin_loader: Callable[[list[str]], Any], env: Mapping[str, str] | None = None) -> tuple[Config, Any]:
    """Read and validate the configuration; return it with the loaded plugin set.

    Raises :class:`ConfigError` listing every problem found.
    """
    env = os.environ if env is None else env
    files = config_files(path)
    docs = _read_files(files)
    merged, origin, notes = _merge(docs)
    problems = _Problems(_origin_lookup(origin))

    expansion_problems: list[tuple[tuple[Any, ...], str]] = []
    inline: set[tuple[Any, ...]] = set()
    document = expand_vars(merged, env, (), expansion_problems, inline)
    for p, message in expansion_problems:
        problems.add(p, message)

    for error in explain_errors(load_schema("config.schema.json"), document):
        problems.add(tuple(error.path), error.message, key=error.key)
    problems.raise_if_any()

    settings = {k: v for k, v in document.items() if k not in ("sources", "outputs")}
    plugin_paths = list(document.get("plugin_paths", [])) + default_plugin_paths()
    plugins = plugin_loader(plugin_paths)

    warnings = list(notes)
    sources = _components(document, "sources", plugins.sources, problems, inline, warnings)
    outputs = _components(document, "outputs", plugins.outputs, problems, inline, warnings)

    names = set()
    for kind, comps in (("sources", sources), ("outputs", outputs)):
        for i, comp in enumerate(comps):
            if comp is None:
                continue
            if (kind, comp.name) in names:
                problems.add((kind, i, "name"), f"duplicate {kind[:-1]} name {comp.name!r}")
            names.add((kind, comp.name))
    source_names = {c.name for c in sources if c is not None}
    for i, comp in enumerate(outputs):
        for j, wanted in enumerate((comp.sources or []) if comp else []):
            if wanted not in source_names:
                problems.add(("outputs", i, "sources", j), f"no source named {wanted!r}")
    problems.raise_if_any()

    if inline and os.path.exists(path) and os.stat(path).st_mode & stat.S_IROTH:
        for p in sorted(inline, key=str):
            if p and p[-1] in SECRET_OPTION_NAMES:
                warnings.append(f"{path}: {json_path(p)} is an inline secret in a file that others can read; "
                                f"use {p[-1]}_file or ${{VAR}}, or chmod o-r {path}")
    config = Config(
        path=path,
        files=[d.file for d in docs],
        state_dir=resolve_state_dir(document, env),
        sources=[c for c in sources if c is not None],
        outputs=[c for c in outputs if c is not None],
        settings=settings,
        document=document,
        warnings=warnings,
    )
    return config, plugins


def _components(document: dict[str, Any], kind: str, registry: Any, problems: _Problems,
                inline: set[tuple[Any, ...]], warnings: list[str]) -> list[ComponentConfig | None]:
    result: list[ComponentConfig | None] = []
    for i, block in enumerate(document.get(kind, []) or []):
        path = (kind, i)
        registered = registry.get(block["type"]) if registry is not None else None
        if registered is None:
            installed = ", ".join(registry.names()) if registry is not None else ""
            problems.add(path + ("type",), f"unknown {kind[:-1]} type {block['type']!r} (installed: {installed or 'none'})")
            result.append(None)
            continue
        cls = registered.cls
        secret_names = _secret_names(cls)
        declared = cls.options_schema.get("properties", {})
        for name in secret_names:  # register secret text before any message could show it
            value = (block.get("options") or {}).get(name)
            if isinstance(value, str):
                register_secret_text(value)
        options = _resolve_secret_files(block.get("options") or {}, secret_names, declared, path + ("options",), problems)
        before = len(problems.lines)
        for error in explain_errors(cls.options_schema, options, schema_id=f"{cls.type_name} options"):
            problems.add(path + ("options",) + tuple(error.path), error.message, key=error.key)
        if len(problems.lines) > before:
            result.append(None)
            continue
        options = apply_defaults(cls.options_schema, options)
        for name in secret_names:
            if isinstance(options.get(name), str):
                options[name] = Secret(options[name])
        try:
            start = _start_time(block.get("start_time"))
        except ValueError as exc:
            problems.add(path + ("start_time",), f"not an RFC 3339 time: {exc}")
            result.append(None)
            continue
        located, local = problems.origins(path)
        result.append(ComponentConfig(
            name=block["name"], type=block["type"], options=options,
            interval=float(block.get("interval", 60)), start_time=start,
            sources=block.get("sources"), buffer=block.get("buffer", "memory"),
            buffer_max_bytes=block.get("buffer_max_bytes"),
            file=located.file, line=line_of(located.node, local),
        ))
    return result
