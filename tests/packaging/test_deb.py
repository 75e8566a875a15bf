"""The .deb and .rpm as an operator gets them: built by packaging/build.sh, inspected, and
(as root in CI, or with SIEM_FORWARDER_PACKAGE_TESTS=1) installed, run, removed and purged.

Installing changes the machine (a system user, /opt, /etc, /usr/lib/systemd), which is why it
only happens where that is wanted; a finalizer purges the package even when a test fails.
"""
from __future__ import annotations

import grp
import gzip
import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import forwarder_core
from tests.fakes.asana import AsanaFake
from tests.fakes.splunk_hec import SplunkHecFake, TokenConfig

from . import systemd_sandbox

pytestmark = [pytest.mark.package, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
VERSION = forwarder_core.__version__
DEB = REPO / "dist" / f"siem-forwarder_{VERSION}-1_amd64.deb"
RPM = REPO / "dist" / f"siem-forwarder-{VERSION}-1.x86_64.rpm"
STAGED_VENV = REPO / "build" / "package" / "root" / "opt" / "siem-forwarder"
IN_CI = os.environ.get("CI") == "true"
IS_ROOT = os.geteuid() == 0

# Everything the package may put on the system, and nothing else.
ALLOWED_ROOTS = ("/opt/siem-forwarder", "/etc/siem-forwarder", "/usr/bin/siem-forwarder",
                 "/usr/lib/systemd/system/siem-forwarder", "/usr/lib/sysusers.d/siem-forwarder.conf",
                 "/usr/share/doc/siem-forwarder", "/usr/share/siem-forwarder",
                 "/usr/share/man/man1/siem-forwarder.1.gz")
PARENT_DIRS = {"/", "/etc", "/opt", "/usr", "/usr/bin", "/usr/lib", "/usr/lib/systemd",
               "/usr/lib/systemd/system", "/usr/lib/sysusers.d", "/usr/share", "/usr/share/doc",
               "/usr/share/man", "/usr/share/man/man1"}


@dataclass
class Entry:
    mode: str
    owner: str
    path: str
    target: str | None


@dataclass
class Built:
    seconds: float
    log: str


def run(*argv: str, check: bool = True, timeout: float = 120,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if IN_CI:
            pytest.fail(f"{tool} is missing in CI: scripts/install-test-deps.sh installs it")
        pytest.skip(f"{tool} is not installed")
    return path


@pytest.fixture(scope="module")
def built() -> Built:
    """Runs packaging/build.sh once for the module; it needs root (or user namespaces)."""
    if not (IS_ROOT or IN_CI or os.environ.get("SIEM_FORWARDER_PACKAGE_TESTS") == "1"):
        pytest.skip("packaging/build.sh builds the venv at /opt/siem-forwarder in a mount namespace: "
                    "run as root, or set SIEM_FORWARDER_PACKAGE_TESTS=1 where user namespaces work")
    need("dpkg-deb")
    start = time.monotonic()
    result = run(str(REPO / "packaging" / "build.sh"), timeout=900)
    seconds = time.monotonic() - start
    print(f"\npackaging/build.sh took {seconds:.0f} s")
    assert DEB.is_file() and RPM.is_file(), result.stderr
    return Built(seconds=seconds, log=result.stderr)


@pytest.fixture(scope="module")
def deb_entries(built: Built) -> dict[str, Entry]:
    listing = run("dpkg-deb", "-c", str(DEB)).stdout
    entries: dict[str, Entry] = {}
    for line in listing.splitlines():
        # drwxr-xr-x root/root         0 2026-11-22 10:14 ./etc/   (symlinks: "./a -> b")
        mode, owner, _size, _date, _time, rest = line.split(None, 5)
        path, _, target = rest.partition(" -> ")
        path = path[1:].rstrip("/") or "/"
        entries[path] = Entry(mode, owner, path, target or None)
    return entries


def test_build_leaves_the_hosts_opt_alone(built: Built) -> None:
    installed = run("dpkg-query", "-W", "siem-forwarder", check=False).returncode == 0
    assert installed or not os.path.exists("/opt/siem-forwarder")
    assert built.seconds < 600


def test_deb_installs_only_its_own_paths(deb_entries: dict[str, Entry]) -> None:
    strays = [p for p in deb_entries if p not in PARENT_DIRS and not p.startswith(ALLOWED_ROOTS)]
    assert strays == []
    assert {e.owner for e in deb_entries.values()} == {"root/root"}


def test_deb_layout(deb_entries: dict[str, Entry]) -> None:
    e = deb_entries
    assert e["/usr/bin/siem-forwarder"].target == "/opt/siem-forwarder/bin/siem-forwarder"
    assert e["/opt/siem-forwarder/bin/python3.11"].target == "/usr/bin/python3.11"
    assert e["/opt/siem-forwarder/bin/siem-forwarder"].mode == "-rwxr-xr-x"
    assert e["/opt/siem-forwarder/bin/pip"].mode == "-rwxr-xr-x"
    assert e["/etc/siem-forwarder/config.yaml"].mode == "-rw-r-----"
    assert e["/etc/siem-forwarder/conf.d"].mode == "drwxr-x---"
    assert e["/etc/siem-forwarder/credentials"].mode == "drwx------"
    for unit in ("siem-forwarder.service", "siem-forwarder@.service"):
        assert e[f"/usr/lib/systemd/system/{unit}"].mode == "-rw-r--r--"
    assert "/usr/lib/sysusers.d/siem-forwarder.conf" in e
    assert "/opt/siem-forwarder/share/constraints.txt" in e
    for page in (REPO / "docs").rglob("*.md"):  # every page of docs/, not only operations.md
        assert f"/usr/share/doc/siem-forwarder/{page.relative_to(REPO / 'docs')}" in e, page
    assert e["/usr/share/siem-forwarder/grafana/siem-forwarder.json"].mode == "-rw-r--r--"
    assert e["/usr/share/man/man1/siem-forwarder.1.gz"].mode == "-rw-r--r--"
    assert e["/usr/share/siem-forwarder/prometheus/siem-forwarder-rules.yml"].mode == "-rw-r--r--"
    site = "/opt/siem-forwarder/lib/python3.11/site-packages"
    for module in ("forwarder_core/commands/cli.py", "siem_forwarder_plugins/outputs/file.py",
                   "siem_forwarder_schemas/event.schema.json"):
        assert f"{site}/{module}" in e, module
    # Bytecode is compiled at build time so that dpkg owns it.
    assert any(p.startswith(f"{site}/forwarder_core/commands/__pycache__/cli.cpython-311") for p in e)


def test_deb_control_and_conffiles(built: Built) -> None:
    info = run("dpkg-deb", "-I", str(DEB)).stdout
    assert re.search(r"^ Package: siem-forwarder$", info, re.M)
    assert re.search(rf"^ Version: {re.escape(VERSION)}-1$", info, re.M)
    assert re.search(r"^ Architecture: amd64$", info, re.M)
    assert re.search(r"^ Depends: python3\.11$", info, re.M)
    conffiles = run("dpkg-deb", "--info", str(DEB), "conffiles").stdout.split()
    assert conffiles == ["/etc/siem-forwarder/config.yaml"]
    for script in ("postinst", "prerm", "postrm"):
        assert re.search(rf"\b{script}\b", info), script


def test_rpm_matches_the_deb(built: Built) -> None:
    need("rpm")
    files = set(run("rpm", "-qpl", str(RPM)).stdout.split())
    assert {"/usr/bin/siem-forwarder", "/opt/siem-forwarder/bin/siem-forwarder",
            "/usr/lib/systemd/system/siem-forwarder@.service",
            "/opt/siem-forwarder/share/constraints.txt", "/usr/share/doc/siem-forwarder/monitoring.md",
            "/usr/share/siem-forwarder/grafana/siem-forwarder.json",
            "/usr/share/siem-forwarder/prometheus/siem-forwarder-rules.yml",
            "/usr/share/man/man1/siem-forwarder.1.gz"} <= files
    assert run("rpm", "-qpc", str(RPM)).stdout.split() == ["/etc/siem-forwarder/config.yaml"]
    scripts = run("rpm", "-qp", "--scripts", str(RPM)).stdout
    for phase in ("postinstall", "preuninstall", "postuninstall"):
        assert f"{phase} scriptlet" in scripts, phase
    requires = run("rpm", "-qpR", str(RPM)).stdout
    assert "python3.11" in requires


def test_venv_is_built_for_opt_not_the_build_dir(built: Built) -> None:
    for script in (STAGED_VENV / "bin").iterdir():
        if script.is_file() and not script.is_symlink() and script.read_bytes()[:2] == b"#!":
            first = script.read_text().splitlines()[0]
            assert first == "#!/opt/siem-forwarder/bin/python3.11", (script.name, first)
    cfg = (STAGED_VENV / "pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg
    assert str(REPO) not in cfg


def test_constraints_pin_the_core_and_its_dependencies(built: Built) -> None:
    lines = [ln for ln in (STAGED_VENV / "share" / "constraints.txt").read_text().splitlines()
             if ln and not ln.startswith("#")]
    pins = dict(ln.split("==", 1) for ln in lines)
    assert pins["siem-forwarder"] == VERSION
    for dep in ("pluggy", "requests", "PyYAML", "jsonschema", "cryptography"):
        assert dep in pins, dep
    assert all("@" not in ln and "file:" not in ln for ln in lines)


# --- install, run, remove, purge ------------------------------------------------------------

def install_allowed() -> bool:
    return IS_ROOT and (IN_CI or os.environ.get("SIEM_FORWARDER_PACKAGE_TESTS") == "1")


@pytest.fixture
def installed(built: Built) -> Iterator[None]:
    if not install_allowed():
        pytest.skip("installs system-wide: runs as root with CI=true or SIEM_FORWARDER_PACKAGE_TESTS=1")
    need("dpkg")
    if run("dpkg-query", "-W", "siem-forwarder", check=False).returncode == 0:
        pytest.skip("siem-forwarder is already installed on this machine; not touching it")
    assert not os.path.exists("/opt/siem-forwarder"), "/opt/siem-forwarder exists but no package owns it"
    run("dpkg", "-i", str(DEB))
    try:
        yield
    finally:
        run("dpkg", "-P", "siem-forwarder", check=False)


def test_install_run_remove_purge(installed: None) -> None:
    # Installed: a system user, and a config the user can read but not write.
    user = pwd.getpwnam("siem-forwarder")
    assert user.pw_dir == "/var/lib/siem-forwarder"
    assert user.pw_shell.endswith("nologin")
    config = Path("/etc/siem-forwarder/config.yaml")
    st = config.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == 0
    assert grp.getgrgid(st.st_gid).gr_name == "siem-forwarder"
    # The state directory (the user's home) exists before the unit ever starts, so `check`
    # run by hand as the service user does not fail on it.
    home = Path("/var/lib/siem-forwarder").stat()
    assert home.st_uid == user.pw_uid and stat.S_IMODE(home.st_mode) == 0o750

    version = run("/usr/bin/siem-forwarder", "--version")
    assert VERSION in version.stdout + version.stderr
    # The man page, the dashboard and the alert rules, where docs/monitoring.md says they are.
    assert gzip.decompress(Path("/usr/share/man/man1/siem-forwarder.1.gz").read_bytes()).startswith(b".TH SIEM")
    assert json.loads(Path("/usr/share/siem-forwarder/grafana/siem-forwarder.json").read_text())["panels"]
    assert "groups:" in Path("/usr/share/siem-forwarder/prometheus/siem-forwarder-rules.yml").read_text()
    assert Path("/usr/share/doc/siem-forwarder/troubleshooting.md").is_file()
    # As ExecStartPre runs it: as the service user, on the shipped config.
    check = run("runuser", "-u", "siem-forwarder", "--", "/usr/bin/siem-forwarder", "check",
                "-c", str(config))
    assert "OK" in check.stdout + check.stderr

    # `once` on a demo config: a local Asana fake into a file, as the service user.
    demo_dir = Path("/var/lib/siem-forwarder/demo")
    demo_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(demo_dir, user="siem-forwarder", group="siem-forwarder")
    with AsanaFake(events=150, span=3600, token=ASANA_TOKEN) as asana:
        demo = demo_dir / "demo.yaml"
        _write_private(demo, f"""\
state_dir: {demo_dir}/state
sources:
  - name: asana
    type: asana
    start_time: "2000-01-01T00:00:00Z"
    options: {{base_url: "{asana.url}/api/1.0", token: "{ASANA_TOKEN}", workspace_gid: "12345"}}
outputs:
  - name: out
    type: file
    options: {{path: {demo_dir}/events.jsonl}}
""", 0o600)
        shutil.chown(demo, user="siem-forwarder")
        once = run("runuser", "-u", "siem-forwarder", "--", "/usr/bin/siem-forwarder", "once", "-c", str(demo))
        assert len((demo_dir / "events.jsonl").read_text().splitlines()) == 150, once.stdout + once.stderr
        assert ASANA_TOKEN not in once.stdout + once.stderr

    # A third-party plugin installed into the plugin directory with the constraints file.
    plugin_dir = Path("/usr/local/lib/siem-forwarder/plugins")
    try:
        run("/opt/siem-forwarder/bin/pip", "install", "--quiet", "--no-deps",
            "-c", "/opt/siem-forwarder/share/constraints.txt", "--target", str(plugin_dir),
            str(REPO / "examples" / "siem-forwarder-example"), timeout=300)
        listing = run("/usr/bin/siem-forwarder", "plugins")
        assert "webhook" in listing.stdout and "siem-forwarder-example" in listing.stdout, listing.stdout
    finally:
        shutil.rmtree("/usr/local/lib/siem-forwarder", ignore_errors=True)

    # The installed units verify with their real ExecStart paths.
    if shutil.which("systemd-analyze"):
        for unit in ("siem-forwarder.service", "siem-forwarder@prod.service"):
            out = run("systemd-analyze", "verify", "--man=no", f"/usr/lib/systemd/system/{unit}")
            assert out.stdout + out.stderr == ""

    # Reinstalling (dpkg's upgrade path) keeps an edited config.
    edited = config.read_text() + "\n# edited by the operator\n"
    config.write_text(edited)
    run("dpkg", "-i", str(DEB))
    assert config.read_text() == edited

    # Remove keeps config and state, and takes the venv away completely.
    state = Path("/var/lib/siem-forwarder")
    state.mkdir(exist_ok=True)
    (state / "checkpoint-marker").write_text("x")
    run("dpkg", "-r", "siem-forwarder")
    assert not os.path.lexists("/opt/siem-forwarder")
    assert not os.path.lexists("/usr/bin/siem-forwarder")
    assert not os.path.exists("/usr/lib/systemd/system/siem-forwarder.service")
    assert config.exists()
    assert (state / "checkpoint-marker").exists()
    pwd.getpwnam("siem-forwarder")

    # Purge removes config, state and the user.
    run("dpkg", "-P", "siem-forwarder")
    assert not os.path.exists("/etc/siem-forwarder")
    assert not state.exists()
    with pytest.raises(KeyError):
        pwd.getpwnam("siem-forwarder")
    assert run("dpkg-query", "-W", "siem-forwarder", check=False).returncode != 0


# --- the installed unit under a real systemd ------------------------------------------------

ASANA_TOKEN = "2/1204/1207:packaging-test-pat"
HEC_TOKEN = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_private(path: Path, text: str, mode: int, group: str | None = None) -> None:
    path.write_text(text)
    os.chmod(path, mode)
    if group is not None:
        shutil.chown(path, group=group)


def _wait_for_text(path: Path, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    content = ""
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in {path}:\n{content}")


def test_service_runs_under_systemd(installed: None, tmp_path: Path) -> None:
    """Type=notify start, status, credentials, metrics, reload, clean stop and a refused bad
    config, with the installed unit file and all of its hardening."""
    why = systemd_sandbox.available()
    if why:
        pytest.skip(why)
    asana = AsanaFake(events=200, span=3600, token=ASANA_TOKEN).start()
    hec = SplunkHecFake(tokens={HEC_TOKEN: TokenConfig()}).start()
    port = _free_port()
    creds = Path("/etc/siem-forwarder/credentials")
    conf_d = Path("/etc/siem-forwarder/conf.d")
    log = tmp_path / "service.log"
    units = tmp_path / "units"
    (units / "siem-forwarder.service.d").mkdir(parents=True)
    shutil.copy("/usr/lib/systemd/system/siem-forwarder.service", units)
    (units / "siem-forwarder.service.d" / "test.conf").write_text(
        "[Service]\n"
        f"LoadCredential=asana_token:{creds}/asana_token\n"
        f"LoadCredential=hec_token:{creds}/hec_token\n"
        f"StandardOutput=append:{log}\nStandardError=inherit\n")
    try:
        _write_private(creds / "asana_token", ASANA_TOKEN + "\n", 0o600)
        _write_private(creds / "hec_token", HEC_TOKEN, 0o600)
        _write_private(conf_d / "test.yaml", f"""
metrics:
  listen: "127.0.0.1:{port}"
sources:
  - name: asana-main
    type: asana
    options:
      base_url: {asana.url}/api/1.0
      workspace_gid: "12345"
      token_file: ${{CREDENTIALS_DIRECTORY}}/asana_token
outputs:
  - name: splunk
    type: splunk_hec
    options:
      url: {hec.url}
      token_file: ${{CREDENTIALS_DIRECTORY}}/hec_token
""", 0o640, "siem-forwarder")
        unit = "siem-forwarder.service"
        with systemd_sandbox.SystemdSandbox(units) as sd:
            sd.systemctl("start", unit)  # Type=notify: returns once the daemon sent READY=1
            assert sd.show(unit, "SubState") == "running"
            assert sd.show(unit, "WatchdogUSec") == "2min"
            assert sd.show(unit, "StatusText").startswith("polling 1 source(s)")
            assert hec.wait_for_events(180, timeout=60), f"HEC got {len(hec.events)}"

            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
                assert resp.status == 200
            # HEC holds the events as soon as it has read the request; the daemon counts them once it
            # has read the answer: wait for the count, bounded.
            deadline, count = time.monotonic() + 60, 0
            while count < 180 and time.monotonic() < deadline:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                    metrics = resp.read().decode()
                found = re.search(r'events_delivered_total\{output="splunk",source="asana-main"\} (\d+)', metrics)
                count = int(found.group(1)) if found else 0
                if count < 180:
                    time.sleep(0.2)
            assert count >= 180, f"events_delivered_total {count}"

            main_pid = sd.show(unit, "MainPID")
            sd.systemctl("reload", unit)
            _wait_for_text(log, "reloaded")
            assert sd.show(unit, "MainPID") == main_pid
            assert sd.show(unit, "ActiveState") == "active"

            sd.systemctl("stop", unit)
            assert sd.show(unit, "Result") == "success"
            assert "stopped" in log.read_text()

            # A bad config never starts: ExecStartPre's check fails the start job.
            _write_private(conf_d / "zz-bad.yaml", "sources:\n  - name: bad\n    type: nosuchtype\n",
                           0o640, "siem-forwarder")
            assert sd.systemctl("start", unit, check=False).returncode != 0
            sd.systemctl("stop", unit)  # cancels the restart Restart=on-failure scheduled
            assert "zz-bad.yaml:3: $.sources[1].type: unknown source type 'nosuchtype'" in log.read_text()

        text = log.read_text()
        assert ASANA_TOKEN not in text and HEC_TOKEN not in text
        assert "Traceback" not in text
    finally:
        asana.stop()
        hec.stop()
        for path in (creds / "asana_token", creds / "hec_token", conf_d / "test.yaml", conf_d / "zz-bad.yaml"):
            path.unlink(missing_ok=True)
