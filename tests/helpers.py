"""Running the real ``siem-forwarder`` process from tests, and reading what it wrote."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def forwarder_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "STATE_DIRECTORY"))}
    env.setdefault("SIEM_FORWARDER_LOG_LEVEL", "info")
    env.update(extra or {})
    return env


def run_forwarder(tmp_path: Path, config: dict[str, Any] | None, *args: str, env: dict[str, str] | None = None,
                  timeout: float = 120, config_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Write ``config`` to YAML and run ``python -m forwarder_core <args> -c <file>`` (default args: once)."""
    if config_path is None:
        config_path = tmp_path / "config.yaml"
    if config is not None:
        config.setdefault("state_dir", str(tmp_path / "state"))
        write_config(config_path, config)
    argv = list(args) or ["once"]
    if argv[0] not in ("plugins",) and "-c" not in argv:
        argv += ["-c", str(config_path)]
    return subprocess.run([sys.executable, "-m", "forwarder_core", *argv], capture_output=True, text=True,
                          timeout=timeout, env=forwarder_env(env), stdin=subprocess.DEVNULL)


def start_forwarder(tmp_path: Path, config: dict[str, Any], *args: str, env: dict[str, str] | None = None,
                    config_path: Path | None = None) -> subprocess.Popen[str]:
    """Start ``siem-forwarder run`` (or ``args``) in the background; the caller stops it."""
    if config_path is None:
        config_path = tmp_path / "config.yaml"
    config.setdefault("state_dir", str(tmp_path / "state"))
    write_config(config_path, config)
    argv = list(args) or ["run"]
    return subprocess.Popen([sys.executable, "-m", "forwarder_core", *argv, "-c", str(config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=forwarder_env(env),
                            stdin=subprocess.DEVNULL)


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    # split on "\n" only: U+2028 and friends are valid inside a JSON line (str.splitlines would cut there)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def lines_written(path: Path | str) -> int:
    """How many whole lines a file a running forwarder is still appending to holds so far.

    A predicate polled while the forwarder writes must not parse the file: the last line may be
    half written when it is read. Counting newlines counts only the lines that are complete.
    """
    path = Path(path)
    if not path.exists():
        return 0
    return path.read_bytes().count(b"\n")


def file_output(path: Path, name: str = "out", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "file", "options": {"path": str(path)}, **extra}
