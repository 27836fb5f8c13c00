"""The store under storage faults: every acknowledged event is exported exactly once after the
fault ends, whatever failed (blob put, catalog row, part number, identity save, state load, the
log's fsync) and whether the process went on, shut down or was killed meanwhile."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from swell.backends import Backends
from swell.backends.faults import Faults
from swell.backends.filelog import FileLog
from swell.errors import (
    BlobStoreUnavailable,
    LogFailed,
    MetadataUnavailable,
    SealBacklogFull,
)
from swell.settings import Settings
from swell.store import Store
from tests.conftest import crash, http_context
from tests.faults.conftest import (
    PROJECT,
    FakeMonotonic,
    exported,
    hours_ago,
    ingest,
    open_store,
    wrap_with,
)


def once_each(acked: set[str]) -> dict[str, int]:
    return dict.fromkeys(acked, 1)


async def test_a_failed_blob_put_keeps_the_part_until_it_is_sealed(
    fault_settings: Settings, faults: Faults
) -> None:
    store = await open_store(fault_settings, faults)
    try:
        acked = await ingest(store, 0) | await ingest(store, 1)
        faults.fail("blobs.put")
        with pytest.raises(BlobStoreUnavailable, match="No space left on device"):
            await exported(store)
        assert store.sealer.failing
        assert store.sealer.frozen_parts == 1
        checks = store.readiness()
        assert not checks["seal"]["ok"]
        assert checks["seal"]["cause"] == "blob_store"
        acked |= await ingest(store, 2)  # still acknowledged: the log is durable
        with pytest.raises(BlobStoreUnavailable):
            await exported(store)
        assert store.sealer.frozen_parts == 1  # no second part frozen behind the failed one
        faults.heal()
        assert dict(await exported(store)) == once_each(acked)
        assert store.readiness()["seal"]["ok"]
        assert not store.sealer.failing
    finally:
        await store.aclose()


async def test_the_background_retry_catches_up_with_capped_backoff(
    fault_settings: Settings, faults: Faults
) -> None:
    store = await open_store(fault_settings, faults)
    clock = store.sealer.clock = FakeMonotonic()
    try:
        acked = await ingest(store, 0, at=hours_ago(2))  # an hour that has ended
        faults.fail("blobs.put")
        await store._background_step()  # seals the ended hour: fails, and is logged
        assert store.sealer.retry_in() is not None
        await store._background_step()  # not due yet: nothing is tried
        assert faults.injected["blobs.put"] == 1
        for _ in range(12):  # the delay doubles, then stays at the cap
            clock.now += 60
            await store._background_step()
        assert store.sealer.failure is not None
        assert store.sealer.failure.failures == 13
        assert 0 < store.sealer.retry_in() <= 30  # type: ignore[operator]
        assert faults.injected["blobs.put"] == 13
        faults.heal()
        assert await store.sealer.retry_due() == 0  # not due yet: backoff is kept
        clock.now += 30
        assert await store.sealer.retry_due() == 1
        assert not store.sealer.failing
        assert dict(await exported(store)) == once_each(acked)
    finally:
        await store.aclose()


async def test_a_catalog_row_committed_but_its_reply_lost_is_not_sealed_twice(
    fault_settings: Settings, faults: Faults
) -> None:
    store = await open_store(fault_settings, faults)
    try:
        acked = await ingest(store, 0)
        faults.fail("meta.add_part", "EIO", times=1, after=True)
        with pytest.raises(MetadataUnavailable):
            await exported(store)
        assert dict(await exported(store)) == once_each(acked)
        parts = await store.meta.parts(PROJECT, 0, 10**7)
        assert len(parts) == 1
    finally:
        await store.aclose()


async def test_a_retry_keeps_the_part_number_and_rewrites_its_blob(
    fault_settings: Settings, faults: Faults
) -> None:
    store = await open_store(fault_settings, faults)
    try:
        acked = await ingest(store, 0)
        faults.fail("meta.add_part", "timeout", times=2)
        for _ in range(2):
            with pytest.raises(MetadataUnavailable, match="timed out"):
                await exported(store)
        assert faults.calls["meta.allocate_part_seq"] == 1
        assert faults.calls["blobs.put"] == 2  # the same name, written again
        assert dict(await exported(store)) == once_each(acked)
        (part,) = await store.meta.parts(PROJECT, 0, 10**7)
        assert part.seq == 0
    finally:
        await store.aclose()


@pytest.mark.parametrize("op", ["blobs.put", "meta.add_part", "meta.allocate_part_seq"])
async def test_a_kill_while_seals_fail_loses_nothing(
    fault_settings: Settings, faults: Faults, op: str
) -> None:
    store = await open_store(fault_settings, faults)
    acked = await ingest(store, 0)
    faults.fail(op)
    with pytest.raises((BlobStoreUnavailable, MetadataUnavailable)):
        await exported(store)
    for batch in range(1, 30):  # enough to fill several log segments
        acked |= await ingest(store, batch)
    await store.checkpoint(force=True)  # identity saves; the frozen part still pins the log
    await crash(store)
    faults.heal()
    store = await open_store(fault_settings, faults)
    try:
        assert dict(await exported(store)) == once_each(acked)
    finally:
        await store.aclose()


async def test_a_shutdown_while_the_blob_store_fails_loses_nothing(
    fault_settings: Settings, faults: Faults
) -> None:
    store = await open_store(fault_settings, faults)
    acked = await ingest(store, 0) | await ingest(store, 1, at=hours_ago(3))
    faults.fail("blobs.put")
    await store.aclose()  # logs a warning; does not raise
    faults.heal()
    store = await open_store(fault_settings, faults)
    try:
        assert dict(await exported(store)) == once_each(acked)
    finally:
        await store.aclose()


async def test_parts_of_one_hour_are_published_in_order(
    fault_settings: Settings, faults: Faults
) -> None:
    store = await open_store(fault_settings, faults)
    try:
        first = await ingest(store, 0)
        faults.fail("blobs.put", times=1)
        with pytest.raises(BlobStoreUnavailable):
            await exported(store)
        second = await ingest(store, 1)
        assert dict(await exported(store)) == once_each(first | second)
        parts = await store.meta.parts(PROJECT, 0, 10**7)
        assert [p.max_lsn for p in parts] == sorted(p.max_lsn for p in parts)
        assert len(parts) == 2
    finally:
        await store.aclose()


async def test_a_failed_identity_save_keeps_the_changes_for_the_next_one(
    fault_settings: Settings, faults: Faults
) -> None:
    store = await open_store(fault_settings, faults)
    await store.ingest(
        [{"user_id": "alice", "event_type": "first", "insert_id": "a1"}],
        http_context(PROJECT),
    )
    alice = store.identity.cached_amplitude_id(PROJECT, "alice")
    faults.fail("meta.save_state", "EIO", times=1)
    with pytest.raises(MetadataUnavailable):
        await store.checkpoint(force=True)
    assert not store.readiness()["metadata"]["ok"]
    await store.ingest(
        [{"user_id": "bob", "event_type": "first", "insert_id": "b1"}], http_context(PROJECT)
    )
    await store.checkpoint(force=True)  # saves alice too, at a position covering both
    assert store.readiness()["metadata"]["ok"]
    await store.seal(lambda part: True)  # nothing left in the log to replay alice from
    await store.checkpoint(force=True)
    await crash(store)
    store = await open_store(fault_settings, faults)
    try:
        await store.ingest(
            [{"user_id": "alice", "event_type": "again", "insert_id": "a2"}], http_context(PROJECT)
        )
        assert store.identity.cached_amplitude_id(PROJECT, "alice") == alice
    finally:
        await store.aclose()


async def test_state_that_cannot_be_loaded_refuses_the_batch_whole(
    fault_settings: Settings, faults: Faults
) -> None:
    store = await open_store(fault_settings, faults)
    try:
        faults.fail("meta.load_state", "EIO", times=1)
        with pytest.raises(MetadataUnavailable):
            await ingest(store, 0)
        acked = await ingest(store, 1)
        assert dict(await exported(store)) == once_each(acked)
    finally:
        await store.aclose()


async def test_ingestion_waits_once_too_much_is_unsealed(
    fault_settings: Settings, faults: Faults
) -> None:
    store = await open_store(fault_settings.replace(max_unsealed_bytes=1), faults)
    try:
        acked = await ingest(store, 0)
        faults.fail("blobs.put")
        with pytest.raises(BlobStoreUnavailable):
            await exported(store)
        with pytest.raises(SealBacklogFull):
            await ingest(store, 1)
        checks = store.readiness()
        assert not checks["backlog"]["ok"]
        assert checks["backlog"]["unsealed_bytes"] > 1
        faults.heal()
        assert dict(await exported(store)) == once_each(acked)
        acked |= await ingest(store, 2)
        assert dict(await exported(store)) == once_each(acked)
    finally:
        await store.aclose()


class Fsync:
    """os.fsync until told to fail."""

    def __init__(self) -> None:
        self.failing = False

    def __call__(self, fd: int) -> None:
        if self.failing:
            raise OSError(5, "Input/output error")
        os.fsync(fd)


async def test_a_failed_log_fsync_is_fail_stop_until_restart(
    fault_settings: Settings, faults: Faults
) -> None:
    fsync = Fsync()

    def with_failing_log(backends: Backends) -> Backends:
        wrapped = wrap_with(faults)(backends)
        log = FileLog(fault_settings.data_dir / "wal", segment_bytes=4096, fsync=fsync)
        return replace(wrapped, log=log)

    store = await Store.open(fault_settings, wrap=with_failing_log)
    acked = await ingest(store, 0)
    fsync.failing = True
    with pytest.raises(LogFailed):
        await ingest(store, 1)
    fsync.failing = False  # the disk is back, but pages may have been dropped: stay stopped
    with pytest.raises(LogFailed):
        await ingest(store, 2)
    checks = store.readiness()
    assert not checks["log"]["ok"]
    assert "Input/output error" in checks["log"]["error"]
    with pytest.raises(LogFailed):
        await store.ensure_available()
    await crash(store)
    store = await open_store(fault_settings, faults)
    try:
        stored = await exported(store)
        assert acked <= set(stored)  # batch 1 was never acknowledged; it may or may not be there
        assert set(stored) <= acked | {f"b1-e{i}" for i in range(20)}
        assert max(stored.values()) == 1
    finally:
        await store.aclose()
