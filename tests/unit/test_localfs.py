"""The embedded blob store: whole-or-nothing puts, no leftovers, safe keys."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from swell.backends.localfs import STAGING, LocalBlobStore
from swell.errors import BlobNotFound, InvalidBlobKey, StorageError


def test_put_read_head_delete(tmp_path: Path) -> None:
    async def run() -> None:
        blobs = LocalBlobStore(tmp_path / "blobs")
        info = await blobs.put("parts/1/a.json.gz", b"hello world")
        assert info.size == 11
        assert await blobs.read("parts/1/a.json.gz", 6) == b"world"
        assert (await blobs.head("parts/1/a.json.gz")).size == 11
        await blobs.delete(["parts/1/a.json.gz", "parts/1/missing"])
        with pytest.raises(BlobNotFound):
            await blobs.read("parts/1/a.json.gz")

    asyncio.run(run())


def test_concurrent_puts_of_one_key_leave_one_whole_object(tmp_path: Path) -> None:
    async def run() -> bytes:
        blobs = LocalBlobStore(tmp_path)
        values = [bytes([n]) * 200_000 for n in range(8)]
        await asyncio.gather(*(blobs.put("k/x", v) for v in values))
        data = await blobs.read("k/x")
        assert data in values
        return data

    asyncio.run(run())
    assert list((tmp_path / STAGING).iterdir()) == []


def test_opening_the_store_removes_unfinished_puts(tmp_path: Path) -> None:
    LocalBlobStore(tmp_path)
    leftover = tmp_path / STAGING / "0.json.gz.123.456.7"
    leftover.write_bytes(b"half a part")
    LocalBlobStore(tmp_path)
    assert not leftover.exists()


def test_a_failed_put_leaves_nothing_behind(tmp_path: Path) -> None:
    async def run() -> None:
        blobs = LocalBlobStore(tmp_path)
        await blobs.put("a", b"a file where a directory would go")
        with pytest.raises(StorageError):
            await blobs.put("a/b", b"data")

    asyncio.run(run())
    assert list((tmp_path / STAGING).iterdir()) == []
    assert (tmp_path / "a").read_bytes() == b"a file where a directory would go"


@pytest.mark.parametrize(
    "key", ["", "../x", "a/../../x", "a//b", "./a", "a\x00b", STAGING, f"{STAGING}/x"]
)
def test_keys_cannot_escape_the_root_or_touch_staging(tmp_path: Path, key: str) -> None:
    async def run() -> None:
        blobs = LocalBlobStore(tmp_path)
        with pytest.raises(InvalidBlobKey):
            await blobs.put(key, b"x")

    asyncio.run(run())


def test_deleting_the_last_file_removes_empty_directories_only(tmp_path: Path) -> None:
    async def run() -> None:
        blobs = LocalBlobStore(tmp_path)
        await blobs.put("dsar/1/0.json.gz", b"0")
        await blobs.put("dsar/1/1.json.gz", b"1")
        await blobs.put("dsar/2/0.json.gz", b"2")
        await blobs.delete(["dsar/1/0.json.gz"])
        assert (tmp_path / "dsar" / "1" / "1.json.gz").exists()
        await blobs.delete(["dsar/1/1.json.gz"])
        assert not (tmp_path / "dsar" / "1").exists()
        assert (tmp_path / "dsar" / "2" / "0.json.gz").exists()
        await blobs.delete(["dsar/2/0.json.gz"])
        assert not (tmp_path / "dsar").exists()
        assert tmp_path.is_dir()
        await blobs.put("dsar/2/0.json.gz", b"again")  # the directories come back as needed
        assert await blobs.read("dsar/2/0.json.gz") == b"again"

    asyncio.run(run())
