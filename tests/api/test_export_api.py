"""The Export API read as a client reads it: unzip, gunzip each member, parse each line."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import io
import os
import random
import shutil
import socket
import subprocess
import threading
import time
import zipfile
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import swell.export
from swell.api.app import create_app
from swell.backends.localfs import LocalBlobReader, LocalBlobStore
from swell.export import CHUNK, BufferPool, ExportPlan, stream_export
from swell.model import EXPORT_KEYS, Part, format_ts, hour_of, hour_start, part_name
from swell.ziplayout import Literal, Member, ZipLayout
from tests.conftest import Keys, create_keys

BASE = datetime(2024, 3, 5, tzinfo=UTC)


def record(project_id: int, upload: datetime, n: int, user: str = "u-0001") -> dict[str, Any]:
    rec: dict[str, Any] = dict.fromkeys(EXPORT_KEYS)
    rec.update(
        {
            "$insert_id": f"ins-{n}",
            "amplitude_id": 1000 + hash(user) % 1000,
            "app": project_id,
            "data": {"path": "/2/httpapi"},
            "event_properties": {"n": n},
            "event_time": format_ts(upload),
            "event_type": "Page Viewed",
            "group_properties": {},
            "groups": {},
            "plan": {},
            "server_upload_time": format_ts(upload),
            "user_id": user,
            "user_properties": {},
            "uuid": f"00000000-0000-4000-8000-{n:012d}",
        }
    )
    return rec


def load(client: TestClient, project_id: int, records: list[dict[str, Any]]) -> None:
    store = client.app.state.swell.store  # type: ignore[attr-defined]
    assert client.portal is not None
    client.portal.call(store.import_records, project_id, [(orjson.dumps(r), r) for r in records])


def read_zip(body: bytes) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        for name in zf.namelist():
            raw = gzip.decompress(zf.read(name))
            assert raw.endswith(b"\n")
            out[name] = [orjson.loads(line) for line in raw.splitlines()]
    return out


def export(client: TestClient, keys: Keys, start: str, end: str, **kw: Any) -> Any:
    return client.get(
        "/api/2/export", params={"start": start, "end": end}, auth=keys.export_auth, **kw
    )


@pytest.fixture
def loaded(client: TestClient, keys: Keys) -> list[dict[str, Any]]:
    # Hours 0, 5, 9 and 23 of 2024-03-05, plus hour 0 of the next day; 3 events each.
    hours = [0, 5, 9, 23, 24]
    records = [
        record(keys.project_id, BASE + timedelta(hours=h, minutes=10 * i), h * 10 + i)
        for h in hours
        for i in range(3)
    ]
    load(client, keys.project_id, records)
    return records


def test_export_returns_one_member_per_part_named_like_amplitude(client, keys, loaded):
    resp = export(client, keys, "20240305T00", "20240305T23")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/zip"
    members = read_zip(resp.content)
    p = keys.project_id
    assert sorted(members) == sorted(f"{p}/{p}_2024-03-05_{h}#0.json.gz" for h in (0, 5, 9, 23))
    got = sorted(r["$insert_id"] for rows in members.values() for r in rows)
    want = sorted(r["$insert_id"] for r in loaded if r["server_upload_time"] < "2024-03-06")
    assert got == want
    # Records come back exactly as stored: same keys, same order, same values.
    first = members[f"{p}/{p}_2024-03-05_5#0.json.gz"][0]
    assert list(first) == list(EXPORT_KEYS)
    assert first == next(r for r in loaded if r["$insert_id"] == first["$insert_id"])


def test_both_hours_are_inclusive(client, keys, loaded):
    members = read_zip(export(client, keys, "20240305T05", "20240305T09").content)
    assert len(members) == 2
    assert sum(len(rows) for rows in members.values()) == 6


def test_bare_dates_cover_whole_days(client, keys, loaded):
    members = read_zip(export(client, keys, "20240305", "20240306").content)
    assert sum(len(rows) for rows in members.values()) == 15


def test_unpadded_hour_is_accepted(client, keys, loaded):
    assert export(client, keys, "20240305T5", "20240305T5").status_code == 200


def test_no_data_is_404_with_amplitudes_text(client, keys, loaded):
    resp = export(client, keys, "20240305T01", "20240305T04")
    assert resp.status_code == 404
    assert resp.text == "Raw data files were not found."


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"end": "20240305T01"}, "Missing required parameter 'start'"),
        ({"start": "20240305T01"}, "Missing required parameter 'end'"),
        ({"start": "2024-03-05", "end": "20240305T01"}, "Invalid 'start'"),
        ({"start": "20240305T24", "end": "20240305T01"}, "the hour must be 00 to 23"),
        ({"start": "20240230T00", "end": "20240305T01"}, "no such date"),
        ({"start": "20240305T05", "end": "20240305T04"}, "'start' is after 'end'"),
        ({"start": "20230101T00", "end": "20240305T04"}, "maximum queryable period is 365 days"),
        ({"start": "1" * 5000, "end": "20240305T04"}, "Invalid 'start'"),
    ],
)
def test_bad_parameters_are_400_with_distinct_messages(client, keys, params, fragment):
    resp = client.get("/api/2/export", params=params, auth=keys.export_auth)
    assert resp.status_code == 400
    assert fragment in resp.text
    assert "Traceback" not in resp.text


def test_a_full_365_day_range_is_allowed(client, keys, loaded):
    assert export(client, keys, "20230307T00", "20240305T23").status_code == 200


@pytest.mark.parametrize(
    "auth",
    [None, ("nope", "nope"), "wrong-secret", "org-key"],
)
def test_bad_credentials_are_401_with_basic_challenge(client, keys, auth):
    if auth == "wrong-secret":
        auth = (keys.api_key, keys.org_secret)
    elif auth == "org-key":
        auth = keys.org_auth
    resp = client.get(
        "/api/2/export", params={"start": "20240305T00", "end": "20240305T01"}, auth=auth
    )
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Basic")


def test_malformed_authorization_header_is_401(client, keys):
    resp = client.get(
        "/api/2/export",
        params={"start": "20240305T00", "end": "20240305T01"},
        headers={"Authorization": "Basic !!!not-base64"},
    )
    assert resp.status_code == 401


def test_a_projects_keys_see_only_that_project(client, keys, loaded):
    other = create_keys(client, "globex")
    assert export(client, other, "20240305T00", "20240305T23").status_code == 404


def test_read_your_writes_after_ingest(client, keys):
    now = datetime.now(UTC)
    events = [
        {"user_id": "reader@example.com", "event_type": "Wrote", "insert_id": f"w-{i}"}
        for i in range(25)
    ]
    resp = client.post("/2/httpapi", json={"api_key": keys.api_key, "events": events})
    assert resp.json()["code"] == 200
    start = (now - timedelta(hours=1)).strftime("%Y%m%dT%H")
    end = (now + timedelta(hours=1)).strftime("%Y%m%dT%H")
    rows = [r for rs in read_zip(export(client, keys, start, end).content).values() for r in rs]
    assert sorted(r["$insert_id"] for r in rows) == sorted(f"w-{i}" for i in range(25))


def test_etag_is_stable_and_range_resumes(client, keys, loaded):
    full = export(client, keys, "20240305T00", "20240306T23")
    again = export(client, keys, "20240305T00", "20240306T23")
    etag = full.headers["etag"]
    assert etag.startswith('"')
    assert etag == again.headers["etag"]
    assert full.content == again.content
    assert int(full.headers["content-length"]) == len(full.content)
    assert full.headers["accept-ranges"] == "bytes"
    size = len(full.content)
    for first, last in [(0, 0), (10, 99), (size // 2, size - 1), (size - 1, size - 1)]:
        part = export(
            client,
            keys,
            "20240305T00",
            "20240306T23",
            headers={"Range": f"bytes={first}-{last}", "If-Range": etag},
        )
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert part.content == full.content[first : last + 1]
    tail = export(client, keys, "20240305T00", "20240306T23", headers={"Range": "bytes=-7"})
    assert tail.content == full.content[-7:]
    open_ended = export(client, keys, "20240305T00", "20240306T23", headers={"Range": "bytes=5-"})
    assert open_ended.content == full.content[5:]


def test_if_range_with_a_stale_etag_sends_everything(client, keys, loaded):
    full = export(client, keys, "20240305T00", "20240306T23")
    resp = export(
        client,
        keys,
        "20240305T00",
        "20240306T23",
        headers={"Range": "bytes=10-20", "If-Range": '"stale"'},
    )
    assert resp.status_code == 200
    assert resp.content == full.content


def test_unsatisfiable_range_is_416(client, keys, loaded):
    full = export(client, keys, "20240305T00", "20240306T23")
    size = len(full.content)
    resp = export(client, keys, "20240305T00", "20240306T23", headers={"Range": f"bytes={size}-"})
    assert resp.status_code == 416
    assert resp.headers["content-range"] == f"bytes */{size}"


def test_head_gives_headers_without_body(client, keys, loaded):
    full = export(client, keys, "20240305T00", "20240306T23")
    head = client.head(
        "/api/2/export",
        params={"start": "20240305T00", "end": "20240306T23"},
        auth=keys.export_auth,
    )
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(full.content))
    assert head.headers["etag"] == full.headers["etag"]


def test_new_data_in_a_range_changes_the_etag(client, keys, loaded):
    before = export(client, keys, "20240305T00", "20240306T23").headers["etag"]
    load(client, keys.project_id, [record(keys.project_id, BASE + timedelta(hours=5), 999)])
    after = export(client, keys, "20240305T00", "20240306T23")
    assert after.headers["etag"] != before
    members = read_zip(after.content)
    p = keys.project_id
    assert f"{p}/{p}_2024-03-05_5#1.json.gz" in members


def test_exports_over_the_size_limit_are_400(tmp_path: Path):
    from swell.settings import Settings

    settings = Settings(data_dir=tmp_path / "d", seal_check_seconds=3600, export_max_bytes=500)
    with TestClient(create_app(settings)) as client:
        keys = create_keys(client)
        load(client, keys.project_id, [record(keys.project_id, BASE, i) for i in range(20)])
        resp = export(client, keys, "20240305T00", "20240305T23")
        assert resp.status_code == 400
        assert "too large" in resp.text
        assert "500 bytes" in resp.text


def test_concurrent_exports_during_ingest_are_all_correct(client, keys, loaded):
    expected = export(client, keys, "20240305T00", "20240306T23").content
    results: list[bytes] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(export(client, keys, "20240305T00", "20240306T23").content)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for i in range(5):
        client.post(
            "/2/httpapi",
            json={
                "api_key": keys.api_key,
                "events": [{"user_id": "busy@example.com", "event_type": f"e{i}"}],
            },
        )
    for t in threads:
        t.join(60)
    assert not errors
    assert results == [expected] * 6


@pytest.mark.parametrize("tool", ["unzip", "bsdtar"])
def test_archive_is_readable_by_standard_tools(client, keys, loaded, tmp_path, tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    path = tmp_path / "export.zip"
    path.write_bytes(export(client, keys, "20240305T00", "20240306T23").content)
    cmd = ["unzip", "-t", str(path)] if tool == "unzip" else ["bsdtar", "-tvf", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert f"{keys.project_id}_2024-03-05_23#0.json.gz" in out.stdout


def test_a_blob_whose_size_differs_from_the_catalog_fails_before_streaming(client, keys, loaded):
    store = client.app.state.swell.store  # type: ignore[attr-defined]
    p = keys.project_id
    blob = store.blobs.root / str(p) / f"{p}_2024-03-05_5#0.json.gz"
    blob.write_bytes(blob.read_bytes() + b"\0")
    resp = export(client, keys, "20240305T00", "20240305T23")
    assert resp.status_code == 503
    assert "the catalog says" in resp.text
    assert "etag" not in resp.headers


# -- streaming: pooled buffers, chunk boundaries ---------------------------------------------------

# Member sizes chosen so headers and data straddle CHUNK boundaries in every way: a member ending a
# few bytes before a boundary (its successor's header crosses it), empty and 1-byte members, a
# member of exactly CHUNK bytes, members spanning several chunks.
SIZES = [CHUNK - 100, 1, 0, 3 * CHUNK + 7, 12_345, CHUNK, 0, 2 * CHUNK - 1, 5]


class StreamOnly:
    """A blob store without readers: stream_export falls back to the store's own chunks."""

    def __init__(self, inner: LocalBlobStore) -> None:
        self._inner = inner

    def stream(self, key: str, start: int = 0, end: int | None = None, chunk: int = 1 << 20):
        return self._inner.stream(key, start, end, chunk)


