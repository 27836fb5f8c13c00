"""S3 benchmark: exports and DSAR requests with parts on SeaweedFS, against the object store itself.

Setup: a SeaweedFS server (tests/s3server.py: ``weed server -s3`` on loopback ports, data in a
temporary directory), a bucket, and a data dir whose blob store is that bucket
(``SWELL_BLOB_URL=s3://bench/parts?endpoint=...``; the metadata store and the log stay local).
``swell generate`` files the events, so every part is sealed into the object store.

Measured, in one run on the same objects:

* **Export**: ``GET /api/2/export`` for the whole range from ``swell serve``, downloaded with
  ``curl -s -o /dev/null``, alternating with the **direct baseline**: one ``curl`` process
  fetching the same part objects straight from SeaweedFS's S3 API (SigV4-signed GETs, one
  keep-alive connection, one object after the other), which is what a client reading the object
  store itself would get. The export's bytes are the same parts plus the zip's headers (a few KB).
  The ratio swell MB/s / direct MB/s is the figure (target >= 0.7). The server CPU per GB of
  swell and of SeaweedFS is given for both paths.
* **DSAR**: POST to ``done`` for the typical (median) and the p95 user by event count, with a
  fresh ``swell serve`` per user, verified against the user's events read through the Export API
  (bench_dsar's machinery).
* **Libraries** (when aiobotocore is installed beside obstore): reading every part object in
  sequence, in this process, with obstore's ranged GETs as swell's S3 reader does (windows of
  8 MiB, two ahead), with one obstore streaming GET per object, and with aiobotocore's ranged and
  streaming GETs: MB/s and this process's CPU per GB (what chose obstore; docs/architecture.md),
  with the allocator settings ``swell serve`` uses.

    .venv/bin/python bench/bench_s3.py [--quick] [--events N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import obstore
import orjson
from obstore.store import S3Store

import bench_dsar
from bench_export import curl as curl_export
from common import (
    ROOT,
    Server,
    basic_auth,
    children_cpu_seconds,
    create_org_project,
    loadavg,
    median,
    proc_cpu_seconds,
    swell_cli,
    swell_server,
    wait_until_idle,
)
from swell.cli import keep_freed_memory

sys.path.insert(0, str(ROOT))
from tests.s3server import REGION, SeaweedFS

#: As many events per hour as bench_export's store (4.6M over 14 days), so hourly parts have the
#: same size (about 3.3 MB): per-part costs (a request or two each) weigh the same.
FULL_EVENTS = 2_000_000
FULL_DAYS = 6
QUICK_EVENTS = 30_000
QUICK_DAYS = 2
BUCKET = "bench"
PREFIX = "parts"
TIMED_RUNS = 5
DSAR_RUNS = 5
EXPORT_TARGET = 0.7
DSAR_TYPICAL_TARGET_S = 1.0
WINDOW = 8 << 20
AHEAD = 2
#: (object key, size) of the parts read.
Parts = list[tuple[str, int]]


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _store(weed: SeaweedFS) -> S3Store:
    env = weed.env()
    return S3Store(
        BUCKET,
        endpoint=weed.endpoint,
        region=REGION,
        access_key_id=env["AWS_ACCESS_KEY_ID"],
        secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        virtual_hosted_style_request=False,
        client_options={"allow_http": True, "timeout": "120s"},
    )


def list_parts(weed: SeaweedFS, project_id: int) -> Parts:
    """(object key, size) of the project's sealed parts, in key order."""
    store = _store(weed)
    found = obstore.list(store, prefix=f"{PREFIX}/{project_id}/").collect()
    return sorted(
        (str(m["path"]), int(m["size"])) for m in found if str(m["path"]).endswith(".json.gz")
    )


