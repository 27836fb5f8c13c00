"""Crash safety of a real ``swell serve``: an acknowledged event survives kill -9, exactly once."""

from __future__ import annotations

import gzip
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import LiveServer, live_export

LiveKeys = tuple[Path, dict[str, Any], dict[str, Any]]
BATCH = 25


@pytest.fixture
def servers() -> Iterator[list[LiveServer]]:
    """Servers a test starts; whatever is still running is stopped."""
    started: list[LiveServer] = []
    yield started
    for server in started:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()


def start(servers: list[LiveServer], data_dir: Path) -> LiveServer:
    server = LiveServer(data_dir)
    servers.append(server)
    return server.start()


def batch_events(worker: int, n: int) -> list[dict[str, Any]]:
    return [
        {
            "user_id": f"user-{worker:03d}",
            "device_id": f"device-{worker:03d}",
            "event_type": "Durable",
            "insert_id": f"w{worker}-b{n}-e{i}",
            "event_properties": {"worker": worker, "batch": n, "i": i},
        }
        for i in range(BATCH)
    ]


def post(client: httpx.Client, url: str, api_key: str, events: list[dict[str, Any]]) -> bool:
    """True only for a 200 whose body says every event was ingested."""
    try:
        resp = client.post(f"{url}/batch", json={"api_key": api_key, "events": events})
    except httpx.TransportError:
        return False
    if resp.status_code != 200:
        return False
    body = resp.json()
    return bool(body["code"] == 200 and body["events_ingested"] == len(events))


def export_rows(server: LiveServer, project: dict[str, Any]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in live_export(server, project, missing_ok=True)]


def insert_ids(rows: list[dict[str, Any]]) -> Counter[str]:
    return Counter(row["$insert_id"] for row in rows)


def hammer(
    server: LiveServer, api_key: str, workers: int, kill_after: int | None
) -> tuple[set[str], set[str]]:
    """Send batches from ``workers`` threads until the server dies (or each sent 6 batches).

    With ``kill_after``, the server is SIGKILLed once that many batches were acknowledged, while
    the other threads are still sending. Returns (acknowledged insert ids, every sent insert id).
    """
    acked: set[str] = set()
    sent: set[str] = set()
    lock = threading.Lock()
    acked_batches = 0
    killed = threading.Event()

    def work(worker: int) -> None:
        nonlocal acked_batches
        with httpx.Client(timeout=30) as client:
            for n in range(1000 if kill_after is not None else 6):
                events = batch_events(worker, n)
                with lock:
                    sent.update(e["insert_id"] for e in events)
                if not post(client, server.url, api_key, events):
                    if killed.is_set():
                        return
                    raise AssertionError(f"batch {worker}/{n} refused before the kill")
                with lock:
                    acked.update(e["insert_id"] for e in events)
                    acked_batches += 1
                    due = kill_after is not None and acked_batches >= kill_after
                if due and not killed.is_set():
                    killed.set()
                    server.kill()

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(work, w) for w in range(workers)]:
            future.result()
    return acked, sent


def test_acknowledged_events_survive_kill_9_exactly_once(
    live_keys: LiveKeys, servers: list[LiveServer]
) -> None:
    data_dir, _, project = live_keys
    server = start(servers, data_dir)
    acked, sent = hammer(server, project["api_key"], workers=8, kill_after=40)
    assert server.proc is not None
    assert server.proc.returncode == -9
    assert len(acked) >= 40 * BATCH

    server = start(servers, data_dir)
    stored = insert_ids(export_rows(server, project))
    missing = acked - set(stored)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
    assert max(stored.values()) == 1, [k for k, v in stored.items() if v > 1][:5]
    assert set(stored) <= sent
    # The whole batch of an in-flight request is stored or not, never half of it.
    stored_batches = Counter(iid.rsplit("-", 1)[0] for iid in stored)
    assert set(stored_batches.values()) == {BATCH}

    # A client retrying every batch it sent after the crash (insert_id dedup) adds only what
    # was never stored.
    batches = {iid.rsplit("-", 1)[0] for iid in sent}  # "w{worker}-b{n}"
    with httpx.Client(timeout=30) as client:
        for batch in sorted(batches):
            worker, n = (int(part[1:]) for part in batch.split("-"))
            assert post(client, server.url, project["api_key"], batch_events(worker, n))
    stored = insert_ids(export_rows(server, project))
    assert set(stored) == sent
    assert max(stored.values()) == 1
    assert server.terminate() == 0