async def make_plan(
    root: Path, sizes: list[int] = SIZES
) -> tuple[ExportPlan, LocalBlobStore, dict[str, bytes]]:
    blobs = LocalBlobStore(root)
    rng = random.Random(20240305)
    parts: list[Part] = []
    contents: dict[str, bytes] = {}
    for i, size in enumerate(sizes):
        data = rng.randbytes(size)
        part = Part(9, 475_000 + i, 0, size, zlib.crc32(data), 1, "", "", 0, (0,))
        await blobs.put(part.name, data)
        parts.append(part)
        contents[part.name] = data
    members = [Member(p.name, p.size, p.crc32) for p in parts]
    layout = ZipLayout(members, mtime=datetime(2024, 3, 5, tzinfo=UTC))
    return ExportPlan(tuple(parts), layout), blobs, contents


async def expected_bytes(plan: ExportPlan, blobs: LocalBlobStore) -> bytes:
    """The archive built the simple way: each layout piece read whole, no buffers involved."""
    out = bytearray()
    for segment in plan.layout.segments():
        if isinstance(segment, Literal):
            out += segment.data
        else:
            name = plan.parts[segment.member].name
            out += await blobs.read(name, segment.start, segment.end)
    return bytes(out)


@pytest.fixture
async def planned(tmp_path):
    plan, blobs, contents = await make_plan(tmp_path / "blobs")
    return plan, blobs, contents, await expected_bytes(plan, blobs)


