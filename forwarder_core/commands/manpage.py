"""``siem-forwarder.1``: the man page, made from the command line itself.

``python -m forwarder_core.commands.manpage > siem-forwarder.1``; packaging/build.sh installs it
as ``/usr/share/man/man1/siem-forwarder.1.gz``, so ``man siem-forwarder`` and ``--help`` never
disagree.
"""
from __future__ import annotations

import argparse
import sys

from forwarder_core import __version__
from forwarder_core.commands.cli import _parser
from forwarder_core.commands.usage import COMMANDS
from forwarder_core.plugin.cef import check_parser

FILES = (
    ("/etc/siem-forwarder/config.yaml", "The configuration: sources, outputs and settings (YAML)."),
    ("/etc/siem-forwarder/conf.d/*.yaml", "More components, merged into config.yaml by component name."),
    ("/etc/siem-forwarder/credentials/", "Secrets, read by systemd (LoadCredential=) and passed to the service."),
    ("/var/lib/siem-forwarder/", "The state directory: checkpoints, the quarantine, dead letters, disk buffers."),
    ("/usr/share/siem-forwarder/", "The Grafana dashboard and the Prometheus alert rules."),
    ("/usr/share/doc/siem-forwarder/", "The documentation: operations.md, monitoring.md, troubleshooting.md, "
                                      "configuration.md, and a page per source and output."),
)
EXIT_STATUS = (
    ("0", "Success; for once, every event read was delivered or set aside (quarantined, dead-lettered)."),
    ("1", "A source or an output failed (once), or a fatal error (run)."),
    ("64", "A command was used wrongly (state reset without a NAME)."),
    ("74", "The state directory cannot be read or written."),
    ("75", "Another siem-forwarder holds the state directory (stop it first)."),
    ("78", "The config is invalid, or names no such source; one line per problem."),
)
ENVIRONMENT = (
    ("SIEM_FORWARDER_CONFIG", "The config file when -c is not given."),
    ("STATE_DIRECTORY", "The state directory when the config sets no state_dir (systemd sets it)."),
    ("SIEM_FORWARDER_LOG_LEVEL", "debug, info (the default), warning or error."),
)


def roff(text: str) -> str:
    """``text`` safe in a roff line: backslashes and hyphens escaped, no line starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def _usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().split())[len("usage: "):]


def _options(parser: argparse.ArgumentParser) -> list[str]:
    lines = []
    for action in parser._actions:  # argparse offers no public way to walk a parser's arguments
        if action.help == argparse.SUPPRESS or isinstance(action, (argparse._SubParsersAction, argparse._HelpAction)):
            continue
        if action.option_strings:
            metavar = "" if action.nargs == 0 else " " + str(action.metavar or action.dest.upper())
            name = ", ".join(f"\\fB{roff(o)}\\fR" for o in action.option_strings) + \
                (f"\\fI{roff(metavar)}\\fR" if metavar else "")
        else:
            name = f"\\fI{roff(str(action.metavar or action.dest))}\\fR"
        lines += [".TP", name, roff(action.help or "")]
    return lines


def render() -> str:
    parser = _parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lines = [
        f'.TH SIEM\\-FORWARDER 1 "" "siem\\-forwarder {roff(__version__)}" "User Commands"',
        ".SH NAME",
        "siem\\-forwarder \\- poll SaaS audit\\-log APIs and forward every event to a SIEM",
        ".SH SYNOPSIS",
        ".B siem\\-forwarder",
        "\\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".br",
        ".B siem\\-forwarder",
        "\\fB\\-\\-version\\fR",
        ".SH DESCRIPTION",
        roff(parser.description or ""),
        "Sources are SaaS audit\\-log APIs (Code42 Incydr, Agilicus, Pangea, Asana, and third\\-party",
        "plugins); outputs are Splunk HEC, Elasticsearch _bulk, syslog CEF and files. Every event",
        "read is delivered, quarantined or dead\\-lettered, and counted; a source's checkpoint moves",
        "only once every output accepted its events. Logs go to standard error, one line per record.",
        ".SH COMMANDS",
    ]
    for name, sub in subparsers.choices.items():
        if name == "cef-check":
            sub = check_parser("siem-forwarder cef-check")
        lines += [".SS " + roff(_usage(sub)), roff(COMMANDS[name][1])] + _options(sub)
    for title, rows in (("EXIT STATUS", EXIT_STATUS), ("ENVIRONMENT", ENVIRONMENT), ("FILES", FILES)):
        lines.append(".SH " + title)
        for key, text in rows:
            lines += [".TP", f"\\fB{roff(key)}\\fR", roff(text)]
    lines += [".SH SEE ALSO", "\\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1), \\fBprometheus\\fR(1);",
              "/usr/share/doc/siem\\-forwarder/operations.md"]
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
