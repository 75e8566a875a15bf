"""A real PostgreSQL, private to the test run, for the fleet tests.

Debian's ``postgresql`` package (scripts/install-test-deps.sh installs it) brings ``initdb`` and
``pg_ctl``; they refuse to run as root, so the cluster belongs to the ``postgres`` user (or
``nobody``) and lives in a temporary directory, listening on a free loopback port and a socket
directory of its own. Nothing depends on a server that happens to be running on the machine.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from tests.rsyslog import free_port

INSTALL_HINT = "PostgreSQL is not installed; run scripts/install-test-deps.sh (apt-get install postgresql)"


def find_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _user() -> pwd.struct_passwd | None:
    if os.getuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists to own the cluster")


class Postgres:
    """One cluster: ``start()``, ``dsn``, ``stop()``, ``restart()``."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.data = directory / "data"
        self.sock = directory / "sock"
        self.port = free_port()
        self.user = _user()
        self.initdb = find_bin("initdb")
        self.pg_ctl = find_bin("pg_ctl")
        if not self.initdb or not self.pg_ctl:
            raise RuntimeError(INSTALL_HINT)

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=forwarder dbname=forwarder connect_timeout=3"

    def _run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        preexec = None
        if self.user is not None:
            uid, gid = self.user.pw_uid, self.user.pw_gid

            def preexec() -> None:
                os.setgid(gid)
                os.setuid(uid)
        return subprocess.run(list(cmd), capture_output=True, text=True, preexec_fn=preexec, timeout=120,
                              cwd=str(self.dir), env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})

    def init(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        if self.user is not None:
            for path in (self.dir, self.sock):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
            os.chmod(self.dir, 0o755)
        out = self._run(self.initdb, "-D", str(self.data), "-U", "forwarder", "--auth=trust", "-E", "UTF8",
                        "--no-sync")
        if out.returncode:
            raise RuntimeError(f"initdb failed: {out.stdout}{out.stderr}")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.sock}'\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n")

    def start(self) -> None:
        out = self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60", "start")
        if out.returncode:
            log = (self.dir / "log").read_text() if (self.dir / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {out.stdout}{out.stderr}{log[-2000:]}")
        self._createdb()

    def _createdb(self) -> None:
        psql = find_bin("psql")
        assert psql is not None
        for _ in range(50):
            out = subprocess.run([psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "forwarder", "-d", "postgres",
                                  "-tAc", "SELECT 1 FROM pg_database WHERE datname = 'forwarder'"],
                                 capture_output=True, text=True, timeout=30)
            if out.returncode == 0:
                if out.stdout.strip() != "1":
                    subprocess.run([psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "forwarder", "-d", "postgres",
                                    "-c", "CREATE DATABASE forwarder"], check=True, capture_output=True, timeout=30)
                return
            time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL on port {self.port} did not answer: {out.stderr}")

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def reset(self) -> None:
        """Drop every table of the forwarder's database: a fresh fleet for the next test."""
        psql = find_bin("psql")
        assert psql is not None
        subprocess.run([psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "forwarder", "-d", "forwarder",
                        "-c", "DROP SCHEMA public CASCADE; CREATE SCHEMA public;"], check=True, capture_output=True,
                       timeout=30)
