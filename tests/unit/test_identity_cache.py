"""Bounded identity caches: dropping saved state never changes what an event is enriched with."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings, strategies as st

from swell.settings import Settings
from swell.store import Store
from tests.conftest import http_context

USERS = [f"user-{i:03d}" for i in range(6)]
DEVICES = [f"device-{i:03d}" for i in range(6)]


def _requests(seed: int) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    requests = []
    for r in range(12):
        events = []
        for e in range(rng.randrange(1, 5)):
            event: dict[str, Any] = {"event_type": "e", "insert_id": f"{r}-{e}"}
            if rng.random() < 0.7:
                event["user_id"] = rng.choice(USERS)
            if rng.random() < 0.7 or "user_id" not in event:
                event["device_id"] = rng.choice(DEVICES)
            if rng.random() < 0.5:
                event["user_properties"] = {"$add": {"n": 1}, "$set": {"last": f"{r}-{e}"}}
            events.append(event)
        requests.append(events)
    return requests


async def _run(data_dir: Path, max_cached: int, requests: list[list[dict[str, Any]]]) -> list[Any]:
    settings = Settings.from_env({}, data_dir=data_dir, identity_cache_entries=max_cached)
    store = await Store.open(settings)
    try:
        for events in requests:
            await store.ingest(events, http_context())
            await store.checkpoint(force=True)  # saves, then drops what is over the bound
        part = next(store.sealer.unsealed())
        lines = list(part._lines)
    finally:
        await store.aclose()
    rows = [orjson.loads(line) for line in lines]
    return [(r["$insert_id"], r["amplitude_id"], r["user_properties"]) for r in rows]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 10_000))
def test_a_tiny_cache_enriches_exactly_like_an_unbounded_one(tmp_path: Path, seed: int) -> None:
    requests = _requests(seed)
    run = f"{seed}-{random.random()}"
    tiny = asyncio.run(_run(tmp_path / f"tiny-{run}", 1, requests))
    whole = asyncio.run(_run(tmp_path / f"whole-{run}", 1_000_000, requests))
    assert tiny == whole
    assert len(tiny) == sum(len(events) for events in requests)


async def test_evict_drops_only_saved_state(tmp_path: Path) -> None:
    store = await Store.open(Settings.from_env({}, data_dir=tmp_path, identity_cache_entries=2))
    try:
        events = [{"user_id": u, "event_type": "e", "user_properties": {"a": 1}} for u in USERS]
        await store.ingest(events, http_context())
        assert store.identity.evict() == 0  # nothing is saved yet: nothing may go
        await store.checkpoint(force=True)
        assert len(store.identity._users) <= 2
        assert len(store.identity._props) <= 2
    finally:
        await store.aclose()
