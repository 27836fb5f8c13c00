"""Every ingestion error, pinned: status, exact JSON body, and no internals leaking.

Amplitude SDKs read ``code`` (not the status line) and act on the index maps, so the shape is the
contract. One row per request kind (Datasette ``tests/test_error_shape.py`` style).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from swell.errors import StorageError
from tests.conftest import Keys

API_KEY = "{api_key}"  # replaced by the project's key when a request is sent


def assert_amplitude_error(resp: Any, status: int) -> dict[str, Any]:
    """An ingestion error: JSON whose integer ``code`` is the HTTP status, nothing internal."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict)
    assert type(body["code"]) is int
    assert body["code"] == status
    assert isinstance(body["error"], str)
    assert body["error"]
    assert "Traceback" not in resp.text
    assert 'File "' not in resp.text
    assert "swell/" not in resp.text
    return body


def events_body(events: list[Any], **top: Any) -> bytes:
    return orjson.dumps({"api_key": API_KEY, "events": events, **top})


def corrupt_gzip(data: bytes) -> bytes:
    """A gzip stream whose first deflate block has the reserved block type (11)."""
    gz = gzip.compress(data)
    return gz[:10] + b"\xff" * 8 + gz[18:]


OK_EVENT = {"user_id": "user-0001", "event_type": "Page Viewed"}


@dataclass(frozen=True)
class Case:
    id: str
    body: bytes | Callable[[], bytes] = b""
    status: int = 400
    #: Exact body when given; otherwise only `keys` must be present (and match when a dict value).
    expect: dict[str, Any] | None = None
    path: str = "/2/httpapi"
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    form: dict[str, str] | None = None


def big_body(size: int) -> bytes:
    event = {**OK_EVENT, "event_properties": {"pad": "x" * 1000}}
    count = size // (len(orjson.dumps(event)) + 1) + 1
    body = orjson.dumps({"api_key": API_KEY, "events": [event] * count})
    assert size <= len(body) < size + 2000
    return body


