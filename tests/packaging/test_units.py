"""The systemd units and sysusers file: systemd's own tools must accept them without a word.

``systemd-analyze verify`` exits 0 on typos and bad values and only prints a warning, so any
output at all fails these tests. It also insists that ``ExecStart=`` binaries exist: unless the
package is installed, the units are checked in a copy whose ``/opt/siem-forwarder/bin/
siem-forwarder`` is replaced by ``/bin/true``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
INSTALLED_BINARY = "/opt/siem-forwarder/bin/siem-forwarder"
UNITS = {
    # what to load -> the file it comes from
    "siem-forwarder.service": "siem-forwarder.service",
    "siem-forwarder@prod.service": "siem-forwarder@.service",
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is missing in CI: scripts/install-test-deps.sh installs it (package systemd)")
        pytest.skip(f"{name} is not installed (apt-get install systemd)")
    return path


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    return _tool("systemd-analyze")


@pytest.fixture(scope="module")
def unit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unit files as shipped, or with ExecStart pointing at /bin/true when not installed."""
    if os.access(INSTALLED_BINARY, os.X_OK):
        return PACKAGING
    out = tmp_path_factory.mktemp("units")
    for source in set(UNITS.values()):
        text = (PACKAGING / source).read_text()
        (out / source).write_text(text.replace(INSTALLED_BINARY, "/bin/true"))
    return out


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd)


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Key`` -> every value it is given (systemd allows repeats), ignoring comments."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.parametrize("unit", UNITS)
def test_verify_prints_nothing(systemd_analyze: str, unit_dir: Path, unit: str) -> None:
    result = run(systemd_analyze, "verify", "--man=no", str(unit_dir / unit))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_verify_would_catch_a_typo(systemd_analyze: str, unit_dir: Path, tmp_path: Path) -> None:
    """Guards the test above: verify does read our file and does complain on stderr."""
    broken = (unit_dir / "siem-forwarder.service").read_text().replace("ProtectHome=", "ProtectHme=")
    (tmp_path / "siem-forwarder.service").write_text(broken)
    result = run(systemd_analyze, "verify", "--man=no", str(tmp_path / "siem-forwarder.service"))
    assert "ProtectHme" in result.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure_is_2_or_better(systemd_analyze: str, unit_dir: Path, unit: str) -> None:
    path = str(unit_dir / unit)
    result = run(systemd_analyze, "security", "--offline=true", "--threshold=20", path)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


def test_sysusers_file_is_valid(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    result = run(sysusers, f"--root={tmp_path}", "--dry-run", str(PACKAGING / "sysusers.conf"))
    assert result.returncode == 0, result.stderr
    assert "Creating user 'siem-forwarder'" in result.stdout + result.stderr


def test_service_follows_the_contract() -> None:
    s = unit_settings(PACKAGING / "siem-forwarder.service")
    config = "/etc/siem-forwarder/config.yaml"
    assert s["Type"] == ["notify"]
    assert s["ExecStartPre"] == [f"{INSTALLED_BINARY} check -c {config}"]
    assert s["ExecStart"] == [f"{INSTALLED_BINARY} run -c {config}"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["RestartPreventExitStatus"] == ["78"]
    assert s["StateDirectory"] == ["siem-forwarder"]
    assert s["User"] == ["siem-forwarder"]
    assert s["WatchdogSec"] and s["WantedBy"] == ["multi-user.target"]
    # A LoadCredential= whose file is missing stops the unit from starting: drop-ins only.
    assert "LoadCredential" not in s


def test_stop_timeout_outlasts_the_drain() -> None:
    """systemd must not SIGKILL the daemon while it still drains within shutdown_timeout."""
    schema = json.loads((REPO / "schemas" / "config.schema.json").read_text())
    drain = schema["properties"]["shutdown_timeout"]["default"]
    stop = unit_settings(PACKAGING / "siem-forwarder.service")["TimeoutStopSec"][0]
    assert stop.endswith("s") and float(stop[:-1]) > drain


def test_template_differs_only_by_instance() -> None:
    """The template is the main unit with config, state and description per instance."""
    main = unit_settings(PACKAGING / "siem-forwarder.service")
    template = unit_settings(PACKAGING / "siem-forwarder@.service")
    assert template["ExecStartPre"] == [f"{INSTALLED_BINARY} check -c /etc/siem-forwarder/%i.yaml"]
    assert template["ExecStart"] == [f"{INSTALLED_BINARY} run -c /etc/siem-forwarder/%i.yaml"]
    assert template["StateDirectory"] == ["siem-forwarder/%i"]
    assert "%i" in template["Description"][0]
    differing = {k for k in main.keys() | template.keys() if main.get(k) != template.get(k)}
    assert differing == {"ExecStartPre", "ExecStart", "StateDirectory", "Description"}


def test_shipped_config_passes_check() -> None:
    """The unit's ExecStartPre runs `check` on it: a fresh install must pass."""
    result = subprocess.run(
        [sys.executable, "-m", "forwarder_core", "check", "-c", str(PACKAGING / "config.yaml")],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK (0 source(s), 1 output(s)" in result.stdout


def _bytes(value: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    return int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)


MEASURED_PEAK_MB = 309
"""The default workload's peak RSS, all processes (bench/RESULTS.md: 1,000,000 Incydr events)."""
MEASURED_THREADS = 40
"""The default workload's peak threads (bench/RESULTS.md: 2,000 sources, the default pool)."""
DECODED_PER_BYTE = 6
"""A JSON page held while decoded costs about 5.8 times its size (64 MiB: the body twice, 244 MB of objects)."""


@pytest.mark.parametrize("unit", sorted(set(UNITS.values())))
def test_memory_is_bounded_with_room_for_the_default_workload_and_two_largest_pages(unit: str) -> None:
    from forwarder_core.plugin.option_schemas import TLS_OPTIONS

    (memory_max,) = unit_settings(PACKAGING / unit)["MemoryMax"]
    largest_page = TLS_OPTIONS["max_response_bytes"]["default"]
    room = MEASURED_PEAK_MB * 1024**2 + 2 * DECODED_PER_BYTE * largest_page
    assert room <= _bytes(memory_max) <= 4 * 1024**3, memory_max


@pytest.mark.parametrize("unit", sorted(set(UNITS.values())))
def test_tasks_are_bounded_with_room_for_the_default_pool(unit: str) -> None:
    schema = json.loads((REPO / "schemas" / "config.schema.json").read_text())
    slots = schema["properties"]["max_concurrent_polls"]["default"]
    (tasks_max,) = unit_settings(PACKAGING / unit)["TasksMax"]
    assert max(MEASURED_THREADS, 2 * slots + 10) * 4 <= int(tasks_max) <= 1024, tasks_max
