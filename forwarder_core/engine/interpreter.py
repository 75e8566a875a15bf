"""Interpreter settings for throughput, applied once per process at the first poll."""
from __future__ import annotations

import gc
import sys
import threading

_tuned = threading.Lock()
SWITCH_INTERVAL = 0.05
"""Seconds a thread may hold the GIL while another waits (CPython's default is 0.005)."""


def tune_interpreter() -> None:
    """Once per process, at the first poll: set the interpreter up for throughput.

    * The objects alive after startup (modules, plugins, compiled schemas) are frozen out of the
      cyclic GC: a page of events allocates hundreds of thousands of containers, so full
      collections run during a backfill, and each would walk all of those again.
    * A longer GIL switch interval: a source's fetch thread decodes the next page while the
      pipeline ships the current one, and at the default 5 ms the two threads hand the GIL (and
      their caches) back and forth hundreds of times a second for no gain.

    Measured on a 200k-event Incydr backfill into syslog_cef (bench/RESULTS.md): each takes
    about 5% off the CPU, and the switch interval about 15% off the wall time.
    """
    if _tuned.acquire(blocking=False):
        gc.collect()  # what is garbage now must not become immortal
        gc.freeze()
        sys.setswitchinterval(SWITCH_INTERVAL)
