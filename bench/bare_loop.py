"""The bare loop: the least a Python program can do to move an Incydr backlog to a TCP sink.

It fetches the same pages as the forwarder (same OAuth, same search endpoint, ``pageSize``
10,000) and writes one JSON line per event to the sink: no validation, no cursor, no
normalizing, no formatting. Its rate is the ceiling the benchmark compares the forwarder with.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys

import requests

SEARCH = "/v1/audit/search-audit-log"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch an Incydr backlog and write it as JSON lines to a TCP sink.")
    parser.add_argument("--url", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--start", type=float, required=True, help="epoch seconds")
    parser.add_argument("--end", type=float, required=True, help="epoch seconds")
    parser.add_argument("--page-size", type=int, default=10_000)
    parser.add_argument("--sink-port", type=int, required=True)
    args = parser.parse_args(argv)

    session = requests.Session()
    token = session.post(args.url + "/v1/oauth", auth=(args.client_id, args.client_secret), data=b"").json()
    session.headers["Authorization"] = f"Bearer {token['access_token']}"
    sink = socket.create_connection(("127.0.0.1", args.sink_port))
    dumps = json.dumps
    sent = 0
    page = 0
    while True:
        body = {"dateRange": {"startTime": args.start, "endTime": args.end}, "page": page, "pageSize": args.page_size}
        answer = session.post(args.url + SEARCH, json=body)
        answer.raise_for_status()
        events = answer.json().get("events") or []
        if events:
            sink.sendall("".join([dumps(e) + "\n" for e in events]).encode())
            sent += len(events)
        if len(events) < args.page_size:
            break
        page += 1
    sink.close()
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
