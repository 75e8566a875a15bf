"""The core's rooms: packages import downward only, no module imports another in a circle, and
plugins (built-in ones included) import only the public face.

The order is the one ``forwarder_core/__init__.py`` draws. Imports are read from the source with
``ast``, wherever they stand (module level, inside a function, under ``TYPE_CHECKING``), so a
cycle cannot hide in a function that exists only to dodge it. Cycles are looked for among the
imports that run (``TYPE_CHECKING`` blocks are for the type checker only: ``Auth`` and
``HttpClient`` name each other in annotations), but upward imports are refused in those too.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "forwarder_core"

ORDER = ["commands", "engine", "config", "storage", "plugin", "net", "helpers"]
"""Top to bottom: a module may import from its own package and from any package below it."""
HELPERS = {"errors", "secrets", "metrics", "logs", "times", "jsoncodec"}
FACES = {"plugin_api", "testing", "_moved", "__main__", ""}
"""The public faces and the package's own entry modules: they may import anything; nothing in the
core imports them (but ``forwarder_core`` itself, for ``hookimpl`` and ``__version__``)."""
PUBLIC = ("forwarder_core.plugin_api", "forwarder_core.testing")


def _modules() -> dict[str, Path]:
    found = {}
    for path in CORE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported core module, line, at run time) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            if target.startswith("forwarder_core") and target != module:
                found.append((target, node.lineno, id(node) not in type_only))
    return found


def _room(module: str) -> str:
    """The package of ``module`` in :data:`ORDER`, or ``helpers``/a face for a top-level module."""
    parts = module.split(".")
    if len(parts) == 1:
        return ""
    if parts[1] in FACES or parts[1] == "testing":
        return parts[1]
    if len(parts) == 2 and parts[1] in HELPERS:
        return "helpers"
    return parts[1]


def test_every_top_level_module_has_a_room() -> None:
    """A new module at the top must be a helper or a face on purpose, not by accident."""
    strays = [m for m in _modules() if _room(m) not in ORDER and _room(m) not in FACES]
    assert not strays, f"modules outside every package of the order: {strays}"


def test_packages_import_downward_only() -> None:
    known = _modules()
    upward = []
    for module, path in sorted(known.items()):
        here = _room(module)
        for target, line, _runtime in _imports(module, path, known):
            there = _room(target)
            if there == "" or here in FACES:
                continue  # forwarder_core itself (hookimpl, __version__); faces import anything
            if there in FACES:
                upward.append(f"{module} imports the public face {target} (line {line})")
            elif ORDER.index(there) < ORDER.index(here):
                upward.append(f"{module} ({here}) imports {target} ({there}) upward, line {line}")
    assert not upward, "\n".join(upward)


def test_no_import_cycle() -> None:
    known = _modules()
    graph = {m: sorted({t for t, _, runtime in _imports(m, p, known) if runtime and t in known and t != "forwarder_core"})
             for m, p in known.items()}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    """The two checks above can fail: an import written inside a function is read too."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from forwarder_core.commands.cli import main\n")
    found = _imports("forwarder_core.storage.m", path, {"forwarder_core.commands.cli": path})
    assert found == [("forwarder_core.commands.cli", 2, True)]
    assert ORDER.index(_room(found[0][0])) < ORDER.index(_room("forwarder_core.storage.m"))


def test_built_in_plugins_import_only_the_public_face() -> None:
    leaks = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                if name.startswith("forwarder_core.") and name not in PUBLIC:
                    leaks.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not leaks, "built-in plugins reach into the core:\n" + "\n".join(leaks)


def test_docs_for_plugin_authors_import_only_the_public_face() -> None:
    text = (ROOT / "docs" / "plugins.md").read_text()
    private = sorted({line.strip() for line in text.splitlines()
                      if line.lstrip().startswith(("from forwarder_core", "import forwarder_core"))
                      and not line.lstrip().startswith(("from forwarder_core import hookimpl",
                                                        *(f"from {p} import" for p in PUBLIC)))})
    assert not private, f"docs/plugins.md imports from the core's private modules: {private}"


OLD_PATHS = {
    # what docs/plugins.md documented before the core was grouped, and what it gave
    "forwarder_core.http": ["HttpClient", "Auth", "BearerAuth", "snippet", "parse_retry_after"],
    "forwarder_core.waits": ["ResponseWait", "epoch_header", "seconds_header", "MAX_RETRY_AFTER"],
    "forwarder_core.fakehttp": ["FakeServer", "Request", "Response", "json_response"],
    "forwarder_core.hooks": ["Hooks"],
    "forwarder_core.ledger": ["LedgerError", "STRICT_ENV"],
    "forwarder_core.hookspecs": ["forwarder_register_sources"],
    "forwarder_core.plugins": ["load_plugins"],
    "forwarder_core.source_traits": ["traits_of", "slug"],
    "forwarder_core.durable": ["LineAppender"],
    "forwarder_core.cef_parser": ["parse_cef"],
}
STILL_THERE = {
    "forwarder_core.errors": ["OutputError", "SourceError", "ConfigError", "QuarantineEvent"],
    "forwarder_core.secrets": ["Secret", "reveal", "redact", "register_secret_text"],
    "forwarder_core.jsoncodec": ["decode", "content_id"],
    "forwarder_core.times": ["parse_ms", "iso_us"],
}


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_an_old_import_path_still_works_and_warns(old: str) -> None:
    """A plugin written against the paths of the last release imports unchanged, told where to go."""
    code = (f"import warnings\nwarnings.simplefilter('always')\n"
            f"with warnings.catch_warnings(record=True) as caught:\n"
            f"    from {old} import {', '.join(OLD_PATHS[old])}\n"
            f"assert any(issubclass(w.category, DeprecationWarning) and {old!r} in str(w.message) for w in caught), caught\n"
            f"print(caught[0].message)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "import from forwarder_core." in out.stdout


@pytest.mark.parametrize("module", sorted(STILL_THERE))
def test_helper_paths_of_the_last_release_are_unchanged(module: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        imported = __import__(module, fromlist=STILL_THERE[module])
    assert all(hasattr(imported, name) for name in STILL_THERE[module])


def test_the_public_face_gives_what_the_docs_use() -> None:
    """Every name in the docs' import table is importable from the module the table names."""
    out = subprocess.run([sys.executable, "-c", "import forwarder_core.plugin_api as a; print(len(a.__all__))"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and int(out.stdout) > 40, out.stderr
    import forwarder_core.plugin_api as api

    missing = [n for n in api.__all__ if not hasattr(api, n)]
    assert not missing, missing


def test_no_core_module_is_much_over_300_lines() -> None:
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > 320}
    assert not long, f"modules to split: {long}"
