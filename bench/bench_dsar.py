"""DSAR benchmark: POST to ``done`` for a typical, a p95 and a heavy user, at two store sizes.

Size 1: a fresh data dir, an org and a project, and ``--events`` events (10M) over 365 days from
``swell.generate`` (Zipf-skewed users, as many as make the median user's activity tens of events a
month), merged by ``server_upload_time`` with the events of one heavy user (about 90k a month) and
loaded with ``swell import``. The heavy user's events thus share hourly parts and gzip blocks with
everyone else's, as they would had they been ingested live (imported on their own, they would fill
parts of their own and be far cheaper to find). Size 2: the same data dir after ``swell generate``
of as many events again into a second org's project. The store doubles (catalog, user index,
identity tables, part files) while the measured users' own events stay as they are: a DSAR covers
the projects of the requesting org only.

Users: typical = the median user by event count, p95 = the 95th percentile, heavy = the heavy
user, and, when the data has one, an over-limit user (more than ``dsar_max_events_per_month``
events in a month), whose request must fail. Counts for choosing come from the user index
(meta.db, opened read-only); the expected events come from an independent pass over the Export
API. Every run downloads its outputs and checks them against that: the events per month, one month
per file, and an order-independent digest of the lines.

Before anything is timed at a size, a server runs until its housekeeping on the new data is done
(it is idle). Then, per user and store size, with ``swell serve`` restarted (and idle) before each
user: the time from sending the POST to receiving a status of ``done`` (or ``failed``), polling
every 5 ms, then every 1% of the time elapsed (at most 100 ms), which is the resolution; the first
run after the start ("cold": a fresh server process; the part files are in the page cache) and
the median of all runs; server CPU and RSS growth per request. The org's DSAR budget is raised
with ``SWELL_DSAR_COST_PER_HOUR`` so that polling this often is never answered 429.

    .venv/bin/python bench/bench_dsar.py [--quick] [--events N]
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import http.client
import os
import shutil
import sqlite3
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from isal import igzip

from common import (
    RssSampler,
    Server,
    basic_auth,
    children_cpu_seconds,
    create_org_project,
    loadavg,
    median,
    percentile,
    proc_status_kib,
    swell_cli,
    swell_server,
    wait_until_idle,
)
from swell.generate import generate_records

FULL_EVENTS = 10_000_000
FULL_DAYS = 365
QUICK_EVENTS = 30_000
QUICK_DAYS = 14
#: Population size = events / (this x months): the median user of the Zipf-skewed population then
#: has ~30 events a month and the 95th percentile ~400 (the heaviest have far more).
EVENTS_PER_USER_MONTH = 208.0
#: The heavy user's events per month (Amplitude supports up to 100k)...
HEAVY_PER_MONTH = 90_000
#: ...or this share of the store's monthly events, if smaller (small stores).
HEAVY_SHARE = 0.11
HEAVY_USER_ID = "heavy-user@example.com"
#: swell.generate numbers its users 10**12 + rank; the heavy user is outside that range.
HEAVY_AMPLITUDE_ID = 2 * 10**12
POPULATION_SEEDS = (1, 2)  # size 1, size 2
HEAVY_SEED = 3
#: swell's default ``dsar_max_events_per_month``: a user above it in any month must fail.
MAX_EVENTS_PER_MONTH = 100_000
#: Raised budget: polling every 5 ms costs far more than Amplitude's 14,400 per hour.
COST_PER_HOUR = 10**9
POLL_MIN_S = 0.005
POLL_FRACTION = 0.01
POLL_MAX_S = 0.1
JOB_TIMEOUT_S = 1800.0
#: After building a size, a server runs its housekeeping (sealer ticks this often) until idle, so
#: one-off work on freshly loaded data (e.g. dropping dedup state older than the window) is done
#: before anything is timed.
SETTLE_ENV = {"SWELL_SEAL_CHECK_SECONDS": "0.5"}
SETTLE_MIN_S = 2.0
#: Runs per user kind (the first is the cold one).
FULL_RUNS = {"typical": 5, "p95": 5, "heavy": 3, "over_limit": 2}
QUICK_RUNS = {"typical": 3, "p95": 3, "heavy": 2, "over_limit": 1}
#: Export ranges are read this many hours at a time (each well under ``export_max_bytes``).
EXPORT_CHUNK_HOURS = 30 * 24
#: startDate is this far before the first upload (late events have earlier event times).
EARLY_DAYS = 7
MONTH_DAYS = 365.25 / 12
DSAR_PATH = "/api/2/dsar/requests"
KINDS = ("typical", "p95", "heavy", "over_limit")

_EVENT_TIME = b'"event_time":"'
_MASK64 = (1 << 64) - 1


def population_users(events: int, days: int) -> int:
    return max(10, round(events / (EVENTS_PER_USER_MONTH * days / MONTH_DAYS)))


def heavy_events(events: int, days: int) -> int:
    months = days / MONTH_DAYS
    return round(min(HEAVY_PER_MONTH, HEAVY_SHARE * events / months) * months)


# -- the events a user has ------------------------------------------------------------------------


@dataclass
class Tally:
    """A user's events: how many, per month of ``event_time``, and an order-free digest."""

    events: int = 0
    digest: int = 0
    months: Counter[str] = field(default_factory=Counter)

    def add(self, line: bytes) -> None:
        self.events += 1
        self.digest = (self.digest + _line_hash(line)) & _MASK64
        self.months[_month(line)] += 1

    def busiest(self) -> tuple[str, int]:
        return max(self.months.items(), key=lambda item: (item[1], item[0]), default=("", 0))


