"""Export client benchmark: ``swell export`` against one plain GET of the same range.

Setup: a fresh data dir, ``swell org create`` / ``project create``, then ``swell generate``, and
``swell serve``. Measured, alternating, after one warm-up each:

* ``single``: the server's single-request throughput, one ``GET /api/2/export`` of the whole
  range downloaded with ``curl -s -o /dev/null`` (no checks, nothing written);
* ``client``: ``swell export --window-hours 24 --parallel 4`` of the same range into a fresh
  directory: windows in parallel, every zip and gzip CRC checked (which decompresses every
  event), each archive fsync'd and renamed into place, the state file written;
* ``extract``: the same with ``--extract`` (each window's records written as one .json.gz).

Throughput is the archive bytes and the events over the time the client reports (``seconds``,
from planning to the last window; interpreter start-up is given apart), against curl's total.
The ratio client / single is the figure to read: the checks decompress what the single request
only copies, so it is bounded by gzip decompression speed.

    .venv/bin/python bench/bench_client.py [--quick] [--events N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench_export import curl, generate
from common import PYTHON, ROOT, children_cpu_seconds, loadavg, median, swell_server

FULL_EVENTS = 1_000_000
FULL_DAYS = 7
FULL_USERS = 50_000
QUICK_EVENTS = 30_000
QUICK_DAYS = 2
QUICK_USERS = 2_000
WINDOW_HOURS = 24
PARALLEL = 4


def client_run(
    url: str, project: dict[str, Any], start: str, end: str, out: Path, *extra: str
) -> dict[str, Any]:
    """One ``swell export`` into a fresh ``out``; its summary, wall time and CPU."""
    shutil.rmtree(out, ignore_errors=True)
    env = {
        **os.environ,
        "AMPLITUDE_API_KEY": project["api_key"],
        "AMPLITUDE_SECRET_KEY": project["secret_key"],
    }
    argv = [
        *(PYTHON, "-m", "swell", "export", "--server", url, "--start", start, "--end", end),
        *("--out", str(out), "--window-hours", str(WINDOW_HOURS), "--parallel", str(PARALLEL)),
        *("--settle-hours", "0", "--quiet", *extra),
    ]
    cpu0, wall0 = children_cpu_seconds(), time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600, cwd=ROOT)
    wall = time.perf_counter() - wall0
    if done.returncode != 0:
        raise RuntimeError(f"swell export exited {done.returncode}: {done.stderr.strip()}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    seconds = summary["seconds"]
    return {
        "seconds": seconds,
        "wall_s": wall,
        "startup_s": wall - seconds,
        "cpu_s": children_cpu_seconds() - cpu0,
        "bytes": summary["received_bytes"],
        "events": summary["events"],
        "windows": summary["windows"],
        "mb_s": summary["received_bytes"] / seconds / 1e6,
        "events_s": summary["events"] / seconds,
        "written_bytes": sum(p.stat().st_size for p in out.iterdir() if p.is_file()),
    }


def run(quick: bool = False, events: int | None = None) -> dict[str, Any]:
    n = events or (QUICK_EVENTS if quick else FULL_EVENTS)
    days = QUICK_DAYS if quick else FULL_DAYS
    users = QUICK_USERS if quick else FULL_USERS
    timed = 2 if quick else 3
    root = Path(tempfile.mkdtemp(prefix="swell-bench-client-", dir="/tmp"))
    data_dir = root / "data"
    server = None
    try:
        print(f"client: generating {n:,} events over {days} days for {users:,} users ...")
        gen = generate(data_dir, n, days, users)
        project = gen["project"]
        start, end = gen["start"], gen["end"]
        path = f"/api/2/export?start={start}&end={end}"
        user = f"{project['api_key']}:{project['secret_key']}"
        server = swell_server(data_dir).start()
        runs: dict[str, list[dict[str, Any]]] = {"single": [], "client": [], "extract": []}
        for index in range(1 + timed):
            label = "warm-up" if index == 0 else f"run {index}"
            single = curl(server, path, user)
            single["events_s"] = n / single["total_s"]
            client = client_run(server.url, project, start, end, root / "out")
            extract = client_run(server.url, project, start, end, root / "out", "--extract")
            for key, result in (("single", single), ("client", client), ("extract", extract)):
                if index > 0:
                    runs[key].append(result)
            if client["events"] != n or extract["events"] != n:
                raise RuntimeError(f"the client exported {client['events']:,} of {n:,} events")
            print(
                f"  {label:7s}: single GET {single['mb_s']:,.0f} MB/s; swell export "
                f"{client['mb_s']:,.0f} MB/s ({client['events_s']:,.0f} events/s, "
                f"{client['cpu_s']:.1f} CPU-s); --extract {extract['mb_s']:,.0f} MB/s; "
                f"load {loadavg()}"
            )
        summary: dict[str, Any] = {
            "events": n,
            "days": days,
            "users": users,
            "archive_bytes": runs["single"][0]["bytes"],
            "window_hours": WINDOW_HOURS,
            "parallel": PARALLEL,
            "windows": runs["client"][0]["windows"],
            "timed_runs": timed,
            "start": start,
            "end": end,
        }
        for key, results in runs.items():
            summary[key] = {
                "mb_s": median([r["mb_s"] for r in results]),
                "mb_s_runs": [r["mb_s"] for r in results],
                "events_s": median([r["events_s"] for r in results]),
            }
        for key in ("client", "extract"):
            results = runs[key]
            summary[key].update(
                {
                    "seconds": median([r["seconds"] for r in results]),
                    "startup_s": median([r["startup_s"] for r in results]),
                    "cpu_s_per_gb": median([r["cpu_s"] / (r["bytes"] / 1e9) for r in results]),
                    "written_bytes": results[0]["written_bytes"],
                }
            )
        summary["single"]["seconds"] = median([r["total_s"] for r in runs["single"]])
        summary["ratio"] = summary["client"]["mb_s"] / summary["single"]["mb_s"]
        summary["ratio_extract"] = summary["extract"]["mb_s"] / summary["single"]["mb_s"]
        print(
            f"  median: single {summary['single']['mb_s']:,.0f} MB/s, swell export "
            f"{summary['client']['mb_s']:,.0f} MB/s (ratio {summary['ratio']:.2f})"
        )
        return summary
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--events", type=int, help=f"events to generate (default {FULL_EVENTS:,})")
    args = parser.parse_args()
    result = run(quick=args.quick, events=args.events)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parent.parent)
    main()
