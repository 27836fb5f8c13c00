"""What the S3 blob store does beyond the contract, against a real S3 server (SeaweedFS):
multipart puts that appear whole or not at all and are aborted when they fail, and readers that
fetch windows ahead."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import obstore
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from swell.backends import open_blobs
from swell.backends.s3 import MIB, S3BlobStore
from swell.errors import BlobNotFound, BlobStoreUnavailable
from tests.conftest import S3_BUCKET
from tests.s3server import SeaweedFS

#: Small multipart settings, so a 11 MiB put is three parts (5, 5 and 1 MiB).
MULTIPART = {"multipart_threshold": 5 * MIB, "part_size": 5 * MIB}
DATA = os.urandom(11 * MIB)


def open_s3(url: str) -> S3BlobStore:
    store = open_blobs(url)
    assert isinstance(store, S3BlobStore)
    return store


def pending_uploads(weed: SeaweedFS) -> list[str]:
    """Multipart uploads begun and neither completed nor aborted (SeaweedFS keeps them under
    the bucket's .uploads folder, which its filer lists)."""
    resp = httpx.get(
        f"{weed.filer}/buckets/{S3_BUCKET}/.uploads/",
        headers={"Accept": "application/json"},
        timeout=10,
    )
    if resp.status_code == 404:
        return []
    resp.raise_for_status()
    return [entry["FullPath"] for entry in resp.json().get("Entries") or []]


async def test_a_large_put_is_a_multipart_upload_read_back_whole(
    s3_url: str, seaweedfs: SeaweedFS
) -> None:
    store = open_s3(f"{s3_url}&multipart_threshold={5 * MIB}&part_size={5 * MIB}")
    before = pending_uploads(seaweedfs)
    try:
        info = await store.put("1/1_2024-01-01_0#0.json.gz", DATA)
        assert info.size == len(DATA)
        assert await store.read("1/1_2024-01-01_0#0.json.gz") == DATA
        meta = await obstore.head_async(store._store, "1/1_2024-01-01_0#0.json.gz")
        assert str(meta["e_tag"]).strip('"').endswith("-3")  # S3's mark of a 3-part upload
    finally:
        await store.aclose()
    assert pending_uploads(seaweedfs) == before


# -- a proxy in front of SeaweedFS that fails the requests a test picks -----------------------


@dataclass
class FailingProxy:
    """Forwards S3 requests to ``upstream``, answering 500 to those ``fail(method, target)``
    picks (and to nothing else), so a test can make one step of an upload fail for real."""

    upstream: str
    fail: Callable[[str, str], bool]
    failed: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with httpx.AsyncClient(base_url=self.upstream, timeout=30) as client:
            try:
                while head := await reader.readuntil(b"\r\n\r\n"):
                    lines = head.decode("latin-1").split("\r\n")
                    method, target, _ = lines[0].split(" ", 2)
                    headers = [tuple(h.split(": ", 1)) for h in lines[1:] if h]
                    length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
                    body = await reader.readexactly(length)
                    self.seen.append(f"{method} {target}")
                    if self.fail(method, target):
                        self.failed.append(f"{method} {target}")
                        await self._answer(writer, method, 500, [], _ERROR)
                        continue
                    resp = await client.request(method, target, headers=headers, content=body)
                    kept = [
                        (k, v)
                        for k, v in resp.headers.items()
                        if k.lower() not in ("content-length", "transfer-encoding", "connection")
                    ]
                    if method == "HEAD":
                        kept.append(("content-length", resp.headers.get("content-length", "0")))
                    await self._answer(writer, method, resp.status_code, kept, resp.content)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

    @staticmethod
    async def _answer(
        writer: asyncio.StreamWriter,
        method: str,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in headers)]
        if method != "HEAD":
            lines.append(f"content-length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if method != "HEAD":
            writer.write(body)
        await writer.drain()


_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>injected by the test</Message></Error>"
)


