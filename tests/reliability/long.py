"""The long form of the crash-and-outage suite: ``python -m tests.reliability.long --rounds 20``.

Runs :func:`tests.reliability.harness.run_rounds` for every output type (file, splunk_hec,
elastic_bulk, syslog_cef into a real rsyslog), prints one line of figures per output type and
exits 1 if any event is missing or the duplicates exceed their bound. Needs rsyslogd for
syslog_cef (``scripts/install-test-deps.sh``); ``--outputs`` picks a subset.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.reliability.harness import (
    ElasticSink,
    FileSink,
    HecSink,
    Outcome,
    Sink,
    SyslogSink,
    VendorProcess,
    run_rounds,
)
from tests.rsyslog import INSTALL_HINT, Rsyslog, find_rsyslogd, make_pki

OUTPUTS = ("file", "splunk_hec", "elastic_bulk", "syslog_cef")


def _sink(kind: str, workdir: Path) -> Sink:
    if kind == "file":
        return FileSink(workdir / "out.jsonl")
    if kind == "splunk_hec":
        return HecSink()
    if kind == "elastic_bulk":
        return ElasticSink()
    binary = find_rsyslogd()
    if binary is None:
        raise SystemExit(INSTALL_HINT)
    (workdir / "pki").mkdir()
    (workdir / "rsyslog").mkdir()
    receiver = Rsyslog(workdir / "rsyslog", binary, make_pki(workdir / "pki"), tls=False)
    receiver.validate()
    receiver.start()
    return SyslogSink(receiver)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="kills per output type (default 20)")
    parser.add_argument("--events", type=int, default=5000, help="backlog the vendor fake serves (default 5000)")
    parser.add_argument("--page-size", type=int, default=50, help="events per source page (default 50)")
    parser.add_argument("--identical", type=int, default=50,
                        help="events of the backlog that come with 1-3 identical copies (default 50)")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--outage-chance", type=float, default=0.5, help="chance of an outage per round")
    parser.add_argument("--outputs", nargs="+", choices=OUTPUTS, default=list(OUTPUTS))
    parser.add_argument("--buffer", choices=["memory", "disk"], default="memory",
                        help="the outputs' buffer (disk: each output behind its SQLite queue)")
    parser.add_argument("--workers", type=int, default=None,
                        help="the daemon's workers: setting (default: its own default, auto); pages of fewer "
                             "than 100 events are prepared in the main process, so pair it with --page-size")
    args = parser.parse_args(argv)
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="siem-forwarder-reliability-") as tmp:
        root = Path(tmp)
        vendor = VendorProcess(root, events=args.events, seed=args.seed, identical=args.identical)
        try:
            for kind in args.outputs:
                workdir = root / kind
                workdir.mkdir()
                sink = _sink(kind, workdir)
                try:
                    outcome = run_rounds(workdir, vendor, sink, rounds=args.rounds, seed=args.seed,
                                         page_size=args.page_size, outage_chance=args.outage_chance,
                                         buffer=args.buffer, workers=args.workers)
                finally:
                    sink.close()
                outcomes.append(outcome)
                print(outcome.row(), flush=True)
        finally:
            vendor.stop()
    failed = [o for o in outcomes if not o.ok]
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {len(outcomes)} output type(s), "
          f"{sum(o.kills for o in outcomes)} kills, {sum(sum(o.outages.values()) for o in outcomes)} outages, "
          f"{sum(o.missing for o in outcomes)} missing; {'FAILED: ' + ', '.join(o.output_type for o in failed) if failed else 'all within the promise'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