def direct_download(weed: SeaweedFS, keys: list[str]) -> dict[str, Any]:
    """Every object straight from the S3 API with one curl process (one connection)."""
    env = weed.env()
    config = Path(tempfile.mkstemp(prefix="swell-bench-s3-", suffix=".curl")[1])
    try:
        with config.open("w") as f:
            for key in keys:
                f.write(f'url = "{weed.endpoint}/{BUCKET}/{urllib.parse.quote(key)}"\n')
                f.write('output = "/dev/null"\n')
        argv = [
            *("curl", "-s", "--fail", "--aws-sigv4", f"aws:amz:{REGION}:s3"),
            *("--user", f"{env['AWS_ACCESS_KEY_ID']}:{env['AWS_SECRET_ACCESS_KEY']}"),
            *("-w", "%{size_download}\\n", "-K", str(config)),
        ]
        assert weed.proc is not None
        cpu0 = proc_cpu_seconds(weed.proc.pid)
        wall0 = time.perf_counter()
        out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=1800)
        seconds = time.perf_counter() - wall0
        weed_cpu = proc_cpu_seconds(weed.proc.pid) - cpu0
    finally:
        config.unlink()
    size = sum(int(line) for line in out.stdout.split())
    return {
        "bytes": size,
        "total_s": seconds,
        "mb_s": size / seconds / 1e6,
        "weed_cpu_s_per_gb": weed_cpu / (size / 1e9),
    }


def swell_download(server: Server, weed: SeaweedFS, path: str, user: str) -> dict[str, Any]:
    assert weed.proc is not None
    cpu0 = proc_cpu_seconds(weed.proc.pid)
    result = curl_export(server, path, user)
    result["weed_cpu_s_per_gb"] = (proc_cpu_seconds(weed.proc.pid) - cpu0) / (result["bytes"] / 1e9)
    return result


def export_section(
    weed: SeaweedFS, data_dir: Path, env: dict[str, str], project: dict[str, Any], days: int
) -> dict[str, Any]:
    parts = list_parts(weed, int(project["project_id"]))
    part_bytes = sum(size for _, size in parts)
    end = datetime.now(UTC) + timedelta(hours=1)
    start = end - timedelta(days=days + 2)
    path = f"/api/2/export?start={start:%Y%m%dT%H}&end={end:%Y%m%dT%H}"
    user = f"{project['api_key']}:{project['secret_key']}"
    server = swell_server(data_dir, env)
    server.start(timeout=600)
    runs: dict[str, list[dict[str, Any]]] = {"swell": [], "direct": []}
    try:
        wait_until_idle(server)
        for index in range(1 + TIMED_RUNS):
            for key in ("swell", "direct"):
                if key == "swell":
                    result = swell_download(server, weed, path, user)
                else:
                    result = direct_download(weed, [k for k, _ in parts])
                label = "warm-up" if index == 0 else f"run {index}"
                extra = f", swell CPU {result['cpu_s_per_gb']:.2f} s/GB" if key == "swell" else ""
                print(
                    f"  {key:6s} {label:7s}: {result['mb_s']:>6,.0f} MB/s ({result['bytes']:,} B)"
                    f"{extra}, SeaweedFS CPU {result['weed_cpu_s_per_gb']:.2f} s/GB, "
                    f"load {loadavg()}"
                )
                if index > 0:
                    runs[key].append(result)
    finally:
        server.stop()
    archive = runs["swell"][0]["bytes"]
    if runs["direct"][0]["bytes"] != part_bytes or archive < part_bytes:
        raise RuntimeError("the two downloads do not hold the same part bytes")
    swell_mb = median([r["mb_s"] for r in runs["swell"]])
    direct_mb = median([r["mb_s"] for r in runs["direct"]])
    return {
        "parts": len(parts),
        "part_bytes": part_bytes,
        "archive_bytes": archive,
        "timed_runs": TIMED_RUNS,
        "swell_mb_s": swell_mb,
        "direct_mb_s": direct_mb,
        "ratio": swell_mb / direct_mb,
        "swell_runs": [r["mb_s"] for r in runs["swell"]],
        "direct_runs": [r["mb_s"] for r in runs["direct"]],
        "paired_ratios": [
            a["mb_s"] / b["mb_s"] for a, b in zip(runs["swell"], runs["direct"], strict=True)
        ],
        "swell_cpu_s_per_gb": median([r["cpu_s_per_gb"] for r in runs["swell"]]),
        "swell_ttfb_ms": median([r["ttfb_s"] * 1000 for r in runs["swell"]]),
        "swell_rss_growth_mib": max(r["rss_growth_kib"] for r in runs["swell"]) / 1024,
        "weed_cpu_s_per_gb_export": median([r["weed_cpu_s_per_gb"] for r in runs["swell"]]),
        "weed_cpu_s_per_gb_direct": median([r["weed_cpu_s_per_gb"] for r in runs["direct"]]),
    }


