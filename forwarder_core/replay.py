"""``siem-forwarder quarantine list|replay``: events set aside, counted, and sent again once fixed.

``list`` groups each quarantine file (per source) and dead-letter file (per output) by reason.
``replay`` sends the records again after their cause was fixed (a schema or plugin upgraded,
a mapping repaired in the SIEM): a quarantined record's ``raw`` goes through its source's
``normalize`` and the schema again, then to every output the source is routed to; a dead letter
goes back to the output that refused it. Only what was delivered leaves its file, which is
rewritten atomically (temp file, fsync, rename), so a replay killed half-way loses nothing and
at worst sends some records twice. What still fails stays, with the reason it failed this time.

Replay takes the state directory's lock: stop the daemon first, so the two never append to and
rewrite the same file at once.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from forwarder_core.app import instantiate
from forwarder_core.config import Config
from forwarder_core.delivery import OutputRunner
from forwarder_core.errors import QuarantineEvent, StateError
from forwarder_core.metrics import Metrics
from forwarder_core.plugins import PluginSet
from forwarder_core.schema import EventValidator
from forwarder_core.secrets import redact
from forwarder_core.setaside import DEAD_LETTER, QUARANTINE, SetAside
from forwarder_core.statedir import StateLock, ensure_state_dir, secure_file

log = logging.getLogger("siem_forwarder.replay")
BATCH = 500
EX_OK, EX_FAILED, EX_IOERR, EX_TEMPFAIL = 0, 1, 74, 75


@dataclass
class Record:
    line: str
    data: dict[str, Any] | None
    """The decoded record; None when the line is not a JSON object (kept as it is, never replayed)."""


@dataclass
class SetAsideFile:
    kind: str  # QUARANTINE or DEAD_LETTER
    name: str  # the source (quarantine) or output (dead letter) the file is named after
    path: str
    records: list[Record] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.kind}/{os.path.basename(self.path)}"


def read_file(kind: str, path: str) -> SetAsideFile:
    name = os.path.basename(path)[: -len(".jsonl")]
    out = SetAsideFile(kind, name, path)
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError:
                data = None
            out.records.append(Record(line if line.endswith("\n") else line + "\n",
                                      data if isinstance(data, dict) else None))
    if out.records and out.records[0].data is not None:
        owner = out.records[0].data.get("output" if kind == DEAD_LETTER else "source")
        if isinstance(owner, str) and owner:
            out.name = owner  # the file name is a sanitized form of it
    return out


def set_aside_files(state_dir: str, kinds: Iterable[str]) -> list[SetAsideFile]:
    files = []
    for kind in kinds:
        directory = os.path.join(state_dir, kind)
        if not os.path.isdir(directory):
            continue
        for entry in sorted(os.listdir(directory)):
            if entry.endswith(".jsonl"):
                files.append(read_file(kind, os.path.join(directory, entry)))
    return files


def rewrite(path: str, lines: list[str]) -> None:
    """Replace ``path`` with ``lines`` atomically (or remove it when none are left)."""
    if not lines:
        os.unlink(path)
    else:
        tmp = f"{path}.replay-{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, "".join(lines).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        secure_file(path)
    dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _return_ownership(state_dir: str) -> None:
    """Run as root (to read root-only credentials), replay must not leave files the service user
    can no longer append to: what it wrote goes back to the state directory's owner."""
    if os.geteuid() != 0:
        return
    owner = os.stat(state_dir)
    if owner.st_uid == 0:
        return
    for kind in (QUARANTINE, DEAD_LETTER):
        directory = os.path.join(state_dir, kind)
        if not os.path.isdir(directory):
            continue
        for path in [directory, *(os.path.join(directory, f) for f in os.listdir(directory))]:
            st = os.lstat(path)
            if (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
                os.lchown(path, owner.st_uid, owner.st_gid)


# ---------------------------------------------------------------------------------------- list


def list_command(config: Config, sources: list[str] | None, outputs: list[str] | None, out: Any) -> int:
    files = _selected(set_aside_files(config.state_dir, (QUARANTINE, DEAD_LETTER)), sources, outputs)
    if not files:
        print(f"nothing set aside in {config.state_dir}", file=out)
        return EX_OK
    for f in files:
        reasons: Counter[str] = Counter()
        per_source: Counter[str] = Counter()
        for rec in f.records:
            if rec.data is None:
                reasons["(unreadable line)"] += 1
                continue
            reasons[_group(str(rec.data.get("reason", "(no reason)")))] += 1
            per_source[str(rec.data.get("source", "?"))] += 1
        what = "source" if f.kind == QUARANTINE else "output"
        from_sources = (" from " + ", ".join(f"{s} ({n})" for s, n in sorted(per_source.items()))
                        if f.kind == DEAD_LETTER and per_source else "")
        print(f"{f.label}: {what} {f.name}: {len(f.records)} record(s){from_sources}", file=out)
        for reason, count in reasons.most_common():
            print(f"  {count:>7}  {reason}", file=out)
    return EX_OK


_EVENT_SPECIFIC = (
    (re.compile(r"\b[0-9a-fA-F]{16,}\b"), "<id>"),  # document and event ids
    (re.compile(r"'[^']{0,200}' (?=is not |is too |does not )"), "<value> "),  # the value a schema refused
)


def _short(reason: str) -> str:
    reason = redact(" ".join(reason.split()))
    return reason if len(reason) <= 200 else reason[:199] + "…"


def _group(reason: str) -> str:
    """The reason without what is specific to one event, so that alike records count together."""
    for pattern, stand_in in _EVENT_SPECIFIC:
        reason = pattern.sub(stand_in, reason)
    return _short(reason)


def _selected(files: list[SetAsideFile], sources: list[str] | None, outputs: list[str] | None) -> list[SetAsideFile]:
    chosen = []
    for f in files:
        if f.kind == QUARANTINE and sources and f.name not in sources:
            continue
        if f.kind == DEAD_LETTER and outputs and f.name not in outputs:
            continue
        if f.kind == DEAD_LETTER and sources:
            if not any(r.data is not None and r.data.get("source") in sources for r in f.records):
                continue
        chosen.append(f)
    return chosen


# ---------------------------------------------------------------------------------------- replay


class _Collect:
    """Stands in for the dead-letter file while dead letters are replayed: what an output refuses
    again is kept in memory and stays in the file being rewritten, never appended behind its back."""

    def __init__(self, path: str):
        self._path = path
        self.records: list[dict[str, Any]] = []

    def path(self, name: str) -> str:
        return self._path

    def write(self, name: str, records: Iterable[dict[str, Any]]) -> int:
        before = len(self.records)
        self.records.extend(records)
        return len(self.records) - before


class Replayer:
    """Holds the plugins built for one replay and sends records through them."""

    def __init__(self, config: Config, plugins: PluginSet, out: Any):
        self.config = config
        self.plugins = plugins
        self.out = out
        self.metrics = Metrics()
        self.stop = threading.Event()
        self.state_dir = config.state_dir
        self.give_up_after = float(config.setting("delivery", "once_give_up_after", 120))
        self.max_backoff = float(config.setting("delivery", "max_backoff", 300))
        self._sources: dict[str, Any] = {}
        self._validators: dict[str, EventValidator] = {}
        self._outputs: dict[str, Any] = {}
        self._refusals_shown: set[str] = set()
        self.dead_letter = SetAside(self.state_dir, DEAD_LETTER)

    # -------------------------------------------------------------- components, built on first use

    def source(self, name: str) -> Any:
        if name not in self._sources:
            comp = next((c for c in self.config.sources if c.name == name), None)
            self._sources[name] = None if comp is None else instantiate(
                self.plugins.sources, comp, self.state_dir, self.metrics, self.stop)
            if comp is not None:
                self._validators[name] = EventValidator(self._sources[name].event_schema)
        return self._sources[name]

    def output(self, name: str, dead_letter: Any) -> OutputRunner | None:
        comp = next((c for c in self.config.outputs if c.name == name), None)
        if comp is None:
            return None
        if name not in self._outputs:
            self._outputs[name] = instantiate(self.plugins.outputs, comp, self.state_dir, self.metrics, self.stop)
        return OutputRunner(self._outputs[name], dead_letter, self.metrics, self.stop, max_backoff=self.max_backoff)

    def routes(self, source_name: str, only: list[str] | None) -> list[str]:
        names = []
        for comp in self.config.outputs:
            if comp.sources is not None and source_name not in comp.sources:
                continue
            if only and comp.name not in only:
                continue
            names.append(comp.name)
        return names

    def close(self) -> None:
        for obj in [*self._sources.values(), *self._outputs.values()]:
            if obj is not None:
                try:
                    obj.close()
                except Exception as exc:
                    log.warning("closing %s failed: %s", getattr(obj, "name", "?"), redact(str(exc)))

    # -------------------------------------------------------------- one record

    def prepare(self, source_name: str, rec: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """The record's raw event normalized and valid again, or None and why not."""
        source = self.source(source_name)
        if source is None:
            return None, f"source {source_name!r} is not in the config"
        refusal = getattr(source, "replay_refusal", None)
        if refusal:
            if source_name not in self._refusals_shown:
                self._refusals_shown.add(source_name)
                print(f"source {source_name} ({source.type_name}): {refusal}", file=self.out)
            return None, f"source {source_name} ({source.type_name}) is not replayed (see above)"
        try:
            event = source.normalize_as(rec.get("raw"), rec.get("id") if isinstance(rec.get("id"), str) else None)
        except QuarantineEvent as exc:
            return None, exc.reason
        except Exception as exc:
            return None, f"normalize failed: {type(exc).__name__}: {exc}"
        validator = self._validators[source_name]
        if not validator.is_valid(event):
            return None, validator.explain(event)
        return event, None

    def transform(self, source_name: str, ready: list[tuple[Record, dict[str, Any]]],
                  why: Counter[str], kept: list[str]) -> tuple[list[tuple[Record, dict[str, Any]]], int]:
        """Plugins' ``forwarder_transform_events``, as the pipeline applies it: (still to send, filtered out).

        An event a plugin filters out is handled, as it would have been the first time; one a
        plugin breaks stays set aside with the reason."""
        hook = self.plugins.pm.hook.forwarder_transform_events
        if not ready or not hook.get_hookimpls():
            return ready, 0
        keep: set[int] | None = None
        for returned in hook(source_name=source_name, events=[event for _, event in ready]):
            if returned is not None:  # a plugin keeps the events (the same dicts) it returns
                ids = {id(e) for e in returned}
                keep = ids if keep is None else keep & ids
        validator = self._validators[source_name]
        out: list[tuple[Record, dict[str, Any]]] = []
        filtered = 0
        for rec, event in ready:
            if keep is not None and id(event) not in keep:
                filtered += 1
            elif validator.is_valid(event):
                out.append((rec, event))
            else:
                reason = "after a plugin's forwarder_transform_events: " + validator.explain(event)
                kept.append(_with_reason(rec, reason, source_name))
                why[_group(reason)] += 1
        return out, filtered

    # -------------------------------------------------------------- files

    def replay_quarantine(self, f: SetAsideFile, only_outputs: list[str] | None) -> tuple[int, Counter[str]]:
        """Send a source's quarantined records to its routed outputs; rewrite the file; (delivered, why kept)."""
        kept: list[str] = []
        why: Counter[str] = Counter()
        ready: list[tuple[Record, dict[str, Any]]] = []
        for rec in f.records:
            if rec.data is None:
                kept.append(rec.line)
                why["(unreadable line)"] += 1
                continue
            event, problem = self.prepare(f.name, rec.data)
            if event is None:
                kept.append(_with_reason(rec, problem or "", f.name))
                why[_group(problem or "")] += 1
                continue
            ready.append((rec, event))
        ready, filtered = self.transform(f.name, ready, why, kept)
        targets = self.routes(f.name, only_outputs)
        if ready and not targets:
            why[f"no output receives source {f.name}"] += len(ready)
            kept.extend(rec.line for rec, _ in ready)
            ready = []
        delivered = 0
        runners = [r for name in targets if (r := self.output(name, self.dead_letter)) is not None]
        for start in range(0, len(ready), BATCH):
            chunk = ready[start:start + BATCH]
            events = [event for _, event in chunk]
            failed = [r for r in runners if not r.deliver(events, f.name, time.monotonic() + self.give_up_after)]
            if failed:
                reason = f"output {failed[0].name} kept failing: {failed[0].reason or 'gave up'}"
                kept.extend(rec.line for rec, _ in ready[start:])
                why[_group(reason)] += len(ready) - start
                break
            delivered += len(chunk)
        rewrite(f.path, kept)
        return delivered + filtered, why

    def replay_dead_letters(self, f: SetAsideFile, only_sources: list[str] | None) -> tuple[int, Counter[str]]:
        """Send an output's dead letters back to it; rewrite the file; (delivered, why kept)."""
        kept: list[str] = []
        why: Counter[str] = Counter()
        by_source: dict[str, list[tuple[Record, dict[str, Any]]]] = {}
        for rec in f.records:
            source_name = rec.data.get("source") if rec.data is not None else None
            if rec.data is None or not isinstance(source_name, str):
                kept.append(rec.line)
                why["(unreadable line)"] += 1
                continue
            if only_sources and source_name not in only_sources:
                kept.append(rec.line)
                continue
            event, problem = self.prepare(source_name, rec.data)
            if event is None:
                kept.append(_with_reason(rec, problem or "", source_name))
                why[_group(problem or "")] += 1
                continue
            by_source.setdefault(source_name, []).append((rec, event))
        refused_again = _Collect(f.path)
        runner = self.output(f.name, refused_again)
        delivered = 0
        for source_name in list(by_source):
            by_source[source_name], filtered = self.transform(source_name, by_source[source_name], why, kept)
            delivered += filtered
        for source_name, ready in by_source.items():
            if runner is None:
                kept.extend(rec.line for rec, _ in ready)
                why[f"output {f.name!r} is not in the config"] += len(ready)
                continue
            for start in range(0, len(ready), BATCH):
                chunk = ready[start:start + BATCH]
                before = len(refused_again.records)
                if not runner.deliver([e for _, e in chunk], source_name, time.monotonic() + self.give_up_after):
                    kept.extend(rec.line for rec, _ in ready[start:])
                    why[_group(f"output {f.name} kept failing: {runner.reason or 'gave up'}")] += len(ready) - start
                    break
                again = refused_again.records[before:]
                delivered += len(chunk) - len(again)
        for rec in refused_again.records:
            kept.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":"), default=str) + "\n")
            why[_group(str(rec.get("reason", "")))] += 1
        rewrite(f.path, kept)
        return delivered, why


