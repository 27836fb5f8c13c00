"""Stores over backends that fail on command, and what a client would read back from them."""

from __future__ import annotations

import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from swell.backends import Backends
from swell.backends.faults import Faults, FaultyBlobStore, faulty_metadata
from swell.model import hour_of
from swell.parts import decompress_blocks
from swell.settings import Settings
from swell.store import Store
from tests.conftest import http_context

PROJECT = 1


def wrap_with(faults: Faults) -> Callable[[Backends], Backends]:
    """Wraps a store's blob and metadata stores so that ``faults`` decides which calls fail."""

    def wrap(backends: Backends) -> Backends:
        return replace(
            backends,
            meta=faulty_metadata(backends.meta, faults),
            blobs=FaultyBlobStore(backends.blobs, faults),
        )

    return wrap


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture(params=["memory", "embedded"])
def fault_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings over in-memory backends (named, so a restart finds their data) or the embedded
    SQLite + files default; the log is always the embedded file log."""
    base = Settings(data_dir=tmp_path / "data", seal_check_seconds=3600, log_segment_bytes=4096)
    if request.param == "embedded":
        return base
    name = uuid.uuid4().hex
    return base.replace(metadata_url=f"memory://{name}", blob_url=f"memory://{name}")


async def open_store(settings: Settings, faults: Faults) -> Store:
    return await Store.open(settings, wrap=wrap_with(faults))


def events(batch: int, n: int = 20, *, users: int = 7) -> list[dict[str, object]]:
    return [
        {
            "user_id": f"user-{(batch * n + i) % users}",
            "device_id": f"device-{(batch * n + i) % users}",
            "event_type": "Fault",
            "insert_id": f"b{batch}-e{i}",
            "event_properties": {"pad": "x" * 200},
        }
        for i in range(n)
    ]


async def ingest(store: Store, batch: int, *, at: datetime | None = None, n: int = 20) -> set[str]:
    """Ingest one batch; returns the insert ids it acknowledged (raises if it was refused)."""
    sent = events(batch, n)
    await store.ingest(sent, http_context(PROJECT, at))
    return {str(e["insert_id"]) for e in sent}


async def exported(store: Store, *, hours: int = 48) -> Counter[str]:
    """Every insert id in the project's sealed parts of the last ``hours`` (read-your-writes
    first, as an export does), each part checked against its catalog size and CRC."""
    now = hour_of(datetime.now(UTC))
    await store.seal_project(PROJECT, now - hours, now + 1)
    found: Counter[str] = Counter()
    for part in await store.meta.parts(PROJECT, now - hours, now + 1):
        data = await store.blobs.read(part.key)
        assert len(data) == part.size, part.name
        assert zlib.crc32(data) == part.crc32, part.name
        raw = decompress_blocks(data)
        assert raw.endswith(b"\n")
        for line in raw.splitlines():
            found[orjson.loads(line)["$insert_id"]] += 1
    return found


def hours_ago(n: int) -> datetime:
    return datetime.now(UTC) - timedelta(hours=n)


class FakeMonotonic:
    """A monotonic clock the test moves (the sealer's backoff runs on it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
