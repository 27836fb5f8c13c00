"""Compaction when its dependencies fail, or its process dies: the catalog shows the old parts
or the new ones, never both and never neither, and no blob is left behind for good."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from swell.backends.faults import Faults
from swell.errors import StorageError
from swell.model import hour_of
from swell.parts import decompress_blocks
from swell.rewrite import PENDING
from swell.settings import Settings
from swell.store import Store
from tests.conftest import crash, http_context, run_cli
from tests.faults.conftest import PROJECT, exported, hours_ago, ingest, open_store


async def crowd(store: Store, parts: int = 5) -> int:
    """An ended hour holding ``parts`` sealed parts; returns its hour."""
    at = hours_ago(3)
    for batch in range(parts):
        await ingest(store, batch, at=at)
        await store.seal(lambda p: True)
    hour = hour_of(at)
    assert len(await store.meta.parts(PROJECT, hour, hour)) == parts
    return hour


async def blob_keys(store: Store, hour: int) -> set[str]:
    return {p.key for p in await store.meta.parts(PROJECT, hour, hour)}


async def test_compaction_merges_an_hour_and_keeps_every_event(
    fault_settings: Settings, faults: Faults
) -> None:
    store = await open_store(fault_settings, faults)
    try:
        hour = await crowd(store)
        before = await exported(store)
        old_keys = await blob_keys(store, hour)
        [done] = await store.compact()
        assert (done.parts_before, done.parts_after, done.events) == (5, 1, 100)
        parts = await store.meta.parts(PROJECT, hour, hour)
        assert [p.seq for p in parts] == [0]
        assert parts[0].key not in old_keys
        assert await exported(store) == before
        assert await store.compact() == []  # a merged hour is not crowded any more
        for key in old_keys:  # the grace period: still readable
            await store.blobs.read(key)
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    ("op", "after"),
    [("blobs.put", False), ("meta.replace_parts", False), ("meta.doom_blobs", False)],
)
async def test_a_failed_rewrite_leaves_the_old_parts_and_no_lasting_blob(
    fault_settings: Settings, faults: Faults, op: str, after: bool
) -> None:
    settings = fault_settings.replace(replaced_blob_grace_seconds=0)
    store = await open_store(settings, faults)
    try:
        hour = await crowd(store)
        before, old_keys = await exported(store), await blob_keys(store, hour)
        faults.fail(op, after=after, times=1)
        with pytest.raises(StorageError):
            await store.rewriter.compact_hour(PROJECT, hour)
        assert await blob_keys(store, hour) == old_keys
        assert await exported(store) == before
        # The new blobs written before the failure are doomed; a day later the sweep takes them.
        later = datetime.now(UTC) + PENDING + timedelta(seconds=1)
        store.rewriter.clock = lambda: later
        await store.rewriter.sweep()
        for key in old_keys:
            await store.blobs.read(key)
        assert await store.meta.take_doomed_blobs(later, later) == []
    finally:
        await store.aclose()


async def test_a_swap_whose_reply_was_lost_leaves_the_new_parts(
    fault_settings: Settings, faults: Faults
) -> None:
    settings = fault_settings.replace(replaced_blob_grace_seconds=0)
    store = await open_store(settings, faults)
    try:
        hour = await crowd(store)
        before, old_keys = await exported(store), await blob_keys(store, hour)
        faults.fail("meta.replace_parts", after=True, times=1)
        with pytest.raises(StorageError):
            await store.rewriter.compact_hour(PROJECT, hour)
        new_keys = await blob_keys(store, hour)
        assert len(new_keys) == 1
        assert new_keys.isdisjoint(old_keys)
        assert await exported(store) == before
        assert await store.rewriter.sweep() == len(old_keys)  # no grace: the old blobs go
        assert await exported(store) == before
    finally:
        await store.aclose()


async def test_a_crash_after_the_swap_recovers_without_replaying_the_hour(
    fault_settings: Settings, faults: Faults
) -> None:
    store = await open_store(fault_settings, faults)
    hour = await crowd(store)
    before = await exported(store)
    await store.compact()
    await crash(store)
    store = await open_store(fault_settings, faults)
    try:
        assert len(await store.meta.parts(PROJECT, hour, hour)) == 1
        assert await exported(store) == before
    finally:
        await store.aclose()


KILLER = """
import asyncio, sys
from swell.settings import Settings
from swell.store import Store

async def main() -> None:
    from pathlib import Path
    store = await Store.open(Settings.from_env(data_dir=Path(sys.argv[1])))
    print("open", flush=True)
    hour = int(sys.argv[2])
    while True:  # each rewrite makes new blobs and swaps them in, until the kill
        await store.rewriter.compact_hour(1, hour, min_parts=1)
        await store.rewriter.sweep()

