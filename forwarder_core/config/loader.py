"""Reading, merging and validating the configuration.

Order of work: parse YAML (``config.yaml``, then ``conf.d/*.yaml`` merged by component ``name``),
expand ``${VAR}`` in strings, validate against ``schemas/config.schema.json``, load plugins,
resolve ``<secret>_file`` twins, validate each component's options against its plugin's schema,
wrap secrets. Every problem of every stage is collected and reported at once; nothing
half-valid runs.
"""
from __future__ import annotations

import glob
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from forwarder_core.config.cluster import ClusterSettings, cluster_settings
from forwarder_core.config.components import Leniency, check_components, check_names_and_routes
from forwarder_core.config.problems import Problems
from forwarder_core.config.schema import explain_errors, load_schema
from forwarder_core.config.typedvars import coerce
from forwarder_core.config.yamlsource import Located, expand_vars, json_path, read_yaml
from forwarder_core.errors import ConfigError
from forwarder_core.plugin.context import ComponentConfig
from forwarder_core.secrets import SECRET_OPTION_NAMES
from forwarder_core.storage.checkpoint import store_problems
from forwarder_core.storage.statedir import state_dir_problems

DEFAULT_CONFIG = "/etc/siem-forwarder/config.yaml"
DEFAULT_STATE_DIR = "/var/lib/siem-forwarder"
DEFAULT_PLUGIN_PATHS = ("/usr/local/lib/siem-forwarder/plugins",)
DEFAULT_MAX_CONCURRENT_POLLS = 16
DEFAULT_WORKERS_IDLE_STOP = 60.0
"""Sources polled at once (docs/configuration.md says why 16)."""


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
    plugin_paths: list[str] = field(default_factory=list)
    """The directories plugins were loaded from: the config's ``plugin_paths``, then the defaults."""
    cluster: ClusterSettings | None = None
    """The ``cluster:`` block: state and leases in PostgreSQL (:mod:`forwarder_core.engine.fleet`)."""

    def setting(self, section: str, key: str, default: Any) -> Any:
        return (self.settings.get(section) or {}).get(key, default)

    @property
    def max_concurrent_polls(self) -> int:
        """How many sources are polled at once; the others wait their turn (:mod:`forwarder_core.engine.pollpool`)."""
        return int(self.settings.get("max_concurrent_polls", DEFAULT_MAX_CONCURRENT_POLLS))

    @property
    def workers(self) -> int:
        """How many worker processes prepare pages (0: the main process does)."""
        return worker_count(self.settings.get("workers", "auto"))

    @property
    def workers_idle_stop(self) -> float | None:
        """``workers: auto``: seconds without a page after which the worker processes stop (they
        start again with the next backlog); None for ``workers: N``, whose N processes stay."""
        if self.settings.get("workers", "auto") != "auto":
            return None
        return float(self.settings.get("workers_idle_stop", DEFAULT_WORKERS_IDLE_STOP))


def worker_count(setting: Any) -> int:
    """``workers:`` as a number: ``auto`` leaves one of the CPUs this process may use to the main
    process (which pages, delivers and commits), so one CPU means none."""
    if setting == "auto":
        return max(0, len(os.sched_getaffinity(0)) - 1)
    return int(setting)


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
        problems.extend(located.problems)
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


def _listed_paths(value: Any) -> list[str]:
    """``plugin_paths`` as a list of strings, whatever the document holds (the schema reports the rest)."""
    return [p for p in value if isinstance(p, str)] if isinstance(value, list) else []


def plugin_paths_of(path: str) -> list[str]:
    """The plugin directories a config names (read leniently: for ``plugins``, not for running)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = read_yaml(path, fh.read()).data
    except (OSError, ValueError):
        return []
    return _listed_paths(data.get("plugin_paths") if isinstance(data, dict) else None) + default_plugin_paths()


def load_config(path: str, plugin_loader: Callable[[list[str]], Any], env: Mapping[str, str] | None = None,
                *, need_secrets: bool = True, check_state_dir: bool = False) -> tuple[Config, Any]:
    """Read and validate the configuration; return it with the loaded plugin set.

    Raises :class:`ConfigError` listing every problem found, from every stage at once. With
    ``need_secrets=False`` (read-only commands) unresolvable secrets are not problems. With
    ``check_state_dir`` (``check`` only: a running daemon reloading its config holds the lock
    itself) the state directory's problems are among them.
    """
    env = os.environ if env is None else env
    files = config_files(path)
    docs = _read_files(files)
    merged, origin, notes = _merge(docs)
    problems = Problems(_origin_lookup(origin))

    expansion_problems: list[tuple[tuple[Any, ...], str]] = []
    inline: set[tuple[Any, ...]] = set()
    document = coerce(load_schema("config.schema.json"), expand_vars(merged, env, (), expansion_problems, inline))
    for p, message in expansion_problems:
        if need_secrets or not _inside_options(p):
            problems.add(p, message)
    leniency = Leniency(secrets=need_secrets, unresolved=frozenset(p for p, _ in expansion_problems))

    broken: set[tuple[Any, ...]] = set()
    for error in explain_errors(load_schema("config.schema.json"), document):
        if tuple(error.path) in leniency.unresolved:
            continue  # its unset ${VAR} is the problem, reported above
        problems.add(tuple(error.path), error.message, key=error.key)
        broken.add(tuple(error.path[:2]))

    settings = {k: v for k, v in document.items() if k not in ("sources", "outputs", "cluster")}
    plugin_paths = _listed_paths(document.get("plugin_paths")) + default_plugin_paths()
    plugins = plugin_loader(plugin_paths)

    sources = check_components(document, "sources", plugins.sources, problems, broken, leniency)
    outputs = check_components(document, "outputs", plugins.outputs, problems, broken, leniency)
    check_names_and_routes(document, problems)
    cluster = cluster_settings(document, problems, need_secrets)
    if check_state_dir and ("state_dir",) not in broken:
        where = ("state_dir",) if "state_dir" in document else ()
        state_dir = resolve_state_dir(document, env)
        for problem in state_dir_problems(state_dir) + store_problems(state_dir):
            problems.add(where, problem)
    problems.raise_if_any()
    document = {k: v for k, v in document.items() if k != "cluster"}  # the DSN stays in ClusterSettings only

    warnings = list(notes)
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
        plugin_paths=plugin_paths,
        cluster=cluster,
    )
    return config, plugins


def _inside_options(path: tuple[Any, ...]) -> bool:
    return len(path) > 3 and path[0] in ("sources", "outputs") and path[2] == "options"