CASES = [
    Case("empty body", b"", expect={"code": 400, "error": "Missing request body"}),
    Case("whitespace body", b"  \n", expect={"code": 400, "error": "Missing request body"}),
    Case(
        "invalid json", b'{"api_key": ', expect={"code": 400, "error": "Invalid JSON request body"}
    ),
    Case("json array", b"[1, 2]", expect={"code": 400, "error": "Invalid JSON request body"}),
    Case("json string", b'"events"', expect={"code": 400, "error": "Invalid JSON request body"}),
    Case(
        "not utf-8",
        b'{"api_key": "\xff"}',
        expect={"code": 400, "error": "Invalid JSON request body"},
    ),
    Case(
        "missing api_key",
        orjson.dumps({"events": [OK_EVENT]}),
        expect={"code": 400, "error": "Request missing required field", "missing_field": "api_key"},
    ),
    Case(
        "api_key not a string",
        orjson.dumps({"api_key": 12345, "events": [OK_EVENT]}),
        expect={"code": 400, "error": "Request missing required field", "missing_field": "api_key"},
    ),
    Case(
        "missing events",
        orjson.dumps({"api_key": API_KEY}),
        expect={"code": 400, "error": "Request missing required field", "missing_field": "events"},
    ),
    Case(
        "empty events",
        events_body([]),
        expect={"code": 400, "error": "Request missing required field", "missing_field": "events"},
    ),
    Case(
        "events not a list",
        orjson.dumps({"api_key": API_KEY, "events": OK_EVENT}),
        expect={"code": 400, "error": "Request missing required field", "missing_field": "events"},
    ),
    Case(
        "unknown api_key",
        orjson.dumps({"api_key": "0123456789abcdef0123456789abcdef", "events": [OK_EVENT]}),
        expect={"code": 400, "error": "Invalid API key: 0123456789abcdef0123456789abcdef"},
    ),
    Case(
        "event missing event_type",
        events_body([OK_EVENT, {"user_id": "user-0001"}]),
        expect={
            "code": 400,
            "error": "Request missing required field",
            "events_with_missing_fields": {"event_type": [1]},
        },
    ),
    Case(
        "event with empty event_type",
        events_body([{"user_id": "user-0001", "event_type": ""}]),
        expect={
            "code": 400,
            "error": "Invalid field values on some events",
            "events_with_invalid_fields": {"event_type": [0]},
        },
    ),
    Case(
        "event missing ids",
        events_body([{"event_type": "x"}, OK_EVENT, {"event_type": "y", "user_id": None}]),
        expect={
            "code": 400,
            "error": "Request missing required field",
            "events_with_missing_fields": {"user_id_or_device_id": [0, 2]},
        },
    ),
    Case(
        "event not an object",
        events_body([OK_EVENT, "Page Viewed"]),
        expect={
            "code": 400,
            "error": "Invalid field values on some events",
            "events_with_invalid_fields": {"event": [1]},
        },
    ),
    Case(
        "short user_id",
        events_body([OK_EVENT, {"user_id": "abc", "event_type": "x"}]),
        expect={
            "code": 400,
            "error": "Invalid id length for user_id or device_id",
            "events_with_invalid_id_lengths": {"user_id": [1]},
        },
    ),
    Case(
        "short device_id under a raised min_id_length",
        events_body([{"device_id": "abcdefg", "event_type": "x"}], options={"min_id_length": 8}),
        expect={
            "code": 400,
            "error": "Invalid id length for user_id or device_id",
            "events_with_invalid_id_lengths": {"device_id": [0]},
        },
    ),
    Case(
        "bad min_id_length option",
        events_body([OK_EVENT], options={"min_id_length": "3"}),
        expect={
            "code": 400,
            "error": "Invalid JSON request body",
            "invalid_field": "options.min_id_length",
        },
    ),
    Case(
        "invalid id null",
        events_body(
            [{"user_id": "null", "event_type": "x"}, {"device_id": "Undefined", "event_type": "x"}]
        ),
        expect={
            "code": 400,
            "error": "Invalid field values on some events",
            "events_with_invalid_fields": {"user_id": [0], "device_id": [1]},
        },
    ),
    Case(
        "numeric user_id",
        events_body([{"user_id": 1234567, "event_type": "x"}]),
        expect={
            "code": 400,
            "error": "Invalid field values on some events",
            "events_with_invalid_fields": {"user_id": [0]},
        },
    ),
    Case(
        "time as a string",
        events_body([OK_EVENT, {**OK_EVENT, "time": "2024-01-01T00:00:00Z"}]),
        expect={
            "code": 400,
            "error": "Invalid field values on some events",
            "events_with_invalid_fields": {"time": [1]},
        },
    ),
    Case(
        "time in microseconds",
        events_body([{**OK_EVENT, "time": 1_700_000_000_000_000}]),
        expect={
            "code": 400,
            "error": "Invalid field values on some events",
            "events_with_invalid_fields": {"time": [0]},
        },
    ),
    Case(
        "mixed problems name every index",
        events_body(
            [
                {"user_id": "user-0001"},
                {"user_id": "ab", "event_type": "x"},
                {"user_id": "user-0001", "event_type": "x", "event_properties": [1]},
            ]
        ),
        expect={
            "code": 400,
            "error": "Invalid field values on some events",
            "events_with_missing_fields": {"event_type": [0]},
            "events_with_invalid_fields": {"event_properties": [2]},
            "events_with_invalid_id_lengths": {"user_id": [1]},
        },
    ),
    Case(
        "too many events",
        events_body([OK_EVENT] * 2001),
        status=413,
        expect={"code": 413, "error": "Payload too large"},
    ),
    Case(
        "too many events on /batch",
        events_body([OK_EVENT] * 2001),
        path="/batch",
        status=413,
        expect={"code": 413, "error": "Payload too large"},
    ),
    Case(
        "body over 1 MB on /2/httpapi",
        lambda: big_body(1_000_001),
        status=413,
        expect={"code": 413, "error": "Payload too large"},
    ),
    Case(
        "gzip body inflating over 1 MB on /2/httpapi",
        lambda: gzip.compress(big_body(1_000_001)),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        status=413,
        expect={"code": 413, "error": "Payload too large"},
    ),
    Case(
        "corrupt gzip",
        corrupt_gzip(events_body([OK_EVENT])),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        expect={"code": 400, "error": "Invalid gzip request body"},
    ),
    Case(
        "truncated gzip",
        gzip.compress(events_body([OK_EVENT]))[:20],
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        expect={"code": 400, "error": "Invalid gzip request body: truncated"},
    ),
    Case(
        "gzip header on a plain body",
        b"this is not gzip",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        expect={"code": 400, "error": "Invalid gzip request body"},
    ),
    Case(
        "unsupported content encoding",
        events_body([OK_EVENT]),
        headers={"Content-Type": "application/json", "Content-Encoding": "br"},
        expect={"code": 400, "error": "Unsupported Content-Encoding: br"},
    ),
    Case(
        "unknown route",
        b"{}",
        path="/2/nope",
        status=404,
        expect={"code": 404, "error": "Invalid request path"},
    ),
    Case(
        "unknown route GET",
        path="/nope",  # "/" redirects to the console
        method="GET",
        status=404,
        expect={"code": 404, "error": "Invalid request path"},
    ),
    Case(
        "GET /2/httpapi",
        path="/2/httpapi",
        method="GET",
        status=405,
        expect={"code": 405, "error": "Method Not Allowed"},
    ),
    Case(
        "PUT /batch",
        b"{}",
        path="/batch",
        method="PUT",
        status=405,
        expect={"code": 405, "error": "Method Not Allowed"},
    ),
    Case(
        "DELETE /identify",
        path="/identify",
        method="DELETE",
        status=405,
        expect={"code": 405, "error": "Method Not Allowed"},
    ),
    Case(
        "identify missing identification",
        path="/identify",
        form={"api_key": API_KEY},
        expect={"code": 400, "error": "missing_event"},
    ),
    Case(
        "identify with malformed identification",
        path="/identify",
        form={"api_key": API_KEY, "identification": "{not json"},
        expect={"code": 400, "error": "missing_event"},
    ),
    Case(
        "identify missing api_key",
        path="/identify",
        form={"identification": '{"user_id": "user-0001"}'},
        expect={"code": 400, "error": "Request missing required field", "missing_field": "api_key"},
    ),
    Case(
        "identify without ids",
        path="/identify",
        form={"api_key": API_KEY, "identification": '{"user_properties": {"a": 1}}'},
        expect={
            "code": 400,
            "error": "Request missing required field",
            "events_with_missing_fields": {"user_id_or_device_id": [0]},
        },
    ),
    Case(
        "identify with an unknown key",
        path="/identify",
        form={"api_key": "f" * 32, "identification": '{"user_id": "user-0001"}'},
        expect={"code": 400, "error": f"Invalid API key: {'f' * 32}"},
    ),
    Case(
        "groupidentify missing group_value",
        path="/groupidentify",
        form={
            "api_key": API_KEY,
            "identification": '[{"group_type": "org", "group_properties": {}}]',
        },
        expect={
            "code": 400,
            "error": "Request missing required field",
            "events_with_missing_fields": {"group_value": [0]},
        },
    ),
]


