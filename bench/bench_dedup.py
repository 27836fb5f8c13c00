"""The insert_id dedup window: memory per key, start-up time, and the ingest cost of checking it.

    .venv/bin/python bench/bench_dedup.py            # measure, print the section
    .venv/bin/python bench/bench_dedup.py --write    # ... and put it into docs/benchmarks.md
    .venv/bin/python bench/bench_dedup.py --quick    # 200k keys only

Each figure comes from a fresh child process, so RSS deltas are that process's alone:

* **RSS per million keys**: a window loaded with N keys spread over the 168 hours of a week, RSS
  after the load minus RSS before it, against the same keys in a Python set plus one
  ``array('q')`` per hour (what swell held before the window became compact).
* **start-up**: ``Store.open`` on a data directory whose saved window holds N keys, which
  reads the window, replays the (empty) log and checkpoints; then the process's RSS.
* **admit**: DedupWindow.admit of batches of 1000 new keys against a window of N keys, per key.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import PYTHON, ROOT, write_section

FULL_SIZES = (1_000_000, 4_000_000)
QUICK_SIZES = (200_000,)
SECTION = "## Dedup window: memory per key and start-up"

_CHILD = r"""
import asyncio, json, os, sys, time
from array import array
import numpy as np
sys.path.insert(0, {src!r})
from swell.backends.base import DedupChunk, StateChanges
from swell.cli import tune_runtime
from swell.dedup import HOUR_MS, DedupWindow, pack_keys
tune_runtime()  # the allocator and collector settings of every swell command

PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE

mode, n, data_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
now_hour = int(time.time() * 1000) // HOUR_MS
keys = np.random.default_rng(7).integers(-2**63, 2**63 - 1, n, dtype=np.int64)
hours = np.array_split(keys, 168)
out = {{}}
if mode == "window":
    chunks = [
        DedupChunk(now_hour - 167 + i, h.astype("<i8").tobytes()) for i, h in enumerate(hours)
    ]
    warm = DedupWindow()  # page in numpy's code before measuring
    warm.load([DedupChunk(now_hour, keys[:1000].astype("<i8").tobytes())])
    warm.admit(1, keys[:10].tolist(), now_hour * HOUR_MS)
    warm.freeze()
    del warm
    before = rss()
    w = DedupWindow(max_keys=10**9)
    w.load(chunks)
    out["bytes"] = rss() - before
    del chunks
    batch = np.random.default_rng(8).integers(-2**63, 2**63 - 1, 200_000).tolist()
    started = time.process_time()
    for i in range(0, len(batch), 1000):
        w.admit(1, batch[i : i + 1000], now_hour * HOUR_MS)
    out["admit_us"] = (time.process_time() - started) / len(batch) * 1e6
elif mode == "set":
    before = rss()
    seen, by_hour = set(), {{}}
    for i, h in enumerate(hours):
        bucket = by_hour[now_hour - 167 + i] = array("q")
        for k in h.tolist():  # the set holds the only reference to each int, as it did
            seen.add(k)
            bucket.append(k)
    out["bytes"] = rss() - before
elif mode == "prepare":
    from swell.backends.sqlite import SQLiteMetadata
    async def fill():
        meta = SQLiteMetadata(__import__("pathlib").Path(data_dir) / "meta.db")
        for i, h in enumerate(hours):
            ms = (now_hour - 167 + i) * HOUR_MS
            await meta.save_state(StateChanges(dedup=[(1, k, ms) for k in h.tolist()], lsn=1))
        await meta.aclose()
    asyncio.run(fill())
elif mode == "open":
    from pathlib import Path
    from swell.settings import Settings
    from swell.store import Store
    async def open_store():
        settings = Settings(data_dir=Path(data_dir), seal_check_seconds=3600)
        started = time.perf_counter()
        store = await Store.open(settings)
        out["open_s"] = time.perf_counter() - started
        out["window"] = store.identity.dedup_window_size
        out["rss_mib"] = rss() / 2**20
        await store.aclose()
    asyncio.run(open_store())
print(json.dumps(out))
"""


def _child(
    mode: str, n: int, data_dir: Path | str = "-", src: Path = ROOT / "src"
) -> dict[str, Any]:
    code = _CHILD.format(src=str(src))
    done = subprocess.run(
        [PYTHON, "-c", code, mode, str(n), str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(quick: bool = False) -> dict[str, Any]:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    rows = []
    for n in (0, *sizes):
        row: dict[str, Any] = {"keys": n}
        if n:
            window = _child("window", n)
            row["window_b_per_key"] = window["bytes"] / n
            row["admit_us"] = window["admit_us"]
            row["set_b_per_key"] = _child("set", n)["bytes"] / n
        tmp = Path(tempfile.mkdtemp(prefix="swell-bench-dedup-", dir="/tmp"))
        try:
            if n:
                _child("prepare", n, tmp)
            opened = _child("open", n, tmp)
            assert opened["window"] == n, opened
            row["open_s"], row["rss_mib"] = opened["open_s"], opened["rss_mib"]
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rows.append(row)
    return {"rows": rows}


def section(result: dict[str, Any]) -> list[str]:
    rows = result["rows"]
    lines = [
        SECTION,
        "",
        "The insert_id window (`swell.dedup`) with N keys spread over the 168 hours of a week. "
        "RSS per key is what loading the window adds to a fresh process; the Python set "
        "column holds the same keys as a set plus one `array('q')` per hour (the layout before "
        "#21). Start-up is `Store.open` on a data directory whose saved window holds N keys "
        "(it reads the window, replays an empty log and checkpoints). admit is the cost per "
        "key of checking and remembering batches of 1000 new keys against the window.",
        "",
        "| keys in the window | RSS per key | Python set + arrays | start-up | RSS after start-up "
        "| admit, per key |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if not row["keys"]:
            lines.append(f"| 0 | | | {row['open_s'] * 1000:.0f} ms | {row['rss_mib']:.0f} MiB | |")
            continue
        lines.append(
            f"| {row['keys'] / 1e6:g}M | {row['window_b_per_key']:.1f} B "
            f"({row['window_b_per_key']:.1f} MB per million) | {row['set_b_per_key']:.1f} B | "
            f"{row['open_s'] * 1000:.0f} ms | {row['rss_mib']:.0f} MiB | "
            f"{row['admit_us']:.2f} µs |"
        )
    lines.append("")
    return lines


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