@contextlib.asynccontextmanager
async def proxy_url(
    seaweedfs: SeaweedFS, s3_url: str, fail: Callable[[str, str], bool]
) -> AsyncIterator[tuple[str, FailingProxy]]:
    proxy = FailingProxy(seaweedfs.endpoint, fail)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = s3_url.replace(seaweedfs.endpoint, f"http://127.0.0.1:{port}")
    try:
        yield f"{url}&retries=0&multipart_threshold={5 * MIB}&part_size={5 * MIB}", proxy
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("step", "fail"),
    [
        # Every part fails: a part that succeeds concurrently with the abort can land after it
        # and re-create the upload's folder on SeaweedFS (a server-side race, not swell's).
        ("a part", lambda method, target: method == "PUT" and "partNumber=" in target),
        ("the completion", lambda method, target: method == "POST" and "uploadId=" in target),
    ],
)
async def test_a_multipart_put_that_fails_is_aborted_and_leaves_nothing(
    s3_url: str, seaweedfs: SeaweedFS, step: str, fail: Callable[[str, str], bool]
) -> None:
    before = pending_uploads(seaweedfs)
    async with proxy_url(seaweedfs, s3_url, fail) as (url, proxy):
        store = open_s3(url)
        try:
            with pytest.raises(BlobStoreUnavailable, match="answered 500 InternalError"):
                await store.put("1/1_2024-01-01_0#0.json.gz", DATA)
            assert proxy.failed, f"{step} was never tried: {proxy.seen}"
            with pytest.raises(BlobNotFound):  # no half object, and no whole one either
                await store.head("1/1_2024-01-01_0#0.json.gz")
        finally:
            await store.aclose()
        assert any(s.startswith("DELETE ") and "uploadId=" in s for s in proxy.seen), proxy.seen
    assert pending_uploads(seaweedfs) == before


async def test_a_cancelled_put_completes_or_aborts_but_never_lingers(
    s3_url: str, seaweedfs: SeaweedFS
) -> None:
    before = pending_uploads(seaweedfs)
    store = open_s3(f"{s3_url}&multipart_threshold={5 * MIB}&part_size={5 * MIB}")
    put = asyncio.ensure_future(store.put("dsar/7/0.json.gz", DATA))
    await asyncio.sleep(0.01)  # the upload is under way
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put
    await store.aclose()  # waits for what the cancelled caller left running
    store = open_s3(s3_url)
    try:
        # It may not have landed (that is allowed); a half object is not.
        with contextlib.suppress(BlobNotFound):
            assert await store.read("dsar/7/0.json.gz") == DATA
    finally:
        await store.aclose()
    assert pending_uploads(seaweedfs) == before


# -- readers ------------------------------------------------------------------------------------

OBJECT = os.urandom(300_000)


@pytest.fixture
async def windowed(s3_url: str) -> AsyncIterator[S3BlobStore]:
    """A store whose readers fetch 64 KiB windows, so a 300 kB object spans five of them."""
    store = open_s3(f"{s3_url}&read_window=65536&read_ahead=2")
    await store.put("r/o", OBJECT)
    yield store
    await store.aclose()


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    reads=st.lists(
        st.tuples(st.integers(0, len(OBJECT) - 1), st.integers(1, 150_000)), min_size=1, max_size=6
    ),
    chunk=st.integers(1000, 100_000),
    start=st.integers(0, len(OBJECT)),
)
def test_windowed_reads_and_streams_give_what_slicing_gives(
    s3_url: str, reads: list[tuple[int, int]], chunk: int, start: int
) -> None:
    async def run() -> None:
        store = open_s3(f"{s3_url}&read_window=65536&read_ahead=2")
        try:
            await store.put("r/o", OBJECT)
            reader = await store.open_reader("r/o")
            try:
                for offset, length in reads:  # in any order: jumps drop and refetch windows
                    length = min(length, len(OBJECT) - offset)
                    buffer = bytearray(length)
                    await reader.read_into(offset, memoryview(buffer))
                    assert bytes(buffer) == OBJECT[offset : offset + length]
            finally:
                await reader.aclose()
            chunks = [c async for c in store.stream("r/o", start, None, chunk)]
            assert all(0 < len(c) <= chunk for c in chunks)
            assert b"".join(chunks) == OBJECT[start:]
        finally:
            await store.aclose()

    asyncio.run(run())


async def test_a_read_past_the_end_is_refused(windowed: S3BlobStore) -> None:
    reader = await windowed.open_reader("r/o")
    try:
        with pytest.raises(BlobStoreUnavailable, match="shorter than expected"):
            await reader.read_into(len(OBJECT) - 10, memoryview(bytearray(20)))
    finally:
        await reader.aclose()
    with pytest.raises(BlobStoreUnavailable, match="shorter than expected"):
        _ = [c async for c in windowed.stream("r/o", 0, len(OBJECT) + 1)]


async def test_empty_objects_read_as_empty(s3_url: str) -> None:
    store = open_s3(s3_url)
    try:
        await store.put("e/0", b"")
        assert await store.read("e/0") == b""
        assert await store.read("e/0", 0, 10) == b""
        assert [c async for c in store.stream("e/0")] == []
        reader = await store.open_reader("e/0")
        await reader.read_into(0, memoryview(bytearray(0)))
        await reader.aclose()
    finally:
        await store.aclose()