def send(client: TestClient, keys: Keys, case: Case) -> Any:
    if case.form is not None:
        form = {k: v.replace(API_KEY, keys.api_key) for k, v in case.form.items()}
        return client.request(case.method, case.path, data=form)
    body = case.body() if callable(case.body) else case.body
    body = body.replace(API_KEY.encode(), keys.api_key.encode())
    if case.method == "GET":
        return client.get(case.path)
    return client.request(case.method, case.path, content=body, headers=case.headers)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_ingestion_error_shape(client: TestClient, keys: Keys, case: Case) -> None:
    resp = send(client, keys, case)
    body = assert_amplitude_error(resp, case.status)
    assert body == case.expect


def test_rejected_requests_store_nothing(client: TestClient, keys: Keys) -> None:
    for case in CASES:
        send(client, keys, case)
    now = datetime.now(UTC)
    params = {
        "start": f"{now - timedelta(hours=1):%Y%m%dT%H}",
        "end": f"{now + timedelta(hours=1):%Y%m%dT%H}",
    }
    resp = client.get("/api/2/export", params=params, auth=keys.export_auth)
    assert (resp.status_code, resp.text) == (404, "Raw data files were not found.")


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("min_id_length lowers the limit", 200),
        ("body over 1 MB on /batch", 200),
        ("org key is not an ingestion key", 400),
    ],
)
def test_requests_just_inside_the_rules(
    client: TestClient, keys: Keys, case: str, status: int
) -> None:
    if case == "min_id_length lowers the limit":
        body = orjson.dumps(
            {
                "api_key": keys.api_key,
                "events": [{"user_id": "abc", "event_type": "x"}],
                "options": {"min_id_length": 3},
            }
        )
        resp = client.post("/2/httpapi", content=body)
    elif case == "body over 1 MB on /batch":
        body = big_body(1_000_001).replace(API_KEY.encode(), keys.api_key.encode())
        assert len(body) > 1_000_000
        resp = client.post("/batch", content=body)
    else:
        body = orjson.dumps({"api_key": keys.org_key, "events": [OK_EVENT]})
        resp = client.post("/2/httpapi", content=body)
        assert resp.json() == {"code": 400, "error": f"Invalid API key: {keys.org_key}"}
    assert resp.status_code == status, resp.text
    assert resp.json()["code"] == status


def test_oversized_body_without_content_length_is_refused(client: TestClient, keys: Keys) -> None:
    body = big_body(1_000_001).replace(API_KEY.encode(), keys.api_key.encode())

    def chunks() -> Any:
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    resp = client.post("/2/httpapi", content=chunks())
    assert assert_amplitude_error(resp, 413) == {"code": 413, "error": "Payload too large"}


def test_unexpected_failure_is_a_json_500_without_traceback(
    client: TestClient, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.app.state.swell.store  # type: ignore[attr-defined]

    async def broken(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("secret internal detail /var/lib/swell")

    monkeypatch.setattr(store, "ingest", broken)
    resp = client.post(
        "/2/httpapi",
        content=events_body([OK_EVENT]).replace(API_KEY.encode(), keys.api_key.encode()),
    )
    body = assert_amplitude_error(resp, 500)
    assert body == {"code": 500, "error": "Internal server error."}
    assert "secret internal detail" not in resp.text


def test_storage_failure_is_a_json_503(
    client: TestClient, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.app.state.swell.store  # type: ignore[attr-defined]

    async def broken(*args: Any, **kwargs: Any) -> int:
        raise StorageError()

    monkeypatch.setattr(store, "ingest", broken)
    resp = client.post(
        "/batch", content=events_body([OK_EVENT]).replace(API_KEY.encode(), keys.api_key.encode())
    )
    body = assert_amplitude_error(resp, 503)
    assert body == {"code": 503, "error": "The storage backend is unavailable.", "cause": "storage"}
    assert resp.headers["retry-after"] == "5"


def test_cors_preflight_is_allowed(client: TestClient) -> None:
    resp = client.options(
        "/2/httpapi",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] in ("*", "https://shop.example")
