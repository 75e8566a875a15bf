"""Resident memory, threads and CPU of a process and all its descendants, sampled from /proc.

The kernel's ``wait4`` accounting of a child covers the child itself and the descendants it
reaped, and its ``ru_maxrss`` is the largest of those processes, never their sum. A forwarder
whose worker processes run beside it needs the sum: :class:`TreeSampler` walks ``/proc`` every
``interval`` seconds while the measured program runs, finds every process whose chain of parents
leads to the measured one, and keeps the peak of the summed ``VmRSS``, the peak of the summed
``Pss`` (``/proc/<pid>/smaps_rollup``: each page shared by several processes counted once, split
between them, where the summed RSS counts it in every one; a worker forked from the forkserver
shares the modules the forkserver loaded), the peak of the summed ``Threads``, the peak number
of processes, and the last ``utime + stime`` seen of each process (by pid and start time, so a
reused pid is another process). This kernel has no
``/proc/<pid>/task/<tid>/children``, so each sample reads ``/proc/<pid>/stat`` of every process on
the machine for the parent links (about 1 ms for 80 processes).

The same figures are kept by role (:func:`role`: the measured program, its multiprocessing
forkserver and resource tracker, the worker processes forked by the forkserver), so a run says
where its CPU and memory went.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class TreeUsage:
    """What the samples saw; the peaks are of sums over the tree at one instant."""

    peak_rss_kb: int = 0
    peak_pss_kb: int = 0  # 0: the kernel has no smaps_rollup
    peak_threads: int = 0
    peak_processes: int = 0
    last_rss_kb: int = 0  # the same sums at the last sample
    last_pss_kb: int = 0
    last_threads: int = 0
    last_processes: int = 0
    cpu_s: float = 0.0  # sum over every process seen of its last sampled user + system time
    samples: int = 0
    cpu_by_role: dict[str, float] = field(default_factory=dict)
    peak_rss_kb_by_role: dict[str, int] = field(default_factory=dict)  # peak of each role's summed VmRSS

    def roles(self) -> str:
        """``main 3.47 s 160 MB, worker 2.17 s 84 MB, ...``: each role's CPU and peak memory."""
        return ", ".join(f"{name} {cpu:.2f} s {self.peak_rss_kb_by_role.get(name, 0) / 1024:.0f} MB"
                         for name, cpu in sorted(self.cpu_by_role.items(), key=lambda kv: -kv[1]))


def _stat(pid: str) -> tuple[int, float, int] | None:
    """(parent pid, user + system seconds, start time in ticks) of a process, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK, int(fields[19])


def _status(pid: int) -> tuple[int, int]:
    """(VmRSS in kB, Threads) of a process; (0, 0) for a zombie or one already gone."""
    rss = threads = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith(b"Threads:"):
                    threads = int(line.split()[1])
    except OSError:
        pass
    return rss, threads


def _pss(pid: int) -> int:
    """Proportional set size of a process in kB; 0 for one gone or a kernel without smaps_rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def role(pid: int, parent: int, root: int) -> str:
    """``main`` (the measured program), ``forkserver``, ``resource tracker``, ``worker`` (forked by
    the forkserver) or ``child`` (anything else it started)."""
    if pid == root:
        return "main"
    cmdline = _cmdline(pid)
    if b"resource_tracker" in cmdline:
        return "resource tracker"
    if b"forkserver" in cmdline:
        return "forkserver" if parent == root else "worker"
    return "child"


class TreeSampler:
    """Samples the tree under ``root`` in a thread from :meth:`start` until :meth:`stop`."""

    def __init__(self, root: int, interval: float = 0.05):
        self.root = root
        self.interval = interval
        self.usage = TreeUsage()
        self._cpu: dict[tuple[int, int], float] = {}
        self._roles: dict[tuple[int, int], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"sample-{root}", daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> TreeUsage:
        """Stop sampling (call it once the root has exited and been reaped) and return the figures
        (also those of :meth:`sample` called by hand, without :meth:`start`)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()
        self.usage.cpu_s = sum(self._cpu.values())
        by_role = self.usage.cpu_by_role
        by_role.clear()
        for key, cpu in self._cpu.items():
            name = self._roles[key]
            by_role[name] = by_role.get(name, 0.0) + cpu
        return self.usage

    def cpu_now(self) -> float:
        """User + system seconds of every process seen so far, as of the last sample."""
        return sum(self._cpu.values())

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def sample(self) -> None:
        children: dict[int, list[int]] = {}
        stats: dict[int, tuple[float, int, int]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            stat = _stat(name)
            if stat is None:
                continue
            pid = int(name)
            children.setdefault(stat[0], []).append(pid)
            stats[pid] = (stat[1], stat[2], stat[0])
        if self.root not in stats:
            return
        tree, rss, pss, threads = [self.root], 0, 0, 0
        for pid in tree:  # grows while it is walked: breadth first
            tree.extend(children.get(pid, ()))
        role_rss: dict[str, int] = {}
        for pid in tree:
            cpu, started, parent = stats[pid]
            key = (pid, started)
            self._cpu[key] = cpu
            who = self._roles.get(key) or self._roles.setdefault(key, role(pid, parent, self.root))
            pid_rss, pid_threads = _status(pid)
            rss += pid_rss
            pss += _pss(pid)
            threads += pid_threads
            role_rss[who] = role_rss.get(who, 0) + pid_rss
        usage = self.usage
        for who, kb in role_rss.items():
            usage.peak_rss_kb_by_role[who] = max(usage.peak_rss_kb_by_role.get(who, 0), kb)
        usage.samples += 1
        usage.peak_rss_kb = max(usage.peak_rss_kb, rss)
        usage.peak_pss_kb = max(usage.peak_pss_kb, pss)
        usage.peak_threads = max(usage.peak_threads, threads)
        usage.peak_processes = max(usage.peak_processes, len(tree))
        usage.last_rss_kb, usage.last_pss_kb, usage.last_threads, usage.last_processes = rss, pss, threads, len(tree)
