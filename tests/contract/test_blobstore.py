"""The BlobStore contract: what every blob store does, run against each one (see conftest)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from swell.backends.base import BlobStore, OpensReaders
from swell.errors import BlobNotFound, BlobStoreUnavailable, InvalidBlobKey
from tests.contract.conftest import Opener

DATA = bytes(range(256)) * 40  # 10,240 bytes


async def stream_all(blobs: BlobStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([c async for c in blobs.stream(key, start, end, chunk=1000)])


async def test_put_then_read_head_and_stream(blobs: BlobStore) -> None:
    info = await blobs.put("7/7_2024-01-01_5#0.json.gz", DATA)
    assert (info.key, info.size) == ("7/7_2024-01-01_5#0.json.gz", len(DATA))
    assert await blobs.read("7/7_2024-01-01_5#0.json.gz") == DATA
    assert (await blobs.head("7/7_2024-01-01_5#0.json.gz")).size == len(DATA)
    assert await stream_all(blobs, "7/7_2024-01-01_5#0.json.gz") == DATA


async def test_reads_are_ranged_and_clipped_at_the_end(blobs: BlobStore) -> None:
    await blobs.put("a/b", DATA)
    assert await blobs.read("a/b", 100, 300) == DATA[100:300]
    assert await blobs.read("a/b", 10_000, 99_999) == DATA[10_000:]
    assert await blobs.read("a/b", 500, 500) == b""
    assert await stream_all(blobs, "a/b", 999, 4001) == DATA[999:4001]


async def test_stream_chunks_are_bounded(blobs: BlobStore) -> None:
    await blobs.put("a/b", DATA)
    chunks = [c async for c in blobs.stream("a/b", 0, None, chunk=3000)]
    assert all(len(c) <= 3000 for c in chunks)
    assert b"".join(chunks) == DATA


async def test_a_missing_key_raises_before_any_byte(blobs: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await blobs.read("no/such")
    with pytest.raises(BlobNotFound):
        await blobs.head("no/such")
    chunks = blobs.stream("no/such")
    with pytest.raises(BlobNotFound):
        await anext(chunks)  # the first step raises: no byte came before it
    assert isinstance(BlobNotFound(), BlobStoreUnavailable)  # a listed blob that is gone: 503


async def test_a_put_replaces_the_object_whole(blobs: BlobStore) -> None:
    await blobs.put("a/b", DATA)
    await blobs.put("a/b", b"short")
    assert await blobs.read("a/b") == b"short"
    assert (await blobs.head("a/b")).size == 5


async def test_concurrent_puts_of_one_key_leave_one_whole_value(blobs: BlobStore) -> None:
    values = [bytes([i]) * (1000 + i) for i in range(8)]
    await asyncio.gather(*(blobs.put("x/y", v) for v in values))
    assert await blobs.read("x/y") in values


async def test_delete_removes_and_missing_keys_are_fine(blobs: BlobStore) -> None:
    await blobs.put("dsar/1/0.json.gz", b"a")
    await blobs.put("dsar/1/1.json.gz", b"b")
    await blobs.delete(["dsar/1/0.json.gz", "dsar/1/1.json.gz", "dsar/1/9.json.gz"])
    with pytest.raises(BlobNotFound):
        await blobs.read("dsar/1/0.json.gz")
    await blobs.put("dsar/1/0.json.gz", b"again")  # the key can be written again
    assert await blobs.read("dsar/1/0.json.gz") == b"again"


@pytest.mark.parametrize("key", ["", "a/../b", "../x", "a//b", "./a", "a/\x00", "/abs"])
async def test_keys_that_could_escape_are_refused(blobs: BlobStore, key: str) -> None:
    with pytest.raises(InvalidBlobKey):
        await blobs.put(key, b"x")
    with pytest.raises(InvalidBlobKey):
        await blobs.read(key)


async def test_what_is_put_is_there_for_the_next_opener(blob_opener: Opener) -> None:
    first = blob_opener.blobs()
    await first.put("p/part", DATA)
    await first.aclose()
    second = blob_opener.blobs()
    try:
        assert await second.read("p/part") == DATA
    finally:
        await second.aclose()


async def test_readers_fill_buffers_and_refuse_to_read_past_the_end(blobs: BlobStore) -> None:
    if not isinstance(blobs, OpensReaders):
        pytest.skip("this store streams chunks instead of reading into buffers")
    await blobs.put("a/b", DATA)
    reader = await blobs.open_reader("a/b")
    try:
        buffer = bytearray(500)
        await reader.read_into(1234, memoryview(buffer))
        assert bytes(buffer) == DATA[1234:1734]
        with pytest.raises(BlobStoreUnavailable):
            await reader.read_into(len(DATA) - 10, memoryview(bytearray(20)))
    finally:
        await reader.aclose()
    with pytest.raises(BlobNotFound):
        await blobs.open_reader("no/such")


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(max_size=5000),
    start=st.integers(0, 6000),
    length=st.integers(0, 6000) | st.none(),
)
def test_any_range_reads_what_slicing_gives(
    blob_opener: Opener, data: bytes, start: int, length: int | None
) -> None:
    async def run() -> None:
        blobs = blob_opener.blobs()
        try:
            await blobs.put("r/s", data)
            end = None if length is None else start + length
            expected = data[start:end]
            assert await blobs.read("r/s", start, end) == expected
            assert (
                await stream_all(blobs, "r/s", start, end if end is None else min(end, len(data)))
                == expected
            )
        finally:
            await blobs.aclose()

    asyncio.run(run())
