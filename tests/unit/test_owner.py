"""A project owner on PostgreSQL, in process: every inbox entry is enriched exactly once whatever
fails (a commit that fails, a commit whose reply is lost, an owner dropped mid-stream), and a
deposed owner's writes are refused (the lease's epoch fences them)."""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from swell import inbox
from swell.backends import open_metadata
from swell.backends.memory import MemoryBlobStore
from swell.backends.postgres import PostgresMetadata
from swell.errors import LeaseLost, LogFailed, MetadataUnavailable
from swell.model import hour_of
from swell.node import ClusterFront
from swell.owner import ProjectOwner
from swell.parts import decompress_blocks
from swell.settings import Settings
from tests.conftest import http_context

pytestmark = pytest.mark.usefixtures("pg_url")


@pytest.fixture
async def cluster(pg_url: str) -> AsyncIterator[PostgresMetadata]:
    meta = open_metadata(pg_url)
    assert isinstance(meta, PostgresMetadata)
    yield meta
    await meta.aclose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, seal_check_seconds=3600, lease_seconds=30)


async def project(meta: PostgresMetadata) -> int:
    org = await meta.create_org("acme", "ok" * 16, "h")
    return await meta.create_project("web", org, "pk" * 16, "h")


async def send(front: ClusterFront, project_id: int, tag: str, n: int = 10) -> set[str]:
    events = [
        {"user_id": f"u-{i % 3}-{tag}", "event_type": "Owned", "insert_id": f"{tag}-{i}"}
        for i in range(n)
    ]
    await front.ingest(events, http_context(project_id))
    return {str(e["insert_id"]) for e in events}


async def owner_of(
    settings: Settings, meta: PostgresMetadata, blobs: MemoryBlobStore, project_id: int, name: str
) -> ProjectOwner:
    epoch = await meta.acquire_lease(project_id, name, 30, steal=True)
    assert epoch is not None
    owner = ProjectOwner(settings, meta, blobs, project_id, name, epoch)
    await owner.open()
    return owner


async def drop(owner: ProjectOwner) -> None:
    """End an owner as a killed process would: nothing sealed, nothing saved."""
    await owner.drop()


async def stored(meta: PostgresMetadata, blobs: MemoryBlobStore, project_id: int) -> Counter[str]:
    hour = hour_of(datetime.now(UTC))
    found: Counter[str] = Counter()
    for part in await meta.parts(project_id, hour - 2, hour + 2):
        data = await blobs.read(part.name)
        assert zlib.crc32(data) == part.crc32
        for line in decompress_blocks(data).splitlines():
            found[orjson.loads(line)["$insert_id"]] += 1
    return found


async def consume_all(owner: ProjectOwner) -> None:
    while await owner._consume():
        pass


async def test_entries_are_enriched_once_across_a_dropped_owner(
    settings: Settings, cluster: PostgresMetadata
) -> None:
    blobs = MemoryBlobStore()
    pid = await project(cluster)
    front = ClusterFront(settings, cluster, blobs)
    acked = await send(front, pid, "a") | await send(front, pid, "b")
    first = await owner_of(settings, cluster, blobs, pid, "first")
    await consume_all(first)
    acked |= await send(front, pid, "c")
    await drop(first)  # frames of a and b are committed, c is not consumed
    second = await owner_of(settings, cluster, blobs, pid, "second")
    await consume_all(second)
    assert second.store is not None
    await second.store.seal(lambda part: True)
    assert await stored(cluster, blobs, pid) == Counter(dict.fromkeys(acked, 1))
    await second.aclose()


@pytest.mark.parametrize("after", [False, True], ids=["commit-failed", "reply-lost"])
async def test_a_failed_frame_commit_stops_the_owner_and_the_next_one_is_exact(
    settings: Settings, cluster: PostgresMetadata, monkeypatch: pytest.MonkeyPatch, after: bool
) -> None:
    blobs = MemoryBlobStore()
    pid = await project(cluster)
    front = ClusterFront(settings, cluster, blobs)
    acked = set().union(*[await send(front, pid, f"t{n}") for n in range(4)])
    owner = await owner_of(settings, cluster, blobs, pid, "flaky")
    real = PostgresMetadata.commit_frames
    calls = 0

    async def flaky(self: PostgresMetadata, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            if after:
                await real(self, *args)
            raise MetadataUnavailable("metadata store unavailable: injected")
        await real(self, *args)

    monkeypatch.setattr(PostgresMetadata, "commit_frames", flaky)
    with pytest.raises(LogFailed):
        await consume_all(owner)
    monkeypatch.setattr(PostgresMetadata, "commit_frames", real)
    await drop(owner)  # what the worker does with a failed log: memory goes, commits stay
    again = await owner_of(settings, cluster, blobs, pid, "again")
    await consume_all(again)
    assert again.store is not None
    await again.store.seal(lambda part: True)
    assert await stored(cluster, blobs, pid) == Counter(dict.fromkeys(acked, 1))
    await again.aclose()


async def test_a_deposed_owner_cannot_write(settings: Settings, cluster: PostgresMetadata) -> None:
    blobs = MemoryBlobStore()
    pid = await project(cluster)
    front = ClusterFront(settings, cluster, blobs)
    acked = await send(front, pid, "a")
    old = await owner_of(settings, cluster, blobs, pid, "old")
    await consume_all(old)
    new = await owner_of(settings, cluster, blobs, pid, "new")  # steals: epoch + 1
    acked |= await send(front, pid, "b")
    with pytest.raises((LeaseLost, LogFailed)) as caught:  # whichever write comes first
        await consume_all(old)
    assert isinstance(caught.value, LeaseLost) or isinstance(caught.value.__cause__, LeaseLost)
    assert old.store is not None
    with pytest.raises((LeaseLost, LogFailed)):  # nor can it seal what it holds
        await old.store.seal(lambda part: True)
    await drop(old)
    await consume_all(new)
    assert new.store is not None
    await new.store.seal(lambda part: True)
    assert await stored(cluster, blobs, pid) == Counter(dict.fromkeys(acked, 1))
    await new.aclose()


async def test_a_seal_request_is_answered_once_consumed_that_far(
    settings: Settings, cluster: PostgresMetadata
) -> None:
    blobs = MemoryBlobStore()
    pid = await project(cluster)
    front = ClusterFront(settings, cluster, blobs)
    await send(front, pid, "a")
    owner = await owner_of(settings, cluster, blobs, pid, "w")
    upto = await cluster.inbox_head(pid)
    request = await cluster.request_seal(pid, upto)
    await owner._answer_seal_requests()
    assert not await cluster.seal_request_done(request)  # not consumed yet
    await consume_all(owner)
    await owner._answer_seal_requests()
    assert await cluster.seal_request_done(request)
    assert await cluster.parts(pid, 0, 10**7)
    await owner.aclose()


def test_an_inbox_entry_round_trips() -> None:
    ctx = http_context(7)
    items = [{"user_id": "u-1", "event_type": "e", "event_properties": {"a": [1, None]}}]
    entry = inbox.decode(inbox.encode(inbox.EVENTS, ctx, items))
    assert (entry.kind, entry.items) == (inbox.EVENTS, items)
    assert entry.ctx.server_upload_ts == ctx.server_upload_ts
    assert entry.ctx.server_received_ts == ctx.server_received_ts
    assert (entry.ctx.project_id, entry.ctx.path, entry.ctx.remote_ip) == (7, ctx.path, None)
    with pytest.raises(inbox.CorruptEntry):
        inbox.decode(b"not gzip")
