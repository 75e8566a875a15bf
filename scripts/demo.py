"""The built-in demo: start the local vendor fakes, write a config, run `siem-forwarder once`.

Each fake runs in its own process on a loopback port and speaks its vendor's real protocol
(auth, pagination, limits). One Pangea event is altered after it was hashed, so the demo also
shows the tamper check at work: that event lands in the quarantine, not in the output. Every
source also goes to a ``syslog_cef`` output whose local receiver writes what it got to a file,
so ``cef-check`` has real CEF to read.

The demo leaves ``demo-out/demo.env`` (the simulated vendors' credentials) beside the config,
and prints the everyday commands to try on it. With ``--serve`` the simulated vendor APIs keep
running until Ctrl-C, so those commands (``check --connect``, ``once``) have something to talk to.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

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


def _wait_for(ready: Path, name: str, deadline: float) -> str:
    while not ready.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: the {name} fake did not start")
        time.sleep(0.05)
    return ready.read_text().strip()


def start_fakes(out: Path, events: int) -> tuple[dict[str, str], list[subprocess.Popen[bytes]]]:
    procs, urls = [], {}
    for name, (module, extra) in FAKES.items():
        ready = out / f"{name}.url"
        procs.append(subprocess.Popen([sys.executable, "-m", module, "--events", str(events), "--port", "0",
                                       "--ready-file", str(ready), *extra], cwd=REPO, stdin=subprocess.DEVNULL))
    (out / "cef").mkdir()
    procs.append(subprocess.Popen([sys.executable, "-m", "tests.fakes.syslog_receiver", "--port", "0",
                                   "--out", str(out / "cef" / "received.log"), "--ready-file", str(out / "cef.addr")],
                                  cwd=REPO, stdin=subprocess.DEVNULL))
    deadline = time.monotonic() + 60
    for name in FAKES:
        urls[name] = _wait_for(out / f"{name}.url", name, deadline)
    urls["cef"] = _wait_for(out / "cef.addr", "syslog receiver", deadline)
    return urls, procs


def config(out: Path, urls: dict[str, str]) -> dict:
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
                "options": {"path": str(out / "events" / f"{s['name']}.jsonl")}} for s in sources]
    host, port = urls["cef"].rsplit(":", 1)
    outputs.append({"name": "cef", "type": "syslog_cef",
                    "options": {"host": host, "port": int(port), "protocol": "tcp", "framing": "newline"}})
    return {"state_dir": str(out / "state"), "sources": sources, "outputs": outputs}


def write_env(path: Path) -> None:
    """The demo's secrets, as ``export`` lines a shell can source (``. demo-out/demo.env``)."""
    path.write_text("# The simulated vendors' credentials: `. " + _shown(path) + "` before the commands below.\n"
                    + "".join(f"export {k}={shlex.quote(v)}\n" for k, v in CREDENTIALS.items()))
    path.chmod(0o600)


def _shown(path: Path) -> str:
    """``path`` as the user should type it from where they are."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path)


def commands(out: Path, serving: bool) -> str:
    cfg = _shown(out / "config.yaml")
    exe = _shown(Path(sys.executable).parent / "siem-forwarder")
    lines = [f". {_shown(out / 'demo.env')}                      # the demo's secrets (${{DEMO_...}} in the config)"]
    lines += [f"{exe} {cmd}" for cmd in (
        f"check -c {cfg}",
        f"check -c {cfg} --connect",
        f"once -c {cfg}",
        f"state -c {cfg}",
        f"quarantine -c {cfg}",
        f"cef-check -q {_shown(out / 'cef' / 'received.log')}",
    )]
    text = "\n".join("  " + line for line in lines)
    if serving:
        return ("demo: the simulated vendor APIs keep running until Ctrl-C. In another terminal, from "
                f"{_shown(REPO) if _shown(REPO) != '.' else 'this directory'}:\n\n{text}\n")
    return ("demo: the simulated vendor APIs have stopped; `./scripts/demo --serve` keeps them running for "
            f"`check --connect` and `once`. Everyday commands on the demo config:\n\n{text}\n")


def report(out: Path, urls: dict[str, str]) -> None:
    print("\ndemo: events that arrived, per source")
    for source in config(out, urls)["sources"]:
        events_file = out / "events" / f"{source['name']}.jsonl"
        lines = events_file.read_text().splitlines() if events_file.exists() else []
        quarantine = out / "state" / "quarantine" / f"{source['name']}.jsonl"
        held = len(quarantine.read_text().splitlines()) if quarantine.exists() else 0
        print(f"  {source['name']:<14} {len(lines):>6} events in {_shown(events_file)}"
              + (f", {held} quarantined in {_shown(quarantine)}" if held else ""))
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
    received = out / "cef" / "received.log"
    count = len(received.read_bytes().splitlines()) if received.exists() else 0
    print(f"  {'cef':<14} {count:>6} syslog CEF messages in {_shown(received)}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="events each fake serves (default 2000)")
    parser.add_argument("--serve", action="store_true",
                        help="keep the simulated vendor APIs running after the demo, until Ctrl-C")
    parser.add_argument("--out", type=Path, default=REPO / "demo-out", help="where the demo writes (default demo-out/)")
    args = parser.parse_args()
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    (out / "events").mkdir(parents=True)
    urls, procs = start_fakes(out, args.events)
    try:
        import yaml

        path = out / "config.yaml"
        path.write_text(yaml.safe_dump(config(out, urls), sort_keys=False))
        path.chmod(0o600)
        write_env(out / "demo.env")
        env = {**os.environ, **CREDENTIALS}
        forwarder = [sys.executable, "-m", "forwarder_core"]
        print(f"demo: local vendor APIs started; config in {_shown(path)}\n", flush=True)
        check = subprocess.run(forwarder + ["check", "-c", str(path)], env=env, cwd=REPO)
        if check.returncode:
            return check.returncode
        print("\ndemo: siem-forwarder once\n", flush=True)
        once = subprocess.run(forwarder + ["once", "-c", str(path)], env=env, cwd=REPO)
        report(out, urls)
        print("\ndemo: the CEF the syslog_cef output sent, checked with cef-check:\n", flush=True)
        subprocess.run(forwarder + ["cef-check", "-q", str(out / "cef" / "received.log")], env=env, cwd=REPO)
        print("\ndemo: a second run finds nothing new:\n", flush=True)
        again = subprocess.run(forwarder + ["once", "-c", str(path)], env=env, cwd=REPO)
        print("\n" + commands(out, args.serve), flush=True)
        if args.serve and not (once.returncode or again.returncode):
            # Ctrl-C, or a SIGTERM from a supervisor, ends the wait; the fakes are stopped below either way.
            signal.signal(signal.SIGINT, _interrupt)
            signal.signal(signal.SIGTERM, _interrupt)
            try:
                while all(proc.poll() is None for proc in procs):
                    time.sleep(0.5)
                print("demo: a simulated vendor API stopped; stopping the others", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print("\ndemo: stopping the simulated vendor APIs", flush=True)
        return once.returncode or again.returncode
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
