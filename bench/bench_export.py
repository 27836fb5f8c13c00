"""Export benchmark: download a whole range over loopback, against a plain-file baseline.

Setup: a fresh data dir, ``swell org create`` / ``project create``, then ``swell generate``.
Measured: ``GET /api/2/export?start=...&end=...`` (Basic auth) downloaded with
``curl -s -o /dev/null``, alternating with the baseline, the same bytes (the part files
concatenated and zero-padded to the archive's size) served by bench/floor_apps.py ``file_app``
under the same uvicorn stack:

* ``plain``, the target's baseline: StreamingResponse + async generator + 1 MiB ``os.pread``
  reads into fresh bytes objects, what a plain file server on this stack does;
* ``plain_reuse``, for reference: the same, reading into a few reused 1 MiB buffers, which is
  how swell's export reads (``swell.export.BufferPool``). A plain file server could adopt that
  too, so ``ratio_reuse`` is swell against a plain file served with swell's own technique.

One warm-up download each, then the median of the timed runs. Also: time to first byte, server CPU
per GB, peak server RSS during the downloads (VmHWM, reset once the servers are up so that start-up
work such as loading identity state does not count; the RSS at that point is reported too) and RSS
growth during a download (sampled every 10 ms), and a Range resume check (``Range: bytes=N-`` must
equal the tail of the full download, by sha256).

    .venv/bin/python bench/bench_export.py [--quick] [--events N]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from common import (
    RssSampler,
    Server,
    create_project,
    loadavg,
    median,
    proc_status_kib,
    swell_cli,
    swell_server,
    uvicorn_server,
)

#: ~237 B/event compressed, so 4.6M events make a little over 1 GB. Generating them took 349 s
#: wall / 327 s CPU on a quiet 2-vCPU machine (more while the machine is shared), which is most of
#: a full run. ``--events`` sets another size.
FULL_EVENTS = 4_600_000
FULL_DAYS = 14
FULL_USERS = 100_000
QUICK_EVENTS = 30_000
QUICK_DAYS = 2
QUICK_USERS = 2_000
_PART = re.compile(r"_(\d{4})-(\d{2})-(\d{2})_(\d{1,2})#\d+\.json\.gz$")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def generate(data_dir: Path, events: int, days: int, users: int) -> dict[str, Any]:
    project = create_project(data_dir)
    cpu0, wall0 = _children_cpu(), time.perf_counter()
    swell_cli(
        "generate",
        "--project",
        str(project["project_id"]),
        "--events",
        str(events),
        "--days",
        str(days),
        "--users",
        str(users),
        data_dir=data_dir,
        timeout=7200,
    )
    wall = time.perf_counter() - wall0
    parts = sorted(p for p in (data_dir / "blobs").rglob("*.json.gz"))
    size = sum(p.stat().st_size for p in parts)
    dates = sorted(m.groups() for p in parts if (m := _PART.search(p.name)))
    first, last = dates[0], dates[-1]
    return {
        "project": project,
        "events": events,
        "days": days,
        "users": users,
        "generate_wall_s": wall,
        "generate_cpu_s": _children_cpu() - cpu0,
        "parts": parts,
        "part_count": len(parts),
        "part_bytes": size,
        "bytes_per_event": size / events,
        "start": f"{first[0]}{first[1]}{first[2]}T00",
        "end": f"{last[0]}{last[1]}{last[2]}T23",
    }


def _head(port: int, path: str, auth: str | None) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("HEAD", path, headers={"Authorization": auth} if auth else {})
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def curl(server: Server, path: str, user: str | None) -> dict[str, Any]:
    """One download to /dev/null, with the server's CPU and RSS around it."""
    argv = ["curl", "-s", "-o", "/dev/null", "--max-time", "900"]
    if user:
        argv += ["-u", user]
    argv += ["-w", "%{http_code} %{time_starttransfer} %{time_total} %{size_download}"]
    cpu0 = server.cpu()
    with RssSampler(server.pid) as rss:
        out = subprocess.run(
            [*argv, server.url + path], check=True, capture_output=True, text=True, timeout=960
        )
    cpu = server.cpu() - cpu0
    code, ttfb, total, size = out.stdout.split()
    if code != "200":
        raise RuntimeError(f"{server.name}: HTTP {code} for {path}")
    return {
        "ttfb_s": float(ttfb),
        "total_s": float(total),
        "bytes": int(size),
        "mb_s": int(size) / float(total) / 1e6,
        "server_cpu_s": cpu,
        "cpu_s_per_gb": cpu / (int(size) / 1e9),
        "rss_before_kib": rss.before,
        "rss_peak_kib": rss.peak,
        "rss_growth_kib": rss.peak - rss.before,
    }