def _line_hash(line: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(line, digest_size=8).digest(), "big")


def _month(line: bytes) -> str:
    at = line.find(_EVENT_TIME) + len(_EVENT_TIME)
    return line[at : at + 7].decode()


@dataclass(frozen=True)
class User:
    kind: str
    user_id: str | None
    amplitude_id: int
    index_events: int  # the user index's count (for choosing; the Export API pass is the truth)

    def body(self, start_date: str, end_date: str) -> dict[str, Any]:
        who: dict[str, Any] = (
            {"userId": self.user_id} if self.user_id else {"amplitudeId": self.amplitude_id}
        )
        return {**who, "startDate": start_date, "endDate": end_date}


# -- building the store ---------------------------------------------------------------------------


def _upload_time(record: dict[str, Any]) -> str:
    return str(record["server_upload_time"])


def _heavy_records(
    project_id: int, events: int, days: int, end: datetime
) -> Iterator[dict[str, Any]]:
    """One user's events (``users=1``) under the heavy user's ids; other fields as generated."""
    for record in generate_records(
        project_id, events=events, days=days, users=1, seed=HEAVY_SEED, end=end
    ):
        row = record.copy()  # generated records share nested dicts; only top-level keys change
        row["amplitude_id"] = HEAVY_AMPLITUDE_ID
        row["user_id"] = HEAVY_USER_ID
        yield row


def write_events(
    path: Path, project_id: int, events: int, heavy: int, days: int, users: int, end: datetime
) -> int:
    """The population's and the heavy user's events, merged by upload time, as gzip NDJSON."""
    population = generate_records(
        project_id, events=events, days=days, users=users, seed=POPULATION_SEEDS[0], end=end
    )
    merged = heapq.merge(population, _heavy_records(project_id, heavy, days, end), key=_upload_time)
    written = 0
    lines: list[bytes] = []
    with igzip.open(path, "wb", compresslevel=1) as out:  # type: ignore[no-untyped-call]
        for record in merged:
            lines.append(orjson.dumps(record))
            if len(lines) == 10_000:
                out.write(b"\n".join(lines) + b"\n")
                written += len(lines)
                lines.clear()
        if lines:
            out.write(b"\n".join(lines) + b"\n")
            written += len(lines)
    return written


def _timed_load(want: int, data_dir: Path, *args: str) -> tuple[float, float]:
    """Run ``swell import`` or ``swell generate``; (wall s, CPU s). It must file ``want`` events."""
    wall0, cpu0 = time.perf_counter(), children_cpu_seconds()
    out = swell_cli(*args, data_dir=data_dir, timeout=14400)
    wall, cpu = time.perf_counter() - wall0, children_cpu_seconds() - cpu0
    if out["events"] != want:
        raise RuntimeError(f"swell {args[0]} filed {out['events']} events, wanted {want}")
    return wall, cpu


