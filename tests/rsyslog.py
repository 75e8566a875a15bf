"""A real rsyslog, started on loopback ports, for the syslog_cef tests.

Starting the TLS listeners costs rsyslog a second or two (GnuTLS generates Diffie-Hellman
parameters), so tests that only need UDP/TCP ask for ``tls=False``.

:class:`Rsyslog` writes a config after the recipe in the shared SIEM protocol notes (one
``imudp`` input, one plain ``imtcp`` input, and unless ``tls=False`` one TLS ``imtcp`` input
with anonymous clients and one that requires a client certificate signed by the test CA), generates that CA and
the certificates with ``cryptography``, runs ``rsyslogd -n`` in the foreground, waits until
every port is bound, and reads back what it stored (``%rawmsg%``, one line per message). The
ports stay the same across :meth:`Rsyslog.restart`, so a sender's reconnect reaches the new
process.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

INSTALL_HINT = ("rsyslogd is not installed; run scripts/install-test-deps.sh "
                "(apt-get install rsyslog rsyslog-gnutls) to run the syslog_cef tests")


def find_rsyslogd() -> str | None:
    return shutil.which("rsyslogd") or next(
        (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if os.access(p, os.X_OK)), None)


def gtls_available() -> bool:
    """Whether rsyslog's GnuTLS network stream driver (Debian package rsyslog-gnutls) is installed."""
    return Path("/usr/lib/rsyslog/lmnsd_gtls.so").exists() or next(
        Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so"), None) is not None


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """A CA that signed nothing here: a client trusting only it must refuse the server."""


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str,
          usage: x509.ObjectIdentifier) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(directory: Path) -> Pki:
    """A test CA, a server certificate for 127.0.0.1/localhost, a client certificate, and an unrelated CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca("siem-forwarder test CA")
    server, server_key = _leaf(ca, ca_key, "127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH)
    client, client_key = _leaf(ca, ca_key, "siem-forwarder test client", ExtendedKeyUsageOID.CLIENT_AUTH)
    other, _ = _ca("unrelated CA")
    pem = serialization.Encoding.PEM
    pki = Pki(ca=directory / "ca.pem", server_cert=directory / "server.pem", server_key=directory / "server.key",
              client_cert=directory / "client.pem", client_key=directory / "client.key",
              other_ca=directory / "other-ca.pem")
    pki.ca.write_bytes(ca.public_bytes(pem))
    pki.server_cert.write_bytes(server.public_bytes(pem))
    _write_key(pki.server_key, server_key)
    pki.client_cert.write_bytes(client.public_bytes(pem))
    _write_key(pki.client_key, client_key)
    pki.other_ca.write_bytes(other.public_bytes(pem))
    return pki


# --------------------------------------------------------------------------- the receiver


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port")


def _bound_ports(kind: str) -> set[int]:
    ports: set[int] = set()
    for table in (f"/proc/net/{kind}", f"/proc/net/{kind}6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if kind == "tcp" and state != "0A":  # LISTEN
                continue
            ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


class Rsyslog:
    """One rsyslogd process and its config, certificates and received-messages file in ``directory``."""

    def __init__(self, directory: Path, binary: str, pki: Pki, *, tls: bool = True):
        self.dir = directory
        self.tls = tls
        self.binary = binary
        self.pki = pki
        self.udp_port = free_port()
        self.tcp_port = self.udp_port
        self.tls_port = free_port()
        self.mtls_port = free_port()
        self.received = directory / "received.log"
        self.conf = directory / "rsyslog.conf"
        self.pidfile = directory / "rsyslogd.pid"
        self.stderr_path = directory / "rsyslogd.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        (directory / "work").mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self._config())

    def _config(self) -> str:
        d = self.dir
        tls_inputs = f"""
input(type="imtcp" address="127.0.0.1" port="{self.tls_port}" ruleset="capture"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{self.mtls_port}" ruleset="capture"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
""" if self.tls else ""
        return f"""
global(workDirectory="{d}/work" maxMessageSize="64k"
       defaultNetstreamDriverCAFile="{self.pki.ca}"
       defaultNetstreamDriverCertFile="{self.pki.server_cert}"
       defaultNetstreamDriverKeyFile="{self.pki.server_key}")
module(load="imudp")
module(load="imtcp")
template(name="RawLine" type="string" string="%rawmsg%\\n")
ruleset(name="capture") {{ action(type="omfile" file="{self.received}" template="RawLine") }}
input(type="imudp" address="127.0.0.1" port="{self.udp_port}" ruleset="capture")
input(type="imtcp" address="127.0.0.1" port="{self.tcp_port}" ruleset="capture")
{tls_inputs}"""

    def validate(self) -> None:
        done = subprocess.run([self.binary, "-N1", "-f", str(self.conf)], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"rsyslogd rejected its test config:\n{done.stdout}\n{done.stderr}")

    def start(self, timeout: float = 15) -> None:
        """Start rsyslogd and return once all its ports are bound (or raise with its stderr)."""
        self.pidfile.unlink(missing_ok=True)
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen([self.binary, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        deadline = time.monotonic() + timeout
        want_tcp = {self.tcp_port, self.tls_port, self.mtls_port} if self.tls else {self.tcp_port}
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited with {self.proc.returncode}:\n{self.stderr_path.read_text()}")
            if want_tcp <= _bound_ports("tcp") and self.udp_port in _bound_ports("udp"):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rsyslogd did not bind its ports in {timeout} s:\n{self.stderr_path.read_text()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 15) -> None:
        """Stop gracefully (SIGTERM: rsyslog drains its queues and closes its connections)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_count(self, text: str) -> int:
        """How many times rsyslogd's own diagnostics (its stderr) mention ``text``."""
        try:
            return self.stderr_path.read_text(errors="replace").count(text)
        except FileNotFoundError:
            return 0

    def wait_for_log(self, text: str, count: int, timeout: float = 15) -> int:
        deadline = time.monotonic() + timeout
        while (found := self.log_count(text)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return found

    def lines(self) -> list[str]:
        """Every message stored so far, one per line, decoded as UTF-8."""
        try:
            data = self.received.read_bytes()
        except FileNotFoundError:
            return []
        text = data.decode("utf-8")
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        return text.splitlines()

    def wait_for(self, marker: str, count: int, timeout: float = 15) -> list[str]:
        """The stored lines containing ``marker``, once there are at least ``count`` of them.

        rsyslog writes its file asynchronously to the sender, so this polls the file; on
        timeout it returns what arrived, and the caller's assertion shows what is missing.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.lines() if marker in line]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)
