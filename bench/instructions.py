"""Instructions per event of one hot-path stage, counted by valgrind: the same on a busy machine.

``bench/stages.py`` measures CPU time, which moves by 10-50% between runs on a shared 2-CPU
machine; a change of a few percent cannot be told from the noise there. This runs one stage
under ``valgrind --tool=cachegrind`` with 1 and with 3 passes over the same page and prints the
difference per event, which repeats to within a few instructions. Instructions are not time
(SHA-256 runs without the CPU's SHA extensions under valgrind, so admit looks dearer than it
is), but for Python code a change in one is a change in the other.

Usage: ``.venv/bin/python bench/instructions.py STAGE [--events N]`` with STAGE one of
admit, prepare (with the page's ids, as the pipeline), prepare_noids, encode (syslog_cef),
decode. Needs valgrind.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("admit", "prepare", "prepare_noids", "encode", "decode")


def run_stage(stage: str, events: int, passes: int) -> None:
    sys.path.insert(0, str(ROOT))
    from bench.stages import component
    from forwarder_core.engine.prepare import Preparer
    from forwarder_core.times import parse_ms
    from siem_forwarder_plugins.outputs.syslog.output import SyslogCEF
    from siem_forwarder_plugins.sources.incydr import IncydrSource
    from siem_forwarder_plugins.sources.windows import EdgeDedup, WindowCursor, WindowTally
    from tests.fakes.incydr import IncydrFake

    fake = IncydrFake(events=events, span=3600)
    page = b'{"events":[' + b",".join(fake._encoded(i) for i in range(len(fake))) + b"]}"
    raws = json.loads(page)["events"]
    source = component(IncydrSource, {"base_url": "http://127.0.0.1:9", "client_id": "a", "client_secret": "b"},
                       "code42")
    end = max(parse_ms(r["timestamp"]) for r in raws) + 1

    def admit() -> Any:
        source._held = []
        return source._admit(raws, EdgeDedup(WindowCursor.load(None, 0), end, 3_600_000, tally=WindowTally()), end)

    ids = admit()[1]
    preparer = Preparer(source)
    prepared = preparer.prepare(raws, ids).events
    cef = component(SyslogCEF, {"host": "127.0.0.1", "port": 9, "hostname": "bench"})
    fn = {"admit": admit, "prepare": lambda: preparer.prepare(raws, ids), "prepare_noids": lambda: preparer.prepare(raws),
          "encode": lambda: cef.encode(prepared), "decode": lambda: json.loads(page)}[stage]
    for _ in range(passes + 1):  # one more to warm the caches, in both runs
        fn()


def count(stage: str, events: int, passes: int) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                          sys.executable, __file__, stage, "--events", str(events), "--passes", str(passes)],
                         capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    found = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if found is None:
        raise SystemExit(f"no instruction count from valgrind:\n{out.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--passes", type=int, help=argparse.SUPPRESS)  # set when run under valgrind
    args = parser.parse_args(argv)
    if args.passes is not None:
        run_stage(args.stage, args.events, args.passes)
        return 0
    one, three = count(args.stage, args.events, 1), count(args.stage, args.events, 3)
    print(f"{args.stage}: {(three - one) / 2 / args.events:,.0f} instructions an event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
