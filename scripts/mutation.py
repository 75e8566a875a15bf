"""Mutation run of the delivery-critical modules: would the tests notice if this code were wrong?

For each module, cosmic-ray (the ``mutation`` extra in setup.cfg) lists every mutant: one operator,
constant or condition changed. Most sites give many near-identical mutants (``a - b`` becomes ``a + b``,
``a * b``, ``a ** b`` ... twelve ways), so this run keeps one mutant per site and kind of change, drawn
with a fixed seed, then samples ``--sample`` of those per module (the same ones on every run of the
same code). Each mutant is written into the file in place, the module's own small test selection runs
(``pytest -x``), and the file is restored. A mutant is killed when a test fails or the tests time out.

Usage: scripts/mutation [--sample N | --all] [--seed S] [--timeout SECONDS] [--survivors] [MODULE_PATH ...]
(default: every module in MODULES, 40 mutants each; ``--survivors`` re-runs only the mutants that
survived the module's last run, after tests were added, as long as the module itself is unchanged). Prints the score per file and each survivor's
diff; docs/mutation.md records the latest figures and the mutants known to be equivalent. Not part of
.ci/run: a full run takes tens of minutes.
"""
from __future__ import annotations

import argparse
import ast
import configparser
import hashlib
import importlib.util
import os
import random
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".venv" / "mutation"

# Each module with the tests that exercise it: small and in-process where possible, so a mutant
# takes seconds. A test listed here must pass on the unmutated code (checked before the run).
MODULES: dict[str, list[str]] = {
    "forwarder_core/engine/delivery.py": [
        "tests/core/engine/test_delivery.py",
    ],
    "forwarder_core/storage/checkpoint.py": [
        "tests/core/storage/test_checkpoint.py",
    ],
    "forwarder_core/storage/ledger.py": [
        "tests/core/storage/test_ledger.py", "-k", "not state_shows_the_ledger",
    ],
    "plugins/sources/windows.py": [
        "tests/sources/test_windows.py",
    ],
    "forwarder_core/engine/pipeline.py": [
        "tests/core/engine/test_commit_path.py",
    ],
    "forwarder_core/engine/diskbuffer.py": [
        "tests/core/engine/test_diskbuffer_unit.py",
    ],
    "forwarder_core/storage/setaside.py": [
        "tests/core/storage/test_setaside.py", "tests/core/storage/test_durable.py",
    ],
    "forwarder_core/storage/durable.py": [
        "tests/core/storage/test_durable.py", "tests/core/storage/test_setaside.py",
    ],
    "forwarder_core/engine/pollpool.py": [
        "tests/core/engine/test_pollpool_slots.py",
    ],
}


def ensure_cosmic_ray() -> None:
    """Install the ``mutation`` extra's pins into this interpreter's environment when missing."""
    if importlib.util.find_spec("cosmic_ray") is not None:
        return
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    reqs = [r.strip() for r in cfg["options.extras_require"]["mutation"].splitlines() if r.strip()]
    print(f"mutation: installing {' '.join(reqs)}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *reqs], check=True)


def pytest_command(tests: list[str], timeout: float) -> list[str]:
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--timeout", str(int(timeout)),
            *tests]


def family(operator: str) -> str:
    """``core/ReplaceBinaryOperator_Sub_Add`` -> ``core/ReplaceBinaryOperator_Sub``: one kind of change at a site."""
    name = operator.split("/", 1)[-1]
    for prefix in ("ReplaceBinaryOperator_", "ReplaceComparisonOperator_", "ReplaceUnaryOperator_"):
        if name.startswith(prefix):
            return prefix + name[len(prefix):].split("_", 1)[0]
    return name


def annotation_spans(path: Path) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Where the module's type annotations are: under ``from __future__ import annotations`` they are
    never evaluated, so a mutant inside one cannot change behaviour (it is not run, nor counted)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes: list[ast.expr | None] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            nodes.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nodes.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            nodes.append(node.annotation)
    return [((n.lineno, n.col_offset), (n.end_lineno or n.lineno, n.end_col_offset or 0)) for n in nodes if n is not None]


def choose(db: object, path: Path, sample: int | None, seed: int) -> tuple[int, int]:
    """Skip the mutants inside annotations, then every mutant but one per (site, kind), then all but
    ``sample`` of those; return how many run and how many were in annotations."""
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    spans = annotation_spans(path)
    items, in_annotations = [], []
    for item in db.pending_work_items:  # type: ignore[attr-defined]
        m = item.mutations[0]
        start, end = tuple(m.start_pos), tuple(m.end_pos)
        (in_annotations if any(a <= start and end <= b for a, b in spans) else items).append(item)
    if in_annotations:
        db.set_multiple_results([i.job_id for i in in_annotations],  # type: ignore[attr-defined]
                                WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output="in an annotation"))
    items.sort(key=lambda w: [(m.operator_name, m.occurrence, tuple(m.start_pos)) for m in w.mutations])
    groups: dict[tuple[object, ...], list[object]] = defaultdict(list)
    for item in items:
        m = item.mutations[0]
        groups[(family(m.operator_name), tuple(m.start_pos), tuple(m.end_pos))].append(item)
    rng = random.Random(seed)
    keep = [rng.choice(group) for _, group in sorted(groups.items(), key=lambda kv: repr(kv[0]))]
    if sample is not None and len(keep) > sample:
        keep = rng.sample(keep, sample)
    kept = {item.job_id for item in keep}  # type: ignore[attr-defined]
    skipped = [item.job_id for item in items if item.job_id not in kept]  # type: ignore[attr-defined]
    if skipped:
        db.set_multiple_results(skipped, WorkResult(worker_outcome=WorkerOutcome.SKIPPED,  # type: ignore[attr-defined]
                                                    output="not sampled"))
    return len(kept), len(in_annotations)