def build_size_1(
    root: Path,
    data_dir: Path,
    project_id: int,
    events: int,
    heavy: int,
    days: int,
    users: int,
    end: datetime,
) -> dict[str, Any]:
    path = root / "events.json.gz"
    wall0, cpu0 = time.perf_counter(), time.process_time()
    written = write_events(path, project_id, events, heavy, days, users, end)
    write_wall, write_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    file_bytes = path.stat().st_size
    print(
        f"  wrote {written:,} events ({file_bytes / 1e9:.2f} GB gzip NDJSON) in {write_wall:.0f} s "
        f"wall, {write_cpu:.0f} s CPU; importing ..."
    )
    try:
        import_wall, import_cpu = _timed_load(
            written, data_dir, "import", "--project", str(project_id), str(path)
        )
    finally:
        path.unlink()
    print(f"  imported in {import_wall:.0f} s wall, {import_cpu:.0f} s CPU")
    return {
        "method": "import",
        "events": written,
        "population_events": events,
        "heavy_events": heavy,
        "write_wall_s": write_wall,
        "write_cpu_s": write_cpu,
        "file_bytes": file_bytes,
        "wall_s": import_wall,
        "cpu_s": import_cpu,
        "us_per_event": import_cpu / written * 1e6,
    }


def build_size_2(
    data_dir: Path, project_id: int, events: int, days: int, users: int
) -> dict[str, Any]:
    wall, cpu = _timed_load(
        events,
        data_dir,
        *("generate", "--project", str(project_id), "--events", str(events)),
        *("--days", str(days), "--users", str(users), "--seed", str(POPULATION_SEEDS[1])),
    )
    print(f"  generated in {wall:.0f} s wall, {cpu:.0f} s CPU ({cpu / events * 1e6:.1f} µs/event)")
    return {
        "method": "generate",
        "events": events,
        "wall_s": wall,
        "cpu_s": cpu,
        "us_per_event": cpu / events * 1e6,
    }


# -- reading the metadata store (read-only) -------------------------------------------------------


def _meta(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{data_dir / 'meta.db'}?mode=ro", uri=True)


def _index_tables(db: sqlite3.Connection) -> list[str]:
    rows = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'user_blocks_%' "
        "ORDER BY name"
    )
    return [str(row[0]) for row in rows]


def store_stats(data_dir: Path, project_id: int) -> dict[str, Any]:
    """The whole store's size, and the measured project's parts (which size 2 leaves alone)."""
    with closing(_meta(data_dir)) as db:
        parts, events, size = db.execute(
            "SELECT COUNT(*), SUM(events), SUM(size) FROM parts"
        ).fetchone()
        own = db.execute(
            "SELECT COUNT(*), SUM(events), SUM(size) FROM parts WHERE project_id = ?",
            (project_id,),
        ).fetchone()
        tables = _index_tables(db)
        rows = sum(
            db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608
            for table in tables
        )
        projects = db.execute("SELECT COUNT(*) FROM projects").fetchone()[0]
    meta_bytes = sum(p.stat().st_size for p in data_dir.glob("meta.db*"))
    return {
        "events": int(events),
        "parts": int(parts),
        "part_bytes": int(size),
        "projects": int(projects),
        "index_tables": len(tables),
        "index_rows": int(rows),
        "meta_bytes": meta_bytes,
        "project_parts": tuple(int(v) for v in own),
    }


def choose_users(data_dir: Path, project_id: int) -> dict[str, User]:
    totals: Counter[int] = Counter()
    busiest: dict[int, int] = {}  # events in the user's busiest month of part hours
    with closing(_meta(data_dir)) as db:
        for table in _index_tables(db):
            rows = db.execute(
                f"SELECT amplitude_id, SUM(events) FROM {table} "  # noqa: S608
                "WHERE project_id = ? GROUP BY amplitude_id",
                (project_id,),
            )
            for aid, events in rows:
                totals[aid] += events
                busiest[aid] = max(busiest.get(aid, 0), events)
        user_ids = {
            int(aid): str(uid)
            for uid, aid in db.execute(
                "SELECT user_id, amplitude_id FROM user_links WHERE project_id = ?", (project_id,)
            )
        }
    population = {aid: n for aid, n in totals.items() if aid != HEAVY_AMPLITUDE_ID}
    counts = sorted(population.values())
    identified = sorted(aid for aid in population if aid in user_ids)
    chosen: dict[str, User] = {}
    for kind, q in (("typical", 50.0), ("p95", 95.0)):
        aid = _nearest(identified, population, percentile(counts, q))
        chosen[kind] = User(kind, user_ids[aid], aid, population[aid])
    chosen["heavy"] = User("heavy", HEAVY_USER_ID, HEAVY_AMPLITUDE_ID, totals[HEAVY_AMPLITUDE_ID])
    # Well above the limit, so that months of event_time (not of upload) are above it too.
    over = [aid for aid in population if busiest[aid] > MAX_EVENTS_PER_MONTH * 1.05]
    if over:
        aid = max(over, key=lambda a: (population[a], -a))
        chosen["over_limit"] = User("over_limit", user_ids.get(aid), aid, population[aid])
    return chosen


