"""A config file is input too: secret files that are not files, URLs that carry passwords, alias
bombs, duplicate keys, a corrupt checkpoint store, and ``${VAR}`` where a number is wanted.

Each is refused by ``check`` with exit 78, one located line that names the problem and never
quotes a secret or a file's content, quickly and without blocking.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import run_forwarder

CANARY = "cAnArY-t0ken-5e1f/77+q"
SHADOW = "root:$6$cAnArYsAlt$cAnArYhAsH0123456789:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


def _check(tmp_path: Path, text: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return run_forwarder(tmp_path, None, "check", *args, "-c", str(path), env=env, timeout=timeout)


def _asana(tmp_path: Path, options: str, *, state: str | None = None) -> str:
    return f"""\
state_dir: {state or tmp_path / 'state'}
sources:
  - name: asana
    type: asana
    options:
      workspace_gid: "12345"
{options}
outputs:
  - name: out
    type: stdout
"""


def _said(result) -> str:  # type: ignore[no-untyped-def]
    return result.stdout + result.stderr


# ---------------------------------------------------------------- secret files (findings 9, 10, 14)


def test_a_token_file_with_a_trailing_blank_line_is_refused_without_printing_the_token(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(CANARY + "\n\n")
    result = _check(tmp_path, _asana(tmp_path, f"      token_file: {tmp_path / 'token'}"))
    cfg = tmp_path / "config.yaml"
    assert result.returncode == 78, _said(result)
    assert f"{cfg}:7: $.sources[0].options.token_file: the secret file {tmp_path / 'token'} holds a line break" \
        in result.stdout, _said(result)
    assert CANARY not in _said(result) and "cAnArY" not in _said(result)


def test_one_trailing_newline_or_crlf_is_stripped(tmp_path: Path) -> None:
    for ending in ("\n", "\r\n", ""):
        (tmp_path / "token").write_text(CANARY + ending, newline="")
        result = _check(tmp_path, _asana(tmp_path, f"      token_file: {tmp_path / 'token'}"))
        assert result.returncode == 0, (ending, _said(result))


def test_a_multi_line_file_such_as_etc_shadow_is_refused_without_a_line_of_it(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.write_text(SHADOW)
    for args in ((), ("--connect",)):
        result = _check(tmp_path, _asana(tmp_path, f"      token_file: {shadow}"), *args)
        assert result.returncode == 78, _said(result)
        assert "holds a line break" in result.stdout
        assert "cAnArY" not in _said(result) and "root:" not in _said(result) and "daemon" not in _said(result)


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "directory", "too_large", "control", "not_utf8", "empty"])
def test_a_secret_file_that_is_no_small_text_file_is_refused_without_blocking(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "secret"
    if kind == "fifo":
        os.mkfifo(path)  # nobody ever writes: reading it would block forever
    elif kind == "dev_zero":
        path = Path("/dev/zero")  # reading it would never end
    elif kind == "directory":
        path.mkdir()
    elif kind == "too_large":
        path.write_text("x" * (64 * 1024 + 1))
    elif kind == "control":
        path.write_text(CANARY + "\x00tail\n")
    elif kind == "not_utf8":
        path.write_bytes(b"\xff\xfe" + CANARY.encode())
    else:
        path.write_text("\n")
    result = _check(tmp_path, _asana(tmp_path, f"      token_file: {path}"), timeout=30)
    assert result.returncode == 78, _said(result)
    expected = {"fifo": "is not a regular file", "dev_zero": "is not a regular file",
                "directory": "is not a regular file", "too_large": "is larger than 65536 bytes",
                "control": "holds a control character at character 23", "not_utf8": "is not UTF-8 text",
                "empty": "is empty"}[kind]
    assert f"$.sources[0].options.token_file: the secret file {path} {expected}" in result.stdout, _said(result)
    assert "cAnArY" not in _said(result)


def test_an_inline_secret_with_a_control_character_is_refused_hidden(tmp_path: Path) -> None:
    result = _check(tmp_path, _asana(tmp_path, "      token: ${ASANA_TOKEN}"), env={"ASANA_TOKEN": CANARY + "\n"})
    assert result.returncode == 78, _said(result)
    assert "$.sources[0].options.token: holds a control character or a line break (hidden, it is a secret)" \
        in result.stdout
    assert "cAnArY" not in _said(result)


# ---------------------------------------------------------------- credentials in a URL (finding 11)


@pytest.mark.parametrize("url", ["http://user:cAnArY-pass-91@127.0.0.1:9/api", "https://cAnArY-pass-91@vendor.example",
                                 "http://user:cAnArY%2Dpass%2D91@[::1]:8/x"])
def test_credentials_in_a_url_are_a_config_error_without_the_value(tmp_path: Path, url: str) -> None:
    text = _asana(tmp_path, f"      token: {CANARY}\n      base_url: {url}")
    text = text.replace("  - name: out\n    type: stdout\n",
                        f"  - name: out\n    type: splunk_hec\n    options:\n      url: {url}\n      token: {CANARY}\n")
    result = _check(tmp_path, text)
    assert result.returncode == 78, _said(result)
    cfg = tmp_path / "config.yaml"
    assert f"{cfg}:8: $.sources[0].options.base_url: holds credentials (user:password@host)" in result.stdout, _said(result)
    assert f"{cfg}:13: $.outputs[0].options.url: holds credentials (user:password@host)" in result.stdout, _said(result)
    assert "cAnArY" not in _said(result)


# ---------------------------------------------------------------- YAML (finding 14)

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_a_yaml_alias_bomb_is_refused_by_check_once_and_run(tmp_path: Path) -> None:
    assert len(BILLION_LAUGHS) < 1024
    for command in ("check", "once", "run"):
        path = tmp_path / "config.yaml"
        path.write_text(BILLION_LAUGHS)
        result = run_forwarder(tmp_path, None, command, "-c", str(path), timeout=60)
        assert result.returncode == 78, (command, _said(result))
        assert f"{path}:6: $: more than 200000 values once the YAML aliases are expanded" in _said(result)


def test_aliases_within_the_bound_and_merge_keys_still_work(tmp_path: Path) -> None:
    text = f"""\
