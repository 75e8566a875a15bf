"""A TCP syslog sink for the benchmark: accepts connections, counts frames, keeps nothing.

Each connection is read with large ``recv_into`` calls and its frames counted: RFC 6587
octet counting (``LEN SP MSG``) when the connection's first byte is a digit, one frame per
line feed otherwise (the peer and the bare loop send JSON lines). It runs in its own process so
its CPU is not charged to what is measured. A second listening socket answers every connection
with the totals as one JSON line and closes, so the harness can read the count.

Usage: ``python bench/sink.py --ready-file F`` writes ``DATA_PORT CONTROL_PORT`` to ``F``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import threading
from typing import Any


class Counter:
    """Totals across every connection, updated under a lock (one thread per connection)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frames = 0
        self.bytes = 0
        self.connections = 0
        self.open = 0
        self.bad = 0

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"frames": self.frames, "bytes": self.bytes, "connections": self.connections,
                    "open": self.open, "bad": self.bad}


def count_octet_frames(buf: bytearray) -> tuple[int, int, bool]:
    """Frames complete in ``buf``, the bytes they take, and whether a bad length was met."""
    frames = 0
    pos = 0
    end = len(buf)
    while pos < end:
        space = buf.find(b" ", pos, min(end, pos + 12))
        if space < 0:
            if end - pos >= 12:
                return frames, pos, True
            break
        digits = bytes(buf[pos:space])
        if not digits.isdigit():
            return frames, pos, True
        nxt = space + 1 + int(digits)
        if nxt > end:
            break
        frames += 1
        pos = nxt
    return frames, pos, False


def serve_connection(conn: socket.socket, counter: Counter) -> None:
    chunk = bytearray(1 << 20)
    view = memoryview(chunk)
    pending = bytearray()
    mode: str | None = None
    with counter.lock:
        counter.connections += 1
        counter.open += 1
    try:
        while True:
            n = conn.recv_into(view)
            if n == 0:
                break
            data = view[:n]
            if mode is None:
                mode = "octet" if chr(data[0]).isdigit() else "line"
            if mode == "line":
                frames = data.tobytes().count(b"\n")
                bad = False
            else:
                pending += data
                frames, used, bad = count_octet_frames(pending)
                del pending[:used]
            with counter.lock:
                counter.frames += frames
                counter.bytes += n
                if bad:
                    counter.bad += 1
            if bad:
                break
    finally:
        conn.close()
        with counter.lock:
            counter.open -= 1


def accept_data(server: socket.socket, counter: Counter) -> None:
    while True:
        conn, _ = server.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        threading.Thread(target=serve_connection, args=(conn, counter), daemon=True).start()


def accept_control(server: socket.socket, counter: Counter) -> None:
    while True:
        conn, _ = server.accept()
        with conn:
            conn.sendall(json.dumps(counter.snapshot()).encode() + b"\n")


def listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    return sock


def read_counts(control_port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    """The sink's totals, asked over its control port."""
    with socket.create_connection((host, control_port), timeout=5) as conn:
        data = b""
        while not data.endswith(b"\n"):
            part = conn.recv(4096)
            if not part:
                break
            data += part
    return json.loads(data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Count syslog frames received over TCP.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args(argv)
    counter = Counter()
    data, control = listen(args.host, args.port), listen(args.host, 0)
    threading.Thread(target=accept_data, args=(data, counter), daemon=True).start()
    threading.Thread(target=accept_control, args=(control, counter), daemon=True).start()
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{data.getsockname()[1]} {control.getsockname()[1]}")
    os.replace(tmp, args.ready_file)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    stop.wait()


if __name__ == "__main__":
    main()