def newest_wal(data_dir: Path) -> Path:
    segments = sorted((data_dir / "wal").glob("*.wal"))
    assert segments, "no log segment"
    return segments[-1]


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00" * 7,  # a torn frame header
        b"\xff\xff\x00\x00" + b"\x12" * 300,  # a header whose length runs past the end
        (40).to_bytes(4, "little") + b"\x00" * 12 + b"half a frame",  # bad checksum
    ],
    ids=["torn-header", "overlong", "bad-crc"],
)
def test_torn_log_tail_is_cut_and_acknowledged_events_kept(
    live_keys: LiveKeys, servers: list[LiveServer], garbage: bytes
) -> None:
    data_dir, _, project = live_keys
    server = start(servers, data_dir)
    acked, _ = hammer(server, project["api_key"], workers=3, kill_after=None)
    server.kill()
    wal = newest_wal(data_dir)
    size = wal.stat().st_size
    with wal.open("ab") as f:
        f.write(garbage)

    server = start(servers, data_dir)
    assert insert_ids(export_rows(server, project)) == Counter(dict.fromkeys(acked, 1))
    with httpx.Client(timeout=30) as client:
        new = batch_events(99, 0)
        assert post(client, server.url, project["api_key"], new)
    stored = insert_ids(export_rows(server, project))
    assert set(stored) == acked | {e["insert_id"] for e in new}
    assert max(stored.values()) == 1
    assert not wal.exists() or wal.stat().st_size == size  # the tail was cut, nothing more


def sealed_insert_ids(data_dir: Path) -> Counter[str]:
    """Insert ids in the sealed part files on disk (not through the server)."""
    ids: Counter[str] = Counter()
    parts = [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]
    assert parts, "no sealed parts"
    for part in parts:
        for line in gzip.decompress(part.read_bytes()).splitlines():
            ids[orjson.loads(line)["$insert_id"]] += 1
    return ids


def test_sigterm_exits_0_after_sealing_every_event(
    live_keys: LiveKeys, servers: list[LiveServer]
) -> None:
    data_dir, _, project = live_keys
    server = start(servers, data_dir)
    acked, sent = hammer(server, project["api_key"], workers=4, kill_after=None)
    assert acked == sent
    started = time.monotonic()
    assert server.terminate() == 0
    assert time.monotonic() - started < 30
    assert sealed_insert_ids(data_dir) == Counter(dict.fromkeys(acked, 1))

    server = start(servers, data_dir)
    assert insert_ids(export_rows(server, project)) == Counter(dict.fromkeys(acked, 1))
    assert server.terminate() == 0
    assert sealed_insert_ids(data_dir) == Counter(dict.fromkeys(acked, 1))


def test_identity_state_survives_kill_9(live_keys: LiveKeys, servers: list[LiveServer]) -> None:
    data_dir, _, project = live_keys
    server = start(servers, data_dir)
    key = project["api_key"]
    with httpx.Client(timeout=30) as client:
        assert post(
            client,
            server.url,
            key,
            [
                {"device_id": "dev-crash", "event_type": "anon", "insert_id": "1"},
                {
                    "device_id": "dev-crash",
                    "user_id": "crash-user",
                    "event_type": "login",
                    "insert_id": "2",
                    "user_properties": {"$set": {"plan": "pro"}, "$add": {"n": 1}},
                },
            ],
        )
        resp = client.post(
            f"{server.url}/groupidentify",
            data={
                "api_key": key,
                "identification": orjson.dumps(
                    {"group_type": "org", "group_value": "acme", "group_properties": {"seats": 5}}
                ).decode(),
            },
        )
        assert (resp.status_code, resp.text) == (200, "success")
    server.kill()

    server = start(servers, data_dir)
    with httpx.Client(timeout=30) as client:
        assert post(
            client,
            server.url,
            key,
            [
                {
                    "device_id": "dev-crash",
                    "event_type": "anon after",
                    "insert_id": "3",
                    "user_properties": {"$add": {"n": 1}},
                    "groups": {"org": "acme"},
                },
                {"device_id": "dev-crash", "event_type": "anon", "insert_id": "1"},  # a retry
            ],
        )
    rows = {row["$insert_id"]: row for row in export_rows(server, project)}
    assert sorted(rows) == ["1", "2", "3"]
    assert rows["1"]["amplitude_id"] == rows["2"]["amplitude_id"] == rows["3"]["amplitude_id"]
    assert rows["3"]["user_properties"] == {"plan": "pro", "n": 2}
    assert rows["3"]["group_properties"] == {"org": {"acme": {"seats": 5}}}
    assert server.terminate() == 0
