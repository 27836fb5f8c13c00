"""The official Python SDK (amplitude-analytics) against a real ``swell serve``, then export."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from amplitude import Amplitude, BaseEvent, Config, EventOptions, Identify

from swell.model import EXPORT_KEYS
from tests.conftest import LiveServer, live_export

EVENTS = 50


def export_rows(server: LiveServer, project: dict[str, Any]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in live_export(server, project)]


def wait(futures: list[Any] | None) -> None:
    for future in futures or []:
        if future is not None:
            future.result(timeout=30)


class Outcomes:
    """What the SDK reported for each event through its callback."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str | None, int, str | None, int]] = []

    def __call__(self, event: BaseEvent, code: int, message: str | None) -> None:
        with self.lock:
            self.calls.append((event.event_type, event.insert_id, code, message, event.retry))


@pytest.mark.parametrize(
    ("use_batch", "path"), [(False, "/2/httpapi"), (True, "/batch")], ids=["httpapi", "batch"]
)
def test_sdk_events_are_all_acknowledged_and_stored(
    live_server: LiveServer,
    live_keys: tuple[Path, dict[str, Any], dict[str, Any]],
    use_batch: bool,
    path: str,
) -> None:
    project = live_keys[2]
    outcomes = Outcomes()
    config = Config(
        api_key=project["api_key"],
        server_url=f"{live_server.url}{path}",
        use_batch=use_batch,
        flush_queue_size=20,
        flush_interval_millis=100,
        flush_max_retries=3,
        callback=outcomes,
        logger=logging.getLogger("test_sdk"),
    )
    client = Amplitude(project["api_key"], configuration=config)
    # Identify first and wait for it, so every later event sees the property.
    client.identify(
        Identify().set("plan", "pro").add("logins", 2), EventOptions(user_id="sdk-user-0")
    )
    wait(client.flush())
    for i in range(EVENTS):
        client.track(
            BaseEvent(
                event_type=f"SDK Event {i % 5}",
                user_id=f"sdk-user-{i % 3}",
                device_id=f"sdk-device-{i % 4}",
                insert_id=f"sdk-insert-{i:03d}",
                event_properties={"i": i},
            )
        )
    wait(client.flush())
    client.shutdown()

    tracked = sorted(c for c in outcomes.calls if c[0] != "$identify")
    assert len(tracked) == EVENTS, outcomes.calls
    assert {c[2] for c in outcomes.calls} == {200}, outcomes.calls
    assert {c[4] for c in outcomes.calls} == {0}, "no event was retried"
    assert sorted(c[1] or "" for c in tracked) == [f"sdk-insert-{i:03d}" for i in range(EVENTS)]
    [identify] = [c for c in outcomes.calls if c[0] == "$identify"]

    rows = {row["$insert_id"]: row for row in export_rows(live_server, project)}
    assert len(rows) == EVENTS + 1
    assert rows[identify[1]]["event_type"] == "$identify"
    for i in range(EVENTS):
        row = rows[f"sdk-insert-{i:03d}"]
        assert list(row) == list(EXPORT_KEYS)
        assert row["event_type"] == f"SDK Event {i % 5}"
        assert row["user_id"] == f"sdk-user-{i % 3}"
        assert row["device_id"] == f"sdk-device-{i % 4}"
        assert row["event_properties"] == {"i": i}
        assert row["library"].startswith("amplitude-python/")
        assert row["data"]["path"] == path
        assert row["app"] == project["project_id"]
        expected = {"plan": "pro", "logins": 2} if i % 3 == 0 else {}
        assert row["user_properties"] == expected
    by_user: dict[str, set[int]] = {}
    for row in rows.values():
        by_user.setdefault(row["user_id"], set()).add(row["amplitude_id"])
    assert all(len(ids) == 1 for ids in by_user.values()), by_user
    assert len({next(iter(ids)) for ids in by_user.values()}) == 3


def test_sdk_splits_a_batch_the_server_refuses_as_too_large(
    live_server: LiveServer, live_keys: tuple[Path, dict[str, Any], dict[str, Any]]
) -> None:
    """40 events of ~40 KB are one 1.6 MB request: 413, and the SDK halves its batches."""
    project = live_keys[2]
    outcomes = Outcomes()
    config = Config(
        api_key=project["api_key"],
        server_url=f"{live_server.url}/2/httpapi",
        flush_queue_size=40,
        # Sent when all 40 are queued (tracking them takes milliseconds). Kept short: the SDK's
        # non-daemon consumer thread sleeps this long before it notices a shutdown.
        flush_interval_millis=1_000,
        callback=outcomes,
        logger=logging.getLogger("test_sdk"),
    )
    client = Amplitude(project["api_key"], configuration=config)
    for i in range(40):
        client.track(
            BaseEvent(
                event_type="Big",
                user_id="sdk-big-user",
                insert_id=f"big-{i:02d}",
                # The SDK truncates strings to 1024 chars, so size comes from many keys.
                event_properties={f"k{k:02d}": "x" * 1000 for k in range(40)},
            )
        )
    deadline = time.monotonic() + 60
    while len(outcomes.calls) < 40 and time.monotonic() < deadline:
        wait(client.flush())
        time.sleep(0.1)
    client.shutdown()

    assert len(outcomes.calls) == 40
    assert {c[2] for c in outcomes.calls} == {200}, outcomes.calls
    # Every event was refused at least once (the first request held all 40), then accepted.
    # How often depends on the SDK's threads racing our flushes, not on the server.
    assert min(c[4] for c in outcomes.calls) >= 1
    rows = export_rows(live_server, project)
    assert sorted(r["$insert_id"] for r in rows) == [f"big-{i:02d}" for i in range(40)]
    assert all(r["event_properties"] == {f"k{k:02d}": "x" * 1000 for k in range(40)} for r in rows)
