"""Ingest benchmark: HTTP V2 requests of 1000 events, durable acks, per server CPU-second.

A load client in a separate process posts pre-built ``/2/httpapi`` bodies (SDK-like events from
a pool of users) over two keep-alive loopback connections. The same bodies go, pass by pass and
alternately, to ``swell serve`` and to the parse-only floor (bench/floor_apps.py ``ingest_app``:
read body, ``orjson.loads``, answer the same JSON). swell acknowledges only after its log fsync.

Figures: events per server CPU-second (utime+stime of the server pid, read from /proc before and
after a pass, once the server is idle again, so work a pass triggers, such as sealing, counts),
wall events/s, request latency p50/p99. One warm-up pass, then the median of the timed passes.
Every swell pass sends fresh insert_ids, so no event is dropped as a duplicate.

    .venv/bin/python bench/bench_ingest.py [--quick] [--instrumentation]

``--instrumentation`` adds a third server, swell with SWELL_METRICS_ENABLED=false and
SWELL_ACCESS_LOG=false on a copy of the same data directory, in the same alternation, and reports
``instrumented_over_bare``: events per server CPU-second with /metrics and the access log over
without.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import random
import shutil
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from common import (
    create_project,
    loadavg,
    median,
    percentile,
    proc_rss_kib,
    proc_status_kib,
    proc_write_bytes,
    swell_server,
    uvicorn_server,
)

EVENTS_PER_REQUEST = 1000
CONNECTIONS = 2
USERS = 10_000

_EVENT_TYPES = (
    ("Page Viewed", 40),
    ("Button Clicked", 18),
    ("Product Viewed", 9),
    ("Search", 7),
    ("Add to Cart", 4),
    ("Login", 3),
    ("Video Played", 3),
    ("Purchase", 1),
)
_PLATFORMS = (
    {
        "platform": "Web",
        "os_name": "Chrome",
        "os_version": "124",
        "device_model": "Mac OS",
        "library": "amplitude-ts/2.11.0",
        "language": "en-US",
    },
    {
        "platform": "iOS",
        "os_name": "ios",
        "os_version": "17.4.1",
        "device_manufacturer": "Apple",
        "device_model": "iPhone15,2",
        "app_version": "4.12.0",
        "carrier": "Verizon",
        "library": "amplitude-swift/1.4.2",
        "language": "en-US",
    },
    {
        "platform": "Android",
        "os_name": "android",
        "os_version": "14",
        "device_manufacturer": "samsung",
        "device_brand": "samsung",
        "device_model": "SM-S911B",
        "app_version": "4.12.1",
        "carrier": "Vodafone",
        "library": "amplitude-kotlin/1.16.0",
        "language": "de-DE",
    },
)
_PATHS = ("/", "/pricing", "/docs", "/product/42", "/cart", "/account", "/search", "/blog/launch")
_BUTTONS = ("cta-signup", "add-to-cart", "nav-menu", "play", "share", "checkout")
_COUNTRIES = ("United States", "Germany", "France", "Brazil", "India", "Japan")
_PLANS = ("free", "starter", "pro", "enterprise")


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _users(rng: random.Random) -> list[dict[str, Any]]:
    users = []
    for i in range(USERS):
        user: dict[str, Any] = {
            "device_id": _uuid(rng),
            **rng.choice(_PLATFORMS),
            "country": rng.choice(_COUNTRIES),
        }
        if rng.random() < 0.8:  # 20% of devices stay anonymous (no user_id)
            user = {"user_id": f"user-{i:06d}@example.com", **user}
        users.append(user)
    return users


def build_bodies(
    api_key: str, passes: int, requests_per_pass: int, seed: int = 1
) -> list[list[bytes]]:
    """``passes`` x ``requests_per_pass`` HTTP V2 bodies of 1000 events each, all insert_ids
    unique."""
    rng = random.Random(seed)
    users = _users(rng)
    kinds = [k for k, _ in _EVENT_TYPES]
    weights = [w for _, w in _EVENT_TYPES]
    now_ms = int(time.time() * 1000)
    result = []
    for _ in range(passes):
        bodies = []
        for _ in range(requests_per_pass):
            events = []
            for kind in rng.choices(kinds, weights, k=EVENTS_PER_REQUEST):
                user = users[min(int(rng.paretovariate(1.2)) - 1, USERS - 1)]
                event: dict[str, Any] = {
                    **user,
                    "event_type": kind,
                    "time": now_ms - rng.randrange(600_000),
                    "insert_id": _uuid(rng),
                    "session_id": now_ms - rng.randrange(1_800_000),
                    "ip": "$remote",
                    "event_properties": {
                        "path": rng.choice(_PATHS),
                        "button": rng.choice(_BUTTONS),
                        "position": rng.randrange(12),
                        "experiment": rng.choice(("control", "variant-a", "variant-b")),
                    },
                }
                if rng.random() < 0.2:
                    event["user_properties"] = {
                        "$set": {"plan": rng.choice(_PLANS), "logins": rng.randrange(500)},
                        "$add": {"visits": 1},
                    }
                events.append(event)
            bodies.append(orjson.dumps({"api_key": api_key, "events": events}))
        result.append(bodies)
    return result


# -- the load client (its own process) ------------------------------------------------------------


def _post_all(conn: http.client.HTTPConnection, jobs: list[bytes], out: list[float]) -> None:
    headers = {"Content-Type": "application/json", "Accept": "*/*"}
    for body in jobs:
        started = time.perf_counter()
        conn.request("POST", "/2/httpapi", body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        out.append(time.perf_counter() - started)
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
        reply = orjson.loads(data)
        if reply.get("events_ingested") != EVENTS_PER_REQUEST:
            raise RuntimeError(f"unexpected reply {reply}")


def _worker(
    conn: http.client.HTTPConnection,
    jobs: list[bytes],
    out: list[float],
    errors: list[BaseException],
) -> None:
    try:
        _post_all(conn, jobs, out)
    except BaseException as exc:
        errors.append(exc)


def _client(pipe: Connection, api_key: str, passes: int, per_pass: int) -> None:
    started = time.perf_counter()
    bodies = build_bodies(api_key, passes, per_pass)
    sizes = [len(b) for p in bodies for b in p]
    pipe.send(
        {
            "build_seconds": time.perf_counter() - started,
            "body_bytes": sum(sizes) / len(sizes),
            "event_bytes": sum(sizes) / len(sizes) / EVENTS_PER_REQUEST,
        }
    )
    conns: dict[int, list[http.client.HTTPConnection]] = {}
    while True:
        command = pipe.recv()
        if command is None:
            break
        port, index = command
        # Fresh connections per pass (kept alive within it): uvicorn closes connections idle for
        # 5 s, as they are while the other server runs its pass.
        for conn in conns.pop(port, []):
            conn.close()
        conns[port] = [
            http.client.HTTPConnection("127.0.0.1", port, timeout=120) for _ in range(CONNECTIONS)
        ]
        for conn in conns[port]:
            conn.connect()
        work = bodies[index]
        latencies: list[list[float]] = [[] for _ in range(CONNECTIONS)]
        errors: list[BaseException] = []

        threads = [
            threading.Thread(
                target=_worker, args=(conns[port][k], work[k::CONNECTIONS], latencies[k], errors)
            )
            for k in range(CONNECTIONS)
        ]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - wall0
        pipe.send(
            {
                "error": repr(errors[0]) if errors else None,
                "wall": wall,
                "client_cpu": time.process_time() - cpu0,
                "events": len(work) * EVENTS_PER_REQUEST,
                "latencies": [x for per in latencies for x in per],
            }
        )
    for per_port in conns.values():
        for conn in per_port:
            conn.close()


def _wait_idle(server: Any, quiet: float = 0.3, limit: float = 15.0) -> None:
    """Wait until the server has used < 10 ms of CPU in ``quiet`` seconds (bounded)."""
    deadline = time.monotonic() + limit
    last = server.cpu()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = server.cpu()
        if now - last < 0.01:
            return
        last = now


#: Where a request's server CPU goes, stage by stage (see stage_costs).
STAGES = (
    ("json", "orjson.loads of the body"),
    ("validate", "Amplitude's validation of every event"),
    ("prepare", "identity: dedup keys, cache look-ups, one metadata load"),
    ("enrich", "identity + 55-key record + orjson.dumps, per event"),
    ("append", "log frame + open part (blocks gzip'd as they fill)"),
    ("fsync", "log write + fsync"),
    ("checkpoint", "identity changes saved to SQLite"),
)

#: The library floor: what the per-event C work alone costs, with no swell code per event.
LIBRARY_FLOOR: tuple[tuple[str, str], ...] = (
    ("json", "`orjson.loads` of the request body"),
    ("dumps", "`orjson.dumps` of each stored 55-key record"),
    ("gzip", "isal level 1 gzip of the stored lines, as parts compress them"),
)


async def _stage_costs(
    bodies: list[bytes], data_dir: Path
) -> tuple[dict[str, float], dict[str, float]]:
    from datetime import UTC, datetime

    from isal import igzip

    from swell.enrich import RequestContext
    from swell.ingest import HTTPAPI_MAX_BYTES, parse_events_body
    from swell.model import FrameKind, hour_of
    from swell.parts import COMPRESS_LEVEL
    from swell.settings import Settings
    from swell.store import Store

    store = await Store.open(Settings.from_env({}, data_dir=data_dir))
    spent = dict.fromkeys((name for name, _ in STAGES), 0.0)
    floor = dict.fromkeys((name for name, _ in LIBRARY_FLOOR), 0.0)
    clock = time.process_time  # the whole process: the log and SQLite work in threads
    try:
        for body in bodies:
            t0 = clock()
            orjson.loads(body)
            t1 = clock()
            batch = parse_events_body(body, max_bytes=HTTPAPI_MAX_BYTES)
            t2 = clock()
            now = datetime.now(UTC)
            ctx = RequestContext(
                project_id=1,
                path="/2/httpapi",
                default_library="http/2.0",
                server_received=now,
                server_upload=now,
                client_upload=None,
                remote_ip="127.0.0.1",
            )
            keys = await store.identity.prepare(store.meta, 1, batch.events, now)
            t3 = clock()
            enriched = store.identity.enrich(batch.events, ctx, keys)
            t4 = clock()
            hour = hour_of(now)
            lsn = store.log.append(FrameKind.EVENTS, 1, hour, b"\n".join([*enriched.lines, b""]))
            store.sealer.part_for(1, hour).add_batch(
                enriched.lines,
                enriched.amplitude_ids,
                enriched.user_ids,
                ctx.server_upload_ts,
                lsn,
                enriched.facts,
            )
            t5 = clock()
            await store.log.sync()
            t6 = clock()
            await store.checkpoint(force=True)
            t7 = clock()
            for name, spent_s in zip(
                spent,
                (t1 - t0, t2 - t1 - (t1 - t0), t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6),
                strict=True,
            ):
                spent[name] += spent_s
            # The same records again, through the libraries only.
            records = [orjson.loads(line) for line in enriched.lines]
            t0 = clock()
            lines = [orjson.dumps(record) for record in records]
            t1 = clock()
            igzip.compress(b"\n".join(lines), compresslevel=COMPRESS_LEVEL, mtime=0)
            t2 = clock()
            floor["dumps"] += t1 - t0
            floor["gzip"] += t2 - t1
        floor["json"] = spent["json"]  # the body is parsed once either way
    finally:
        await store.aclose()
    events = len(bodies) * EVENTS_PER_REQUEST
    return (
        {name: seconds / events * 1e6 for name, seconds in spent.items()},
        {name: seconds / events * 1e6 for name, seconds in floor.items()},
    )


def stage_costs(quick: bool = False) -> tuple[dict[str, float], dict[str, float]]:
    """µs of CPU per event for each stage of a request, run in-process on a fresh store with the
    benchmark's bodies (no HTTP), and the library floor (`LIBRARY_FLOOR`) on the same records.
    ``validate`` is parse_events_body minus its orjson.loads. The process runs with the server's
    allocator and collector settings, so cache-heavy stages cost what they cost in ``serve``."""
    import asyncio
    import gc

    from swell.cli import tune_runtime

    thresholds = gc.get_threshold()
    tune_runtime()
    requests = 10 if quick else 100
    data_dir = Path(tempfile.mkdtemp(prefix="swell-bench-stages-", dir="/tmp"))
    try:
        bodies = build_bodies("0" * 32, 1, requests, seed=2)[0]
        return asyncio.run(_stage_costs(bodies, data_dir))
    finally:
        gc.set_threshold(*thresholds)
        shutil.rmtree(data_dir, ignore_errors=True)


#: The uninstrumented server of ``--instrumentation``: no metrics, no access log.
BARE_ENV = {"SWELL_METRICS_ENABLED": "false", "SWELL_ACCESS_LOG": "false"}


def run(quick: bool = False, instrumentation: bool = False) -> dict[str, Any]:
    per_pass = 10 if quick else 150
    timed = 3
    passes = 1 + timed
    data_dir = Path(tempfile.mkdtemp(prefix="swell-bench-ingest-", dir="/tmp"))
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    client: Any = None
    servers: list[Any] = []
    try:
        project = create_project(data_dir)
        client = ctx.Process(
            target=_client, args=(child, project["api_key"], passes, per_pass), daemon=True
        )
        client.start()
        bare_dir = data_dir.parent / f"{data_dir.name}-bare"
        if instrumentation:  # the same org and keys, its own data
            shutil.copytree(data_dir, bare_dir)
        swell = swell_server(data_dir)
        floor = uvicorn_server("parse-only floor", "floor_apps:ingest_app")
        servers = [swell, floor]
        order = [("floor", floor), ("swell", swell)]
        if instrumentation:
            bare = swell_server(bare_dir, env=BARE_ENV)
            servers.append(bare)
            order.append(("bare", bare))
        for server in servers:
            server.start()
        if not parent.poll(600):
            raise RuntimeError("the load client did not build its bodies within 600 s")
        built = parent.recv()
        print(
            f"ingest: {passes} passes x {per_pass} requests x {EVENTS_PER_REQUEST} events, "
            f"{built['event_bytes']:.0f} B/event, bodies built in {built['build_seconds']:.1f} s"
        )
        runs: dict[str, list[dict[str, Any]]] = {key: [] for key, _ in order}
        rss: dict[str, list[int]] = {key: [] for key, _ in order}
        for index in range(passes):
            for key, server in order:
                _wait_idle(server)
                cpu0, written0 = server.cpu(), proc_write_bytes(server.pid)
                parent.send((server.port, index))
                if not parent.poll(1800):
                    raise RuntimeError(f"{server.name}: pass {index} did not finish in 1800 s")
                result = parent.recv()
                if result["error"]:
                    raise RuntimeError(f"{server.name}: {result['error']}")
                _wait_idle(server)
                result["server_cpu"] = server.cpu() - cpu0
                result["written_per_event"] = (proc_write_bytes(server.pid) - written0) / result[
                    "events"
                ]
                result["per_cpu_s"] = result["events"] / result["server_cpu"]
                result["wall_eps"] = result["events"] / result["wall"]
                label = "warm-up" if index == 0 else f"pass {index}"
                print(
                    f"  {key:5s} {label:7s}: {result['per_cpu_s']:>9,.0f} ev/server-CPU-s, "
                    f"{result['wall_eps']:>9,.0f} ev/s wall, server CPU "
                    f"{result['server_cpu']:.2f} s, {result['written_per_event']:,.0f} B/event "
                    f"written, load {loadavg()}"
                )
                if index > 0:
                    runs[key].append(result)
                rss[key].append(proc_rss_kib(server.pid))
        parent.send(None)
        client.join(60)
        summary = _summary(runs, built, per_pass, timed)
        for key, server in order:
            grown = (rss[key][-1] - rss[key][0]) * 1024
            summary[key]["rss_after_warmup_mib"] = rss[key][0] / 1024
            summary[key]["rss_end_mib"] = rss[key][-1] / 1024
            summary[key]["rss_bytes_per_event"] = grown / (timed * per_pass * EVENTS_PER_REQUEST)
            summary[key]["vm_hwm_mib"] = proc_status_kib(server.pid, "VmHWM") / 1024
        return summary
    finally:
        if client is not None and client.is_alive():
            client.terminate()
            client.join(10)
        for server in servers:
            server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(data_dir.parent / f"{data_dir.name}-bare", ignore_errors=True)


def _summary(
    runs: dict[str, list[dict[str, Any]]], built: dict[str, Any], per_pass: int, timed: int
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "events_per_request": EVENTS_PER_REQUEST,
        "requests_per_pass": per_pass,
        "timed_passes": timed,
        "connections": CONNECTIONS,
        "users": USERS,
        "event_bytes": built["event_bytes"],
        "body_bytes": built["body_bytes"],
    }
    for key, results in runs.items():
        latencies = [x for r in results for x in r["latencies"]]
        out[key] = {
            "per_cpu_s": median([r["per_cpu_s"] for r in results]),
            "per_cpu_s_runs": [r["per_cpu_s"] for r in results],
            "wall_eps": median([r["wall_eps"] for r in results]),
            "wall_eps_runs": [r["wall_eps"] for r in results],
            "us_per_event": 1e6 / median([r["per_cpu_s"] for r in results]),
            "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            "requests": len(latencies),
            "written_per_event": median([r["written_per_event"] for r in results]),
            "client_cpu_per_event_us": median(
                [r["client_cpu"] / r["events"] * 1e6 for r in results]
            ),
        }
    out["ratio"] = out["swell"]["per_cpu_s"] / out["floor"]["per_cpu_s"]
    if "bare" in out:  # events per CPU-second with metrics and access log over without
        out["instrumented_over_bare"] = out["swell"]["per_cpu_s"] / out["bare"]["per_cpu_s"]
        out["bare_ratio"] = out["bare"]["per_cpu_s"] / out["floor"]["per_cpu_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument(
        "--instrumentation",
        action="store_true",
        help="also run swell without metrics and access log (SWELL_METRICS_ENABLED=false "
        "SWELL_ACCESS_LOG=false), alternating passes, and report the ratio",
    )
    args = parser.parse_args()
    result = run(quick=args.quick, instrumentation=args.instrumentation)
    result["stages"], result["library_floor"] = stage_costs(quick=args.quick)
    servers = [k for k in ("swell", "floor", "bare") if k in result]
    printable = {k: v for k, v in result.items() if k not in servers}
    for key in servers:
        printable[key] = {k: v for k, v in result[key].items() if not k.endswith("_runs")}
    print(orjson.dumps(printable, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parent.parent)
    main()