async def test_stream_fills_whole_chunks_and_rebuilds_every_member(planned):
    plan, blobs, contents, expected = planned
    held = [chunk async for chunk in stream_export(plan, blobs)]  # every chunk kept alive
    assert [len(c) for c in held[:-1]] == [CHUNK] * (len(held) - 1)
    assert 0 < len(held[-1]) <= CHUNK
    body = b"".join(held)
    assert body == expected
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        assert {name: zf.read(name) for name in zf.namelist()} == contents


async def test_stream_matches_the_fallback_for_stores_without_readers(planned):
    plan, blobs, _, expected = planned
    fallback = [chunk async for chunk in stream_export(plan, StreamOnly(blobs))]
    assert all(isinstance(c, bytes) for c in fallback)
    assert b"".join(fallback) == expected


@pytest.mark.parametrize("window", [0, 1, 2, 3])
async def test_buffers_are_reused_only_once_released(planned, window):
    """A consumer that keeps the last `window` chunks (as a transport keeps queued writes) and
    copies them only when they leave its window: any buffer refilled too early shows up as
    different bytes."""
    plan, blobs, _, expected = planned
    out = bytearray()
    queued: list[bytes | memoryview] = []
    async for chunk in stream_export(plan, blobs):
        queued.append(chunk)
        del chunk
        while len(queued) > window:
            out += queued.pop(0)
    for chunk in queued:
        out += chunk
    assert out == expected


