"""The served /openapi.json and the server agree: a bounded schemathesis run against a live server.

Every operation gets schema-valid and schema-invalid requests (fixed seed, 30 of each kind), with
the right credentials, and these checks: no 5xx; every status, content type, header and body is
the one the document declares; an undeclared method is refused; and a request the document
says is invalid is refused (``negative_data_rejection``), so the document is never stricter than
the server; and a request the document calls valid is accepted, or refused only for what a JSON
schema cannot state (``_accepts``: calendar dates, int64 bounds, ingestion's placeholder ids and
``options.min_id_length``, which docs/compatibility.md lists).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import checks
from schemathesis.generation import GenerationMode

from tests.conftest import LiveServer, run_cli

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data_dir: Path = tmp_path_factory.mktemp("openapi") / "data"
    org = run_cli("org", "create", "fuzz", data_dir=data_dir)
    project = run_cli("project", "create", "web", "--org", str(org["org_id"]), data_dir=data_dir)
    server = LiveServer(data_dir, env={"SWELL_DSAR_COST_PER_HOUR": "100000000"}).start()
    try:
        yield {"server": server, "org": org, "project": project}
    finally:
        server.terminate()


@pytest.fixture(scope="module")
def api_schema(served: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_url(f"{served['server'].url}/openapi.json")


def _basic(keys: dict[str, Any]) -> str:
    return "Basic " + base64.b64encode(f"{keys['api_key']}:{keys['secret_key']}".encode()).decode()


#: Why a schema-valid request may still be refused, by operation: what a JSON schema cannot
#: state (calendar dates, date order, int64 bounds of a digit string; placeholder ids and
#: options.min_id_length for ingestion). Any other refusal of valid data is a mismatch.
_DSAR_FIELDS_REFUSABLE = {"startDate", "endDate", "amplitudeId"}
_INGEST_REFUSABLE = {"events_with_invalid_fields", "events_with_invalid_id_lengths"}


def _accepts(case: Any, response: Any) -> None:
    """A request the document calls valid is accepted, or refused only for a reason above."""
    status = response.status_code
    if case.method.upper() == "POST" and case.path == "/api/2/dsar/requests":
        if status != 202:
            assert status == 400, response.text
            assert response.json().get("field") in _DSAR_FIELDS_REFUSABLE, response.text
    elif case.path in ("/2/httpapi", "/batch"):
        if status == 400:
            assert _INGEST_REFUSABLE & set(response.json()), response.text
        else:
            assert status in (200, 413), response.text


def _operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.slow
def test_the_server_does_what_its_openapi_document_says(
    api_schema: Any, served: dict[str, Any]
) -> None:
    operations = _operations(api_schema)
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {"GET /identify", "GET /groupidentify", "HEAD /api/2/export"} <= labels
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(op, mode, served)


def _fuzz(op: Any, mode: GenerationMode, served: dict[str, Any]) -> None:
    @given(case=op.as_strategy(generation_mode=mode))
    @seed(21)
    @settings(
        max_examples=30,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        headers: dict[str, str] = {}
        if case.path.startswith("/api/2/dsar"):
            headers["Authorization"] = _basic(served["org"])
        elif case.path.startswith("/api/2/export"):
            headers["Authorization"] = _basic(served["project"])
        body = case.body
        if isinstance(body, dict) and isinstance(body.get("api_key"), str) and body["api_key"]:
            body["api_key"] = served["project"]["api_key"]  # reach storage, not a 400
        response = case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)
        if mode is GenerationMode.POSITIVE:
            _accepts(case, response)

    check()
