"""A live ``swell serve`` whose parts and DSAR outputs live in an S3 store (SeaweedFS): the
round trips a client makes, and a dead object store that comes back while swell keeps serving."""

from __future__ import annotations

import gzip
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import obstore
import orjson
import pytest
from obstore.store import S3Store

from tests.conftest import S3_BUCKET, LiveServer, hours_around_now, zip_lines
from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY, SeaweedFS

LiveKeys = tuple[Path, dict[str, Any], dict[str, Any]]
pytestmark = pytest.mark.slow


def events(tag: str, n: int, users: int = 5) -> list[dict[str, Any]]:
    return [
        {
            "user_id": f"user-{i % users}@example.com",
            "device_id": f"device-{i % users}",
            "event_type": "Stored In S3",
            "insert_id": f"{tag}-{i}",
            "event_properties": {"tag": tag, "i": i, "padding": "x" * 200},
        }
        for i in range(n)
    ]


def ingest(server: LiveServer, api_key: str, batch: list[dict[str, Any]]) -> None:
    resp = httpx.post(
        f"{server.url}/2/httpapi", json={"api_key": api_key, "events": batch}, timeout=30
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["events_ingested"] == len(batch)


def export(server: LiveServer, project: dict[str, Any]) -> httpx.Response:
    return httpx.get(
        f"{server.url}/api/2/export",
        params=hours_around_now(),
        auth=(project["api_key"], project["secret_key"]),
        timeout=60,
    )


def exported_ids(resp: httpx.Response) -> Counter[str]:
    assert resp.status_code == 200, resp.text
    return Counter(orjson.loads(line)["$insert_id"] for line in zip_lines(resp.content))


def keys_under(weed: SeaweedFS, bucket: str, prefix: str) -> list[str]:
    store = S3Store(
        bucket,
        endpoint=weed.endpoint,
        region=REGION,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    return sorted(str(m["path"]) for m in obstore.list(store, prefix=prefix).collect())


@pytest.fixture
def servers() -> Iterator[list[LiveServer]]:
    started: list[LiveServer] = []
    yield started
    for server in started:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()


def test_ingest_export_and_dsar_with_parts_and_outputs_in_s3(
    live_keys: LiveKeys, seaweedfs: SeaweedFS, servers: list[LiveServer]
) -> None:
    data_dir, org, project = live_keys
    prefix = f"e2e-{uuid.uuid4().hex}"
    env = {**seaweedfs.env(), "SWELL_BLOB_URL": seaweedfs.blob_url(S3_BUCKET, prefix)}
    server = LiveServer(data_dir, env=env)
    servers.append(server)
    server.start()
    sent = events("round-trip", 300)
    ingest(server, project["api_key"], sent[:150])
    ingest(server, project["api_key"], sent[150:])

    # Export: a zip of gzipped NDJSON, read as a client reads it; every event once.
    resp = export(server, project)
    got = exported_ids(resp)
    assert got == Counter(e["insert_id"] for e in sent)
    stored = keys_under(seaweedfs, S3_BUCKET, f"{prefix}/")
    parts = [k for k in stored if k.startswith(f"{prefix}/{project['project_id']}/")]
    assert parts
    assert all(k.endswith(".json.gz") for k in parts)
    assert not (data_dir / "blobs").exists()  # nothing went to the local disk instead
    # A resumed download (Range) gives the tail of the same archive.
    tail = httpx.get(
        f"{server.url}/api/2/export",
        params=hours_around_now(),
        auth=(project["api_key"], project["secret_key"]),
        headers={"Range": f"bytes={len(resp.content) // 3}-", "If-Range": resp.headers["etag"]},
        timeout=60,
    )
    assert tail.status_code == 206
    assert tail.content == resp.content[len(resp.content) // 3 :]

    # DSAR: POST, poll, download the outputs swell wrote to S3.
    org_auth = (org["api_key"], org["secret_key"])
    today = time.strftime("%Y-%m-%d", time.gmtime())
    created = httpx.post(
        f"{server.url}/api/2/dsar/requests",
        json={"userId": "user-3@example.com", "startDate": "2020-01-01", "endDate": today},
        auth=org_auth,
        timeout=30,
    )
    assert created.status_code == 202, created.text
    request_id = created.json()["requestId"]
    deadline = time.monotonic() + 60
    while True:
        status = httpx.get(
            f"{server.url}/api/2/dsar/requests/{request_id}", auth=org_auth, timeout=30
        ).json()
        if status["status"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status["status"] == "done", status
    rows = []
    for url in status["urls"]:
        out = httpx.get(url, auth=org_auth, timeout=30)
        assert out.status_code == 200, out.text
        assert out.headers["content-type"] == "application/gzip"
        rows += [orjson.loads(line) for line in gzip.decompress(out.content).splitlines()]
    assert sorted(r["$insert_id"] for r in rows) == sorted(
        e["insert_id"] for e in sent if e["user_id"] == "user-3@example.com"
    )
    assert keys_under(seaweedfs, S3_BUCKET, f"{prefix}/dsar/{request_id}/")
    assert server.terminate() == 0


def wait_for(what: str, check: Any, timeout: float = 90) -> Any:
    """Poll ``check()`` until it returns something true (bounded), and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout} s")


def test_a_dead_object_store_answers_503_and_everything_catches_up_when_it_returns(
    live_keys: LiveKeys, tmp_path: Path, servers: list[LiveServer]
) -> None:
    data_dir, _, project = live_keys
    weed = SeaweedFS(tmp_path / "seaweedfs-dying")  # its own server: this one gets killed
    try:
        try:
            weed.start()
        except RuntimeError as exc:
            pytest.fail(f"SeaweedFS did not start: {exc}")
        weed.create_bucket("dying")
        env = {
            **weed.env(),
            "SWELL_BLOB_URL": weed.blob_url("dying", "parts", timeout=5, retries=1),
            "SWELL_SEAL_CHECK_SECONDS": "0.5",
        }
        server = LiveServer(data_dir, env=env)
        servers.append(server)
        server.start()
        acked: list[str] = []
        for n in range(3):
            batch = events(f"before-{n}", 40)
            ingest(server, project["api_key"], batch)
            acked += [e["insert_id"] for e in batch]
        assert sum(exported_ids(export(server, project)).values()) == len(acked)

        weed.kill()  # kill -9 of the object store while swell serves
        for n in range(4):
            batch = events(f"while-dead-{n}", 40)
            ingest(server, project["api_key"], batch)  # the log is durable: still 200
            acked += [e["insert_id"] for e in batch]
        resp = export(server, project)
        assert resp.status_code == 503, resp.text
        assert resp.json()["cause"] == "blob_store"
        assert resp.headers["retry-after"].isdigit()
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["seal"]["ok"] is False
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        batch = events("after-refusal", 40)
        ingest(server, project["api_key"], batch)
        acked += [e["insert_id"] for e in batch]

        weed.start()  # the same ports and data directory
        got = exported_ids(wait_for("an export", lambda: _ok(export(server, project))))
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert set(got) == set(acked), f"{len(set(acked) - set(got))} acknowledged events missing"
        assert max(got.values()) == 1, "an acknowledged event was exported twice"
        assert server.terminate() == 0
    finally:
        weed.kill()


def _ok(resp: httpx.Response) -> httpx.Response | None:
    return resp if resp.status_code == 200 else None
