"""The ``siem-forwarder`` command. Heavy imports happen inside each command, so ``--version`` is instant."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from forwarder_core import __version__
from forwarder_core.commands.usage import COMMANDS

EX_OK = 0
EX_FAILED = 1
EX_USAGE = 64
EX_IOERR = 74
EX_CONFIG = 78



def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siem-forwarder",
        description="Poll SaaS audit-log APIs and forward every event to your SIEM, losing none.",
        epilog="siem-forwarder COMMAND --help describes each command; man siem-forwarder describes them all.",
    )
    parser.add_argument("--version", action="version", version=f"siem-forwarder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        summary, description = COMMANDS[name]
        return sub.add_parser(name, help=summary, description=description, **kwargs)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        from_env = os.environ.get("SIEM_FORWARDER_CONFIG")
        p.add_argument("-c", "--config", default=from_env or "/etc/siem-forwarder/config.yaml",
                       help="config file (default /etc/siem-forwarder/config.yaml, plus conf.d/*.yaml beside it; "
                            "$SIEM_FORWARDER_CONFIG where set)")
        return p

    with_config(command("run"))
    once = with_config(command("once"))
    once.add_argument("--source", action="append", metavar="NAME", help="only this source (repeatable)")
    check = with_config(command("check"))
    check.add_argument("--connect", action="store_true", help="also authenticate to each source and reach each output")
    check.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="with --connect: seconds the whole check may take (default 10); each component is tried once")
    plugins = command("plugins")
    plugins.add_argument("-c", "--config", help="also list the plugins in this config's plugin_paths")
    state = with_config(command("state"))
    state.add_argument("action", nargs="?", choices=["show", "reset", "import"], default="show", metavar="ACTION",
                       help="show (the default): every source's checkpoint, lag and ledger; "
                            "reset NAME: forget that source's checkpoint; "
                            "import --from STATE_DIR: copy a single host's checkpoints into a fleet's PostgreSQL")
    state.add_argument("name", nargs="?", metavar="NAME", help="the source to reset")
    state.add_argument("--from", dest="from_dir", metavar="STATE_DIR",
                       help="with import: a single host's state directory whose checkpoints the fleet takes over")
    with_config(command("cluster"))
    quarantine = with_config(command("quarantine"))
    quarantine.add_argument("action", nargs="?", choices=["list", "replay"], default="list", metavar="ACTION",
                            help="list (the default): the records set aside, grouped by reason; "
                                 "replay: send them again")
    quarantine.add_argument("--source", action="append", metavar="NAME", help="only this source (repeatable)")
    quarantine.add_argument("--output", action="append", metavar="NAME", help="only this output (repeatable)")
    quarantine.add_argument("--dead-letter", action="store_true",
                            help="the dead letters (events an output refused) instead of the quarantine")
    cef = command("cef-check", add_help=False)
    cef.add_argument("cef_args", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "cef-check":
        args.cef_args = list(args.cef_args) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.command:
        parser.print_help(sys.stderr)
        return EX_USAGE
    from forwarder_core.logs import setup_logging

    setup_logging(os.environ.get("SIEM_FORWARDER_LOG_LEVEL", "info"))
    handler: Callable[[argparse.Namespace], int] = globals()[f"cmd_{args.command.replace('-', '_')}"]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


# ---------------------------------------------------------------------------------------- commands


def _load(args: argparse.Namespace, *, quiet: bool = False, need_secrets: bool = True,
          check_state_dir: bool = False) -> tuple[Any, Any] | None:
    """Config and plugins, or None after printing every problem (exit 78).

    Commands that only read the state directory pass ``need_secrets=False``: an operator
    looking at checkpoints must not need the credentials of every vendor first.
    """
    import logging

    from forwarder_core.config.loader import load_config
    from forwarder_core.errors import ConfigError
    from forwarder_core.plugin.manager import load_plugins

    try:
        config, plugins = load_config(args.config, load_plugins, need_secrets=need_secrets,
                                      check_state_dir=check_state_dir)
    except ConfigError as exc:
        out = sys.stdout if args.command == "check" else sys.stderr
        for problem in exc.problems:
            print(problem, file=out)
        if args.command != "check":
            print(f"siem-forwarder: refusing to start: {len(exc.problems)} problem(s) in the config", file=sys.stderr)
        return None
    from forwarder_core.logs import setup_logging

    level = os.environ.get("SIEM_FORWARDER_LOG_LEVEL") or config.settings.get("log_level", "info")
    setup_logging(level)
    if not quiet:
        for warning in config.warnings:
            logging.getLogger("siem_forwarder.config").warning("%s", warning)
    return config, plugins


def cmd_check(args: argparse.Namespace) -> int:
    loaded = _load(args, check_state_dir=True)
    if loaded is None:
        return EX_CONFIG
    config, plugins = loaded
    from forwarder_core.engine.app import configure_plugins
    from forwarder_core.errors import ConfigError

    try:
        configure_plugins(config, plugins)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        return EX_CONFIG
    print(f"{args.config}: OK ({len(config.sources)} source(s), {len(config.outputs)} output(s); "
          f"state in {config.state_dir})")
    if not args.connect:
        return EX_OK
    from forwarder_core.commands.connect import check_connections

    fleet_ok = True
    if config.cluster is not None:
        from forwarder_core.commands.fleetcmd import check_postgres

        fleet_ok, said = check_postgres(config)
        print(f"cluster PostgreSQL (dsn): {'ok' if fleet_ok else 'FAILED'}: {said}", flush=True)
    components_ok = check_connections(config, plugins, bound=args.connect_timeout)
    return EX_OK if components_ok and fleet_ok else EX_FAILED


def cmd_plugins(args: argparse.Namespace) -> int:
    import logging

    from forwarder_core.config.loader import default_plugin_paths, plugin_paths_of
    from forwarder_core.plugin.manager import load_plugins

    logging.getLogger("siem_forwarder.plugins").setLevel(logging.CRITICAL)  # the listing names them itself
    plugins = load_plugins(plugin_paths_of(args.config) if args.config else default_plugin_paths())
    rows = [("KIND", "TYPE", "DISTRIBUTION", "VERSION")]
    for kind, registry in (("source", plugins.sources), ("output", plugins.outputs)):
        assert registry is not None  # load_plugins fills both
        for name, reg in registry.items():
            rows.append((kind, name, reg.distribution, reg.version))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for failed in plugins.failed:
        print(f"disabled plugin {failed.name} ({failed.distribution} {failed.version}): {failed.error}")
    return EX_OK


def cmd_once(args: argparse.Namespace) -> int:
    from forwarder_core.commands.progress import ProgressReporter, print_summary
    from forwarder_core.errors import ConfigError, StateError

    loaded = _load(args)
    if loaded is None:
        return EX_CONFIG
    config, plugins = loaded
    from forwarder_core.engine.app import build_app, drain_buffers, run_sources_once

    try:
        app = build_app(config, plugins, only_sources=args.source)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EX_CONFIG
    except StateError as exc:
        print(f"siem-forwarder: {exc}", file=sys.stderr)
        return EX_IOERR
    import signal

    def stop(signum: int, frame: Any) -> None:
        app.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if app.fleet is not None:
        try:
            held = set(app.fleet.grab_free())
        except StateError as exc:
            app.close()
            print(f"siem-forwarder: {exc}", file=sys.stderr)
            return EX_IOERR
        for runner in app.sources:
            if runner.name not in held:
                print(f"source {runner.name}: polled by another instance of the fleet; skipped", file=sys.stderr)
        app.sources = [r for r in app.sources if r.name in held]
    give_up = float(config.setting("delivery", "once_give_up_after", 120))
    try:
        with ProgressReporter([r.name for r in app.sources], sys.stderr) as reporter:
            results = run_sources_once(app, progress=reporter.update, give_up_after=give_up,
                                       shutdown_timeout=float(config.settings.get("shutdown_timeout", 30)))
        buffered = drain_buffers(app, give_up)
    finally:
        app.close()
    print_summary(results, app.metrics, sys.stdout)
    for line in buffered:
        print(line)
    return EX_OK if all(r.ok and r.done for r in results) and not buffered else EX_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    from forwarder_core.commands.daemon import run_daemon

    return run_daemon(args, _load)


def cmd_state(args: argparse.Namespace) -> int:
    from forwarder_core.commands.statecmd import state_command

    loaded = _load(args, quiet=True, need_secrets=False)  # show and reset only touch the state directory
    if loaded is None:
        return EX_CONFIG
    if loaded[0].cluster is not None:
        from forwarder_core.commands.fleetcmd import fleet_state_command

        return fleet_state_command(loaded[0], args.action, args.name, args.from_dir)
    if args.action == "import":
        print("siem-forwarder: state import moves checkpoints into a fleet; this config has no cluster: block",
              file=sys.stderr)
        return EX_CONFIG
    return state_command(loaded[0], args.action, args.name)


def cmd_cluster(args: argparse.Namespace) -> int:
    from forwarder_core.commands.fleetcmd import cluster_command

    loaded = _load(args, quiet=True)
    if loaded is None:
        return EX_CONFIG
    return cluster_command(loaded[0])



def cmd_quarantine(args: argparse.Namespace) -> int:
    from forwarder_core.commands.replay import list_command, replay_command

    loaded = _load(args, quiet=True, need_secrets=args.action == "replay")
    if loaded is None:
        return EX_CONFIG
    config, plugins = loaded
    if args.action == "list" and config.cluster is not None:
        from forwarder_core.commands.fleetcmd import list_fleet_set_aside

        return list_fleet_set_aside(config, sys.stdout)
    if args.action == "list":
        return list_command(config, args.source, args.output, sys.stdout, dead_letter_only=args.dead_letter)
    if config.cluster is not None:
        from forwarder_core.commands.fleetcmd import replay_fleet

        return replay_fleet(config, plugins, sources=args.source, outputs=args.output,
                            dead_letter=args.dead_letter, out=sys.stdout)
    return replay_command(config, plugins, sources=args.source, outputs=args.output,
                          dead_letter=args.dead_letter, out=sys.stdout)


def cmd_cef_check(args: argparse.Namespace) -> int:
    from forwarder_core.plugin.cef import main as cef_main

    return cef_main(args.cef_args, prog=f"{_invoked_as()} cef-check")


def _invoked_as() -> str:
    """The command for usage lines: ``siem-forwarder``, or ``python -m forwarder_core`` when run so."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "siem-forwarder"
    if argv0.endswith("__main__.py") or argv0 == "-m":
        return "python -m forwarder_core"
    return "siem-forwarder"
