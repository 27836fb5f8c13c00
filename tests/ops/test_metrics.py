"""/metrics read as Prometheus reads it (prometheus_client.parser), checked against the traffic
each test sent itself."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from swell.api.app import create_app
from swell.settings import Settings
from tests.conftest import Keys, create_keys, hours_around_now, zip_lines

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def label_values(samples: Samples, label: str) -> set[str]:
    return {v for _, labels in samples for k, v in labels if k == label}


def send(client: TestClient, api_key: str, events: int, start: int = 0) -> int:
    body = {
        "api_key": api_key,
        "events": [
            {"user_id": f"user-{i % 3}", "event_type": "Played", "insert_id": f"i{start + i}"}
            for i in range(events)
        ],
    }
    return client.post("/2/httpapi", json=body).status_code


def test_requests_and_events_are_counted_as_sent(client: TestClient, keys: Keys) -> None:
    other = create_keys(client, "globex")
    sent = {keys.project_id: 0, other.project_id: 0}
    for i, count in enumerate([3, 5, 1, 7]):
        project = keys if i % 2 == 0 else other
        assert send(client, project.api_key, count, start=100 * i) == 200
        sent[project.project_id] += count
    # Refused: a key no project has (2 events), a body that is not JSON, a batch over the limit.
    assert send(client, "no-such-key", 2) == 400
    assert client.post("/2/httpapi", content=b"{nope").status_code == 400
    assert client.post("/batch", content=b"x" * (21 * 1024 * 1024)).status_code == 413
    samples = scrape(client)

    for project_id, count in sent.items():
        assert value(samples, "swell_events_ingested_total", project=str(project_id)) == count
    assert value(samples, "swell_events_rejected_total", project="", reason="invalid_api_key") == 2
    assert value(samples, "swell_ingest_rejected_requests_total", reason="invalid_api_key") == 1
    assert value(samples, "swell_ingest_rejected_requests_total", reason="invalid_body") == 1
    assert value(samples, "swell_ingest_rejected_requests_total", reason="too_large") == 1
    req = "swell_http_requests_total"
    assert value(samples, req, route="/2/httpapi", method="POST", status="200") == 4
    assert value(samples, req, route="/2/httpapi", method="POST", status="400") == 2
    assert value(samples, req, route="/batch", method="POST", status="413") == 1
    hist = "swell_http_request_duration_seconds"
    assert value(samples, f"{hist}_count", route="/2/httpapi") == 6
    assert value(samples, f"{hist}_bucket", route="/2/httpapi", le="+Inf") == 6
    # Every acknowledged request's frame was made durable by some group commit.
    assert value(samples, "swell_log_group_commit_frames_sum") >= 4
    assert value(samples, "swell_log_fsync_duration_seconds_count") >= 1
    # Nothing sealed yet: two open parts hold the events.
    assert value(samples, "swell_open_parts", state="open") == 2
    assert value(samples, "swell_open_part_bytes", state="open") > 0
    assert value(samples, "swell_parts_sealed_total") == 0
    assert value(samples, "swell_seal_failing") == 0


def test_exports_seals_budget_and_jobs_are_counted(client: TestClient, keys: Keys) -> None:
    assert send(client, keys.api_key, 4) == 200
    resp = client.get("/api/2/export", params=hours_around_now(), auth=keys.export_auth)
    assert resp.status_code == 200
    assert len(zip_lines(resp.content)) == 4
    created = client.post(
        "/api/2/dsar/requests",
        json={"userId": "user-1", "startDate": "2020-01-01", "endDate": "2030-01-01"},
        auth=keys.org_auth,
    )
    assert created.status_code == 202, created.text
    request_id = created.json()["requestId"]
    assert client.get(f"/api/2/dsar/requests/{request_id}", auth=keys.org_auth).status_code == 200
    samples = scrape(client)

    assert value(samples, "swell_export_bytes_sent_total", project=str(keys.project_id)) == len(
        resp.content
    )
    assert value(samples, "swell_parts_sealed_total") == 1
    assert value(samples, "swell_open_parts", state="open") == 0
    # POST costs 8, GET costs 1 (the DSAR API's documented costs).
    assert value(samples, "swell_dsar_budget_spent_total", org=str(keys.org_id)) == 9
    jobs = {labels: v for (name, labels), v in samples.items() if name == "swell_jobs"}
    assert sum(jobs.values()) == 1
    assert all(dict(labels)["kind"] == "dsar" for labels in jobs)


def test_routes_are_templates_and_never_raw_paths(client: TestClient, keys: Keys) -> None:
    for secret_path in ("/api/2/dsar/requests/98765", "/no/such/u-secret-user"):
        client.get(secret_path, auth=keys.org_auth)
    client.get("/identify", params={"api_key": keys.api_key, "identification": "[]"})
    client.request("BREW", "/healthz")
    samples = scrape(client)
    routes = label_values(samples, "route")
    assert "/api/2/dsar/requests/{request_id}" in routes
    assert "unmatched" in routes
    text = repr(samples)
    for raw in ("98765", "u-secret-user", keys.api_key):
        assert raw not in text
    assert label_values(samples, "method") <= {"GET", "POST", "OTHER"}


def test_a_token_protects_metrics(settings: Settings) -> None:
    with TestClient(create_app(settings.replace(metrics_token="s3cret"))) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics").json()["error"]
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        assert "swell_build_info" in names(scrape(client, token="s3cret"))


def test_metrics_can_be_turned_off(settings: Settings) -> None:
    with TestClient(create_app(settings.replace(metrics_enabled=False))) as client:
        keys = create_keys(client)
        assert send(client, keys.api_key, 2) == 200
        assert client.get("/metrics").status_code == 404


@pytest.fixture
def cluster_client(tmp_path: Path, pg_url: str) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "node",
        metadata_url=pg_url,
        blob_url=f"file://{tmp_path / 'blobs'}",
        role="api",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.slow
def test_a_scale_out_api_node_has_metrics_without_a_sealer(cluster_client: TestClient) -> None:
    keys = create_keys(cluster_client)
    assert send(cluster_client, keys.api_key, 6) == 200
    samples = scrape(cluster_client)
    assert value(samples, "swell_events_ingested_total", project=str(keys.project_id)) == 6
    assert "swell_open_parts" not in names(samples)  # an API node holds no parts
    assert "swell_parts_sealed_total" not in names(samples)
    assert (
        value(samples, "swell_http_requests_total", route="/2/httpapi", method="POST", status="200")
        == 1
    )


def test_gzip_bodies_count_their_events(client: TestClient, keys: Keys) -> None:
    body = orjson.dumps(
        {"api_key": keys.api_key, "events": [{"user_id": "user-a", "event_type": "x"}] * 9}
    )
    resp = client.post(
        "/2/httpapi",
        content=gzip.compress(body),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert resp.status_code == 200
    samples = scrape(client)
    assert value(samples, "swell_events_ingested_total", project=str(keys.project_id)) == 9
