"""Key checks: a rotated pair is refused at once, a rotated ingestion api_key within the cache's
second, in every process sharing the metadata store."""

from __future__ import annotations

import pytest

from swell.auth import KEY_CACHE_SECONDS, Authenticator, new_credentials
from swell.backends.memory import MemoryMetadata
from swell.errors import Unauthorized


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def basic(api_key: str, secret: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{api_key}:{secret}".encode()).decode()


async def test_a_rotated_key_is_refused_once_the_cache_expires() -> None:
    meta = MemoryMetadata()
    org, old, new = new_credentials(), new_credentials(), new_credentials()
    org_id = await meta.create_org("acme", org.api_key, org.secret_hash)
    project = await meta.create_project("web", org_id, old.api_key, old.secret_hash)
    clock = Clock()
    auth = Authenticator(meta, clock=clock)
    assert (
        await auth.check_basic(basic(old.api_key, old.secret_key), org=False)
    ).project_id == project
    assert await auth.project_for_ingest(old.api_key) == project
    # Another process (the CLI) rotates the key in the shared metadata store.
    await meta.rotate_key(org_id, project, new.api_key, new.secret_hash)
    with pytest.raises(Unauthorized):  # at once: Basic credentials are never cached
        await auth.check_basic(basic(old.api_key, old.secret_key), org=False)
    clock.now += KEY_CACHE_SECONDS
    assert await auth.project_for_ingest(old.api_key) is None
    found = await auth.check_basic(basic(new.api_key, new.secret_key), org=False)
    assert found.project_id == project


async def test_a_hot_key_is_looked_up_once_per_cache_period() -> None:
    meta = MemoryMetadata()
    creds = new_credentials()
    org_id = await meta.create_org("acme", creds.api_key, creds.secret_hash)
    lookups = 0
    find = meta.find_key

    async def counting(api_key: str):  # type: ignore[no-untyped-def]
        nonlocal lookups
        lookups += 1
        return await find(api_key)

    meta.find_key = counting  # type: ignore[method-assign]
    clock = Clock()
    auth = Authenticator(meta, clock=clock)
    for _ in range(50):
        found = await auth.principal(creds.api_key)
        assert found is not None
        assert found.org_id == org_id
        clock.now += KEY_CACHE_SECONDS / 10
    assert lookups == 5