def reopen_survivors(db: object) -> int:
    """Make the survivors of the last run pending again (the mutants it killed stay killed)."""
    from cosmic_ray.work_db import WorkResultStorage
    from cosmic_ray.work_item import TestOutcome

    survived = [item.job_id for item, result in db.completed_work_items  # type: ignore[attr-defined]
                if result.test_outcome == TestOutcome.SURVIVED]
    with db._session_maker.begin() as session:  # type: ignore[attr-defined]
        session.query(WorkResultStorage).filter(WorkResultStorage.job_id.in_(survived)).delete()
    return len(survived)


def run_module(module: str, tests: list[str], sample: int | None, seed: int, timeout: float,
               survivors_only: bool = False) -> dict[str, object]:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    path = ROOT / module
    WORK.mkdir(parents=True, exist_ok=True)
    stem = module.replace("/", "_").removesuffix(".py")
    backup = WORK / f"{stem}.orig"
    if backup.exists():  # a run killed mid-mutant left the file mutated: put it back first
        path.write_bytes(backup.read_bytes())
        print(f"mutation: {module} restored from the copy an interrupted run left", flush=True)
    original = path.read_bytes()
    backup.write_bytes(original)
    command = pytest_command(tests, timeout)
    started = time.monotonic()
    baseline = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if baseline.returncode != 0:
        backup.unlink()
        raise SystemExit(f"mutation: the tests of {module} fail on the unmutated code:\n{baseline.stdout[-3000:]}")
    config = WORK / f"{stem}.toml"
    session = WORK / f"{stem}.sqlite"
    digest = WORK / f"{stem}.sha256"
    code = hashlib.sha256(original).hexdigest()
    if survivors_only:
        if not session.exists() or not digest.exists() or digest.read_text() != code:
            backup.unlink()
            raise SystemExit(f"mutation: {module} changed since its last run (or never ran): run it whole")
    if not survivors_only:
        session.unlink(missing_ok=True)
    digest.write_text(code)
    config.write_text(
        "[cosmic-ray]\n"
        f"module-path = {str(path)!r}\n"
        f"timeout = {timeout}\n"
        "excluded-modules = []\n"
        f"test-command = {shlex.join(command)!r}\n"
        "[cosmic-ray.distributor]\n"
        'name = "local"\n'
    )
    cosmic_ray = [sys.executable, "-m", "cosmic_ray.cli"]
    if survivors_only:
        with use_db(str(session), WorkDB.Mode.open) as db:
            again = reopen_survivors(db)
        print(f"mutation: {module}: the {again} survivors of its last run, again; tests: {' '.join(tests)}", flush=True)
    else:
        subprocess.run([*cosmic_ray, "init", str(config), str(session)], cwd=ROOT, check=True)
        with use_db(str(session), WorkDB.Mode.open) as db:
            total = db.num_work_items
            chosen, annotations = choose(db, path, sample, seed)
        print(f"mutation: {module}: {chosen} of {total} mutants ({annotations} in annotations left out), "
              f"tests: {' '.join(tests)}", flush=True)
    try:
        subprocess.run([*cosmic_ray, "exec", str(config), str(session)], cwd=ROOT, check=True)
    finally:
        if path.read_bytes() != original:
            path.write_bytes(original)
        backup.unlink()
    killed = timeouts = 0
    survivors: list[str] = []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            if result.test_outcome == TestOutcome.KILLED:
                killed += 1
                timeouts += result.output == "timeout"
            elif result.test_outcome == TestOutcome.SURVIVED:
                m = item.mutations[0]
                survivors.append(f"{module}:{m.start_pos[0]} {m.operator_name} ({m.definition_name})\n"
                                 + (result.diff or "").rstrip())
    return {"module": module, "killed": killed, "timeouts": timeouts, "survived": len(survivors),
            "survivors": survivors, "seconds": time.monotonic() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="module paths from the table in this script (default: all)")
    parser.add_argument("--sample", type=int, default=40, help="mutants per module (default 40)")
    parser.add_argument("--all", action="store_true", help="every site, not a sample")
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant's tests (killed past it)")
    parser.add_argument("--survivors", action="store_true",
                        help="re-run only the survivors of each module's last run (same code, new tests)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"not in MODULES: {', '.join(unknown)}")
    os.chdir(ROOT)
    ensure_cosmic_ray()
    results = [run_module(m, MODULES[m], None if args.all else args.sample, args.seed, args.timeout, args.survivors)
               for m in args.modules or list(MODULES)]
    print("\n| file | killed | survived | score |\n| --- | ---: | ---: | ---: |")
    for r in results:
        n = int(r["killed"]) + int(r["survived"])  # type: ignore[call-overload]
        timeouts = f" ({r['timeouts']} by time-out)" if r["timeouts"] else ""
        print(f"| `{r['module']}` | {r['killed']}{timeouts} | {r['survived']} | {100 * int(r['killed']) / max(n, 1):.1f}% |")  # type: ignore[call-overload]
    for r in results:
        for s in r["survivors"]:  # type: ignore[attr-defined]
            print(f"\nSURVIVED {s}")
    print(f"\nmutation: {sum(float(r['seconds']) for r in results):.0f} s")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
