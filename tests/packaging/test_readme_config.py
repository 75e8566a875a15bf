"""The README's minimal config is the packaged service's: its state directory and secrets through credentials."""
from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import run_forwarder

ROOT = Path(__file__).resolve().parents[2]


def _readme_config() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"A minimal config.*?```yaml\n(.*?)```", text, re.S)
    assert found, "the README has no minimal config"
    return found.group(1)


def test_the_readme_config_uses_the_units_state_directory_and_credentials() -> None:
    config = _readme_config()
    unit = (ROOT / "packaging" / "siem-forwarder.service").read_text()
    assert "StateDirectory=siem-forwarder\n" in unit
    assert re.search(r"^state_dir: /var/lib/siem-forwarder\b", config, re.M)
    secrets = re.findall(r"^\s+(\w+): (.*)$", config, re.M)
    for key, value in secrets:
        if key in ("token", "password", "api_key", "client_secret"):
            raise AssertionError(f"a secret written into the config: {key}: {value}")
    files = [value for key, value in secrets if key.endswith("_file")]
    assert files and all(v.startswith("${CREDENTIALS_DIRECTORY}/") for v in files), files


def test_the_readme_config_passes_check_as_written(tmp_path: Path) -> None:
    """Only the state directory is moved (the test cannot write /var/lib); the credentials are read as systemd gives them."""
    config = _readme_config().replace("/var/lib/siem-forwarder", str(tmp_path / "state"))
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name in re.findall(r"\$\{CREDENTIALS_DIRECTORY\}/(\w+)", config):
        (creds / name).write_text(f"{name}-0123456789\n")
    path = tmp_path / "config.yaml"
    path.write_text(config)
    result = run_forwarder(tmp_path, None, "check", "-c", str(path), env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert result.returncode == 0, result.stdout + result.stderr