state_dir: {tmp_path / 'state'}
x-common: &common
  workspace_gid: "12345"
  token: {CANARY}
sources:
  - name: a1
    type: asana
    options:
      <<: *common
      workspace_gid: "678"
  - name: a2
    type: asana
    options: *common
outputs:
  - name: out
    type: stdout
"""
    result = _check(tmp_path, text)
    # x-common is not a known top-level key: the only problem reported must be that one
    lines = [line for line in result.stdout.splitlines() if line.startswith(str(tmp_path))]
    assert len(lines) == 1 and "x-common" in lines[0], _said(result)


def test_a_self_referring_alias_is_refused(tmp_path: Path) -> None:
    result = _check(tmp_path, "a: &a [1, *a]\n")
    assert result.returncode == 78
    assert "a YAML alias that refers to itself" in result.stdout


def test_a_duplicate_key_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    text = _asana(tmp_path, f"      token: {CANARY}\n      page_size: 10\n      token: other-token-value")
    text += "outputs:\n  - name: again\n    type: stdout\n"
    result = _check(tmp_path, text)
    cfg = tmp_path / "config.yaml"
    assert result.returncode == 78, _said(result)
    assert f"{cfg}:9: $.sources[0].options: duplicate key 'token' (first at line 7)" in result.stdout, _said(result)
    assert f"{cfg}:13: $: duplicate key 'outputs' (first at line 10)" in result.stdout, _said(result)
    assert "cAnArY" not in _said(result)


# ---------------------------------------------------------------- the checkpoint store (finding 15)


@pytest.mark.parametrize("damage", ["garbage", "torn"])
def test_check_refuses_a_checkpoint_store_that_once_refuses(tmp_path: Path, damage: str) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    store = state / "checkpoints.sqlite"
    store.write_bytes(b"SQLite format 3\x00" + os.urandom(4000) if damage == "torn" else os.urandom(8192))
    before = store.read_bytes()
    text = _asana(tmp_path, f"      token: {CANARY}\n      base_url: http://127.0.0.1:9/api", state=str(state))
    (tmp_path / "once.yaml").write_text(text)
    once = run_forwarder(tmp_path, None, "once", "-c", str(tmp_path / "once.yaml"), timeout=60)
    assert once.returncode == 74, _said(once)
    import fcntl

    with open(state / "lock", "a+") as lock:  # as a running daemon holds it: check must not need it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = _check(tmp_path, text)
    assert result.returncode == 78, _said(result)
    assert f"$.state_dir: checkpoint store {store} is unreadable" in result.stdout, _said(result)
    assert store.read_bytes() == before


def test_check_refuses_a_cursor_that_is_not_json_and_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    import sqlite3

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    db = sqlite3.connect(state / "checkpoints.sqlite")
    db.execute("CREATE TABLE checkpoints (source TEXT PRIMARY KEY, cursor TEXT NOT NULL, updated REAL NOT NULL, "
               "newest_event TEXT, delivered INTEGER NOT NULL DEFAULT 0)")
    db.execute("INSERT INTO checkpoints VALUES ('asana', '{not json', 0, NULL, 0)")
    db.commit()
    db.close()
    result = _check(tmp_path, _asana(tmp_path, f"      token: {CANARY}", state=str(state)))
    assert result.returncode == 78, _said(result)
    assert "checkpoint of source 'asana'" in result.stdout and "is not valid JSON" in result.stdout


# ---------------------------------------------------------------- typed ${VAR} (issue 22)


def test_a_whole_scalar_variable_takes_the_type_its_schema_asks_for(tmp_path: Path) -> None:
    text = f"""\
state_dir: {tmp_path / 'state'}
workers: ${{WORKERS}}
sources:
  - name: asana
    type: asana
    interval: ${{INTERVAL}}
    options:
      workspace_gid: ${{GID}}
      token: ${{TOKEN}}
      page_size: ${{PAGE_SIZE}}
      tls_verify: ${{VERIFY}}
outputs:
  - name: syslog
    type: syslog_cef
    options:
      host: 127.0.0.1
      port: ${{SYSLOG_PORT}}
"""
    env = {"WORKERS": "0", "INTERVAL": "2.5", "GID": "12345", "TOKEN": "1234567", "PAGE_SIZE": "50",
           "VERIFY": "false", "SYSLOG_PORT": "42427"}
    result = _check(tmp_path, text, env=env)
    assert result.returncode == 0, _said(result)
    result = _check(tmp_path, text, env={**env, "SYSLOG_PORT": "syslog"})
    assert result.returncode == 78
    assert "$.outputs[0].options.port: 'syslog' is not of type 'integer'" in result.stdout, _said(result)