async def test_ranges_across_chunk_and_header_boundaries(planned):
    plan, blobs, _, expected = planned
    size = plan.size
    cuts = {1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, size // 2, size - CHUNK, size - 1}
    with zipfile.ZipFile(io.BytesIO(expected)) as zf:
        for info in zf.infolist():  # into, just after and across each local header
            cuts |= {info.header_offset + d for d in (0, 1, 29, 30, 31, 40)}
    for cut in sorted(c for c in cuts if 0 < c < size):
        for first, last in [(0, cut), (cut, size), (cut, min(size, cut + CHUNK + 3))]:
            got = b"".join([chunk async for chunk in stream_export(plan, blobs, first, last)])
            assert got == expected[first:last], (first, last)


def test_buffer_pool_hands_out_a_buffer_again_only_when_nothing_holds_it():
    pool = BufferPool(16, keep=2)
    first = pool.take()
    view = memoryview(first)[4:8]
    del first
    second = pool.take()
    assert second is not view.obj  # still viewed: not handed out again
    del second
    assert pool.take() is not view.obj
    view.release()
    del view
    again = pool.take()
    assert pool.created == 2  # the first buffer came back once its view was gone
    assert len(again) == 16


def test_buffer_pool_keeps_at_most_keep_buffers():
    pool = BufferPool(8, keep=2)
    held = [pool.take() for _ in range(5)]  # a consumer holding more than the pool keeps
    kept = [id(buffer) for buffer in held[:2]]
    assert pool.created == 5
    del held
    again = [pool.take() for _ in range(3)]
    assert [id(buffer) for buffer in again[:2]] == kept  # the kept two, reused
    assert pool.created == 6  # the other three were not kept


@contextlib.asynccontextmanager
async def uvicorn_serving(plan: ExportPlan, blobs: LocalBlobStore) -> AsyncIterator[int]:
    """GET /zip streams the plan, under uvicorn as `swell serve` runs it (uvloop, httptools), in a
    thread; yields the port."""

    async def route(request: Request) -> StreamingResponse:
        return StreamingResponse(
            stream_export(plan, blobs), headers={"Content-Length": str(plan.size)}
        )

    config = uvicorn.Config(
        Starlette(routes=[Route("/zip", route)]),
        host="127.0.0.1",
        port=0,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)


async def test_uvicorn_keeps_queued_chunks_intact_for_a_slow_reader(planned, monkeypatch):
    """uvloop's transport queues written chunks without copying them when the client reads
    slowly; the bytes received must still be exactly the archive."""
    plan, blobs, _, expected = planned
    pools: list[BufferPool] = []

    class RecordedPool(BufferPool):
        def __init__(self, size: int, keep: int = 4) -> None:
            super().__init__(size, keep)
            pools.append(self)

    monkeypatch.setattr(swell.export, "BufferPool", RecordedPool)
    async with uvicorn_serving(plan, blobs) as port:
        raw = await asyncio.to_thread(slow_download, port, "/zip")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert len(body) == len(expected)
    assert body == expected
    # The transport really held chunks back: more than one buffer was in use at once, and
    # buffers were still reused rather than made anew per chunk.
    chunks = -(-plan.size // CHUNK)
    assert len(pools) == 1
    assert 1 < pools[0].created < chunks


async def test_a_client_that_hangs_up_midway_stops_the_reads_and_leaves_no_blob_open(
    tmp_path, monkeypatch
):
    # Larger than what loopback socket buffers absorb, so the stream is cut while it runs.
    plan, blobs, _ = await make_plan(tmp_path / "blobs", [24 * CHUNK, 24 * CHUNK])
    read = 0
    read_into = LocalBlobReader.read_into

    async def counting(self: LocalBlobReader, offset: int, buffer: memoryview) -> None:
        nonlocal read
        read += len(buffer)
        await read_into(self, offset, buffer)

    monkeypatch.setattr(LocalBlobReader, "read_into", counting)

    def open_blobs() -> list[str]:
        fds = Path("/proc/self/fd")
        targets = []
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):
                targets.append(os.readlink(fd))
        return [t for t in targets if t.startswith(str(blobs.root))]

    def hang_up(port: int) -> int:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /zip HTTP/1.1\r\nHost: t\r\n\r\n")
            got = 0
            while got < 3 * CHUNK:
                got += len(sock.recv(64 * 1024))
            return got

    async with uvicorn_serving(plan, blobs) as port:
        assert await asyncio.to_thread(hang_up, port) >= 3 * CHUNK
        for _ in range(200):
            gc.collect()
            if not open_blobs():
                break
            await asyncio.sleep(0.02)
        assert open_blobs() == []
    # Sends to a client that is gone return at once; the stream must notice, not read on.
    assert read < plan.size // 2


def slow_download(port: int, path: str) -> bytes:
    """A GET read 16 KiB at a time through a small receive buffer, pausing between reads."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        sock.settimeout(60)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = bytearray()
        while chunk := sock.recv(16 * 1024):
            data += chunk
            time.sleep(0.0002)
        return bytes(data)


def test_part_names_keep_amplitudes_format_across_years_and_leap_days():
    first = hour_of(datetime(1970, 1, 1, tzinfo=UTC))
    for hour in [*range(first, first + 49), *range(hour_of(BASE) - 24 * 370, hour_of(BASE), 13)]:
        start = hour_start(hour)
        want = f"7/7_{start:%Y-%m-%d}_{start.hour}#3.json.gz"
        assert part_name(7, hour, 3) == want
    assert part_name(1, hour_of(datetime(2024, 2, 29, 5, tzinfo=UTC)), 0) == (
        "1/1_2024-02-29_5#0.json.gz"
    )
