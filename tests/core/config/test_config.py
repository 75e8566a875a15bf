"""`siem-forwarder check`: every problem at once, as file:line: $.path: message, exit 78."""
from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import run_forwarder


def _check(tmp_path: Path, text: str, *args: str, env: dict[str, str] | None = None, name: str = "config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return run_forwarder(tmp_path, None, "check", *args, "-c", str(path), env=env)


def test_mistakes_of_every_stage_are_reported_in_one_run(tmp_path: Path, testkit_path: str) -> None:
    text = f"""\
state_dir: {tmp_path}/state
plugin_paths: [{testkit_path}]
sources:
  - name: c1
    type: counter
    interval: fast
    options:
      count: -5
outputs:
  - name: out
    type: file
    options:
      pathh: /tmp/x
"""
    result = _check(tmp_path, text)
    cfg = str(tmp_path / "config.yaml")
    assert result.returncode == 78, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith(cfg)]
    assert lines == [
        f"{cfg}:6: $.sources[0].interval: 'fast' is not of type 'number'",
        f"{cfg}:8: $.sources[0].options.count: -5 is less than the minimum of 0",
        f"{cfg}:12: $.outputs[0].options: 'path' is a required property",
        f"{cfg}:13: $.outputs[0].options: unknown option 'pathh' (known: fsync, path)",
    ], result.stdout


def test_four_different_mistakes_give_four_located_lines_and_exit_78(tmp_path: Path) -> None:
    """A wrong interval type, a source missing its token, an unknown output type, a duplicate name."""
    text = f"""\
state_dir: {tmp_path}/state
sources:
  - name: asana-main
    type: asana
    interval: often
    options:
      workspace_gid: "1"
      token: t-0123456789
  - name: asana-main
    type: asana
    options:
      workspace_gid: "2"
outputs:
  - name: siem
    type: nosuch
"""
    result = _check(tmp_path, text)
    cfg = str(tmp_path / "config.yaml")
    assert result.returncode == 78, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4, result.stdout
    assert lines[0] == f"{cfg}:5: $.sources[0].interval: 'often' is not of type 'number'"
    assert lines[1] == f"{cfg}:9: $.sources[1].name: duplicate source name 'asana-main'"
    assert lines[2] == f"{cfg}:11: $.sources[1].options: 'token' is a required property"
    assert lines[3].startswith(f"{cfg}:15: $.outputs[0].type: unknown output type 'nosuch' (installed: ")


def test_a_missing_secret_file_is_one_line_naming_the_file_and_why(tmp_path: Path) -> None:
    text = f"""\
state_dir: {tmp_path}/state
sources:
  - name: asana-main
    type: asana
    options:
      workspace_gid: "1"
      token_file: {tmp_path}/no-such-token
outputs:
  - name: out
    type: file
    options: {{path: {tmp_path}/out.jsonl}}
"""
    result = _check(tmp_path, text)
    cfg = str(tmp_path / "config.yaml")
    assert result.returncode == 78, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"{cfg}:7: $.sources[0].options.token_file: cannot read the secret file {tmp_path}/no-such-token: "
        "No such file or directory",
    ]


def test_top_level_problems_are_all_reported_at_once(tmp_path: Path) -> None:
    text = """\
sources:
  - name: a
    interval: 0
  - type: asana
outputs: {}
bogus: 1
"""
    result = _check(tmp_path, text)
    cfg = str(tmp_path / "config.yaml")
    assert result.returncode == 78
    # The nameless block's type is known, so its options are checked too.
    assert result.stdout.splitlines() == [
        f"{cfg}:2: $.sources[0]: 'type' is a required property",
        f"{cfg}:3: $.sources[0].interval: 0 is less than the minimum of 1",
        f"{cfg}:4: $.sources[1].options: 'token' is a required property",
        f"{cfg}:4: $.sources[1].options: 'workspace_gid' is a required property",
        f"{cfg}:4: $.sources[1]: 'name' is a required property",
        f"{cfg}:5: $.outputs: {{}} is not of type 'array'",
        f"{cfg}:6: $: unknown option 'bogus' (known: cluster, delivery, log_level, max_concurrent_polls, "
        f"metrics, outputs, plugin_paths, shutdown_timeout, sources, state_dir, workers, workers_idle_stop)",
    ], result.stdout


def test_max_concurrent_polls_is_a_whole_number_of_at_least_one(tmp_path: Path) -> None:
    for value, message in (("0", "0 is less than the minimum of 1"), ("2.5", "2.5 is not of type 'integer'"),
                           ("lots", "'lots' is not of type 'integer'")):
        result = _check(tmp_path, f"state_dir: {tmp_path}/state\nmax_concurrent_polls: {value}\nsources: []\n"
                                  "outputs: []\n")
        cfg = str(tmp_path / "config.yaml")
        assert result.returncode == 78
        assert f"{cfg}:2: $.max_concurrent_polls: {message}" in result.stdout.splitlines(), result.stdout


def test_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    result = _check(tmp_path, "sources:\n  - name: a\n    type: [unclosed\n")
    assert result.returncode == 78
    assert result.stdout.startswith(f"{tmp_path / 'config.yaml'}:")
    assert "not valid YAML" in result.stdout


def test_unknown_type_lists_installed_types(tmp_path: Path) -> None:
    text = "sources:\n  - name: a\n    type: nosuch\noutputs: []\n"
    result = _check(tmp_path, text)
    assert result.returncode == 78
    assert f"{tmp_path / 'config.yaml'}:3: $.sources[0].type: unknown source type 'nosuch' (installed:" in result.stdout


