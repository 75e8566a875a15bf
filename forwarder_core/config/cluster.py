"""The ``cluster:`` block: several instances of one config sharing its sources through PostgreSQL.

``dsn`` (or ``dsn_file``) is a secret: it is registered with the redactor whole and by its
password, so neither appears in a log or an error. ``instance`` defaults to the host name;
``lease_ttl`` is at least 5 seconds (the schema says so). ``buffer: disk`` cannot go with it: a
disk buffer holds events that only its own host could deliver, and a host that dies takes them
along while its sources move on.
"""
from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from forwarder_core.config.problems import Problems
from forwarder_core.secrets import Secret, read_secret_file, register_secret_text, reveal

DEFAULT_LEASE_TTL = 30.0
_KV_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


@dataclass(frozen=True)
class ClusterSettings:
    dsn: Secret
    instance: str
    lease_ttl: float

    def __repr__(self) -> str:
        return f"ClusterSettings(dsn=***, instance={self.instance!r}, lease_ttl={self.lease_ttl})"


def register_dsn(dsn: str) -> None:
    """Teach the redactor the DSN and the password inside it (URI or key=value form)."""
    register_secret_text(dsn)
    password = None
    if "://" in dsn:
        try:
            password = urlsplit(dsn).password
        except ValueError:
            password = None
        if password:
            password = unquote(password)
    else:
        found = _KV_PASSWORD.search(dsn)
        if found:
            password = found.group(1).strip("'")
    if password:
        register_secret_text(password)


def cluster_settings(document: dict[str, Any], problems: Problems, need_secrets: bool) -> ClusterSettings | None:
    """The validated ``cluster:`` block, or None without one (problems are added, not raised)."""
    block = document.get("cluster")
    if not isinstance(block, dict):
        return None
    dsn = block.get("dsn")
    if dsn is None and isinstance(block.get("dsn_file"), str):
        try:
            dsn = read_secret_file(block["dsn_file"])  # a regular small file; never quoted in an error
        except ValueError as exc:
            if need_secrets:
                problems.add(("cluster", "dsn_file"), str(exc))
            dsn = None
    if isinstance(dsn, Secret):
        dsn = reveal(dsn)
    if isinstance(dsn, str) and dsn:
        register_dsn(dsn)
    elif need_secrets and "dsn" not in block and "dsn_file" not in block:
        problems.add(("cluster",), "'dsn' is a required property (or 'dsn_file')", key="dsn")
    for i, output in enumerate(document.get("outputs") or []):
        if isinstance(output, dict) and output.get("buffer") == "disk":
            problems.add(("outputs", i, "buffer"), "buffer: disk cannot be used with cluster: a disk buffer holds "
                         "events only its own host can deliver; use the default memory buffer")
    instance = block.get("instance") or socket.gethostname()
    ttl = block.get("lease_ttl", DEFAULT_LEASE_TTL)
    ttl = float(ttl) if isinstance(ttl, (int, float)) else DEFAULT_LEASE_TTL  # a wrong one is the schema's problem
    return ClusterSettings(Secret(dsn if isinstance(dsn, str) else ""), str(instance), ttl)