def _with_reason(rec: Record, reason: str, source: str) -> str:
    """The record again, its reason replaced by why it failed this time (the original line if unchanged
    or if the record was not tried at all)."""
    assert rec.data is not None
    if not reason or rec.data.get("reason") == reason or reason.endswith("is not replayed (see above)"):
        return rec.line
    data = dict(rec.data, reason=redact(reason), time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"


def replay_command(config: Config, plugins: PluginSet, *, sources: list[str] | None, outputs: list[str] | None,
                   dead_letter: bool, out: Any) -> int:
    try:
        state_dir = ensure_state_dir(config.state_dir)
        lock = StateLock(state_dir).acquire()
    except StateError as exc:
        print(f"siem-forwarder: {exc}; stop it before replaying", file=out)
        return EX_TEMPFAIL
    replayer = Replayer(config, plugins, out)
    total_sent = total_kept = 0
    try:
        kind = DEAD_LETTER if dead_letter else QUARANTINE
        files = _selected(set_aside_files(state_dir, (kind,)), sources, outputs if dead_letter else None)
        if not files:
            print(f"nothing to replay in {os.path.join(state_dir, kind)}", file=out)
            return EX_OK
        for f in files:
            if dead_letter:
                sent, why = replayer.replay_dead_letters(f, sources)
            else:
                sent, why = replayer.replay_quarantine(f, outputs)
            kept = sum(why.values())
            total_sent += sent
            total_kept += kept
            print(f"{f.label}: {sent} event(s) delivered and removed, {kept} kept", file=out)
            for reason, count in why.most_common():
                print(f"  {count:>7}  kept: {reason}", file=out)
    finally:
        replayer.stop.set()
        replayer.close()
        _return_ownership(state_dir)
        lock.release()
    print(f"replayed {total_sent} event(s); {total_kept} still set aside", file=out)
    return EX_OK if total_kept == 0 else EX_FAILED
