"""Property tests for the client's formats: windows, archives, Parquet, Retry-After, the budget."""

from __future__ import annotations

import asyncio
import gzip
import io
import itertools
import zipfile
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from swell.client import archive, parquet
from swell.client.budget import HOUR, Budget, PollSchedule, poll_interval
from swell.client.errors import CorruptArchive, UsageError
from swell.client.regions import base_url, may_send_credentials
from swell.client.retry import RetryPolicy, retry_after
from swell.client.windows import MAX_WINDOW_HOURS, Window, format_hour, parse_hour, plan
from tests.client.conftest import FakeClock
from tests.strategies import json_values

TMP = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)

hours = st.integers(min_value=0, max_value=2_000_000)


@given(
    hours, st.integers(0, 500), st.integers(1, 100), st.lists(st.tuples(hours, st.integers(0, 80)))
)
def test_plan_covers_exactly_the_hours_no_window_has(
    start: int, length: int, size: int, taken_raw: list[tuple[int, int]]
) -> None:
    end = start + length
    taken: list[Window] = []
    for first, span in sorted(taken_raw):  # non-overlapping "done" windows
        if not taken or first > taken[-1].end:
            taken.append(Window(first, first + span))
    windows = plan(start, end, size, taken)
    covered = [h for w in windows for h in range(w.start, w.end + 1)]
    assert covered == sorted(set(covered))  # in order, no hour twice
    assert all(w.hours <= size for w in windows)
    done = {h for w in taken for h in range(w.start, w.end + 1)}
    assert set(covered) == set(range(start, end + 1)) - done


@given(hours, st.integers(1, 10_000))
def test_halves_split_a_window_exactly(start: int, length: int) -> None:
    window = Window(start, start + length)
    first, second = window.halves()
    assert (first.start, first.end + 1, second.end) == (window.start, second.start, window.end)
    assert abs(first.hours - second.hours) <= 1


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)))
def test_hours_round_trip_through_their_text(when: datetime) -> None:
    hour = parse_hour(f"{when:%Y%m%dT%H}")
    assert format_hour(hour) == f"{when:%Y%m%dT%H}"
    assert Window.from_label(Window(hour, hour + 3).label) == Window(hour, hour + 3)
    assert parse_hour(f"{when:%Y%m%d}", end=True) == parse_hour(f"{when:%Y%m%d}") + 23


@pytest.mark.parametrize("bad", ["2024013", "20240132T00", "20240101T24", "２０２４０１０１", "x"])
def test_bad_hours_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError, match="invalid"):
        parse_hour(bad)


def test_a_window_is_at_most_365_days() -> None:
    assert plan(0, MAX_WINDOW_HOURS * 2, MAX_WINDOW_HOURS)[0].hours == MAX_WINDOW_HOURS
    with pytest.raises(UsageError, match="365 days"):
        plan(0, 10, MAX_WINDOW_HOURS + 1)


# -- archives --------------------------------------------------------------------------------------

lines = st.lists(
    st.binary(min_size=1, max_size=60).map(lambda b: b.replace(b"\n", b"_")),
    min_size=1,
    max_size=30,
)


def gzip_members(content: bytes, cuts: list[int]) -> bytes:
    """``content`` as a multi-member gzip, cut at ``cuts``."""
    points = sorted({c % (len(content) + 1) for c in cuts} | {0, len(content)})
    return b"".join(
        gzip.compress(content[a:b], 1) for a, b in itertools.pairwise(points) if b > a
    ) or gzip.compress(b"")


def build_zip(files: list[bytes], method: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=method) as zf:
        for n, data in enumerate(files):
            zf.writestr(f"1/1_2024-01-01_{n}#0.json.gz", data)
    return out.getvalue()


member_contents = st.lists(
    st.tuples(lines, st.booleans(), st.lists(st.integers(0, 5000))), min_size=1, max_size=4
)


