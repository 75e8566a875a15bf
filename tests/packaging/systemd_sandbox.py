"""A throw-away systemd (the distribution's own PID 1 binary) for testing the shipped units.

CI machines and containers do not boot systemd, yet ``Type=notify``, the watchdog,
``LoadCredential=`` and the sandboxing only mean something under the real service manager. So
this boots ``/lib/systemd/systemd --system`` as PID 1 of a fresh PID and mount namespace:

- its unit search path is one directory the test fills (``$SYSTEMD_UNIT_PATH``), with empty
  stand-ins for the targets the units depend on, so nothing of the host's is started;
- ``/run`` is a private tmpfs, so the host never sees ``/run/systemd/system``;
- ``/`` is made shared inside the namespace, which systemd's credential setup relies on (it
  moves a mount from a helper namespace into ``/run/credentials``).

It needs root. :meth:`close` stops the units, kills the manager and removes the empty cgroups
it created.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

SYSTEMD = "/lib/systemd/systemd"
STUB_TARGETS = ("sysinit", "basic", "shutdown", "network-online", "network", "multi-user")
ROOT_TARGET = "sandbox-root.target"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def available() -> str | None:
    """Why the sandbox cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root"
    if not os.access(SYSTEMD, os.X_OK) or shutil.which("nsenter") is None or shutil.which("unshare") is None:
        return f"needs {SYSTEMD}, unshare and nsenter"
    try:
        if Path("/proc/1/comm").read_text().strip() == "systemd":
            return "the host runs systemd: test against it instead of a second manager"
    except OSError:
        pass
    return None


def _cgroup_dirs() -> set[Path]:
    if not CGROUP_ROOT.is_dir():
        return set()
    found: set[Path] = set()
    for hierarchy in CGROUP_ROOT.iterdir():
        if hierarchy.is_dir():
            found.update(p for p in hierarchy.iterdir() if p.is_dir())
    if (CGROUP_ROOT / "cgroup.procs").exists():  # a pure cgroup v2 mount
        found.update(p for p in CGROUP_ROOT.iterdir() if p.is_dir())
    return found


class SystemdSandbox:
    def __init__(self, unit_dir: Path):
        self.unit_dir = unit_dir
        self.empty = unit_dir.parent / "empty"
        self.empty.mkdir(exist_ok=True)
        for name in STUB_TARGETS:
            (unit_dir / f"{name}.target").write_text(f"[Unit]\nDescription=stand-in for {name}.target\n")
        (unit_dir / "system.slice").write_text("[Unit]\nDescription=System Slice\nDefaultDependencies=no\n")
        (unit_dir / ROOT_TARGET).write_text("[Unit]\nDescription=sandbox root\n")
        self._cgroups_before = _cgroup_dirs()
        self._proc: subprocess.Popen[bytes] | None = None
        self.pid = 0

    def start(self, timeout: float = 30) -> SystemdSandbox:
        env = " ".join([
            "container=siem-forwarder-test",
            f"SYSTEMD_UNIT_PATH={self.unit_dir}",
            f"SYSTEMD_GENERATOR_PATH={self.empty}",
            f"SYSTEMD_ENVIRONMENT_GENERATOR_PATH={self.empty}",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        ])
        script = ("mount -t tmpfs -o mode=0755 sandbox-run /run && mkdir -p /run/lock && "
                  f"mount --make-rshared / && exec env -i {env} {SYSTEMD} --system "
                  f"--unit={ROOT_TARGET} --log-target=null")
        self._proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--uts", "--mount-proc", "--propagation", "private",
             "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pid = self._manager_pid()
            if self.pid and self.systemctl("is-system-running", check=False).stdout.strip() in (
                    "running", "degraded"):
                return self
            if self._proc.poll() is not None:
                raise RuntimeError(f"systemd exited with {self._proc.returncode}")
            time.sleep(0.1)
        self.close()
        raise RuntimeError("systemd did not finish booting")

    def _manager_pid(self) -> int:
        assert self._proc is not None
        children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children")
        try:
            pids = children.read_text().split()
            if not pids:
                return 0
            pid = int(pids[0])
            return pid if Path(f"/proc/{pid}/exe").resolve() == Path(SYSTEMD).resolve() else 0
        except OSError:
            return 0

    def run(self, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a command inside the sandbox's namespaces (systemctl, systemd-analyze, ...)."""
        result = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-p", *argv], capture_output=True,
                                text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"{argv} exited {result.returncode}:\n{result.stdout}{result.stderr}\n"
                                 + self.status_text())
        return result

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", *args, check=check)

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", unit, "-p", prop, "--value").stdout.strip()

    def status_text(self) -> str:
        if not self.pid:
            return ""
        out = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-p", "systemctl", "status", "--no-pager",
                              "--all", "siem-forwarder*"], capture_output=True, text=True, timeout=30)
        return out.stdout + out.stderr

    def wait_for(self, unit: str, prop: str, wanted: str, timeout: float = 60) -> str:
        """Wait until a unit property has a value (systemd has no cheap change feed without D-Bus)."""
        deadline = time.monotonic() + timeout
        value = ""
        while time.monotonic() < deadline:
            value = self.show(unit, prop)
            if value == wanted:
                return value
            time.sleep(0.2)
        raise AssertionError(f"{unit} {prop}={value!r}, wanted {wanted!r}\n{self.status_text()}")

    def close(self) -> None:
        if self._proc is None:
            return
        if self.pid:
            subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-p", "systemctl", "stop", "siem-forwarder*"],
                           capture_output=True, timeout=90)
            os.kill(self.pid, signal.SIGKILL)
        self._proc.wait(timeout=30)
        self._proc = None
        for path in sorted(_cgroup_dirs() - self._cgroups_before, key=lambda p: len(p.parts), reverse=True):
            for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                              reverse=True):
                _rmdir(sub)
            _rmdir(path)

    def __enter__(self) -> SystemdSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
