"""The insert_id dedup window: compact in memory, capped, saved per hour, reloaded at start-up."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
from hypothesis import given, settings, strategies as st

from swell.backends.sqlite import SQLiteMetadata
from swell.dedup import HOUR_MS, DedupWindow, pack_keys
from swell.identity import DEDUP_WINDOW_MS, Identity
from swell.model import DedupChunk, StateChanges
from swell.settings import Settings
from swell.store import Store
from tests.conftest import crash, http_context

DAY_MS = 86_400_000


def _event(insert_id: str, device: str = "device-1") -> dict[str, object]:
    return {"device_id": device, "event_type": "e", "insert_id": insert_id}


async def _ingest(store: Store, events: list[dict[str, object]], project: int = 1) -> int:
    return await store.ingest(events, http_context(project))


async def test_a_duplicate_is_dropped_after_a_restart(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=tmp_path)
    store = await Store.open(settings)
    assert await _ingest(store, [_event("a"), _event("b")]) == 2
    await store.aclose()

    store = await Store.open(settings)
    try:
        assert store.identity.dedup_window_size == 2
        assert await _ingest(store, [_event("a"), _event("c"), _event("b", "device-2")]) == 2
        # Another project has its own window.
        assert await _ingest(store, [_event("a")], project=2) == 1
    finally:
        await store.aclose()


async def test_a_duplicate_is_dropped_after_a_crash(tmp_path: Path) -> None:
    """Without a checkpoint, the window comes back from the log."""
    settings = Settings.from_env({}, data_dir=tmp_path)
    store = await Store.open(settings)
    assert await _ingest(store, [_event("x")]) == 1
    await crash(store)  # the process dies: no seal, no checkpoint

    store = await Store.open(settings)
    try:
        assert await _ingest(store, [_event("x"), _event("y")]) == 1
    finally:
        await store.aclose()


def chunk(hour: int, *keys: int) -> DedupChunk:
    return DedupChunk(hour, pack_keys(keys))


def test_the_window_slides_an_hour_at_a_time() -> None:
    identity = Identity()
    now_ms = int(time.time() * 1000)
    old, recent = now_ms - DEDUP_WINDOW_MS - HOUR_MS, now_ms - 1000
    identity.load_dedup([chunk(old // HOUR_MS, 10, 12), chunk(recent // HOUR_MS, 11)])
    assert identity.dedup_window_size == 3
    assert identity.forget_dedup_before(now_ms - DEDUP_WINDOW_MS) == 2
    assert identity.dedup_window_size == 1
    # The window counts from the first occurrence: a later sighting does not extend it.
    window = identity.dedup
    assert window.remember(1, 20, old)
    assert not window.remember(1, 20, recent)
    assert identity.dedup_window_size == 2
    assert identity.forget_dedup_before(now_ms - DEDUP_WINDOW_MS) == 1
    assert identity.dedup_window_size == 1


async def test_saved_hours_are_reloaded_and_pruned_whole(tmp_path: Path) -> None:
    meta = SQLiteMetadata(tmp_path / "meta.db")
    now = int(time.time() * 1000) // HOUR_MS * HOUR_MS
    rows = [(1, 1, now - 9 * DAY_MS), (1, 2, now - 8 * DAY_MS + 5), (2, 3, now + 5), (1, 4, now)]
    await meta.save_state(StateChanges(dedup=rows, lsn=1, next_amplitude_id=1))
    # A later checkpoint adds to the current hour, and merges the earlier hours' chunks.
    await meta.save_state(StateChanges(dedup=[(1, 5, now + 9)], lsn=2, next_amplitude_id=1))

    def keys(chunks: list[DedupChunk]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for c in chunks:
            out.setdefault(c.hour, []).extend(np.frombuffer(c.keys, "<i8").tolist())
        return {h: sorted(v) for h, v in out.items()}

    hour = now // HOUR_MS
    expected = {(now - 8 * DAY_MS) // HOUR_MS: [2], hour: [3, 4, 5]}
    assert keys(await meta.load_dedup(now - 8 * DAY_MS)) == expected
    assert await meta.prune_dedup(now - 8 * DAY_MS) == 1
    assert keys(await meta.load_dedup(0)) == expected
    await meta.aclose()

    reopened = SQLiteMetadata(tmp_path / "meta.db")  # the chunks are found again
    try:
        assert keys(await reopened.load_dedup(0)) == expected
        assert await reopened.prune_dedup(now + DAY_MS) == 2
        assert await reopened.load_dedup(0) == []
    finally:
        await reopened.aclose()


async def test_day_tables_of_an_older_swell_are_converted(tmp_path: Path) -> None:
    now = int(time.time() * 1000) // HOUR_MS * HOUR_MS
    day = now // DAY_MS
    with sqlite3.connect(tmp_path / "meta.db") as db:
        db.execute("CREATE TABLE dedup_19700101 (project_id, key, seen_ms)")  # long gone
        table = f"dedup_{datetime.fromtimestamp(day * 86400, UTC):%Y%m%d}"
        db.execute(f"CREATE TABLE {table} (project_id, key, seen_ms)")
        rows = [(1, 7, now), (1, 8, now + 1)]
        db.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", rows)  # noqa: S608
    meta = SQLiteMetadata(tmp_path / "meta.db")
    try:
        chunks = await meta.load_dedup(now - DEDUP_WINDOW_MS)
        assert [(c.hour, sorted(np.frombuffer(c.keys, "<i8").tolist())) for c in chunks] == [
            (now // HOUR_MS, [7, 8])
        ]
    finally:
        await meta.aclose()
    with sqlite3.connect(tmp_path / "meta.db") as db:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert not any(n.startswith(("dedup_1", "dedup_2")) for n in names)


async def test_replayed_records_teach_the_window(tmp_path: Path) -> None:
    identity = Identity()
    line = orjson.dumps(
        {
            "amplitude_id": 5,
            "device_id": "d",
            "user_id": None,
            "$insert_id": "i",
            "server_upload_time": (datetime.now(UTC) - timedelta(hours=1)).strftime(
                "%Y-%m-%d %H:%M:%S.%f"
            ),
        }
    )
    identity.observe(1, orjson.loads(line))
    assert identity.dedup_window_size == 1


async def test_a_failed_write_leaves_no_phantom_table(tmp_path: Path) -> None:
    """A day or month table created inside a rolled-back transaction is not remembered."""
    import pytest

    from swell.errors import StorageError
    from swell.model import IndexEntry, Part, StateChanges

    meta = SQLiteMetadata(tmp_path / "meta.db")
    try:
        part = Part(1, 500_000, 0, 10, 0, 2, "", "", 1, (0,))
        twice = [IndexEntry(7, "u", (0,), 1), IndexEntry(7, "u", (0,), 1)]  # same key twice
        with pytest.raises(StorageError):
            await meta.add_part(part, twice)
        assert await meta.user_blocks(1, [7]) == []  # no query against a table that isn't there

        bad = StateChanges(dedup=[(1, 1, 5 * DAY_MS)], lsn=1, next_amplitude_id=1)
        bad.users = [(1, "u", 1), (1, "u", None)]  # type: ignore[list-item]  # NOT NULL fails
        with pytest.raises(StorageError):
            await meta.save_state(bad)
        assert await meta.load_dedup(0) == []
    finally:
        await meta.aclose()


def test_imported_history_does_not_fill_the_window() -> None:
    identity = Identity()

    def record(insert_id: str, age: timedelta) -> dict[str, object]:
        upload = (datetime.now(UTC) - age).strftime("%Y-%m-%d %H:%M:%S.%f")
        return {
            "amplitude_id": 5,
            "device_id": "d",
            "$insert_id": insert_id,
            "server_upload_time": upload,
        }

    identity.observe(1, record("old", timedelta(days=8)))
    identity.observe(1, record("recent", timedelta(days=6)))
    assert identity.dedup_window_size == 1


# -- DedupWindow against a model ------------------------------------------------------------------

#: A few distinct keys, so admissions, repeats and expiries collide often.
KEYS = st.integers(-(2**63), 2**63 - 1) | st.integers(0, 40)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.lists(st.none() | KEYS, max_size=6), st.integers(0, 300)),
        st.tuples(st.just("remember"), KEYS, st.integers(0, 300)),
        st.tuples(st.just("expire"), st.integers(0, 300)),
        st.tuples(st.just("freeze")),
    ),
    max_size=60,
)


@given(ops=OPS, max_keys=st.sampled_from([5, 12, 10_000]))
@settings(max_examples=300)
def test_the_window_matches_a_model_of_first_sightings(ops, max_keys):
    """Against a dict of key -> hour of first sight, with no cap pressure (10,000) the window
    answers exactly like the model; with a small cap it never holds more than the cap, and
    only ever forgets (it never reports a key it was not given)."""
    window = DedupWindow(max_keys)
    model: dict[int, int] = {}
    for op in ops:
        if op[0] == "admit":
            _, keys, hour = op
            fresh = window.admit(1, keys, hour * HOUR_MS + 5)
            for key, new in zip(keys, fresh, strict=True):
                if key is None:
                    assert new
                    continue
                if max_keys == 10_000:
                    assert new == (key not in model), (key, model)
                elif not new:
                    assert key in model
                model.setdefault(key, hour)
        elif op[0] == "remember":
            _, key, hour = op
            added = window.remember(1, key, hour * HOUR_MS)
            if max_keys == 10_000:
                assert added == (key not in model)
            model.setdefault(key, hour)
        elif op[0] == "expire":
            cutoff = op[1]
            window.expire(cutoff * HOUR_MS + 7)
            model = {k: h for k, h in model.items() if h >= cutoff}
        else:
            window.freeze()
        assert len(window) <= max_keys
        held = {k for k in model if k in window}
        if max_keys == 10_000:
            assert held == set(model)
            assert len(window) == len(model)
    rows = window.take_dirty()
    assert len({key for _, key, _ in rows}) == len(rows)


def test_frozen_keys_take_ten_bytes_each() -> None:
    window = DedupWindow()
    hour = int(time.time() * 1000) // HOUR_MS
    keys = np.random.default_rng(1).integers(-(2**63), 2**63 - 1, 200_000, dtype=np.int64)
    window.load([chunk(hour - 2, *keys[:100_000].tolist()), chunk(hour, *keys[100_000:].tolist())])
    assert len(window) == 200_000
    assert window.nbytes() == 200_000 * 10
    fresh = window.admit(1, [int(keys[5]), int(keys[150_000]), 17], hour * HOUR_MS)
    assert fresh == [False, False, True]


def test_a_full_window_forgets_its_oldest_hours_counts_and_warns(caplog) -> None:
    window = DedupWindow(max_keys=100)
    base = 1000
    for hour in range(10):
        assert all(window.admit(1, list(range(hour * 10, hour * 10 + 10)), (base + hour) * HOUR_MS))
    assert len(window) == 100
    with caplog.at_level("WARNING", logger="swell.dedup"):
        assert window.admit(1, [5000], (base + 10) * HOUR_MS) == [True]
    # A tenth of the cap was freed, oldest hour first: hour 0's keys are gone, hour 1's are not.
    assert window.forgotten_early == 10
    assert 0 not in window
    assert 15 in window
    assert 5000 in window
    assert "dedup window is full (SWELL_DEDUP_MAX_KEYS=100)" in caplog.text
    # Only the current hour left, and it alone over the cap: new keys are not remembered.
    small = DedupWindow(max_keys=3)
    assert small.admit(1, [1, 2, 3, 4], base * HOUR_MS) == [True, True, True, True]
    assert small.not_remembered == 1
    assert 4 not in small
    assert len(small) == 3


def test_a_load_over_the_cap_keeps_the_newest_hours() -> None:
    window = DedupWindow(max_keys=5)
    window.load([chunk(10, 1, 2), chunk(11, 3, 4), chunk(12, 5, 6)])
    assert sorted(k for k in range(1, 7) if k in window) == [3, 4, 5, 6]
    assert window.forgotten_early == 2
    # A key forgotten early and saved again under a later hour is held once, under the later one.
    again = DedupWindow()
    again.load([chunk(10, 1, 2), chunk(12, 2, 3)])
    assert len(again) == 3
    assert again.expire(11 * HOUR_MS) == 1  # only key 1: key 2 counts from hour 12
    assert 2 in again
    assert 1 not in again
