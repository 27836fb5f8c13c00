"""The insert_id dedup window: kept whole in memory, saved per day, reloaded at start-up."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from swell.backends.sqlite import SQLiteMetadata
from swell.identity import DEDUP_WINDOW_MS, Identity
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


def test_the_window_slides_an_hour_at_a_time() -> None:
    identity = Identity()
    now_ms = int(time.time() * 1000)
    old, recent = now_ms - DEDUP_WINDOW_MS - 3_600_000, now_ms - 1000
    identity.load_dedup([(1, 10, old), (1, 11, recent), (1, 12, old)])
    assert identity.dedup_window_size == 3
    assert identity.forget_dedup_before(now_ms - DEDUP_WINDOW_MS) == 2
    assert identity.dedup_window_size == 1
    # The window counts from the first occurrence: a later sighting does not extend it.
    identity.load_dedup([(1, 20, old), (1, 20, recent)])
    assert identity.dedup_window_size == 2
    assert identity.forget_dedup_before(now_ms - DEDUP_WINDOW_MS) == 1
    assert identity.dedup_window_size == 1


async def test_saved_days_are_reloaded_and_pruned_whole(tmp_path: Path) -> None:
    from swell.model import StateChanges

    meta = SQLiteMetadata(tmp_path / "meta.db")
    today = int(time.time() * 1000) // DAY_MS * DAY_MS
    rows = [(1, 1, today - 9 * DAY_MS), (1, 2, today - 8 * DAY_MS + 5), (1, 3, today + 5)]
    await meta.save_state(StateChanges(dedup=rows, lsn=1, next_amplitude_id=1))
    assert sorted(await meta.load_dedup(today - 8 * DAY_MS)) == rows[1:]
    assert await meta.prune_dedup(today - 8 * DAY_MS) == 1
    assert sorted(await meta.load_dedup(0)) == rows[1:]
    await meta.aclose()

    reopened = SQLiteMetadata(tmp_path / "meta.db")  # the day tables are found again
    try:
        assert sorted(await reopened.load_dedup(0)) == rows[1:]
        assert await reopened.prune_dedup(today + DAY_MS) == 2
        assert await reopened.load_dedup(0) == []
    finally:
        await reopened.aclose()


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
