"""Exports across a compaction, read as a client reads them: the same lines in the same order,
members renumbered from #0, a new ETag, and a resume against the old one answered whole."""

from __future__ import annotations

import gzip
import io
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from swell.api.app import create_app
from swell.export import plan_export, stream_export
from swell.model import hour_of
from swell.settings import Settings
from tests.api.test_export_api import BASE, load, record
from tests.conftest import Keys, create_keys, run_cli

PARAMS = {"start": f"{BASE:%Y%m%dT%H}", "end": f"{BASE:%Y%m%dT%H}"}


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "data", seal_check_seconds=3600, replaced_blob_grace_seconds=0
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def members(body: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        return [(name, gzip.decompress(zf.read(name))) for name in zf.namelist()]


def crowd(client: TestClient, keys: Keys, batches: int = 6, per: int = 50) -> list[bytes]:
    """``batches`` imports into one past hour (each seals its own part); the lines sent."""
    sent: list[bytes] = []
    for b in range(batches):
        records = [
            record(
                keys.project_id, BASE + timedelta(minutes=b, seconds=i), b * per + i, f"u{i % 7}"
            )
            for i in range(per)
        ]
        load(client, keys.project_id, records)
        sent += [orjson.dumps(r) for r in records]
    return sent


def compact(client: TestClient) -> list[Any]:
    store = client.app.state.swell.store  # type: ignore[attr-defined]
    assert client.portal is not None
    result: list[Any] = client.portal.call(store.compact)
    return result


def test_an_export_after_compaction_holds_the_same_lines_in_one_member(
    app_client: TestClient,
) -> None:
    keys = create_keys(app_client)
    crowd(app_client, keys)
    before = app_client.get("/api/2/export", params=PARAMS, auth=keys.export_auth)
    assert before.status_code == 200
    old = members(before.content)
    prefix = f"{keys.project_id}/{keys.project_id}_{BASE:%Y-%m-%d}_{BASE.hour}#"
    assert [name for name, _ in old] == [f"{prefix}{n}.json.gz" for n in range(6)]
    [done] = compact(app_client)
    assert (done.parts_before, done.parts_after) == (6, 1)
    after = app_client.get("/api/2/export", params=PARAMS, auth=keys.export_auth)
    assert after.status_code == 200
    new = members(after.content)
    assert [name for name, _ in new] == [f"{prefix}0.json.gz"]
    assert new[0][1].endswith(b"\n")
    assert new[0][1] == b"".join(raw for _, raw in old)  # byte for byte, in order
    assert after.headers["etag"] != before.headers["etag"]
    # A client resuming the old archive gets the new one whole, never a mix of the two.
    resumed = app_client.get(
        "/api/2/export",
        params=PARAMS,
        auth=keys.export_auth,
        headers={"Range": "bytes=100-", "If-Range": before.headers["etag"]},
    )
    assert resumed.status_code == 200
    assert resumed.headers["etag"] == after.headers["etag"]
    assert resumed.content == after.content


def test_an_export_planned_before_the_swap_streams_whole(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", seal_check_seconds=3600)  # default grace
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        keys = create_keys(client)
        crowd(client, keys)
        store = client.app.state.swell.store  # type: ignore[attr-defined]
        assert client.portal is not None
        hour = hour_of(BASE)

        async def planned_then_compacted() -> tuple[bytes, bytes]:
            plan = await plan_export(store.meta, keys.project_id, hour, hour, max_bytes=1 << 30)
            chunks = stream_export(plan, store.blobs)
            first = bytes(await anext(chunks))  # streaming has begun
            await store.compact()
            rest = b"".join([bytes(c) async for c in chunks])
            old = b"".join([bytes(c) async for c in stream_export(plan, store.blobs)])
            return first + rest, old

        streamed, again = client.portal.call(planned_then_compacted)
    assert streamed == again
    assert len(members(streamed)) == 6


def test_compaction_splits_at_the_part_size_and_numbers_from_zero(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", seal_check_seconds=3600, part_max_bytes=40_000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        keys = create_keys(client)
        sent = crowd(client, keys, batches=8, per=40)
        before = client.get("/api/2/export", params=PARAMS, auth=keys.export_auth)
        compact(client)
        after = client.get("/api/2/export", params=PARAMS, auth=keys.export_auth)
    old, new = members(before.content), members(after.content)
    assert 1 < len(new) < len(old)
    assert [name.rsplit("#", 1)[1] for name, _ in new] == [f"{n}.json.gz" for n in range(len(new))]
    assert all(raw.endswith(b"\n") for _, raw in new)
    assert b"".join(raw for _, raw in new) == b"".join(raw for _, raw in old)
    assert len(b"".join(raw for _, raw in new).splitlines()) == len(sent)


def test_the_user_index_points_at_the_merged_part(app_client: TestClient) -> None:
    keys = create_keys(app_client)
    crowd(app_client, keys)
    compact(app_client)
    store = app_client.app.state.swell.store  # type: ignore[attr-defined]
    assert app_client.portal is not None
    aids = {orjson.loads(line)["amplitude_id"] for line in crowd_lines(app_client, keys)}
    located = app_client.portal.call(store.meta.user_blocks, keys.project_id, sorted(aids))
    assert {entry.part.seq for entry in located} == {0}
    assert sum(entry.events for entry in located) == 300


def crowd_lines(client: TestClient, keys: Keys) -> list[bytes]:
    body = client.get("/api/2/export", params=PARAMS, auth=keys.export_auth).content
    return [line for _, raw in members(body) for line in raw.splitlines()]


def test_swell_compact_merges_and_reports(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    org = run_cli("org", "create", "acme", data_dir=data_dir)
    project = run_cli("project", "create", "web", "--org", str(org["org_id"]), data_dir=data_dir)
    pid = project["project_id"]
    for b in range(3):
        path = tmp_path / f"batch{b}.json"
        path.write_bytes(
            b"\n".join(
                orjson.dumps(record(pid, BASE + timedelta(minutes=b, seconds=i), b * 10 + i))
                for i in range(10)
            )
        )
        run_cli("import", str(path), "--project", str(pid), data_dir=data_dir)
    result = run_cli("compact", "--project", str(pid), data_dir=data_dir)
    assert (result["hours"], result["parts_before"], result["parts_after"]) == (1, 3, 1)
    assert result["bytes_read"] > 0
    again = run_cli("compact", data_dir=data_dir)
    assert (again["hours"], again["parts_before"]) == (0, 0)