def _hash_download(
    port: int, path: str, auth: str | None, range_from: int | None, tail_from: int
) -> tuple[int, int, str, str | None]:
    """(status, bytes, sha256 of bytes from ``tail_from`` on, Content-Range), streaming."""
    headers = {"Authorization": auth} if auth else {}
    if range_from is not None:
        headers["Range"] = f"bytes={range_from}-"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        digest = hashlib.sha256()
        offset = 0
        while chunk := response.read(1 << 20):
            if offset + len(chunk) > tail_from:
                digest.update(chunk[max(0, tail_from - offset) :])
            offset += len(chunk)
        return response.status, offset, digest.hexdigest(), response.getheader("content-range")
    finally:
        conn.close()


def range_check(port: int, path: str, auth: str, size: int) -> dict[str, Any]:
    half = size // 2
    status, got, full_tail, _ = _hash_download(port, path, auth, None, half)
    r_status, r_got, r_hash, content_range = _hash_download(port, path, auth, half, 0)
    ok = (
        status == 200
        and got == size
        and r_status == 206
        and r_got == size - half
        and r_hash == full_tail
        and content_range == f"bytes {half}-{size - 1}/{size}"
    )
    return {
        "ok": ok,
        "offset": half,
        "full_status": status,
        "full_bytes": got,
        "range_status": r_status,
        "range_bytes": r_got,
        "content_range": content_range,
        "sha256_tail_of_full": full_tail,
        "sha256_range": r_hash,
    }


