"""Every command's --help, and the man page made from the same command line."""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from forwarder_core.commands.cli import _parser
from forwarder_core.commands.manpage import render
from forwarder_core.commands.usage import COMMANDS

SCRIPT = Path(sys.executable).parent / "siem-forwarder"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _help(*argv: str) -> str:
    result = subprocess.run([str(SCRIPT), *argv, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_help_has_a_description_names_siem_forwarder_and_explains_each_choice(command: str) -> None:
    text = _help(command)
    assert text.startswith(f"usage: siem-forwarder {command} "), text
    flat = " ".join(text.split())
    assert " ".join(COMMANDS[command][1].split()) in flat, f"{command} --help has no description"
    for action in _subparsers()[command]._actions:
        for choice in action.choices or ():
            assert f"{choice}" in (action.help or ""), f"{command}: the choice {choice!r} is not explained"
        if not isinstance(action, argparse._HelpAction) and action.dest != "cef_args":
            assert action.help, f"{command}: {action.dest} has no help"
    assert ".venv" not in text and "``" not in text


def test_the_command_list_names_every_command() -> None:
    text = _help()
    for command, (summary, _) in COMMANDS.items():
        assert command in text and " ".join(summary.split()[:4]) in " ".join(text.split()), command


def test_the_man_page_describes_every_command_and_option() -> None:
    page = render()
    assert page.startswith(".TH SIEM\\-FORWARDER 1 ")
    for command, parser in _subparsers().items():
        assert f".SS siem\\-forwarder {command.replace('-', chr(92) + '-')} " in page, command
        if command == "cef-check":
            continue
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"\\fB{option.replace('-', chr(92) + '-')}\\fR" in page, (command, option)
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "ENVIRONMENT", "FILES"):
        assert f"\n.SH {section}\n" in page, section


def test_the_man_page_renders_without_warnings(tmp_path: Path) -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.fail("groff is missing: scripts/install-test-deps.sh installs groff-base")
    (tmp_path / "siem-forwarder.1").write_text(render())
    result = subprocess.run([groff, "-man", "-Tutf8", "-ww", str(tmp_path / "siem-forwarder.1")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    shown = re.sub(".\x08", "", result.stdout).replace("\u2010", "-")  # without the overstrike of bold
    assert "siem-forwarder state" in shown and "siem-forwarder cef-check" in shown