def dsar_section(
    data_dir: Path,
    env: dict[str, str],
    org: dict[str, Any],
    project: dict[str, Any],
    days: int,
) -> dict[str, Any]:
    pid = int(project["project_id"])
    chosen = bench_dsar.choose_users(data_dir, pid)
    users = {kind: chosen[kind] for kind in ("typical", "p95")}
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
    start = end - timedelta(days=days + 2)
    dates = (
        (start - timedelta(days=bench_dsar.EARLY_DAYS)).date().isoformat(),
        end.date().isoformat(),
    )
    server = swell_server(data_dir, env).start(timeout=600)
    try:
        truths, scan = bench_dsar.export_truth(server, project, start, end, users.values())
    finally:
        server.stop()
    auth = basic_auth(org)
    results: dict[str, Any] = {}
    for kind, user in users.items():
        server = swell_server(
            data_dir, {**env, "SWELL_DSAR_COST_PER_HOUR": str(bench_dsar.COST_PER_HOUR)}
        )
        server.start(timeout=600)
        try:
            wait_until_idle(server)
            done = []
            for index in range(DSAR_RUNS):
                result = bench_dsar.dsar_run(server, auth, user.body(*dates))
                result["ok"] = bench_dsar.check(kind, result, truths[user.amplitude_id])
                label = "cold" if index == 0 else f"run {index + 1}"
                print(
                    f"  {kind:8s} {label:6s}: {result['status']} in {result['seconds']:.3f} s, "
                    f"{result['files']} file(s), {result['tally'].events:,} events, server CPU "
                    f"{result['server_cpu_s']:.2f} s, "
                    f"{'verified' if result['ok'] else '**WRONG**'}"
                )
                done.append(result)
        finally:
            server.stop()
        seconds = [r["seconds"] for r in done]
        results[kind] = {
            "user_id": user.user_id,
            "events": truths[user.amplitude_id].events,
            "seconds_runs": seconds,
            "cold_s": seconds[0],
            "median_s": median(seconds),
            "server_cpu_s": median([r["server_cpu_s"] for r in done]),
            "files": done[0]["files"],
            "ok": all(r["ok"] for r in done),
        }
    return {"users": results, "export_scan_lines": scan["lines"], "dates": dates}


# -- the libraries, in this process ----------------------------------------------------------------


async def _windows(fetch: Callable[[str, int, int], Awaitable[Any]], parts: Parts) -> int:
    """Read every object by ranged GETs of WINDOW bytes, AHEAD of them in flight beyond the one
    being consumed (what swell's S3 reader does)."""
    total = 0
    for key, size in parts:
        starts = deque(range(0, size, WINDOW))
        pending: deque[asyncio.Future[Any]] = deque()
        while starts or pending:
            while starts and len(pending) <= AHEAD:
                start = starts.popleft()
                pending.append(asyncio.ensure_future(fetch(key, start, min(start + WINDOW, size))))
            total += len(memoryview(await pending.popleft()))
    return total


async def _obstore_stream(store: S3Store, keys: Parts) -> int:
    total = 0
    for key, _ in keys:
        result = await obstore.get_async(store, key)
        async for chunk in result.stream(min_chunk_size=1 << 20):
            total += len(chunk)
    return total


