"""Any JSON value a vendor sends, through every built-in output at once: nothing lost, nothing twice.

Hypothesis draws JSON values (lone surrogates and control characters in keys and strings,
integers far beyond 64 bits, floats including ``1e400``/``-1e400``/``NaN`` as a vendor could spell
them, nesting), the hostile vendor (:mod:`tests.fakes.hostile_data`) serves a few events holding
them, and one ``once`` delivers to file, Splunk HEC, Elasticsearch ``_bulk`` and syslog CEF over
TCP. The promise: the poll succeeds, its ledger balances (the strict ledger raises otherwise), its
cursor moves to the end, every event is delivered or quarantined with a reason, and each output
took each delivered event exactly once or dead-lettered it with a reason. Derandomized, so CI
runs the same examples every time.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from forwarder_core.storage.checkpoint import CheckpointStore
from tests.fakes.hostile_data import HostileVendor, event_text
from tests.reliability.test_poison_events import INDEX, Sinks, follow, passed, run_once, sinks  # noqa: F401 - the fixture

TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF)
               | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"])
               | st.sampled_from("\x00\x1b\x7f\x85\u2028\ufeff|=\\\"\n"), max_size=8)
SCALARS = (st.none() | st.booleans() | TEXT | st.integers(min_value=-(2**80), max_value=2**80)
           | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([math.inf, -math.inf, 1e308, 5e-324]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                      max_leaves=12)


def vendor_json(value: Any) -> str:
    """``value`` as a vendor's JSON text: lone surrogates escaped, infinities as ``1e400``."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "1e400" if value > 0 else "-1e400"
        return repr(value)
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k) + ":" + vendor_json(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(map(vendor_json, value)) + "]"
    return json.dumps(value)


class Examples:
    count = 0


@pytest.fixture
def examples() -> type[Examples]:
    Examples.count = 0
    return Examples


@settings(max_examples=25, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(VALUES, min_size=1, max_size=4))
@example(["\ud800"]).via("the issue's poison event")
@example([{"\udc80": [2**70, math.inf, "\x00"]}, -math.inf, math.nan]).via("every kind at once")
def test_any_json_value_is_delivered_or_set_aside_once_through_every_output(
        tmp_path: Path, sinks: Sinks, monkeypatch: pytest.MonkeyPatch, examples: type[Examples], values: list[Any]) -> None:  # noqa: F811 - the fixture
    examples.count += 1
    ids = [f"prop{examples.count:04d}e{k}" for k in range(len(values))]
    texts = [event_text(0, vendor_json(v)).replace('"poison-0"', json.dumps(i)) for v, i in zip(values, ids)]
    state = Path(tempfile.mkdtemp(dir=tmp_path))
    with HostileVendor("events", texts, page_size=2) as vendor:
        run = run_once(tmp_path, follow(vendor), sinks.outputs(), monkeypatch, state_dir=str(state))

    result = run.result
    assert result.ok and result.done, result.error
    assert CheckpointStore(str(state)).get("hostile").cursor == str(len(texts))  # the cursor moved to the end
    quarantined = {r["id"]: r for r in run.set_aside("quarantine")}
    assert all(r["reason"] for r in quarantined.values())
    delivered = [i for i in ids if i not in quarantined]
    assert passed(result) == len(delivered) and result.quarantined == len(quarantined)
    assert set(quarantined) <= set(ids)

    dead = run.set_aside("dead-letter")
    assert all(r["reason"] and r["id"] in delivered for r in dead)
    file_ids = [json.loads(line.decode("utf-8"))["id"] for line in sinks.file.read_bytes().split(b"\n") if line]
    es_ids = [d["event"]["id"] for d in sinks.es.documents(INDEX).values()] if delivered else []
    cef = sinks.syslog_lines()
    for event_id in delivered:
        refused = {r["output"] for r in dead if r["id"] == event_id}
        taken = {"file": file_ids.count(event_id), "hec": sinks.hec.event_ids.count(event_id),
                 "es": es_ids.count(event_id),
                 "cef": sum(f"externalId={event_id}".encode() in line for line in cef)}
        for output, count in taken.items():
            assert count + (output in refused) == 1, (event_id, output, count, refused)
