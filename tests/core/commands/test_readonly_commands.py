"""Read-only commands (`state`, `state show`, `quarantine list`, `plugins`) need no secrets."""
from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import run_forwarder


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"""\
state_dir: {tmp_path}/state
sources:
  - name: asana-main
    type: asana
    options:
      workspace_gid: "1"
      token: ${{UNSET_ASANA_TOKEN}}
  - name: incydr-main
    type: incydr
    options:
      base_url: https://api.us.code42.com
      client_id: key-1
      client_secret_file: {tmp_path}/no-such-secret
outputs:
  - name: splunk
    type: splunk_hec
    options:
      url: https://splunk.invalid:8088
      token: ${{UNSET_HEC_TOKEN}}
""")
    return path


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("UNSET_")}


def test_state_and_quarantine_list_work_with_unresolvable_secrets(tmp_path: Path) -> None:
    path = _config(tmp_path)
    for argv in (["state"], ["state", "show"], ["quarantine", "list"], ["quarantine"], ["plugins", "-c", str(path)]):
        result = run_forwarder(tmp_path, None, *argv, "-c", str(path), env=_env()) if argv[0] != "plugins" \
            else run_forwarder(tmp_path, None, *argv, env=_env())
        assert result.returncode == 0, (argv, result.stdout, result.stderr)
        assert "not set" not in result.stdout + result.stderr and "cannot read" not in result.stdout + result.stderr
    shown = run_forwarder(tmp_path, None, "state", "-c", str(path), env=_env()).stdout
    assert "asana-main" in shown and "incydr-main" in shown


def test_commands_that_talk_to_vendors_still_need_the_secrets(tmp_path: Path) -> None:
    path = _config(tmp_path)
    for argv in (["check"], ["once"], ["quarantine", "replay"]):
        result = run_forwarder(tmp_path, None, *argv, "-c", str(path), env=_env())
        assert result.returncode == 78, (argv, result.stdout, result.stderr)
        out = result.stdout + result.stderr
        assert "environment variable UNSET_ASANA_TOKEN is not set" in out
        assert f"cannot read the secret file {tmp_path}/no-such-secret" in out


def test_a_real_config_mistake_is_still_refused_by_read_only_commands(tmp_path: Path) -> None:
    path = _config(tmp_path)
    path.write_text(path.read_text().replace("type: asana", "type: nosuch"))
    result = run_forwarder(tmp_path, None, "state", "-c", str(path), env=_env())
    assert result.returncode == 78
    assert "unknown source type 'nosuch'" in result.stdout + result.stderr


def test_state_on_a_new_config_reads_without_creating_the_state_directory(tmp_path: Path) -> None:
    path = _config(tmp_path)
    for argv in (["state"], ["state", "show"], ["quarantine", "list"]):
        result = run_forwarder(tmp_path, None, *argv, "-c", str(path), env=_env())
        assert result.returncode == 0, (argv, result.stdout, result.stderr)
        assert not (tmp_path / "state").exists(), f"{argv} created the state directory"
    shown = run_forwarder(tmp_path, None, "state", "-c", str(path), env=_env()).stdout
    assert "asana-main" in shown and "incydr-main" in shown and "never" in shown


def test_state_reset_of_a_source_nobody_knows_fails_as_once_source_does(tmp_path: Path) -> None:
    path = _config(tmp_path)
    result = run_forwarder(tmp_path, None, "state", "reset", "asana-typo", "-c", str(path), env=_env())
    assert result.returncode == 78, (result.stdout, result.stderr)
    assert f"{path}:0: $.sources: no source named 'asana-typo'" in result.stdout + result.stderr
    assert not (tmp_path / "state").exists()
    known = run_forwarder(tmp_path, None, "state", "reset", "asana-main", "-c", str(path), env=_env())
    assert known.returncode == 0 and "asana-main: had no checkpoint" in known.stdout, known.stdout + known.stderr


def test_an_unset_variable_is_reported_once(tmp_path: Path) -> None:
    path = _config(tmp_path)
    path.write_text(path.read_text().replace("state_dir: ", "state_dir: ${UNSET_STATE_DIR}").replace(
        f"{tmp_path}/state\n", "\n", 1))
    for argv in (["check"], ["once"]):
        result = run_forwarder(tmp_path, None, *argv, "-c", str(path), env=_env())
        assert result.returncode == 78, (argv, result.stdout, result.stderr)
        out = result.stdout + result.stderr
        for name, where in (("UNSET_ASANA_TOKEN", "$.sources[0].options.token"), ("UNSET_HEC_TOKEN", "$.outputs[0].options.token"),
                            ("UNSET_STATE_DIR", "$.state_dir")):
            lines = [line for line in out.splitlines() if f"{where}:" in line]
            assert lines == [f"{path}:{lines[0].split(':')[1]}: {where}: environment variable {name} is not set"], (argv, out)