@TMP
@given(member_contents, st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
def test_verify_accepts_good_archives_and_counts_their_records(
    tmp_path: Path, members: list[tuple[list[bytes], bool, list[int]]], method: int
) -> None:
    files, every_line = [], []
    for member_lines, newline, cuts in members:
        content = b"\n".join(member_lines) + (b"\n" if newline else b"")
        files.append(gzip_members(content, cuts))
        every_line.extend(member_lines)
    path = tmp_path / "a.zip"
    path.write_bytes(build_zip(files, method))
    sink = io.BytesIO()
    seen: list[bytes] = []
    checked = archive.verify(path, gz_sink=sink.write, line_sink=seen.extend)
    assert checked.events == len(every_line) == len(seen)
    assert seen == every_line
    # The extracted .json.gz is every record, one per line, whatever the members' endings.
    assert gzip.decompress(sink.getvalue()).split(b"\n")[:-1] == every_line
    assert [line for batch in archive.iter_lines(path) for line in batch] == every_line


@TMP
@given(member_contents, st.data())
def test_verify_refuses_any_flipped_byte_of_member_data(
    tmp_path: Path, members: list[tuple[list[bytes], bool, list[int]]], data: st.DataObject
) -> None:
    files = [gzip_members(b"\n".join(ls) + b"\n", cuts) for ls, _, cuts in members]
    body = bytearray(build_zip(files, zipfile.ZIP_STORED))
    with zipfile.ZipFile(io.BytesIO(bytes(body))) as zf:
        info = data.draw(st.sampled_from(zf.infolist()))
    start = info.header_offset + 30 + len(info.filename.encode())
    at = data.draw(st.integers(start, start + info.compress_size - 1))
    body[at] ^= data.draw(st.integers(1, 255))
    path = tmp_path / "a.zip"
    path.write_bytes(bytes(body))
    with pytest.raises(CorruptArchive):
        archive.verify(path)


def test_verify_refuses_cut_and_padded_archives(tmp_path: Path) -> None:
    good = build_zip([gzip.compress(b'{"a":1}\n' * 500)], zipfile.ZIP_STORED)
    path = tmp_path / "a.zip"
    for bad in (good[: len(good) // 2], good[:-1], b"", b"PK\x03\x04" + b"\0" * 100):
        path.write_bytes(bad)
        with pytest.raises(CorruptArchive):
            archive.verify(path)
    trailing = build_zip([gzip.compress(b'{"a":1}\n') + b"\0\0\0"], zipfile.ZIP_STORED)
    path.write_bytes(trailing)
    with pytest.raises(CorruptArchive, match="gzip"):
        archive.verify(path)
    # A local header that disagrees with the central directory (CRC field).
    body = bytearray(good)
    body[14] ^= 1
    path.write_bytes(bytes(body))
    with pytest.raises(CorruptArchive, match="local header"):
        archive.verify(path)


def test_a_member_whose_gzip_is_cut_is_refused(tmp_path: Path) -> None:
    member = gzip.compress(b'{"a":1}\n' * 100)
    path = tmp_path / "a.zip"
    path.write_bytes(build_zip([member[:-4]], zipfile.ZIP_STORED))
    with pytest.raises(CorruptArchive, match=r"cut off|bad gzip"):
        archive.verify(path)
    assert zlib.crc32(member)  # the member itself was fine


# -- Parquet ---------------------------------------------------------------------------------------

records = st.lists(
    st.dictionaries(
        st.sampled_from(["a", "b", "c", "uuid", "event_properties"]), json_values, min_size=1
    ),
    min_size=1,
    max_size=25,
)


@TMP
@given(records)
def test_parquet_reads_back_the_records_written(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    content = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    source = tmp_path / "a.zip"
    source.write_bytes(build_zip([gzip.compress(content)], zipfile.ZIP_STORED))
    target = tmp_path / "a.parquet"
    checked = parquet.convert(source, target)
    assert checked.events == len(rows)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    expected = [{k: r.get(k) for k in keys} for r in rows]
    assert list(parquet.read(target)) == expected


# -- Retry-After, backoff, regions -----------------------------------------------------------------


def test_retry_after_is_seconds_or_a_date() -> None:
    def answer(value: str) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value})

    now = datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert retry_after(answer("120")) == 120
    later = (now + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert retry_after(answer(later), now) == 90
    assert retry_after(answer("soon")) is None
    assert retry_after(httpx.Response(429)) is None


@given(st.integers(1, 40), st.floats(0.1, 5), st.floats(5, 120))
def test_backoff_is_capped_exponential_with_jitter(retry: int, base: float, cap: float) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=cap)
    ceiling = min(cap, base * 2 ** (retry - 1))
    assert ceiling / 2 <= policy.backoff(retry) <= ceiling
    assert policy.wait(retry, 3600.0) == 3600.0


def test_region_hosts_and_where_credentials_may_go() -> None:
    assert base_url(None, "us") == "https://amplitude.com"
    assert base_url(None, "EU") == "https://analytics.eu.amplitude.com"
    assert base_url("http://127.0.0.1:8080/", None) == "http://127.0.0.1:8080"
    for server, region in ((None, None), ("http://x", "us"), ("ftp://x", None), (None, "mars")):
        with pytest.raises(UsageError):
            base_url(server, region)
    us = "https://amplitude.com"
    none: frozenset[str] = frozenset()
    assert may_send_credentials(
        "https://analytics.amplitude.com/api/2/dsar/requests/1/outputs/0", us, none
    )
    assert not may_send_credentials("http://analytics.amplitude.com/x", us, none)
    assert not may_send_credentials("https://amplitude.com.evil.example/x", us, none)
    swell = "http://127.0.0.1:8080"
    assert may_send_credentials(
        "http://127.0.0.1:8080/api/2/dsar/requests/1/outputs/0", swell, none
    )
    assert not may_send_credentials("http://127.0.0.1:8081/x", swell, none)
    assert may_send_credentials("https://swell.example/x", swell, frozenset({"swell.example"}))


# -- the budget ------------------------------------------------------------------------------------


@given(
    st.lists(st.tuples(st.sampled_from([1, 8]), st.floats(0, 900)), max_size=120),
    st.integers(9, 200),
)
def test_the_budget_never_allows_more_than_it_has_in_an_hour(
    requests: list[tuple[int, float]], per_hour: int
) -> None:
    clock = FakeClock()
    budget = Budget(clock, per_hour)

    async def run() -> None:
        for cost, pause in requests:
            await clock.sleep(pause)
            await budget.spend(cost)

    asyncio.run(run())
    for t, _ in budget.log:
        assert sum(c for s, c in budget.log if t - HOUR < s <= t) <= per_hour


def test_polls_slow_with_age_and_share_the_budget() -> None:
    schedule = PollSchedule(first=1, fraction=0.1, longest=1800)
    one = {"per_hour": 14_400, "outstanding": 1, "reserved": 60}
    assert poll_interval(schedule, 0, **one) == 1
    assert poll_interval(schedule, 3600, **one) == 360
    assert poll_interval(schedule, 10**6, **one) == 1800
    # The seed's example: 40 outstanding requests, 8 + 52 reserved each: one poll per 12 s
    # fits the budget (300 polls an hour each)...
    many = {"per_hour": 14_400, "outstanding": 40, "reserved": 40 * 60}
    assert poll_interval(schedule, 0, **many) == pytest.approx(12)
    # ... and a crowded budget still polls each request at least once an hour.
    assert poll_interval(schedule, 0, per_hour=100, outstanding=500, reserved=10**6) == HOUR


def test_the_client_imports_nothing_of_the_server() -> None:
    import subprocess
    import sys

    code = (
        "import sys, swell.client, swell.client.cli, swell.client.parquet\n"
        "server = [m for m in sys.modules if m.split('.')[:2] in "
        "(['swell', 'store'], ['swell', 'backends'], ['swell', 'api'], ['swell', 'dsar'])]\n"
        "assert not server, server\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
