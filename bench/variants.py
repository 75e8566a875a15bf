"""One Incydr -> syslog_cef backfill per variant, the process tree measured as bench/run.py measures it.

Where a backfill's memory and CPU go under settings, source options and environment variables
the main benchmark does not vary: each variant is one ``siem-forwarder once`` on the same fake
backlog into the same sink, and prints bench/run.py's line for it (events/s, CPU, tree RSS and
PSS, and each process by role).

Usage::

    .venv/bin/python bench/variants.py [--events N] VARIANT [VARIANT ...]

A variant is comma-separated ``key=value`` items: ``workers=0`` (any top-level setting),
``page_size=5000`` (the Incydr source's options), ``env.MALLOC_ARENA_MAX=2`` (the forwarder's
environment); ``-`` is the defaults. Example: ``bench/variants.py - workers=0 page_size=5000``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # bench/run.py, beside this file

SOURCE_OPTIONS = {"page_size", "settle_delay", "lookback", "timeout"}


def parse(variant: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(top-level settings, source options, environment) of one variant."""
    settings: dict[str, Any] = {}
    options: dict[str, Any] = {}
    env: dict[str, str] = {}
    for item in filter(None, variant.split(",")):
        if item == "-":
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"variants: {item!r} is not key=value")
        if key.startswith("env."):
            env[key[4:]] = value
            continue
        typed: Any = int(value) if value.lstrip("-").isdigit() else value
        (options if key in SOURCE_OPTIONS else settings)[key] = typed
    return settings, options, env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("variants", nargs="+")
    args = parser.parse_args(argv)
    plans = [(v, *parse(v)) for v in args.variants]
    workdir = Path(tempfile.mkdtemp(prefix="siem-variants-"))
    runner = bench.Bench(argparse.Namespace(keep=False), workdir)
    try:
        sink = runner.start(bench.Service("sink", [bench.PY, str(bench.BENCH / "sink.py")], workdir))
        incydr = runner.start(bench.fake("incydr", "incydr", workdir, "--events", str(args.events), "--client-id",
                                         bench.INCYDR_ID, "--client-secret", bench.INCYDR_SECRET,
                                         "--span", str(24 * 3600)))
        for name, settings, options, env in plans:
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)  # bench.forwarder_env() passes the environment on
            try:
                runner.log(f"[variants] {name}")
                scenario = bench.Scenario(name, args.events, settings=settings)
                runner.forwarder_run(scenario, incydr, lambda o=options: runner.incydr_source(incydr.address, **o),
                                     "syslog_cef", sink)
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
    finally:
        runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
