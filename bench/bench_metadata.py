"""The metadata calls on swell's hot paths, SQLite against PostgreSQL, in one run on one machine.

    .venv/bin/python bench/bench_metadata.py [--postgres postgresql://postgres@127.0.0.1/postgres]

Creates (and drops) its own PostgreSQL database on that server and a SQLite file in a temporary
directory, then times each call (median of the repetitions, wall clock, this process and the
database server on one machine): a seal (part number + catalog row + 2,000 user-index rows), a
checkpoint (5,000 users, devices and property states, 50,000 dedup keys), a batch's state load
(500 users and devices), a DSAR's index lookup across 240 parts, a job claim and a budget charge.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from swell.backends.base import Metadata
from swell.backends.postgres import PostgresMetadata
from swell.backends.sqlite import SQLiteMetadata
from swell.model import IndexEntry, Part, StateChanges

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = 473_000


async def timed(fn: Callable[[int], Awaitable[object]], runs: int) -> float:
    times = []
    for i in range(runs):
        start = time.perf_counter()
        await fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def measure(meta: Metadata) -> dict[str, float]:
    org = await meta.create_org("bench", "ok", "oh")
    project = await meta.create_project("web", org, "pk", "ph")
    results: dict[str, float] = {}

    async def seal(i: int) -> None:
        seq = await meta.allocate_part_seq(project, HOUR + i)
        part = Part(
            project, HOUR + i, seq, 10**7, 1, 20_000, "a", "b", i, tuple(range(0, 10**7, 2**18))
        )
        entries = [
            IndexEntry(10**11 + u, f"user-{u}", (u % 40, u % 40 + 1), 10) for u in range(2000)
        ]
        await meta.add_part(part, entries)

    results["seal: part number + add_part (2,000 index rows)"] = await timed(seal, 240)

    async def checkpoint(i: int) -> None:
        base = i * 5000
        await meta.save_state(
            StateChanges(
                users=[(project, f"u{base + n}", 10**11 + base + n) for n in range(5000)],
                devices=[(project, f"d{base + n}", 10**11 + base + n, False) for n in range(5000)],
                props=[(project, 10**11 + base + n, b'{"plan":"pro"}') for n in range(5000)],
                dedup=[
                    (project, (base * 10 + n) * 7919, 1_700_000_000_000 + n) for n in range(50_000)
                ],
                lsn=i + 1,
                next_amplitude_id=10**11 + base + 5000,
            )
        )

    results["checkpoint: save_state (5k users/devices/props, 50k dedup)"] = await timed(
        checkpoint, 10
    )

    async def load(i: int) -> None:
        users = [f"u{(i * 500 + n) % 50_000}" for n in range(500)]
        devices = [f"d{(i * 500 + n) % 50_000}" for n in range(500)]
        snap = await meta.load_state(project, users, devices, [], [])
        assert len(snap.users) == 500

    results["batch: load_state (500 users + 500 devices)"] = await timed(load, 50)

    async def lookup(i: int) -> None:
        found = await meta.user_blocks(project, [10**11 + i])
        assert len(found) == 240

    results["DSAR: user_blocks over 240 parts"] = await timed(lookup, 50)

    for i in range(200):
        await meta.create_dsar(org, f"user-{i}", None, "2024-01-01", "2024-01-02", T0)

    async def claim(i: int) -> None:
        job = await meta.claim_job("w", T0, T0 + timedelta(minutes=1))
        assert job is not None
        await meta.complete_job(job.id)

    results["job: claim_job + complete_job"] = await timed(claim, 200)

    async def charge(i: int) -> None:
        await meta.charge_budget(f"dsar:{org}", 1, 10**9, 3600, T0 + timedelta(seconds=i))

    results["budget: charge_budget"] = await timed(charge, 200)
    return results


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    name = f"swell_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            lite = SQLiteMetadata(Path(tmp) / "meta.db")
            try:
                sqlite_results = await measure(lite)
            finally:
                await lite.aclose()
        url = psycopg.conninfo.make_conninfo(args.postgres, dbname=name)
        pg = PostgresMetadata(url)
        try:
            pg_results = await measure(pg)
        finally:
            await pg.aclose()
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    print("| call (median ms) | SQLite | PostgreSQL |\n|---|---|---|")
    for what, lite_ms in sqlite_results.items():
        print(f"| {what} | {lite_ms:.2f} | {pg_results[what]:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