def test_variables_expand_inside_strings_only(tmp_path: Path, testkit_path: str) -> None:
    text = f"""\
state_dir: ${{STATE:-{tmp_path}/state}}
plugin_paths: [{testkit_path}]
sources:
  - name: c
    type: counter
    options: {{count: 3}}
outputs:
  - name: out
    type: file
    options: {{path: "${{OUT_DIR}}/out-$$HOME.jsonl"}}
"""
    result = _check(tmp_path, text, env={"OUT_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    result = run_forwarder(tmp_path, None, "once", "-c", str(tmp_path / "config.yaml"), env={"OUT_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out-$HOME.jsonl").exists()
    # A variable's value cannot create keys: YAML is parsed before expansion.
    result = _check(tmp_path, text, env={"OUT_DIR": "x\nevil: 1"})
    assert "evil" not in result.stdout.replace("x\nevil: 1", "")


def test_unset_variable_is_an_error_at_its_path(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NOPE_UNSET"}
    text = "state_dir: ${NOPE_UNSET}\nsources: []\noutputs: []\n"
    result = _check(tmp_path, text, env=env)
    assert result.returncode == 78
    assert f"{tmp_path / 'config.yaml'}:1: $.state_dir: environment variable NOPE_UNSET is not set" in result.stdout


def test_secret_file_twin_and_no_secret_in_errors(tmp_path: Path, testkit_path: str) -> None:
    secret = "s3cr3t-Val-42"
    (tmp_path / "pw").write_text(secret + "\n")
    text = f"""\
state_dir: {tmp_path}/state
plugin_paths: [{testkit_path}]
sources:
  - name: c
    type: counter
    options: {{count: 1, token: 12345678}}
outputs:
  - name: out
    type: flaky
    options: {{path: {tmp_path}/o.jsonl, password_file: {tmp_path}/pw}}
  - name: out2
    type: flaky
    options: {{path: {tmp_path}/o2.jsonl, password_file: {tmp_path}/missing}}
"""
    result = _check(tmp_path, text)
    assert result.returncode == 78
    out = result.stdout + result.stderr
    assert "12345678" not in out, out
    assert secret not in out
    assert "$.sources[0].options.token: invalid value (hidden, it is a secret)" in out
    assert f"$.outputs[1].options.password_file: cannot read the secret file {tmp_path}/missing" in out


def test_conf_d_merges_by_component_name(tmp_path: Path, testkit_path: str) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "config.yaml").write_text(f"""\
state_dir: {tmp_path}/state
plugin_paths: [{testkit_path}]
sources:
  - name: c
    type: counter
    options: {{count: 2}}
outputs:
  - name: out
    type: file
    options: {{path: {tmp_path}/a.jsonl}}
""")
    (tmp_path / "conf.d" / "10-out.yaml").write_text(f"""\
outputs:
  - name: out
    type: file
    options: {{path: {tmp_path}/b.jsonl}}
sources:
  - name: c2
    type: counter
    options: {{count: 3, bad_option: 1}}
""")
    result = run_forwarder(tmp_path, None, "check", "-c", str(tmp_path / "config.yaml"))
    assert result.returncode == 78
    # The problem is located in the drop-in file that defined it.
    assert f"{tmp_path}/conf.d/10-out.yaml:8: $.sources[1].options: unknown option 'bad_option'" in result.stdout
    (tmp_path / "conf.d" / "10-out.yaml").write_text(
        (tmp_path / "conf.d" / "10-out.yaml").read_text().replace(", bad_option: 1", ""))
    result = run_forwarder(tmp_path, None, "once", "-c", str(tmp_path / "config.yaml"))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "a.jsonl").exists()
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 5


def test_run_and_once_refuse_a_bad_config_the_same_way(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("sources: 5\n")
    for command in ("once", "run"):
        result = run_forwarder(tmp_path, None, command, "-c", str(tmp_path / "config.yaml"), timeout=30)
        assert result.returncode == 78
        assert f"{tmp_path / 'config.yaml'}:1: $.sources: 5 is not of type 'array'" in result.stderr + result.stdout


def test_inline_secret_in_world_readable_file_is_warned(tmp_path: Path, testkit_path: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"""\
state_dir: {tmp_path}/state
plugin_paths: [{testkit_path}]
sources: []
outputs:
  - name: out
    type: flaky
    options: {{path: {tmp_path}/o.jsonl, password: inline-pass-123}}
""")
    path.chmod(0o644)
    result = run_forwarder(tmp_path, None, "check", "-c", str(path))
    assert result.returncode == 0
    assert "inline secret" in result.stderr
    assert "inline-pass-123" not in result.stderr + result.stdout
    path.chmod(0o600)
    result = run_forwarder(tmp_path, None, "check", "-c", str(path))
    assert "inline secret" not in result.stderr


def test_a_plugins_cross_option_rules_are_reported_at_the_options_line(tmp_path: Path, testkit_path: str) -> None:
    """``check_options`` on the plugin class: each problem at its option's JSON path and line, beside the core's."""
    text = f"""\
state_dir: {tmp_path}/state
plugin_paths: [{testkit_path}]
sources:
  - name: c1
    type: counter
    options:
      count: 5
      phrase: hello
  - name: c2
    type: counter
    options:
      phrase_every: 3
      page_size: 5000
      page_delay: 1
outputs:
  - name: out
    type: file
    options:
      path: {tmp_path}/out.jsonl
"""
    result = _check(tmp_path, text)
    cfg = str(tmp_path / "config.yaml")
    assert result.returncode == 78, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith(cfg)]
    assert lines == [
        f"{cfg}:8: $.sources[0].options.phrase: is never used: phrase_every is 0",
        f"{cfg}:11: $.sources[1].options: page_delay with a page_size over 1000 makes a backfill crawl",
        f"{cfg}:12: $.sources[1].options.phrase_every: needs a phrase to put in the events",
    ], result.stdout