asyncio.run(main())
"""


@pytest.mark.slow
def test_kill_9_during_rewrites_leaves_old_or_new_parts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    org = run_cli("org", "create", "acme", data_dir=data_dir)
    run_cli("project", "create", "web", "--org", str(org["org_id"]), data_dir=data_dir)
    settings = Settings(data_dir=data_dir, seal_check_seconds=3600)
    at = hours_ago(3)
    hour = hour_of(at)

    async def prepare() -> Counter[str]:
        store = await Store.open(settings, wrap=None)
        try:
            for batch in range(6):
                await ingest(store, batch, at=at, n=2000)
                await store.seal(lambda p: True)
            return await exported(store)
        finally:
            await store.aclose()

    before = asyncio.run(prepare())
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    for delay in (0.3, 0.6, 0.9, 1.2, 1.5):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(data_dir), str(hour)],
            stdout=subprocess.PIPE,
            env={**os.environ, "SWELL_REPLACED_BLOB_GRACE_SECONDS": "0"},
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"open\n"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()

        async def check() -> None:
            store = await Store.open(settings)
            try:
                parts = await store.meta.parts(PROJECT, hour, hour)
                assert parts, "neither the old parts nor the new ones"
                assert await exported(store) == before  # never both: no event twice
                for part in parts:
                    assert (await store.blobs.head(part.key)).size == part.size
            finally:
                await store.aclose()

        asyncio.run(check())

    async def nothing_left_behind() -> None:
        store = await Store.open(settings)
        try:
            later = datetime.now(UTC) + PENDING + timedelta(seconds=1)
            store.rewriter.clock = lambda: later
            await store.rewriter.sweep()
            keys = {p.key for p in await store.meta.parts(PROJECT, hour, hour)}
        finally:
            await store.aclose()
        blobs = data_dir / "blobs"
        found = {str(f.relative_to(blobs)) for f in blobs.rglob("*.json.gz")}
        assert found == keys

    asyncio.run(nothing_left_behind())


# -- removing users' events (the part rewrite of a deletion) -------------------------------------


async def test_dropping_a_users_events_leaves_every_other_line_as_it_was(
    fault_settings: Settings, faults: Faults
) -> None:
    settings = fault_settings.replace(replaced_blob_grace_seconds=0)
    store = await open_store(settings, faults)
    try:
        await crowd(store, parts=3)  # an ended hour, 3 parts, users user-0 .. user-6
        await ingest(store, 99, n=14)  # the open hour holds some of their events too
        aids = await store.meta.amplitude_ids_for_user(PROJECT, "user-3")
        assert aids
        now = hour_of(datetime.now(UTC))
        await store.seal_project(PROJECT, now - 48, now + 1)
        hours = range(now - 48, now + 2)

        async def lines() -> list[bytes]:
            found: list[bytes] = []
            for part in await store.meta.parts(PROJECT, hours[0], hours[-1]):
                found += decompress_blocks(await store.blobs.read(part.key)).splitlines()
            return found

        before = await lines()
        gone = [line for line in before if b'"user_id":"user-3"' in line]
        assert gone
        done = await store.drop_user_events(PROJECT, set(aids))
        assert sum(r.parts_before for r in done) >= 2
        after = await lines()
        assert after == [line for line in before if line not in gone]  # same order, same bytes
        assert await store.meta.user_blocks(PROJECT, aids) == []
        # No blob holds the user's events any more (the replaced ones went at the sweep).
        if settings.blob_url == "":
            blobs = list((settings.data_dir / "blobs").rglob("*.json.gz"))
            assert blobs
            for path in blobs:
                assert b'"user_id":"user-3"' not in decompress_blocks(path.read_bytes())
        assert await store.drop_user_events(PROJECT, set(aids)) == []  # nothing left to drop
    finally:
        await store.aclose()


async def test_an_emptied_part_goes_and_the_hours_watermark_stays(
    fault_settings: Settings, faults: Faults
) -> None:
    store = await open_store(fault_settings, faults)
    try:
        at = hours_ago(2)
        await ingest(store, 0, at=at, n=7)  # one event of each of user-0 .. user-6
        await store.seal(lambda p: True)
        await store.ingest(
            [{"user_id": "solo", "event_type": "x", "insert_id": "solo-1"}],
            http_context(PROJECT, at),
        )
        await store.seal(lambda p: True)
        hour = hour_of(at)
        marks = await store.meta.sealed_watermarks()
        parts = await store.meta.parts(PROJECT, hour, hour)
        assert len(parts) == 2
        aids = await store.meta.amplitude_ids_for_user(PROJECT, "solo")
        assert parts[1].max_lsn > parts[0].max_lsn
        [done] = await store.drop_user_events(PROJECT, set(aids))
        # The emptied part went; the other one was rewritten as it is, to carry the watermark.
        assert (done.parts_before, done.parts_after) == (2, 1)
        [left] = await store.meta.parts(PROJECT, hour, hour)
        assert (left.seq, left.events, left.crc32) == (parts[0].seq, 7, parts[0].crc32)
        assert (await store.meta.sealed_watermarks())[(PROJECT, hour)] == marks[(PROJECT, hour)]
    finally:
        await store.aclose()
