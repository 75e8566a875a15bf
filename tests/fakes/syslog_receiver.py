"""A local syslog receiver over TCP: newline-framed messages appended to a file, one per line.

For the demo (a ``syslog_cef`` output needs something to send to, and ``cef-check`` something
real to read) and for tests that only need the bytes as they arrived. Each line is flushed as
it arrives, so a reader sees every message the sender's TCP stack got acknowledged for.
"""
from __future__ import annotations

import argparse
import os
import signal
import socketserver
import threading
from typing import BinaryIO


class SyslogReceiver(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, out_path: str, host: str = "127.0.0.1", port: int = 0):
        self.out: BinaryIO = open(out_path, "ab")  # noqa: SIM115 - closed by close()
        self.write_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"

    def server_close(self) -> None:
        super().server_close()
        self.out.close()


class _Handler(socketserver.StreamRequestHandler):
    server: SyslogReceiver

    def handle(self) -> None:
        for line in self.rfile:
            with self.server.write_lock:
                self.server.out.write(line if line.endswith(b"\n") else line + b"\n")
                self.server.out.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="file the messages are appended to")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", help="written with host:port once listening")
    args = parser.parse_args()
    server = SyslogReceiver(args.out, port=args.port)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w") as fh:
            fh.write(server.address)
        os.replace(args.ready_file + ".tmp", args.ready_file)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    stop.wait()
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
