"""``swell status``, run as a person runs it, offline on a data directory and against a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.testclient import TestClient

from swell.api.app import create_app
from swell.settings import Settings
from swell.status import redact
from tests.conftest import LiveServer, create_keys, hours_around_now


def status(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "swell", "status", "--json", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_offline_status_reports_projects_days_jobs_and_disk(settings: Settings) -> None:
    sent = Counter[int]()
    with TestClient(create_app(settings)) as client:
        keys = [create_keys(client, name) for name in ("acme", "globex")]
        for i, count in enumerate([4, 6, 3]):
            k = keys[i % 2]
            events = [{"user_id": "user-1", "event_type": "x"}] * count
            resp = client.post("/2/httpapi", json={"api_key": k.api_key, "events": events})
            assert resp.status_code == 200
            sent[k.project_id] += count
        assert (
            client.get(
                "/api/2/export", params=hours_around_now(), auth=keys[0].export_auth
            ).status_code
            == 200
        )
        client.post(
            "/api/2/dsar/requests",
            json={"userId": "user-1", "startDate": "2020-01-01", "endDate": "2030-01-01"},
            auth=keys[1].org_auth,
        )
    # The app sealed everything at shutdown.
    report = status("--data-dir", str(settings.data_dir))
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    by_id = {p["project_id"]: p for p in report["projects"]}
    assert set(by_id) == set(sent)
    for project_id, count in sent.items():
        assert by_id[project_id]["events"] == count
        assert sum(d["events"] for d in by_id[project_id]["days"].values()) == count
        assert today in by_id[project_id]["days"] or datetime.now(UTC).hour == 0
    assert sum(report["jobs"].values()) == 1
    assert report["last_sealed"]["project_id"] in sent
    assert report["disk_bytes"]["meta.db"] > 0
    assert report["metadata"].startswith("sqlite://")
    text = subprocess.run(
        [sys.executable, "-m", "swell", "status", "--data-dir", str(settings.data_dir)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert f"projects: {len(sent)}" in text
    assert "version:" in text


def test_urls_are_shown_without_credentials() -> None:
    assert redact("postgresql://bob:pw@db:5432/swell") == "postgresql://bob@db:5432/swell"
    assert redact("s3://bucket/prefix?secret_access_key=x") == "s3://bucket/prefix"
    assert redact("sqlite:///var/meta.db") == "sqlite:///var/meta.db"


@pytest.mark.slow
def test_status_of_a_running_server_with_json_logs(tmp_path: Path) -> None:
    data_dir = tmp_path / "live"
    run = [sys.executable, "-m", "swell"]
    org = json.loads(
        subprocess.check_output([*run, "org", "create", "acme", "--data-dir", str(data_dir)])
    )
    project = json.loads(
        subprocess.check_output(
            [
                *run,
                "project",
                "create",
                "web",
                "--org",
                str(org["org_id"]),
                "--data-dir",
                str(data_dir),
            ]
        )
    )
    env = {"SWELL_METRICS_TOKEN": "tok-123", "SWELL_LOG_FORMAT": "json"}
    server = LiveServer(data_dir, env).start()
    try:
        events = [{"user_id": "user-1", "event_type": "x"}] * 5
        for _ in range(2):
            resp = httpx.post(
                f"{server.url}/2/httpapi", json={"api_key": project["api_key"], "events": events}
            )
            assert resp.status_code == 200
        assert httpx.get(f"{server.url}/metrics").status_code == 401
        report = status("--server", server.url, env=env)
        assert report["ready"] is True
        assert report["events_ingested"] == {str(project["project_id"]): 10}
        assert report["open_parts"]["open"] == 1
        assert report["version"]
        without = status("--server", server.url, env={"SWELL_METRICS_TOKEN": ""})
        assert "unavailable" in without["metrics"]
    finally:
        assert server.terminate() == 0
    lines = [orjson.loads(line) for line in server.log_path.read_text().splitlines() if line]
    access = [line for line in lines if line["logger"] == "swell.access"]
    ingests = [line for line in access if line["route"] == "/2/httpapi"]
    assert len(ingests) == 2
    assert all(line["project_id"] == project["project_id"] for line in ingests)
    assert all(line["status"] == 200 for line in ingests)
    assert project["api_key"] not in server.log_path.read_text()
