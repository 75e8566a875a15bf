"""The shared time helpers: parse_ms, the one string-to-epoch-milliseconds conversion, is exact."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from forwarder_core.times import parse_ms

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def by_datetime(timestamp: str) -> int:
    """What the HEC output computed on its own before: fromisoformat, minus the epoch, whole ms."""
    return (datetime.fromisoformat(timestamp) - _EPOCH) // timedelta(milliseconds=1)


TIMES = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59))
FRACTIONS = st.one_of(st.just(""), st.integers(1, 9).flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n)))


@given(TIMES, FRACTIONS)
@example(datetime(1969, 12, 31, 23, 59, 59), "5")
@example(datetime(2024, 2, 29, 0, 0, 0), "999999999")
def test_parse_ms_of_the_normalized_form_is_the_datetime_answer(when: datetime, fraction: str) -> None:
    timestamp = when.isoformat(timespec="seconds") + ("." + fraction if fraction else "") + "Z"
    assert parse_ms(timestamp) == by_datetime(timestamp)


@pytest.mark.parametrize("timestamp", ["2024-01-01T01:00:00.250+01:00", "1969-12-31T23:59:59.500+00:00",
                                       "2024-01-01 00:00:00.001Z"])
def test_other_rfc3339_forms_take_the_slow_path_to_the_same_answer(timestamp: str) -> None:
    assert parse_ms(timestamp) == by_datetime(timestamp)


@pytest.mark.parametrize("timestamp", ["2024-02-30T00:00:00Z", "2024-01-01T24:00:00Z", "2024-01-01T00:60:00.000Z",
                                       "not a time at allZ"])
def test_what_is_not_a_time_is_refused(timestamp: str) -> None:
    with pytest.raises(ValueError):
        parse_ms(timestamp)
