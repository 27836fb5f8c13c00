"""Dashboard benchmark: /api/2/users over 365 days, and what the rollups cost at seal time.

One process, one run, the embedded store (SQLite): ``--events`` events (default 1M) of
``swell.generate`` over 365 days (the DSAR benchmark's population: Zipf-skewed users, about 208
events per user and month) are imported twice through the seal path (``Store.import_records``),
each into a fresh data dir: once as shipped, once with the rollups switched off (no facts folded,
an empty Rollup written). The rollups' share of ingest CPU is (CPU with - CPU without) / CPU with.

Then, on the store with rollups, ``swell.dashboard.users`` (what /api/2/users runs after auth)
over the 365 days, daily / weekly / monthly / grouped by country, median of 7 runs, against the
floor of reading the same index range once (``SELECT count(*)`` over the year's
rollup_user_days rows).

    .venv/bin/python bench/bench_dashboard.py [--events N]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from swell import dashboard
from swell.auth import new_credentials
from swell.generate import generate_records
from swell.model import Rollup
from swell.parts import OpenPart
from swell.rollups import RollupAcc, day_number
from swell.settings import Settings
from swell.store import Store

DAYS = 365
EVENTS_PER_USER_MONTH = 208.0


async def load(data_dir: Path, events: int, end: datetime) -> tuple[Store, int, float]:
    settings = Settings(data_dir=data_dir, seal_check_seconds=3600)
    store = await Store.open(settings)
    org = new_credentials()
    proj = new_credentials()
    org_id = await store.meta.create_org("bench", org.api_key, org.secret_hash)
    project = await store.meta.create_project("web", org_id, proj.api_key, proj.secret_hash)
    users = max(10, round(events / (EVENTS_PER_USER_MONTH * DAYS / (365.25 / 12))))
    records = [
        (orjson.dumps(r), r)
        for r in generate_records(project, events=events, days=DAYS, users=users, end=end)
    ]
    start = time.process_time()
    await store.import_records(project, records)
    return store, project, time.process_time() - start


def _median_s(fn: Any) -> float:
    runs = []
    for _ in range(7):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


async def run(events: int) -> dict[str, Any]:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory() as tmp:
        real_add, real_rollup = RollupAcc.add, OpenPart.rollup
        RollupAcc.add = lambda self, aid, f: None  # type: ignore[method-assign]
        OpenPart.rollup = lambda self: Rollup()  # type: ignore[method-assign]
        try:
            plain, _, cpu_without = await load(Path(tmp) / "plain", events, end)
            await plain.aclose()
        finally:
            RollupAcc.add, OpenPart.rollup = real_add, real_rollup  # type: ignore[method-assign]
        store, project, cpu_with = await load(Path(tmp) / "rolled", events, end)
        last = day_number(end.date())
        first = last - DAYS + 1
        loop_queries: dict[str, float] = {}
        for name, interval, group in [
            ("daily", 1, None),
            ("weekly", 7, None),
            ("monthly", 30, None),
            ("daily by country", 1, "country"),
        ]:
            query = dashboard.UsersQuery(first, last, False, interval, group)
            runs = []
            for _ in range(7):
                t = time.perf_counter()
                await dashboard.users(store.meta, project, query)
                runs.append(time.perf_counter() - t)
            loop_queries[name] = statistics.median(runs)
        await store.aclose()
        db = sqlite3.connect(Path(tmp) / "rolled" / "meta.db")
        rows = db.execute(
            "SELECT count(*) FROM rollup_user_days WHERE project_id = ? AND day BETWEEN ? AND ?",
            (project, first, last),
        ).fetchone()[0]
        floor = _median_s(
            lambda: db.execute(
                "SELECT count(*) FROM rollup_user_days WHERE project_id = ? "
                "AND day BETWEEN ? AND ?",
                (project, first, last),
            ).fetchone()
        )
        db.close()
    return {
        "events": events,
        "user_days": rows,
        "import_cpu_s_without_rollups": round(cpu_without, 2),
        "import_cpu_s_with_rollups": round(cpu_with, 2),
        "rollup_share_of_ingest_cpu": round((cpu_with - cpu_without) / cpu_with, 3),
        "index_range_floor_ms": round(floor * 1000, 2),
        "users_365d_ms": {k: round(v * 1000, 1) for k, v in loop_queries.items()},
        "users_365d_vs_floor": {k: round(v / floor, 1) for k, v in loop_queries.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    print(orjson.dumps(asyncio.run(run(args.events)), option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
