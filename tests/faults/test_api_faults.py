"""What a client sees while storage fails: 503s with a JSON body naming the cause and a
Retry-After on every surface, /healthz 200 and /readyz 503, and everything caught up once the
fault ends, without a restart."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from swell.api.app import create_app
from swell.backends.faults import Faults
from swell.settings import Settings
from tests.conftest import Keys, create_keys, hours_around_now, zip_lines
from tests.faults.conftest import wrap_with

REQUESTS = "/api/2/dsar/requests"
TODAY = f"{datetime.now(UTC):%Y-%m-%d}"


@pytest.fixture
def faulty(fault_settings: Settings, faults: Faults) -> Iterator[TestClient]:
    app = create_app(fault_settings, wrap_backends=wrap_with(faults))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def send(client: TestClient, keys: Keys, user: str, n: int, tag: str) -> set[str]:
    events = [{"user_id": user, "event_type": "Fault", "insert_id": f"{tag}-{i}"} for i in range(n)]
    resp = client.post("/2/httpapi", json={"api_key": keys.api_key, "events": events})
    assert resp.status_code == 200, resp.text
    return {e["insert_id"] for e in events}


def export(client: TestClient, keys: Keys) -> Any:
    return client.get("/api/2/export", params=hours_around_now(), auth=keys.export_auth)


def assert_unavailable(resp: Any, cause: str) -> dict[str, Any]:
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert int(resp.headers["retry-after"]) >= 1
    body: dict[str, Any] = resp.json()
    assert body["cause"] == cause
    assert body["error"]
    assert "Traceback" not in resp.text
    return body


def test_export_answers_503_while_the_blob_store_fails_and_200_after(
    faulty: TestClient, faults: Faults
) -> None:
    keys = create_keys(faulty)
    acked = send(faulty, keys, "alice", 5, "a")
    faults.fail("blobs.put")
    body = assert_unavailable(export(faulty, keys), "blob_store")
    assert set(body) == {"error", "cause"}  # the Export surface's JSON 503
    assert faulty.get("/healthz").status_code == 200
    ready = faulty.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert ready.json()["checks"]["seal"]["ok"] is False
    acked |= send(faulty, keys, "bobby", 5, "b")  # ingestion keeps acknowledging
    faults.heal()
    resp = export(faulty, keys)
    assert resp.status_code == 200
    stored = [orjson.loads(line)["$insert_id"] for line in zip_lines(resp.content)]
    assert sorted(stored) == sorted(acked)
    assert faulty.get("/readyz").status_code == 200


def test_ingestion_answers_503_with_the_amplitude_shape_when_state_cannot_load(
    faulty: TestClient, faults: Faults
) -> None:
    keys = create_keys(faulty)
    faults.fail("meta.load_state", "EIO")
    resp = faulty.post(
        "/2/httpapi",
        json={"api_key": keys.api_key, "events": [{"user_id": "carol", "event_type": "e"}]},
    )
    body = assert_unavailable(resp, "metadata_store")
    assert body["code"] == 503  # SDKs read the code from the body, and retry a 5xx


def test_dsar_creation_answers_503_while_seals_fail(faulty: TestClient, faults: Faults) -> None:
    keys = create_keys(faulty)
    acked = send(faulty, keys, "alice", 4, "a")
    faults.fail("blobs.put")
    assert_unavailable(export(faulty, keys), "blob_store")
    dates = {"startDate": TODAY, "endDate": TODAY}
    resp = faulty.post(REQUESTS, json={"userId": "alice", **dates}, auth=keys.org_auth)
    assert_unavailable(resp, "blob_store")
    faults.heal()
    resp = faulty.post(REQUESTS, json={"userId": "alice", **dates}, auth=keys.org_auth)
    assert resp.status_code == 202
    status = poll(faulty, keys, resp.json()["requestId"])
    assert status["status"] == "done"
    lines = gzip.decompress(faulty.get(status["urls"][0], auth=keys.org_auth).content)
    assert {orjson.loads(line)["$insert_id"] for line in lines.splitlines()} == acked


def test_a_dsar_job_waits_out_a_blob_store_outage(faulty: TestClient, faults: Faults) -> None:
    keys = create_keys(faulty)
    acked = send(faulty, keys, "alice", 4, "a")
    faults.fail("blobs.put", skip=1, times=1)  # the part seals; the output put fails once
    dates = {"startDate": TODAY, "endDate": TODAY}
    resp = faulty.post(REQUESTS, json={"userId": "alice", **dates}, auth=keys.org_auth)
    status = poll(faulty, keys, resp.json()["requestId"])
    assert status["status"] == "done", status
    assert faults.injected["blobs.put"] == 1
    lines = gzip.decompress(faulty.get(status["urls"][0], auth=keys.org_auth).content)
    assert {orjson.loads(line)["$insert_id"] for line in lines.splitlines()} == acked


def test_a_dsar_download_answers_503_when_the_blob_store_fails(
    faulty: TestClient, faults: Faults
) -> None:
    keys = create_keys(faulty)
    send(faulty, keys, "alice", 2, "a")
    dates = {"startDate": TODAY, "endDate": TODAY}
    resp = faulty.post(REQUESTS, json={"userId": "alice", **dates}, auth=keys.org_auth)
    status = poll(faulty, keys, resp.json()["requestId"])
    faults.fail("blobs.head", "EIO")
    assert_unavailable(faulty.get(status["urls"][0], auth=keys.org_auth), "blob_store")


def test_the_dsar_budget_survives_a_restart(fault_settings: Settings, faults: Faults) -> None:
    settings = fault_settings.replace(dsar_cost_per_hour=20)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        keys = create_keys(client)
        for _ in range(2):  # 16 of the 20
            resp = client.post(REQUESTS, json={"userId": "x"}, auth=keys.org_auth)
            assert resp.status_code == 400  # charged before validation
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        resp = client.post(REQUESTS, json={"userId": "x"}, auth=keys.org_auth)
        assert resp.status_code == 429
        assert int(resp.headers["retry-after"]) > 3000


def poll(client: TestClient, keys: Keys, request_id: int) -> dict[str, Any]:
    for _ in range(2000):
        resp = client.get(f"{REQUESTS}/{request_id}", auth=keys.org_auth)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        if body["status"] in {"done", "failed"}:
            return body
        time.sleep(0.005)
    raise AssertionError(f"request {request_id} did not finish: {body}")
