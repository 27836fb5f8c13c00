"""Compaction benchmark: rewrite throughput of sealed parts, against the gzip floor.

Setup: an embedded store (SQLite + local files) in a temporary data directory; ``swell
generate``'s records for one day (24 hours), imported in 8 batches of different users' events
(different seeds), so every hour holds 8 sealed parts, as an ETL polling each hour would leave
it. Measured: ``Store.compact()``, which merges every hour into one part: MB of parts read
per second of wall time (and the MB written). The **floor** is what no rewrite of these bytes
can avoid, measured on the same parts in the same run: isal gunzip of every part and gzip of
its text again at level 1 in 256 KiB members, single-threaded, as compaction does.

    .venv/bin/python bench/bench_compaction.py [--quick] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from isal import igzip

from common import ROOT, write_section

SECTION = "## Compaction: rewrite throughput"
FULL_EVENTS = 800_000
QUICK_EVENTS = 40_000
BATCHES = 8


async def _measure(events: int) -> dict[str, Any]:
    from swell.generate import generate_records
    from swell.settings import Settings
    from swell.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="swell-bench-compaction-"))
    try:
        settings = Settings(data_dir=tmp / "data", seal_check_seconds=3600)
        store = await Store.open(settings)
        try:
            org = await store.meta.create_org("bench", "bench-org", "x")
            project = await store.meta.create_project("bench", org, "bench-project", "x")
            end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
            for seed in range(BATCHES):
                records = generate_records(
                    project, events=events // BATCHES, days=1, users=2000, seed=seed, end=end
                )
                await store.import_records(project, ((orjson.dumps(r), r) for r in records))
            start_hour = int(end.timestamp() // 3600) - 24
            before = await store.meta.parts(project, start_hour, start_hour + 24)
            datas = [await store.blobs.read(p.key) for p in before]
            floor_started = time.perf_counter()
            for data in datas:
                raw = igzip.decompress(data)
                for at in range(0, len(raw), 256 * 1024):
                    igzip.compress(raw[at : at + 256 * 1024], compresslevel=1, mtime=0)
            floor_s = time.perf_counter() - floor_started
            started = time.perf_counter()
            done = await store.compact()
            wall_s = time.perf_counter() - started
            after = await store.meta.parts(project, start_hour, start_hour + 24)
        finally:
            await store.aclose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    read = sum(r.bytes_read for r in done)
    return {
        "events": sum(p.events for p in before),
        "hours": len(done),
        "parts_before": len(before),
        "parts_after": len(after),
        "bytes_read": read,
        "bytes_written": sum(r.bytes_written for r in done),
        "wall_s": wall_s,
        "mb_s": read / 1e6 / wall_s,
        "floor_mb_s": sum(len(d) for d in datas) / 1e6 / floor_s,
    }


def run(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_measure(QUICK_EVENTS if quick else FULL_EVENTS))


def section(result: dict[str, Any]) -> list[str]:
    r = result
    return [
        SECTION,
        "",
        f"{r['events']:,} generated events over 24 hours, imported in {BATCHES} batches: "
        f"{r['parts_before']} sealed parts ({r['bytes_read'] / 1e6:,.1f} MB). `Store.compact()` "
        f"merged {r['hours']} hours into {r['parts_after']} parts "
        f"({r['bytes_written'] / 1e6:,.1f} MB) in {r['wall_s']:.2f} s. The floor gunzips every "
        "part and gzips its text again (isal, level 1, 256 KiB members), single-threaded, on "
        "the same bytes; compaction also decodes three fields of every line (msgspec) to "
        "rebuild the user index, writes the blobs and swaps the catalog rows.",
        "",
        "| | compaction | gunzip + gzip floor | compaction / floor |",
        "|---|---|---|---|",
        f"| **MB of parts rewritten per second** | **{r['mb_s']:,.1f}** | "
        f"{r['floor_mb_s']:,.1f} | **{r['mb_s'] / r['floor_mb_s']:.2f}** |",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    lines = section(run(quick=args.quick))
    print("\n".join(lines))
    if args.write:
        write_section(SECTION, lines, ROOT / "docs" / "benchmarks.md")


if __name__ == "__main__":
    sys.exit(main())
