"""The built-in demo: start the local vendor fakes, write a config, run `siem-forwarder once`.

Each fake runs in its own process on a loopback port and speaks its vendor's real protocol
(auth, pagination, limits). One Pangea event is altered after it was hashed, so the demo also
shows the tamper check at work: that event lands in the quarantine, not in the output.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "demo-out"

FAKES = {
    # name: (module, extra args)
    "asana": ("tests.fakes.asana", []),
    "incydr": ("tests.fakes.incydr", []),
    "agilicus": ("tests.fakes.agilicus", []),
    "pangea": ("tests.fakes.pangea", ["--tamper", "5"]),
}

CREDENTIALS = {
    "DEMO_ASANA_TOKEN": "2/1204/1207:fake-service-account",
    "DEMO_INCYDR_CLIENT_SECRET": "secret-1",
    "DEMO_AGILICUS_TOKEN": "agilicus-fake-token-0001",
    "DEMO_PANGEA_TOKEN": "pts_fake_pangea_token_0123456789",
}


def start_fakes(events: int) -> tuple[dict[str, str], list[subprocess.Popen[bytes]]]:
    procs, urls = [], {}
    for name, (module, extra) in FAKES.items():
        ready = OUT / f"{name}.url"
        procs.append(subprocess.Popen([sys.executable, "-m", module, "--events", str(events), "--port", "0",
                                       "--ready-file", str(ready), *extra], cwd=REPO, stdin=subprocess.DEVNULL))
    deadline = time.monotonic() + 60
    for name in FAKES:
        ready = OUT / f"{name}.url"
        while not ready.exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"demo: the {name} fake did not start")
            time.sleep(0.05)
        urls[name] = ready.read_text().strip()
    return urls, procs


def config(urls: dict[str, str]) -> dict:
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3 * 86400))
    sources = [
        {"name": "asana", "type": "asana", "start_time": start,
         "options": {"base_url": urls["asana"] + "/api/1.0", "token": "${DEMO_ASANA_TOKEN}", "workspace_gid": "12345"}},
        {"name": "incydr", "type": "incydr", "start_time": start,
         "options": {"base_url": urls["incydr"], "client_id": "key-1", "client_secret": "${DEMO_INCYDR_CLIENT_SECRET}"}},
        {"name": "agilicus", "type": "agilicus", "start_time": start,
         "options": {"base_url": urls["agilicus"], "token": "${DEMO_AGILICUS_TOKEN}"}},
        {"name": "agilicus-auth", "type": "agilicus_auth", "start_time": start,
         "options": {"base_url": urls["agilicus"], "token": "${DEMO_AGILICUS_TOKEN}"}},
        {"name": "pangea", "type": "pangea", "start_time": start,
         "options": {"base_url": urls["pangea"], "token": "${DEMO_PANGEA_TOKEN}"}},
    ]
    outputs = [{"name": f"file-{s['name']}", "type": "file", "sources": [s["name"]],
                "options": {"path": str(OUT / "events" / f"{s['name']}.jsonl")}} for s in sources]
    return {"state_dir": str(OUT / "state"), "sources": sources, "outputs": outputs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="events each fake serves (default 2000)")
    args = parser.parse_args()
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "events").mkdir(parents=True)
    urls, procs = start_fakes(args.events)
    try:
        import yaml

        path = OUT / "config.yaml"
        path.write_text(yaml.safe_dump(config(urls), sort_keys=False))
        path.chmod(0o600)
        env = {**os.environ, **CREDENTIALS}
        forwarder = [sys.executable, "-m", "forwarder_core"]
        print(f"demo: local vendor APIs started; config in {path}\n", flush=True)
        check = subprocess.run(forwarder + ["check", "-c", str(path)], env=env, cwd=REPO)
        if check.returncode:
            return check.returncode
        print("\ndemo: siem-forwarder once\n", flush=True)
        once = subprocess.run(forwarder + ["once", "-c", str(path)], env=env, cwd=REPO)
        print("\ndemo: events that arrived, per source")
        for source in config(urls)["sources"]:
            events_file = OUT / "events" / f"{source['name']}.jsonl"
            lines = events_file.read_text().splitlines() if events_file.exists() else []
            quarantine = OUT / "state" / "quarantine" / f"{source['name']}.jsonl"
            held = len(quarantine.read_text().splitlines()) if quarantine.exists() else 0
            print(f"  {source['name']:<14} {len(lines):>6} events in {events_file.relative_to(REPO)}"
                  + (f", {held} quarantined in {quarantine.relative_to(REPO)}" if held else ""))
            if source["type"] == "pangea" and lines:
                verdicts: dict[str, dict[str, int]] = {}
                for line in lines:
                    for check_name, verdict in json.loads(line).get("integrity", {}).items():
                        verdicts.setdefault(check_name, {}).setdefault(verdict, 0)
                        verdicts[check_name][verdict] += 1
                for check_name, counts in sorted(verdicts.items()):
                    shown = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
                    print(f"  {'':<14}   pangea {check_name} check on forwarded events: {shown}")
                if held:
                    reason = json.loads(quarantine.read_text().splitlines()[0])["reason"]
                    print(f"  {'':<14}   quarantined because: {reason[:160]}")
        print("\ndemo: a second run finds nothing new:\n", flush=True)
        again = subprocess.run(forwarder + ["once", "-c", str(path)], env=env, cwd=REPO)
        return once.returncode or again.returncode
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