def _boto_client(weed: SeaweedFS) -> Any:
    from aiobotocore.session import get_session

    env = weed.env()
    return get_session().create_client(
        "s3",
        endpoint_url=weed.endpoint,
        region_name=REGION,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


async def _boto_windows(weed: SeaweedFS, parts: Parts) -> int:
    async with _boto_client(weed) as client:

        async def fetch(key: str, start: int, end: int) -> bytes:
            got = await client.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={start}-{end - 1}")
            async with got["Body"] as body:
                data: bytes = await body.read()
                return data

        return await _windows(fetch, parts)


async def _boto_stream(weed: SeaweedFS, keys: Parts) -> int:
    total = 0
    async with _boto_client(weed) as client:
        for key, _ in keys:
            got = await client.get_object(Bucket=BUCKET, Key=key)
            async with got["Body"] as body:
                async for chunk in body.iter_chunks(1 << 20):
                    total += len(chunk)
    return total


def libraries_section(weed: SeaweedFS, parts: Parts) -> dict[str, Any]:
    try:
        import aiobotocore
    except ImportError:
        return {"skipped": "aiobotocore is not installed (pip install aiobotocore to compare)"}
    version = aiobotocore.__version__
    keep_freed_memory()  # the allocator settings swell serve runs with (swell.cli.tune_runtime)
    store = _store(weed)
    ways: dict[str, Callable[[], Awaitable[int]]] = {
        "obstore ranged GETs (8 MiB windows, 2 ahead)": lambda: _windows(
            lambda key, start, end: obstore.get_range_async(store, key, start=start, end=end),
            parts,
        ),
        "obstore one streaming GET per object": lambda: _obstore_stream(store, parts),
        f"aiobotocore {version} ranged GETs (8 MiB windows, 2 ahead)": lambda: _boto_windows(
            weed, parts
        ),
        f"aiobotocore {version} one streaming GET per object": lambda: _boto_stream(weed, parts),
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for index in range(4):  # one warm-up round, then three, each way in turn
        for name, way in ways.items():
            cpu0, wall0 = _self_cpu(), time.perf_counter()
            total = asyncio.run(way())
            wall, cpu = time.perf_counter() - wall0, _self_cpu() - cpu0
            if index:
                runs[name].append((total / wall / 1e6, cpu / (total / 1e9)))
    results = {
        name: {
            "mb_s": median([r[0] for r in values]),
            "cpu_s_per_gb": median([r[1] for r in values]),
            "mb_s_runs": [r[0] for r in values],
        }
        for name, values in runs.items()
    }
    for name, r in results.items():
        print(f"  {name}: {r['mb_s']:,.0f} MB/s, {r['cpu_s_per_gb']:.2f} client CPU-s/GB")
    return {"obstore": obstore.__version__, "aiobotocore": version, "ways": results}


# -- the benchmark ---------------------------------------------------------------------------------


def run(quick: bool = False, events: int | None = None) -> dict[str, Any]:
    n = events or (QUICK_EVENTS if quick else FULL_EVENTS)
    days = QUICK_DAYS if quick else FULL_DAYS
    users = bench_dsar.population_users(n, days)
    root = Path(tempfile.mkdtemp(prefix="swell-bench-s3-", dir="/tmp"))
    weed = SeaweedFS(root / "seaweedfs")
    try:
        weed.start()
        weed.create_bucket(BUCKET)
        env = {**weed.env(), "SWELL_BLOB_URL": weed.blob_url(BUCKET, PREFIX)}
        data_dir = root / "data"
        org, project = create_org_project(data_dir)
        print(f"s3: generating {n:,} events over {days} days for {users:,} users into S3 ...")
        cpu0, wall0 = children_cpu_seconds(), time.perf_counter()
        swell_cli(
            *("generate", "--project", str(project["project_id"]), "--events", str(n)),
            *("--days", str(days), "--users", str(users)),
            data_dir=data_dir,
            timeout=7200,
            env=env,
        )
        generate = {
            "events": n,
            "days": days,
            "users": users,
            "wall_s": time.perf_counter() - wall0,
            "cpu_s": children_cpu_seconds() - cpu0,
        }
        print(f"  generated in {generate['wall_s']:.0f} s wall, {generate['cpu_s']:.0f} s CPU")
        print("s3: export, swell against the object store itself ...")
        export = export_section(weed, data_dir, env, project, days)
        print(
            f"  median: swell {export['swell_mb_s']:,.0f} MB/s, direct "
            f"{export['direct_mb_s']:,.0f} MB/s: ratio {export['ratio']:.2f}"
        )
        print("s3: DSAR with parts on S3 ...")
        dsar = dsar_section(data_dir, env, org, project, days)
        print("s3: libraries, reading every part in this process ...")
        libraries = libraries_section(weed, list_parts(weed, int(project["project_id"])))
        return {
            "generate": generate,
            "export": export,
            "dsar": dsar,
            "libraries": libraries,
            "ok": all(u["ok"] for u in dsar["users"].values()),
        }
    finally:
        weed.kill()
        shutil.rmtree(root, ignore_errors=True)


# -- the report -------------------------------------------------------------------------------


def _runs(values: list[float], fmt: str = "{:,.0f}") -> str:
    return ", ".join(fmt.format(v) for v in values)


def _secs(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def section(s3: dict[str, Any]) -> list[str]:
    """The report's S3 section (bench/run_all.py)."""
    gen, e, d = s3["generate"], s3["export"], s3["dsar"]
    ok = "meets" if e["ratio"] >= EXPORT_TARGET else "**misses**"
    rows = [
        f"| {kind} (`{u['user_id']}`) | {u['events']:,} | {_n(u['files'], 'file')} | "
        f"**{_secs(u['median_s'])}** (cold {_secs(u['cold_s'])}) | "
        f"{', '.join(_secs(v) for v in u['seconds_runs'])} | {u['server_cpu_s']:.2f} s | "
        f"{'verified' if u['ok'] else '**WRONG**'} |"
        for kind, u in d["users"].items()
    ]
    typical = d["users"]["typical"]["median_s"]
    lines = [
        "## S3: parts on SeaweedFS",
        "",
        f"`swell generate` filed {gen['events']:,} events ({gen['days']} days, "
        f"{gen['users']:,} users) into an S3 bucket on a SeaweedFS server on the same machine "
        f"(`weed server -s3`, tests/s3server.py): {e['parts']} parts, "
        f"{e['part_bytes'] / 1e6:,.0f} MB (average {e['part_bytes'] / e['parts'] / 1e6:.1f} MB). "
        "The export is downloaded with `curl` from `swell serve`, alternating with the **direct "
        "baseline**: one `curl` fetching the same part objects straight from SeaweedFS's S3 API "
        "(SigV4, one connection, one object after the other).",
        "",
        "| | swell export | direct from SeaweedFS | swell / direct |",
        "|---|---|---|---|",
        f"| **MB/s** (median of {e['timed_runs']}) | **{e['swell_mb_s']:,.0f}** | "
        f"{e['direct_mb_s']:,.0f} | **{e['ratio']:.2f}** |",
        f"| runs, MB/s | {_runs(e['swell_runs'])} | {_runs(e['direct_runs'])} | "
        f"{_runs(e['paired_ratios'], '{:.2f}')} |",
        f"| swell server CPU-s per GB | {e['swell_cpu_s_per_gb']:.2f} | | |",
        f"| SeaweedFS CPU-s per GB | {e['weed_cpu_s_per_gb_export']:.2f} | "
        f"{e['weed_cpu_s_per_gb_direct']:.2f} | |",
        "",
        f"Target: swell >= {EXPORT_TARGET} x the direct figure. This run {ok} it.",
        "",
        "| DSAR user | events | outputs | POST to `done` (median) | runs | server CPU | check |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Target: typical user < {DSAR_TYPICAL_TARGET_S:.0f} s: "
        f"{'met' if typical < DSAR_TYPICAL_TARGET_S else '**missed**'} ({_secs(typical)}).",
        "",
    ]
    libraries = s3["libraries"]
    if "ways" in libraries:
        lines += [
            "Reading every part in sequence in one Python process, by library (client CPU):",
            "",
            "| how | MB/s | CPU-s per GB |",
            "|---|---|---|",
            *(
                f"| {name} | {r['mb_s']:,.0f} | {r['cpu_s_per_gb']:.2f} |"
                for name, r in libraries["ways"].items()
            ),
            "",
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--events", type=int, help=f"events to generate (default {FULL_EVENTS:,})")
    args = parser.parse_args()
    result = run(quick=args.quick, events=args.events)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if not result["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parent.parent)
    main()
