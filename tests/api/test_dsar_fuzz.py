"""Any create body and any path parameter gets a JSON answer from the DSAR surface, never a 5xx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from starlette.testclient import TestClient

from swell.api.app import create_app
from swell.auth import new_credentials
from swell.settings import Settings
from swell.store import Store
from tests.conftest import FakeClock

REQUESTS = "/api/2/dsar/requests"
FIELDS = ("userId", "amplitudeId", "startDate", "endDate")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    data_dir: Path = tmp_path_factory.mktemp("dsar-fuzz") / "data"
    config = Settings(data_dir=data_dir, seal_check_seconds=3600, dsar_cost_per_hour=10**9)

    async def make_org() -> tuple[str, str]:
        store = await Store.open(config)
        try:
            org = new_credentials()
            org_id = await store.meta.create_org("acme", org.api_key, org.secret_hash)
            project = new_credentials()
            await store.meta.create_project("web", org_id, project.api_key, project.secret_hash)
            return org.api_key, org.secret_key
        finally:
            await store.aclose()

    auth = asyncio.run(make_org())
    app = create_app(config)
    app.state.clock = FakeClock(datetime(2024, 3, 1, tzinfo=UTC))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, auth


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
field_values = json_values | st.sampled_from(
    [
        "2024-01-01",
        " 2024-01-01 ",
        "2024-02-30",
        "0001-01-01",
        "9999-12-31",
        "0000-01-01",
        "２０２４-01-01",
        "42",
        " 42 ",
        "٤٢",
        "0",
        "-1",
        "9" * 19,
        "9" * 4400,
        "\x00",
        "u" * 1025,
    ]
)
bodies = st.fixed_dictionaries({}, optional=dict.fromkeys(FIELDS, field_values))


def assert_json_error(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json"), response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body["error"], str)
    assert body["error"]
    return body


@FUZZ
@given(body=bodies, encoding=st.sampled_from(["json", "form", "multipart"]))
def test_any_create_body_is_202_or_a_json_error_naming_the_field(fuzz_client, body, encoding):
    client, auth = fuzz_client
    if encoding == "json":
        response = client.post(REQUESTS, content=json.dumps(body).encode(), auth=auth)
    else:
        text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}
        if encoding == "form":
            response = client.post(REQUESTS, data=text, auth=auth)
        else:
            files = {k: (None, v.encode("utf-8", "surrogatepass")) for k, v in text.items()}
            response = client.post(REQUESTS, files=files, auth=auth)
    if response.status_code == 202:
        request_id = response.json()["requestId"]
        status = client.get(f"{REQUESTS}/{request_id}", auth=auth)
        assert status.status_code == 200
        assert status.json()["userId"] is not None or status.json()["amplitudeId"] is not None
        return
    assert response.status_code in {400, 413}, response.text
    error = assert_json_error(response)
    if response.status_code == 400 and encoding == "json":
        assert error["field"] in FIELDS
        assert error["field"] in error["error"]


@FUZZ
@given(raw=st.binary(max_size=300), content_type=st.sampled_from(["", "application/json",
    "application/x-www-form-urlencoded", "multipart/form-data", "multipart/form-data; boundary=x",
    "text/plain", "application/problem+json"]))  # fmt: skip
def test_any_raw_body_is_202_or_a_json_error(fuzz_client, raw, content_type):
    client, auth = fuzz_client
    headers = {"content-type": content_type} if content_type else {}
    response = client.post(REQUESTS, content=raw, headers=headers, auth=auth)
    if response.status_code != 202:
        assert response.status_code in {400, 413}, response.text
        assert_json_error(response)


@FUZZ
@given(request_id=st.text(min_size=1, max_size=40), output_id=st.text(min_size=1, max_size=40))
def test_any_path_parameter_is_a_json_404(fuzz_client, request_id, output_id):
    client, auth = fuzz_client
    rid, oid = quote(request_id, safe=""), quote(output_id, safe="")
    for path in (f"{REQUESTS}/{rid}", f"{REQUESTS}/{rid}/outputs/{oid}"):
        response = client.get(path, auth=auth)
        if response.status_code != 200:
            assert response.status_code in {404, 405}, (path, response.text)
            assert_json_error(response)
