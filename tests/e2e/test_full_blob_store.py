"""A live ``swell serve`` whose blob store fills up while its log's disk does not.

``blobs/`` is a small tmpfs that the test fills to the last byte. While it is full, ingestion
keeps acknowledging (the log is durable), exports that would need a seal answer 503 with a JSON
body, ``/readyz`` answers 503 and ``/healthz`` 200. Once space returns, everything acknowledged is
exported exactly once: without a restart, and after kill -9 or SIGTERM while the store was full.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import LiveServer, hours_around_now, zip_lines

pytestmark = pytest.mark.slow

LiveKeys = tuple[Path, dict[str, Any], dict[str, Any]]
BATCH = 50
#: Small parts and log segments, so a few thousand events seal parts and rotate segments.
ENV = {"SWELL_PART_MAX_BYTES": "65536", "SWELL_LOG_SEGMENT_BYTES": "65536"}


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs mounted at ``path`` (skips the test where mounting is not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for blobs/ needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a file into ``directory`` until its filesystem has no byte left."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):  # down to the last byte
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size) == size:
                    pass
    finally:
        os.close(fd)
    return filler


def post_batch(client: httpx.Client, url: str, api_key: str, n: int) -> set[str]:
    events = [
        {
            "user_id": f"user-{(n * BATCH + i) % 37}",
            "event_type": "Full Disk",
            "insert_id": f"b{n}-e{i}",
            "event_properties": {"padding": "x" * 400, "n": n},
        }
        for i in range(BATCH)
    ]
    resp = client.post(f"{url}/batch", json={"api_key": api_key, "events": events})
    assert resp.status_code == 200, resp.text
    assert resp.json()["events_ingested"] == BATCH
    return {e["insert_id"] for e in events}


def exported(server: LiveServer, project: dict[str, Any]) -> tuple[int, Any]:
    resp = httpx.get(
        f"{server.url}/api/2/export",
        params=hours_around_now(),
        auth=(project["api_key"], project["secret_key"]),
        timeout=60,
    )
    if resp.status_code != 200:
        return resp.status_code, resp
    return 200, Counter(orjson.loads(line)["$insert_id"] for line in zip_lines(resp.content))


def wait_ready(server: LiveServer, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"not ready after {timeout} s: {httpx.get(f'{server.url}/readyz').text}")


@pytest.fixture
def full_blobs(live_keys: LiveKeys) -> Iterator[tuple[Path, Path]]:
    data_dir = live_keys[0]
    with small_tmpfs(data_dir / "blobs") as blobs:
        (blobs / ".staging").mkdir()
        yield blobs, fill(blobs)


def acknowledge_while_full(server: LiveServer, project: dict[str, Any], batches: int) -> set[str]:
    """Ingest while the blob store is full; every batch is acknowledged, exports answer 503."""
    acked: set[str] = set()
    with httpx.Client(timeout=30) as client:
        for n in range(batches):
            acked |= post_batch(client, server.url, project["api_key"], n)
    status, resp = exported(server, project)
    assert status == 503, status
    body = resp.json()
    assert "blob store" in body["error"], body
    assert body["cause"] == "blob_store"
    assert resp.headers["retry-after"].isdigit()
    ready = httpx.get(f"{server.url}/readyz", timeout=5)
    assert ready.status_code == 503, ready.text
    assert ready.json()["checks"]["seal"]["ok"] is False
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    # Ingestion still answers 200 while seals fail.
    with httpx.Client(timeout=30) as client:
        acked |= post_batch(client, server.url, project["api_key"], batches)
    return acked


def test_full_blob_store_catches_up_without_a_restart(
    live_keys: LiveKeys, full_blobs: tuple[Path, Path]
) -> None:
    data_dir, _, project = live_keys
    _, filler = full_blobs
    server = LiveServer(data_dir, env=ENV).start()
    try:
        acked = acknowledge_while_full(server, project, batches=60)
        filler.unlink()
        wait_ready(server)
        status, stored = exported(server, project)
        assert status == 200
        assert set(stored) == acked, f"{len(acked - set(stored))} acknowledged events missing"
        assert max(stored.values()) == 1
    finally:
        assert server.terminate() == 0


@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
def test_full_blob_store_loses_nothing_across_a_restart(
    live_keys: LiveKeys, full_blobs: tuple[Path, Path], stop: str
) -> None:
    data_dir, _, project = live_keys
    _, filler = full_blobs
    server = LiveServer(data_dir, env=ENV).start()
    acked = acknowledge_while_full(server, project, batches=60)
    if stop == "kill -9":
        server.kill()
    else:
        # The shutdown seal fails too; the events stay in the log, and the exit is still clean.
        assert server.terminate() == 0
    filler.unlink()
    server = LiveServer(data_dir, env=ENV).start()
    try:
        wait_ready(server)
        status, stored = exported(server, project)
        assert status == 200
        assert set(stored) == acked, f"{len(acked - set(stored))} acknowledged events lost"
        assert max(stored.values()) == 1
    finally:
        assert server.terminate() == 0
