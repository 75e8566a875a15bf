"""The benchmark counts a program with every process it starts: memory, threads and CPU.

A forwarder with worker processes is one program; ``wait4`` alone would see only its main
process's memory and miss the CPU of any worker it did not reap. These tests build a small
tree of processes and check the sums, never a time.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
MB = 1 << 20


def bench_module(name: str) -> ModuleType:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(REPO / "bench"))


# A parent with two children; each child holds 40 MB written (so resident) and runs a second
# thread, says so on stdout, and exits when its stdin closes. The parent prints "ready" once
# both have, and lets them go when its own stdin closes.
TREE = textwrap.dedent("""
    import subprocess, sys
    CHILD = '''
    import sys, threading
    held = b"x" * (40 << 20)
    threading.Thread(target=sys.stdin.read, daemon=True).start()
    print("up", flush=True)
    sys.stdin.read()
    '''
    kids = [subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            for _ in range(2)]
    for kid in kids:
        assert kid.stdout.readline() == b"up\\n"
    print("ready", flush=True)
    sys.stdin.read()
    for kid in kids:
        kid.stdin.close()
        kid.wait()
""")


def _sample_tree(script: str = TREE) -> Any:
    """One sample of ``script`` (TREE: a parent and its two children) once it says "ready"; the sampler's usage."""
    proctree = bench_module("proctree")
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None and parent.stdout.readline() == b"ready\n"
        sampler = proctree.TreeSampler(parent.pid)
        sampler.sample()
    finally:
        assert parent.stdin is not None
        parent.stdin.close()
        assert parent.wait(60) == 0
    return sampler.stop()


def test_a_sample_sums_memory_threads_and_processes_over_the_tree() -> None:
    usage = _sample_tree()
    assert usage.samples == 1
    assert usage.peak_processes == 3
    assert usage.peak_threads >= 1 + 2 * 2
    assert usage.peak_rss_kb * 1024 >= 2 * 40 * MB
    # one sample: the last figures are the peaks
    assert (usage.last_rss_kb, usage.last_pss_kb, usage.last_threads, usage.last_processes) == (
        usage.peak_rss_kb, usage.peak_pss_kb, usage.peak_threads, usage.peak_processes)


# A parent whose two children each burn CPU, report their own user+system seconds, and are reaped.
WORKERS = textwrap.dedent("""
    import subprocess, sys
    CHILD = '''
    import os
    n = 0
    for i in range(3_000_000):
        n += i * i
    t = os.times()
    print(t.user + t.system)
    '''
    kids = [subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE) for _ in range(2)]
    print(sum(float(kid.communicate()[0]) for kid in kids))
""")


def test_the_cpu_of_the_children_is_counted_with_the_parent(tmp_path: Path) -> None:
    run = bench_module("run")
    m = run.measure([sys.executable, "-c", WORKERS], tmp_path, label="tree")
    assert m.returncode == 0, m.output
    children = float(m.output.split()[-1])
    assert children > 0
    assert m.cpu >= m.cpu_wait4 >= children  # the kernel's own accounting, no clock involved
    assert m.processes >= 1 and m.threads >= 1 and m.tree_rss_mb >= m.rss_mb


def test_a_root_that_is_gone_gives_no_sample() -> None:
    proctree = bench_module("proctree")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid names no process now
    sampler = proctree.TreeSampler(gone.pid)
    sampler.sample()
    assert sampler.stop().samples == 0


def test_the_figures_are_kept_by_role_too() -> None:
    usage = _sample_tree()
    assert set(usage.cpu_by_role) == {"main", "child"}  # no multiprocessing here: plain children
    assert abs(sum(usage.cpu_by_role.values()) - usage.cpu_s) < 1e-9
    assert usage.peak_rss_kb_by_role["child"] >= 2 * 40 * MB // 1024
    assert usage.peak_rss_kb_by_role["main"] + usage.peak_rss_kb_by_role["child"] >= usage.peak_rss_kb
    assert usage.roles().startswith(("main ", "child "))


# A parent that writes 60 MB, then forks a child that only reads it: the pages are resident in
# both and shared, so the sum of RSS counts them twice and the sum of PSS once.
FORKED = textwrap.dedent("""
    import os, sys
    held = bytearray(60 << 20)
    for i in range(0, len(held), 4096):
        held[i] = 1
    r, w = os.pipe()
    if os.fork() == 0:
        total = sum(held[i] for i in range(0, len(held), 4096))  # reads every page: shared, not copied
        os.write(w, b"up")
        os.read(0, 1)
        os._exit(0 if total else 1)
    assert os.read(r, 2) == b"up"
    print("ready", flush=True)
    sys.stdin.read()
    os.wait()
""")


def test_pages_a_forked_child_shares_count_once_in_the_pss_and_twice_in_the_rss() -> None:
    if not Path("/proc/self/smaps_rollup").exists():
        pytest.skip("this kernel has no /proc/<pid>/smaps_rollup")
    usage = _sample_tree(FORKED)
    assert usage.peak_processes == 2
    assert usage.peak_rss_kb * 1024 >= 2 * 60 * MB  # the shared 60 MB, counted in each process
    assert 60 * MB <= usage.peak_pss_kb * 1024 < usage.peak_rss_kb * 1024 - 50 * MB  # counted once
