"""The SQLite schema is versioned: a database written before versioning (user_version 0, the
first release's tables) is brought up to date in place, keeping its rows."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from swell.backends.sqlite import SQLiteMetadata, migrations

T0 = datetime(2024, 1, 1, tzinfo=UTC)


async def test_a_database_from_before_versioning_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    old = sqlite3.connect(path)
    old.executescript(migrations()[0][1])  # the first release's schema, user_version 0
    old.execute("INSERT INTO orgs(id, name) VALUES (1, 'acme')")
    old.execute("INSERT INTO parts VALUES (1, 10, 3, 100, 7, 2, 'a', 'b', 5, x'0000000000000000')")
    old.execute(
        "INSERT INTO jobs(kind, ref, status, run_after, created_at) "
        "VALUES ('dsar', 1, 'queued', '2023-12-31 00:00:00.000000', '2023-12-31 00:00:00.000000')"
    )
    old.commit()
    old.close()

    meta = SQLiteMetadata(path)
    try:
        assert meta.schema_version == len(migrations())
        assert await meta.all_orgs() == [1]
        assert await meta.allocate_part_seq(1, 10) == 4  # above the part recorded before
        job = await meta.claim_job("w", T0, T0 + timedelta(minutes=1))
        assert job is not None
        assert job.attempts == 1
    finally:
        await meta.aclose()
    reopened = SQLiteMetadata(path)  # nothing runs twice
    try:
        assert reopened.schema_version == len(migrations())
    finally:
        await reopened.aclose()