def _nearest(candidates: list[int], counts: dict[int, int], target: float) -> int:
    """The candidate whose count is nearest ``target`` (the lowest id of equals)."""
    return min(candidates, key=lambda aid: (abs(counts[aid] - target), aid))


# -- the truth, from the Export API ---------------------------------------------------------------


def _download(port: int, path: str, auth: str, target: Path) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("GET", path, headers={"Authorization": auth})
        response = conn.getresponse()
        if response.status != 200:
            response.read()
            return response.status
        with target.open("wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        return 200
    finally:
        conn.close()


def export_truth(
    server: Server, project: dict[str, Any], start: datetime, end: datetime, users: Iterable[User]
) -> tuple[dict[int, Tally], dict[str, Any]]:
    """Every event of ``users`` in the project, read from Export API archives of [start, end)."""
    tallies = {user.amplitude_id: Tally() for user in users}
    needles = {b'"amplitude_id":%d,' % aid: tally for aid, tally in tallies.items()}
    auth = basic_auth(project)
    target = Path(tempfile.mkdtemp(prefix="swell-bench-dsar-export-", dir="/tmp")) / "export.zip"
    wall0 = time.perf_counter()
    lines = archive_bytes = 0
    try:
        chunk = start
        while chunk < end:
            last = min(chunk + timedelta(hours=EXPORT_CHUNK_HOURS), end) - timedelta(hours=1)
            path = f"/api/2/export?start={chunk:%Y%m%dT%H}&end={last:%Y%m%dT%H}"
            status = _download(server.port, path, auth, target)
            if status == 200:
                archive_bytes += target.stat().st_size
                lines += _scan_archive(target, needles)
            elif status != 404:  # 404: no data in the range
                raise RuntimeError(f"export {path}: HTTP {status}")
            chunk = last + timedelta(hours=1)
    finally:
        shutil.rmtree(target.parent, ignore_errors=True)
    seconds = time.perf_counter() - wall0
    return tallies, {"lines": lines, "archive_bytes": archive_bytes, "seconds": seconds}


def _scan_archive(path: Path, needles: dict[bytes, Tally]) -> int:
    lines = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            data: bytes = igzip.decompress(archive.read(info))  # type: ignore[no-untyped-call]
            lines += data.count(b"\n")
            present = [(needle, tally) for needle, tally in needles.items() if needle in data]
            if not present:
                continue
            for line in data.split(b"\n"):
                for needle, tally in present:
                    if needle in line:
                        tally.add(line)
                        break
    return lines


# -- DSAR requests --------------------------------------------------------------------------------


class _Client:
    """One keep-alive connection to the server, with the org's credentials."""

    def __init__(self, port: int, auth: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=JOB_TIMEOUT_S)
        self.headers = {"Authorization": auth, "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        self.conn.request(method, path, body=body, headers=self.headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.conn.close()


def dsar_run(server: Server, auth: str, body: dict[str, Any]) -> dict[str, Any]:
    """One request: POST, poll until done or failed, then download and tally the outputs."""
    client = _Client(server.port, auth)
    try:
        cpu0 = server.cpu()
        with RssSampler(server.pid) as rss:
            started = time.perf_counter()
            code, raw = client.call("POST", DSAR_PATH, orjson.dumps(body))
            if code != 202:
                raise RuntimeError(f"POST {DSAR_PATH}: HTTP {code} {raw[:200]!r}")
            request_id = orjson.loads(raw)["requestId"]
            polls = 0
            while True:
                elapsed = time.perf_counter() - started
                interval = min(POLL_MAX_S, max(POLL_MIN_S, elapsed * POLL_FRACTION))
                time.sleep(interval)
                code, raw = client.call("GET", f"{DSAR_PATH}/{request_id}")
                polls += 1
                if code != 200:
                    raise RuntimeError(f"GET {DSAR_PATH}/{request_id}: HTTP {code} {raw[:200]!r}")
                status: dict[str, Any] = orjson.loads(raw)
                if status["status"] in ("done", "failed"):
                    break
                if elapsed > JOB_TIMEOUT_S:
                    raise RuntimeError(
                        f"DSAR {request_id} still {status['status']} after {elapsed:.0f} s"
                    )
            seconds = time.perf_counter() - started
        cpu = server.cpu() - cpu0
        tally = Tally()
        output_bytes = 0
        one_month_per_file = True
        for url in status["urls"]:
            code, data = client.call("GET", urlsplit(url).path)
            if code != 200:
                raise RuntimeError(f"GET {url}: HTTP {code}")
            output_bytes += len(data)
            months = set()
            for line in igzip.decompress(data).split(b"\n"):  # type: ignore[no-untyped-call]
                if line:
                    tally.add(line)
                    months.add(_month(line))
            one_month_per_file = one_month_per_file and len(months) == 1
        return {
            "request_id": request_id,
            "status": status["status"],
            "fail_reason": status["failReason"],
            "seconds": seconds,
            "polls": polls,
            "resolution_s": interval,
            "server_cpu_s": cpu,
            "rss_growth_mib": (rss.peak - rss.before) / 1024,
            "files": len(status["urls"]),
            "output_bytes": output_bytes,
            "one_month_per_file": one_month_per_file,
            "tally": tally,
        }
    finally:
        client.close()


def check(kind: str, result: dict[str, Any], truth: Tally) -> bool:
    if kind == "over_limit":
        return result["status"] == "failed" and truth.busiest()[1] > MAX_EVENTS_PER_MONTH
    got: Tally = result["tally"]
    return (
        result["status"] == "done"
        and got.events == truth.events
        and got.digest == truth.digest
        and got.months == truth.months
        and result["files"] == len(truth.months)
        and result["one_month_per_file"]
    )


def measure(
    data_dir: Path,
    org: dict[str, Any],
    users: dict[str, User],
    truths: dict[int, Tally],
    runs: dict[str, int],
    dates: tuple[str, str],
) -> dict[str, Any]:
    """Every user kind on a freshly started server: one cold run, then warm ones."""
    auth = basic_auth(org)
    results: dict[str, Any] = {}
    for kind, user in users.items():
        server = swell_server(data_dir, {"SWELL_DSAR_COST_PER_HOUR": str(COST_PER_HOUR)})
        wall0 = time.perf_counter()
        server.start(timeout=600)
        start_s = time.perf_counter() - wall0
        wait_until_idle(server)
        truth = truths[user.amplitude_id]
        done: list[dict[str, Any]] = []
        try:
            for index in range(runs[kind]):
                result = dsar_run(server, auth, user.body(*dates))
                result["ok"] = check(kind, result, truth)
                got: Tally = result["tally"]
                label = "cold" if index == 0 else f"run {index + 1}"
                print(
                    f"  {kind:10s} {label:6s}: {result['status']} in {result['seconds']:7.3f} s "
                    f"(poll {result['resolution_s'] * 1000:.0f} ms), {result['files']} file(s), "
                    f"{got.events:,} events, server CPU {result['server_cpu_s']:.2f} s, "
                    f"RSS +{result['rss_growth_mib']:.0f} MiB, "
                    f"{'verified' if result['ok'] else '**WRONG**'}, load {loadavg()}"
                )
                done.append(result)
            vm_hwm = proc_status_kib(server.pid, "VmHWM")
        finally:
            server.stop()
        seconds = [r["seconds"] for r in done]
        results[kind] = {
            "status": done[0]["status"],
            "fail_reason": done[0]["fail_reason"],
            "seconds_runs": seconds,
            "cold_s": seconds[0],
            "median_s": median(seconds),
            "warm_median_s": median(seconds[1:]) if len(seconds) > 1 else None,
            "resolution_s": max(r["resolution_s"] for r in done),
            "polls": median([r["polls"] for r in done]),
            "server_cpu_s": median([r["server_cpu_s"] for r in done]),
            "rss_growth_mib": max(r["rss_growth_mib"] for r in done),
            "vm_hwm_mib": vm_hwm / 1024,
            "files": done[0]["files"],
            "events": done[0]["tally"].events,
            "output_bytes": done[0]["output_bytes"],
            "server_start_s": start_s,
            "ok": all(r["ok"] for r in done),
        }
    return results


def _describe(user: User, truth: Tally, days: int) -> dict[str, Any]:
    month, busiest = truth.busiest()
    return {
        "user_id": user.user_id,
        "amplitude_id": user.amplitude_id,
        "index_events": user.index_events,
        "events": truth.events,
        "months": len(truth.months),
        "per_month": truth.events / (days / MONTH_DAYS),
        "busiest_month": month,
        "busiest_month_events": busiest,
    }


# -- the benchmark --------------------------------------------------------------------------------


def run(quick: bool = False, events: int | None = None) -> dict[str, Any]:
    n = events or (QUICK_EVENTS if quick else FULL_EVENTS)
    days = QUICK_DAYS if quick else FULL_DAYS
    users = population_users(n, days)
    heavy = heavy_events(n, days)
    runs = QUICK_RUNS if quick else FULL_RUNS
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    dates = ((start - timedelta(days=EARLY_DAYS)).date().isoformat(), end.date().isoformat())
    root = Path(tempfile.mkdtemp(prefix="swell-bench-dsar-", dir="/tmp"))
    data_dir = root / "data"
    try:
        org, project = create_org_project(data_dir)
        pid = int(project["project_id"])
        print(
            f"dsar: size 1: {n:,} events over {days} days from {users:,} users, plus a heavy "
            f"user's {heavy:,}, merged and imported ..."
        )
        build_1 = build_size_1(root, data_dir, pid, n, heavy, days, users, end)
        server = swell_server(data_dir, SETTLE_ENV).start(timeout=600)
        try:
            wait_until_idle(server, min_seconds=SETTLE_MIN_S)
            stats_1 = store_stats(data_dir, pid)
            chosen = choose_users(data_dir, pid)
            print(
                f"  reading project {pid} back through the Export API for the expected events ..."
            )
            truths, scan = export_truth(server, project, start, end, chosen.values())
        finally:
            server.stop()
        print(
            f"  {scan['lines']:,} events read in {scan['seconds']:.0f} s; users: "
            + ", ".join(
                f"{u.kind} {u.user_id or u.amplitude_id} ({truths[u.amplitude_id].events:,})"
                for u in chosen.values()
            )
        )
        if scan["lines"] != stats_1["project_parts"][1]:
            raise RuntimeError(f"export read {scan['lines']} events, the catalog has {stats_1}")
        sizes = [
            {
                "stats": stats_1,
                "build": build_1,
                "kinds": measure(data_dir, org, chosen, truths, runs, dates),
            }
        ]

        print(f"dsar: size 2: {n:,} more events in a second org's project (swell generate) ...")
        _, project_2 = create_org_project(data_dir, "bench-2")
        build_2 = build_size_2(data_dir, int(project_2["project_id"]), n, days, users)
        server = swell_server(data_dir, SETTLE_ENV).start(timeout=600)
        try:
            wait_until_idle(server, min_seconds=SETTLE_MIN_S)
            stats_2 = store_stats(data_dir, pid)
        finally:
            server.stop()
        if stats_2["project_parts"] != stats_1["project_parts"]:
            raise RuntimeError("the measured project changed between the two sizes")
        sizes.append(
            {
                "stats": stats_2,
                "build": build_2,
                "kinds": measure(data_dir, org, chosen, truths, runs, dates),
            }
        )

        kinds = [kind for kind in KINDS if kind in chosen]
        return {
            "days": days,
            "population_users": users,
            "start_date": dates[0],
            "end_date": dates[1],
            "window": f"{start:%Y-%m-%d %H:00} to {end:%Y-%m-%d %H:00} UTC",
            "poll": {"min_s": POLL_MIN_S, "fraction": POLL_FRACTION, "max_s": POLL_MAX_S},
            "cost_per_hour": COST_PER_HOUR,
            "max_events_per_month": MAX_EVENTS_PER_MONTH,
            "export_scan": scan,
            "users": {
                kind: _describe(chosen[kind], truths[chosen[kind].amplitude_id], days)
                for kind in kinds
            },
            "sizes": sizes,
            "ratios": {
                kind: sizes[1]["kinds"][kind]["median_s"] / sizes[0]["kinds"][kind]["median_s"]
                for kind in kinds
            },
            "ok": all(size["kinds"][kind]["ok"] for size in sizes for kind in kinds),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument(
        "--events", type=int, help=f"events per store size (default {FULL_EVENTS:,})"
    )
    args = parser.parse_args()
    result = run(quick=args.quick, events=args.events)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if not result["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parent.parent)
    main()