def _reset_peak_rss(pid: int) -> bool:
    """Set a process's VmHWM back to its current RSS (Linux >= 4.0); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _plain_file(parts: list[Path], target: Path, size: int) -> None:
    """The part files concatenated, zero-padded to ``size`` (the archive's byte count)."""
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
        written = out.tell()
        if written > size:
            raise RuntimeError("parts are larger than the archive")
        out.truncate(size)


def run(quick: bool = False, events: int | None = None) -> dict[str, Any]:
    n = events or (QUICK_EVENTS if quick else FULL_EVENTS)
    days = QUICK_DAYS if quick else FULL_DAYS
    users = QUICK_USERS if quick else FULL_USERS
    timed = 7
    root = Path(tempfile.mkdtemp(prefix="swell-bench-export-", dir="/tmp"))
    data_dir = root / "data"
    servers: list[Server] = []
    try:
        print(f"export: generating {n:,} events over {days} days for {users:,} users ...")
        gen = generate(data_dir, n, days, users)
        print(
            f"  generated in {gen['generate_wall_s']:.0f} s wall, {gen['generate_cpu_s']:.0f} s "
            f"CPU: {gen['part_count']} parts, {gen['part_bytes'] / 1e6:,.0f} MB, "
            f"{gen['bytes_per_event']:.0f} B/event"
        )
        project = gen["project"]
        user = f"{project['api_key']}:{project['secret_key']}"
        auth = "Basic " + base64.b64encode(user.encode()).decode()
        path = f"/api/2/export?start={gen['start']}&end={gen['end']}"

        swell = swell_server(data_dir)
        servers.append(swell.start())
        status, headers = _head(swell.port, path, auth)
        if status != 200:
            raise RuntimeError(f"HEAD export: HTTP {status}")
        size = int(headers["content-length"])
        plain = root / "plain.bin"
        _plain_file(gen["parts"], plain, size)
        baseline = uvicorn_server(
            "plain-file baseline", "floor_apps:file_app", env={"BENCH_FILE": str(plain)}
        )
        servers.append(baseline.start())

        rss_start: dict[str, int] = {}
        hwm_start: dict[str, int] = {}
        for keys, pid in ((("swell",), swell.pid), (("plain", "plain_reuse"), baseline.pid)):
            for key in keys:
                rss_start[key] = proc_status_kib(pid, "VmRSS")
                hwm_start[key] = proc_status_kib(pid, "VmHWM")
        hwm_reset = _reset_peak_rss(swell.pid) and _reset_peak_rss(baseline.pid)
        runs: dict[str, list[dict[str, Any]]] = {"swell": [], "plain": [], "plain_reuse": []}
        for index in range(1 + timed):
            for key, server, url, who in (
                ("swell", swell, path, user),
                ("plain", baseline, "/file", None),
                ("plain_reuse", baseline, "/file?buffers=reuse", None),
            ):
                result = curl(server, url, who)
                if result["bytes"] != size:
                    raise RuntimeError(f"{server.name}: {result['bytes']} bytes, wanted {size}")
                label = "warm-up" if index == 0 else f"run {index}"
                print(
                    f"  {key:11s} {label:7s}: {result['mb_s']:>7,.0f} MB/s, TTFB "
                    f"{result['ttfb_s'] * 1000:.1f} ms, {result['cpu_s_per_gb']:.2f} server "
                    f"CPU-s/GB, RSS +{result['rss_growth_kib'] / 1024:.1f} MiB, load {loadavg()}"
                )
                if index > 0:
                    runs[key].append(result)
        # The two baselines are one server process: its VmHWM covers both.
        hwm = {"swell": proc_status_kib(swell.pid, "VmHWM")}
        hwm["plain"] = hwm["plain_reuse"] = proc_status_kib(baseline.pid, "VmHWM")
        check = range_check(swell.port, path, auth, size)
        print(f"  range resume from byte {check['offset']:,}: {'OK' if check['ok'] else 'FAILED'}")
        summary: dict[str, Any] = {
            key: value for key, value in gen.items() if key not in ("parts", "project")
        }
        summary.update({"archive_bytes": size, "etag": headers.get("etag"), "timed_runs": timed})
        # vm_hwm_mib is the peak during the downloads, vm_hwm_start_mib the one before (start-up);
        # if the reset was refused, vm_hwm_mib covers both.
        summary["vm_hwm_reset"] = hwm_reset
        for key, results in runs.items():
            summary[key] = {
                "mb_s": median([r["mb_s"] for r in results]),
                "mb_s_runs": [r["mb_s"] for r in results],
                "ttfb_ms": median([r["ttfb_s"] * 1000 for r in results]),
                "cpu_s_per_gb": median([r["cpu_s_per_gb"] for r in results]),
                "rss_growth_mib": max(r["rss_growth_kib"] for r in results) / 1024,
                "rss_peak_mib": max(r["rss_peak_kib"] for r in results) / 1024,
                "vm_hwm_mib": hwm[key] / 1024,
                "rss_start_mib": rss_start[key] / 1024,
                "vm_hwm_start_mib": hwm_start[key] / 1024,
            }
        summary["ratio"] = summary["swell"]["mb_s"] / summary["plain"]["mb_s"]
        summary["paired_ratios"] = [
            a["mb_s"] / b["mb_s"] for a, b in zip(runs["swell"], runs["plain"], strict=True)
        ]
        summary["ratio_reuse"] = summary["swell"]["mb_s"] / summary["plain_reuse"]["mb_s"]
        summary["paired_ratios_reuse"] = [
            a["mb_s"] / b["mb_s"] for a, b in zip(runs["swell"], runs["plain_reuse"], strict=True)
        ]
        print(
            f"  median: swell {summary['swell']['mb_s']:,.0f} MB/s, plain "
            f"{summary['plain']['mb_s']:,.0f} (ratio {summary['ratio']:.2f}), plain_reuse "
            f"{summary['plain_reuse']['mb_s']:,.0f} (ratio {summary['ratio_reuse']:.2f})"
        )
        summary["range"] = check
        return summary
    finally:
        for server in servers:
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
