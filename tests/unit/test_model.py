"""Timestamp helpers: the hour a record is filed under."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, strategies as st

from swell.model import hour_of, hour_of_ts, parse_ts

_times = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1))


@given(times=st.lists(_times, min_size=1, max_size=50), sep=st.sampled_from([" ", "T"]))
def test_hour_of_ts_agrees_with_parsing_in_any_order(times: list[datetime], sep: str) -> None:
    """The per-hour memo gives what a full parse gives, whatever came before."""
    for t in times:
        text = t.strftime(f"%Y-%m-%d{sep}%H:%M:%S.%f")
        assert hour_of_ts(text) == hour_of(t.replace(tzinfo=UTC)) == hour_of(parse_ts(text))


@pytest.mark.parametrize(
    "text", ["2024-01-01 24:00:00.000000", "2024-02-30 10:00:00", "2024-01-01 1x:00:00"]
)
def test_hour_of_ts_rejects_what_is_not_a_time(text: str) -> None:
    for _ in range(2):  # a failure is not remembered as an hour
        with pytest.raises(ValueError):  # noqa: PT011 (any message)
            hour_of_ts(text)
