"""Access-log lines and the two log formats, read as a log shipper reads them."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from starlette.testclient import TestClient

from swell.jobs import Worker
from swell.logs import JobFilter, JsonFormatter, TextFormatter, job_context
from swell.model import Job
from tests.conftest import Keys


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "swell.access"]


def test_one_access_line_per_request_without_keys(
    client: TestClient, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="swell.access")
    events = [{"user_id": "user-1", "event_type": "Played"}]
    ok = client.post("/2/httpapi", json={"api_key": keys.api_key, "events": events})
    assert ok.status_code == 200
    client.get("/identify", params={"api_key": keys.api_key, "identification": "[]"})
    client.get(
        "/api/2/export",
        params={"start": "20240101T00", "end": "20240101T01"},
        auth=keys.export_auth,
    )
    client.get("/api/2/dsar/requests/12345", auth=keys.org_auth)
    records = access_records(caplog)
    assert len(records) == 4
    first = records[0].__dict__
    assert (first["method"], first["route"], first["status"]) == ("POST", "/2/httpapi", 200)
    assert first["bytes"] == len(ok.content)
    assert first["duration_ms"] >= 0
    assert first["project_id"] == keys.project_id
    assert records[2].__dict__["project_id"] == keys.project_id  # the export's project
    assert records[3].__dict__["org_id"] == keys.org_id
    assert records[3].__dict__["route"] == "/api/2/dsar/requests/{request_id}"
    formatter = JsonFormatter()
    text = "\n".join(formatter.format(r) for r in records)
    for secret in (keys.api_key, keys.secret_key, keys.org_key, keys.org_secret, "12345"):
        assert secret not in text


def record(message: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("swell.test", logging.WARNING, __file__, 1, message, (), None)
    rec.__dict__.update(extra)
    JobFilter().filter(rec)
    return rec


def test_json_lines_carry_fields_and_the_job_id() -> None:
    with job_context(42):
        line = JsonFormatter().format(record("retrying", route="/x"))
    parsed = orjson.loads(line)
    assert parsed["message"] == "retrying"
    assert parsed["level"] == "warning"
    assert parsed["logger"] == "swell.test"
    assert parsed["job_id"] == 42
    assert parsed["route"] == "/x"
    assert parsed["ts"].endswith("+00:00")
    outside = orjson.loads(JsonFormatter().format(record("idle")))
    assert "job_id" not in outside


def test_text_lines_append_the_job_id() -> None:
    with job_context(7):
        line = TextFormatter().format(record("done"))
    assert line.endswith("swell.test WARNING done job_id=7")


class Handler:
    kind = "dsar"

    async def run(self, job: Job) -> None:
        logging.getLogger("swell.dsar").warning("working")
        await asyncio.sleep(0)

    async def give_up(self, job: Job, reason: str) -> None:
        pass

    async def housekeep(self) -> None:
        pass


async def test_lines_a_job_logs_carry_its_id(caplog: pytest.LogCaptureFixture) -> None:
    from datetime import UTC, datetime

    from swell.backends.memory import MemoryMetadata

    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(JobFilter())
    meta = MemoryMetadata()
    worker = Worker(meta, [Handler()], clock=lambda: datetime.now(UTC), name="w")
    await worker.run_job(Job(id=31, kind="dsar", ref=1, attempts=1))
    working = [r for r in caplog.records if r.getMessage() == "working"]
    assert [r.__dict__["job_id"] for r in working] == [31]
