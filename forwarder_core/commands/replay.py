"""``siem-forwarder quarantine list|replay``: events set aside, counted, and sent again once fixed.

``list`` groups each quarantine file (per source) and dead-letter file (per output) by reason.
``replay`` sends the records again after their cause was fixed (a schema or plugin upgraded,
a mapping repaired in the SIEM): a quarantined record's ``raw`` goes through the pipeline's own
prepare step (:mod:`forwarder_core.engine.prepare`: raw schema, ``normalize``, event schema, the
plugins' transforms), then to every output the source is routed to; a dead letter
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
import threading
import time
from collections import Counter
from typing import Any

from forwarder_core.config.loader import Config
from forwarder_core.engine.delivery import OutputRunner
from forwarder_core.engine.prepare import Preparer
from forwarder_core.errors import StateError
from forwarder_core.metrics import Metrics
from forwarder_core.plugin.base import Output, Source
from forwarder_core.plugin.manager import PluginSet
from forwarder_core.plugin.registry import instantiate
from forwarder_core.secrets import redact
from forwarder_core.storage.setaside import DEAD_LETTER, QUARANTINE, SetAside
from forwarder_core.storage.setaside_files import (
    Record,
    SetAsideFile,
    group_reason,
    rewrite,
    selected,
    set_aside_files,
)
from forwarder_core.storage.statedir import LockHeld, StateLock, ensure_state_dir

log = logging.getLogger("siem_forwarder.replay")
BATCH = 500
EX_OK, EX_FAILED, EX_IOERR, EX_TEMPFAIL = 0, 1, 74, 75
Ready = list[tuple[Record, dict[str, Any]]]
"""Records whose events passed the prepare step, each with its event."""


def list_command(config: Config, sources: list[str] | None, outputs: list[str] | None, out: Any,
                 dead_letter_only: bool = False) -> int:
    kinds = (DEAD_LETTER,) if dead_letter_only else (QUARANTINE, DEAD_LETTER)
    try:
        if os.path.isdir(config.state_dir):
            ensure_state_dir(config.state_dir)  # as its owner, where root runs it
        found = set_aside_files(config.state_dir, kinds)
    except StateError as exc:
        print(f"siem-forwarder: {exc}", file=out)
        return EX_IOERR
    files = selected(found, sources, outputs)
    if not files:
        print(f"nothing {'dead-lettered' if dead_letter_only else 'set aside'} in {config.state_dir}", file=out)
        return EX_OK
    for f in files:
        reasons: Counter[str] = Counter()
        per_source: Counter[str] = Counter()
        for rec in f.records:
            if rec.data is None:
                reasons["(unreadable line)"] += 1
                continue
            reasons[group_reason(str(rec.data.get("reason", "(no reason)")))] += 1
            per_source[str(rec.data.get("source", "?"))] += 1
        what = "source" if f.kind == QUARANTINE else "output"
        from_sources = (" from " + ", ".join(f"{s} ({n})" for s, n in sorted(per_source.items()))
                        if f.kind == DEAD_LETTER and per_source else "")
        print(f"{f.label}: {what} {f.name}: {len(f.records)} record(s){from_sources}", file=out)
        for reason, count in reasons.most_common():
            print(f"  {count:>7}  {reason}", file=out)
    return EX_OK


class _Collect:
    """Stands in for the dead-letter file while dead letters are replayed: what an output refuses
    again is kept in memory and stays in the file being rewritten, never appended behind its back."""

    def __init__(self, path: str):
        self._path = path
        self.records: list[dict[str, Any]] = []

    def path(self, name: str) -> str:
        return self._path

    def write(self, name: str, records: list[dict[str, Any]]) -> int:
        self.records.extend(records)
        return len(records)


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
        hooks = plugins.hooks
        self._transform = hooks.forwarder_transform_events if hooks.implemented("forwarder_transform_events") else None
        self._preparers: dict[str, Preparer | None] = {}
        self._outputs: dict[str, Output] = {}
        self._refusals_shown: set[str] = set()
        self.dead_letter = SetAside(self.state_dir, DEAD_LETTER)

    # -------------------------------------------------------------- components, built on first use

    def preparer(self, name: str) -> Preparer | None:
        if name not in self._preparers:
            comp = next((c for c in self.config.sources if c.name == name), None)
            self._preparers[name] = None if comp is None else Preparer(
                instantiate(self.plugins.sources, comp, self.state_dir, self.metrics, self.stop), self._transform)
        return self._preparers[name]

    def output(self, name: str, dead_letter: Any) -> OutputRunner | None:
        comp = next((c for c in self.config.outputs if c.name == name), None)
        if comp is None:
            return None
        if name not in self._outputs:
            self._outputs[name] = instantiate(self.plugins.outputs, comp, self.state_dir, self.metrics, self.stop)
        return OutputRunner(self._outputs[name], dead_letter, self.metrics, self.stop, max_backoff=self.max_backoff)

    def routes(self, source_name: str, only: list[str] | None) -> list[str]:
        return [c.name for c in self.config.outputs
                if (c.sources is None or source_name in c.sources) and (not only or c.name in only)]

    def close(self) -> None:
        components: list[Source | Output] = [p.source for p in self._preparers.values() if p is not None]
        for obj in [*components, *self._outputs.values()]:
            try:
                obj.close()
            except Exception as exc:
                log.warning("closing %s failed: %s", obj.name, redact(str(exc)))

    # -------------------------------------------------------------- records of one source

    def prepare(self, source_name: str, recs: list[Record], why: Counter[str], kept: list[str]) -> tuple[Ready, int]:
        """The records' raw events through the pipeline's prepare step: (ready to send, filtered out).

        What fails again stays set aside (in ``kept``) with the reason it failed this time; an
        event a plugin filters out is handled, as it would have been the first time."""
        preparer = self.preparer(source_name)
        refusal = preparer.source.replay_refusal if preparer is not None else None
        if preparer is None or refusal:
            if preparer is None:
                reason = f"source {source_name!r} is not in the config"
            else:
                reason = f"source {source_name} ({preparer.source.type_name}) is not replayed (see above)"
                if source_name not in self._refusals_shown:
                    self._refusals_shown.add(source_name)
                    print(f"source {source_name} ({preparer.source.type_name}): {refusal}", file=self.out)
            kept.extend(_with_reason(rec, reason) for rec in recs)
            why[group_reason(reason)] += len(recs)
            return [], 0
        datas = [rec.data or {} for rec in recs]
        # The recorded id is the occurrence id the event was set aside under: replay keeps it.
        prepared = preparer.prepare([d.get("raw") for d in datas],
                                    [d.get("id") if isinstance(d.get("id"), str) else None for d in datas])
        for rejected in prepared.rejected:
            kept.append(_with_reason(recs[rejected.index], rejected.reason))
            why[group_reason(rejected.reason)] += 1
        return [(recs[i], event) for event, i in zip(prepared.events, prepared.origins)], prepared.filtered

    def send(self, runners: list[OutputRunner], source_name: str, ready: Ready, why: Counter[str],
             kept: list[str]) -> int:
        """Deliver ``ready`` in batches to every runner; on a failure keep the rest. Returns how many were sent."""
        delivered = 0
        for start in range(0, len(ready), BATCH):
            chunk = ready[start:start + BATCH]
            failed = [r for r in runners
                      if not r.deliver([e for _, e in chunk], source_name, time.monotonic() + self.give_up_after)]
            if failed:
                kept.extend(rec.line for rec, _ in ready[start:])
                why[group_reason(f"output {failed[0].name} kept failing: {failed[0].reason or 'gave up'}")] += (
                    len(ready) - start)
                break
            delivered += len(chunk)
        return delivered

    # -------------------------------------------------------------- files

    def replay_quarantine(self, f: SetAsideFile, only_outputs: list[str] | None) -> tuple[int, Counter[str]]:
        """Send a source's quarantined records to its routed outputs; rewrite the file; (handled, why kept)."""
        kept: list[str] = []
        why: Counter[str] = Counter()
        readable = [rec for rec in f.records if rec.data is not None]
        _keep_unreadable(f.records, kept, why)
        ready, filtered = self.prepare(f.name, readable, why, kept)
        targets = self.routes(f.name, only_outputs)
        if ready and not targets:
            why[f"no output receives source {f.name}"] += len(ready)
            kept.extend(rec.line for rec, _ in ready)
            ready = []
        runners = [r for name in targets if (r := self.output(name, self.dead_letter)) is not None]
        delivered = self.send(runners, f.name, ready, why, kept)
        rewrite(self.state_dir, f.path, kept)
        return delivered + filtered, why

    def replay_dead_letters(self, f: SetAsideFile, only_sources: list[str] | None) -> tuple[int, Counter[str]]:
        """Send an output's dead letters back to it; rewrite the file; (handled, why kept)."""
        kept: list[str] = []
        why: Counter[str] = Counter()
        by_source: dict[str, list[Record]] = {}
        for rec in f.records:
            source_name = rec.data.get("source") if rec.data is not None else None
            if not isinstance(source_name, str):
                kept.append(rec.line)
                why["(unreadable line)"] += 1
            elif only_sources and source_name not in only_sources:
                kept.append(rec.line)
            else:
                by_source.setdefault(source_name, []).append(rec)
        refused_again = _Collect(f.path)
        runner = self.output(f.name, refused_again)
        delivered = 0
        for source_name, recs in by_source.items():
            ready, filtered = self.prepare(source_name, recs, why, kept)
            delivered += filtered
            if runner is None:
                kept.extend(rec.line for rec, _ in ready)
                why[f"output {f.name!r} is not in the config"] += len(ready)
                continue
            delivered += self.send([runner], source_name, ready, why, kept)
        delivered -= len(refused_again.records)
        for record in refused_again.records:
            kept.append(json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n")
            why[group_reason(str(record.get("reason", "")))] += 1
        rewrite(self.state_dir, f.path, kept)
        return delivered, why


def _keep_unreadable(records: list[Record], kept: list[str], why: Counter[str]) -> None:
    for rec in records:
        if rec.data is None:
            kept.append(rec.line)
            why["(unreadable line)"] += 1


def _with_reason(rec: Record, reason: str) -> str:
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
    except LockHeld as exc:
        print(f"siem-forwarder: {exc}; stop it before replaying", file=out)
        return EX_TEMPFAIL
    except StateError as exc:
        print(f"siem-forwarder: {exc}", file=out)
        return EX_IOERR
    try:
        replayer = Replayer(config, plugins, out)
    except StateError as exc:
        lock.release()
        print(f"siem-forwarder: {exc}", file=out)
        return EX_IOERR
    try:
        return _replay_files(replayer, state_dir, sources, outputs, dead_letter, out)
    except StateError as exc:
        print(f"siem-forwarder: {exc}", file=out)
        return EX_IOERR
    finally:
        replayer.stop.set()
        replayer.close()
        lock.release()


def _replay_files(replayer: Replayer, state_dir: str, sources: list[str] | None, outputs: list[str] | None,
                  dead_letter: bool, out: Any) -> int:
    total_sent = total_kept = 0
    kind = DEAD_LETTER if dead_letter else QUARANTINE
    files = selected(set_aside_files(state_dir, (kind,)), sources, outputs if dead_letter else None)
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
    print(f"replayed {total_sent} event(s); {total_kept} still set aside", file=out)
    return EX_OK if total_kept == 0 else EX_FAILED
