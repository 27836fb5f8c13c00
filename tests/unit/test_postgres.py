"""What only a store shared by many processes must get right, on PostgreSQL: two stores (two
pools, many connections) racing for jobs, part numbers, amplitude_ids, budgets, one part and one
schema migration never hand anything out twice; and the driver's errors stop at the boundary."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from swell.backends import open_metadata
from swell.backends.postgres import PoolOptions, PostgresMetadata
from swell.backends.queries import load_migrations
from swell.errors import AlreadyExists, ConfigError, MetadataUnavailable
from swell.model import IndexEntry, Part, StateChanges
from swell.settings import Settings
from tests.postgres import PostgresDatabase

T0 = datetime(2024, 1, 1, tzinfo=UTC)
WIDE = PoolOptions(max_size=8)


@pytest.fixture
async def two(pg_url: str) -> AsyncIterator[tuple[PostgresMetadata, PostgresMetadata]]:
    """Two stores on one database, as two swell processes would open it."""
    first, second = PostgresMetadata(pg_url, WIDE), PostgresMetadata(pg_url, WIDE)
    yield first, second
    await first.aclose()
    await second.aclose()


def part(project_id: int, hour: int, seq: int) -> Part:
    return Part(project_id, hour, seq, 300, 7, 3, "a", "b", 1, (0, 100, 200))


async def test_two_stores_claim_every_job_exactly_once(two):
    a, b = two
    org = await a.create_org("acme", "ok", "oh")
    created = [
        (await a.create_dsar(org, f"user{i}", None, "2024-01-01", "2024-01-02", T0)).id
        for i in range(24)
    ]
    claimed: list[int] = []

    async def claimer(store: PostgresMetadata, name: str) -> None:
        while (job := await store.claim_job(name, T0, T0 + timedelta(minutes=1))) is not None:
            claimed.append(job.ref)

    await asyncio.gather(*(claimer(s, f"{i}") for i, s in enumerate([a, b] * 8)))
    assert sorted(claimed) == created


async def test_two_stores_never_hand_out_a_part_number_twice(two):
    a, b = two
    seqs = await asyncio.gather(*(s.allocate_part_seq(1, 10) for s in [a, b] * 40))
    assert sorted(seqs) == list(range(80))


async def test_two_stores_hand_out_disjoint_amplitude_id_blocks(two):
    a, b = two
    firsts = await asyncio.gather(*(s.allocate_amplitude_ids(4096, 0) for s in [a, b] * 20))
    ranges = sorted((f, f + 4096) for f in firsts)
    assert all(x[1] <= y[0] for x, y in itertools.pairwise(ranges))
    assert len(ranges) == 40


async def test_two_stores_never_overspend_one_budget(two):
    a, b = two
    results = await asyncio.gather(
        *(s.charge_budget("dsar:1", 1, 100, 3600, T0) for s in [a, b] * 150)
    )
    assert sum(r.allowed for r in results) == 100
    assert (await a.charge_budget("dsar:1", 0, 100, 3600, T0)).remaining == 0


async def test_one_part_is_recorded_once_whoever_races_for_it(two):
    a, b = two
    entries = [IndexEntry(5, "alice", (0,), 1)]
    outcomes = await asyncio.gather(
        *(s.add_part(part(1, 10, 0), entries) for s in [a, b] * 4), return_exceptions=True
    )
    assert sum(o is None for o in outcomes) == 1
    assert all(isinstance(o, AlreadyExists) for o in outcomes if o is not None)
    assert [u.amplitude_id for u in await b.user_blocks(1, [5])] == [5]


async def test_saved_state_positions_only_move_forward_under_concurrent_saves(two):
    a, b = two
    await asyncio.gather(
        *(
            s.save_state(StateChanges(lsn=lsn, next_amplitude_id=10**12 + lsn))
            for lsn, s in zip(range(1, 41), itertools.cycle([a, b]), strict=False)
        )
    )
    assert await a.state_position() == (40, 10**12 + 40)


async def test_two_nodes_starting_at_once_migrate_the_schema_once(
    postgres_database: PostgresDatabase,
):
    fresh = PostgresDatabase(postgres_database.admin_url, f"{postgres_database.name}_fresh")
    with psycopg.connect(postgres_database.admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(fresh.name)))
    try:
        stores = [PostgresMetadata(fresh.url) for _ in range(3)]
        try:
            orgs = await asyncio.gather(
                *(s.create_org(f"o{i}", f"k{i}", "h") for i, s in enumerate(stores))
            )
            assert sorted(orgs) == [1, 2, 3]
            assert await stores[0].schema_version() == len(load_migrations("postgres"))
        finally:
            for store in stores:
                await store.aclose()
        with fresh.connect() as conn:
            rows = conn.execute("SELECT version FROM swell_schema ORDER BY version").fetchall()
        assert [r[0] for r in rows] == [m.version for m in load_migrations("postgres")]
    finally:
        with psycopg.connect(postgres_database.admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(fresh.name)
                )
            )


async def test_identifiers_with_nul_and_lone_surrogates_round_trip(pg_url: str):
    meta = PostgresMetadata(pg_url)
    try:
        odd_user, odd_device, odd_group = "al\x00ice", "dev\ud800ice", ("t\x00", "v\x00")
        await meta.save_state(
            StateChanges(
                users=[(1, odd_user, 7)],
                devices=[(1, odd_device, 7, True)],
                groups=[(1, *odd_group, b"{}")],
                lsn=1,
            )
        )
        snap = await meta.load_state(1, [odd_user], [odd_device], [], [odd_group])
        assert (snap.users, snap.devices, snap.groups) == (
            {odd_user: 7},
            {odd_device: (7, True)},
            {odd_group: {}},
        )
        assert await meta.amplitude_ids_for_user(1, odd_user) == [7]
        assert await meta.find_key("key\x00") is None
        org = await meta.create_org("acme", "ok", "oh")
        request = await meta.create_dsar(org, odd_user, None, "2024-01-01", "2024-01-02", T0)
        job = await meta.claim_job("w", T0, T0 + timedelta(minutes=1))
        assert job is not None
        await meta.fail_dsar(job.id, request.id, "no such user: al\x00ice")
        failed = await meta.get_dsar(request.id)
        assert failed is not None
        assert (failed.user_id, failed.fail_reason) == (odd_user, "no such user: al\\x00ice")
    finally:
        await meta.aclose()


async def test_an_unreachable_server_is_metadata_unavailable_not_a_driver_error():
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    meta = PostgresMetadata(
        "postgresql://postgres@127.0.0.1:1/swell", PoolOptions(timeout=0.5, connect_timeout=2)
    )
    try:
        with pytest.raises(MetadataUnavailable, match=re.escape("127.0.0.1:1/")):
            await meta.all_orgs()
        with pytest.raises(MetadataUnavailable):  # and again: the store does not wedge
            await meta.find_key("ok")
    finally:
        await meta.aclose()
    with pytest.raises(MetadataUnavailable, match="closed"):
        await meta.all_orgs()


def test_bad_urls_and_pool_bounds_are_config_errors():
    with pytest.raises(ConfigError, match="not a valid PostgreSQL url"):
        open_metadata("postgresql://host/db?nosuchparameter=1")
    with pytest.raises(ConfigError, match="SWELL_METADATA_POOL_MIN_SIZE"):
        open_metadata(
            "postgresql://host/db", Settings(metadata_pool_min_size=5, metadata_pool_max_size=2)
        )
    with pytest.raises(ConfigError, match="SWELL_METADATA_STATEMENT_TIMEOUT_SECONDS"):
        PostgresMetadata("postgres://host/db", PoolOptions(statement_timeout=0))


async def test_the_registry_passes_the_pool_settings(pg_url: str):
    meta = open_metadata(
        pg_url.replace("postgresql://", "postgres://"), Settings(metadata_pool_max_size=3)
    )
    try:
        assert isinstance(meta, PostgresMetadata)
        assert meta.options.max_size == 3
        assert await meta.all_orgs() == []
    finally:
        await meta.aclose()
