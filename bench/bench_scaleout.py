"""Scale-out benchmark: ingest through two API nodes and one worker on PostgreSQL and SeaweedFS,
beside the embedded server on the same bodies, and failover trials.

Setup: a fresh PostgreSQL database on the local server (trust auth), a SeaweedFS server
(tests/s3server.py) and a bucket; one ``swell worker`` and two ``swell serve --role api``
nodes. The load client (bench_ingest's, in its own process) posts the same kind of 1000-event
``/2/httpapi`` bodies to both API nodes, alternating, over two keep-alive connections each; a pass
ends once the worker has consumed every request (its inbox position reaches the head).

Figures, per pass (median of the timed passes):

* events per CPU-second of the API nodes (both together), of the worker, and of PostgreSQL (every
  ``postgres`` process's utime+stime), and PostgreSQL's CPU per event in µs;
* the wall rate from the first request to the last request consumed;
* the embedded ``swell serve``'s events per server CPU-second on the same bodies, in the same run.

Failover trials: the worker owning the project is killed (SIGKILL) while two client threads send;
a second worker takes over after the lease; every acknowledged event must then be exported
exactly once (counted: acknowledged, lost, duplicated).

    .venv/bin/python bench/bench_scaleout.py [--quick] [--trials N]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import psycopg

import bench_ingest
from common import (
    PYTHON,
    ROOT,
    Server,
    basic_auth,
    loadavg,
    median,
    proc_cpu_seconds,
    swell_cli,
    swell_server,
)

sys.path.insert(0, str(ROOT))
from tests.conftest import zip_lines
from tests.s3server import SeaweedFS

ADMIN_URL = os.environ.get(
    "SWELL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BUCKET = "scaleout"
LEASE_SECONDS = 3


def _postgres_cpu() -> float:
    """CPU seconds of every process named postgres on this machine (the local server)."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            total += proc_cpu_seconds(int(pid))
        except (OSError, ValueError):
            continue
    return total


class Deployment:
    """A database, an object store, and the nodes of one scale-out deployment."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = f"swell_bench_{uuid.uuid4().hex[:8]}"
        self.weed = SeaweedFS(root / "seaweedfs")
        self.workers: list[subprocess.Popen[bytes]] = []
        self.apis: list[Server] = []
        self.env: dict[str, str] = {}

    def __enter__(self) -> Deployment:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.db}"')
        self.weed.start()
        self.weed.create_bucket(BUCKET)
        base = ADMIN_URL.rsplit("/", 1)[0]
        self.env = {
            **self.weed.env(),
            "SWELL_METADATA_URL": f"{base}/{self.db}",
            "SWELL_BLOB_URL": self.weed.blob_url(BUCKET, "parts"),
            "SWELL_LEASE_SECONDS": str(LEASE_SECONDS),
        }
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.apis:
            server.stop()
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.weed.kill()
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')

    def worker(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [PYTHON, "-m", "swell", "worker", "--data-dir", str(self.root / "w")],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.workers.append(proc)
        return proc

    def api(self) -> Server:
        server = Server(
            "swell serve --role api",
            [PYTHON, "-m", "swell", "serve", "--role", "api", "--port", "{port}",
             "--data-dir", str(self.root / "api")],
            env=self.env,
        ).start()  # fmt: skip
        self.apis.append(server)
        return server

    def cli(self, *args: str) -> dict[str, Any]:
        return swell_cli(*args, data_dir=self.root / "cli", env=self.env)

    def consumed(self, project_id: int) -> tuple[int, int]:
        """(inbox head, the owner's consumed position) of a project."""
        with psycopg.connect(self.env["SWELL_METADATA_URL"], autocommit=True) as conn:
            head = conn.execute(
                "SELECT coalesce(max(seq), 0) FROM inbox WHERE project_id = %s", (project_id,)
            ).fetchone()
            pos = conn.execute(
                "SELECT inbox_pos FROM project_positions WHERE project_id = %s", (project_id,)
            ).fetchone()
        return int(head[0] if head else 0), int(pos[0] if pos else 0)


def _post(port: int, bodies: list[bytes]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for body in bodies:
            conn.request(
                "POST", "/2/httpapi", body=body, headers={"Content-Type": "application/json"}
            )
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
    finally:
        conn.close()


def _send(ports: list[int], bodies: list[bytes]) -> float:
    """Post ``bodies`` spread over two connections per port; returns the wall seconds."""
    lanes = [(port, k) for port in ports for k in range(bench_ingest.CONNECTIONS)]
    threads = [
        threading.Thread(target=_post, args=(port, bodies[i :: len(lanes)]))
        for i, (port, _) in enumerate(lanes)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def ingest_section(quick: bool) -> dict[str, Any]:
    passes, per_pass = (2, 20) if quick else (4, 60)
    root = Path(tempfile.mkdtemp(prefix="swell-bench-scaleout-", dir="/tmp"))
    try:
        with Deployment(root) as dep:
            org = dep.cli("org", "create", "bench")
            project = dep.cli("project", "create", "bench", "--org", str(org["org_id"]))
            bodies = bench_ingest.build_bodies(project["api_key"], passes + 1, per_pass)
            worker = dep.worker()
            apis = [dep.api(), dep.api()]
            ports = [a.port for a in apis]
            _send(ports, bodies[0])  # warm-up: the worker takes the lease, caches fill
            _wait_consumed(dep, int(project["project_id"]))
            runs: list[dict[str, float]] = []
            for index in range(1, passes + 1):
                api0 = sum(a.cpu() for a in apis)
                worker0, pg0 = proc_cpu_seconds(worker.pid), _postgres_cpu()
                started = time.perf_counter()
                sent = _send(ports, bodies[index])
                _wait_consumed(dep, int(project["project_id"]))
                wall = time.perf_counter() - started
                events = len(bodies[index]) * bench_ingest.EVENTS_PER_REQUEST
                runs.append(
                    {
                        "events": events,
                        "ack_wall_s": sent,
                        "wall_s": wall,
                        "api_cpu_s": sum(a.cpu() for a in apis) - api0,
                        "worker_cpu_s": proc_cpu_seconds(worker.pid) - worker0,
                        "pg_cpu_s": _postgres_cpu() - pg0,
                    }
                )
            embedded = _embedded(root, bodies, passes)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def rate(key: str) -> list[float]:
        return [r["events"] / r[key] for r in runs]

    return {
        "passes": passes,
        "requests_per_pass": per_pass,
        "runs": runs,
        "api_events_per_cpu_s": median(rate("api_cpu_s")),
        "worker_events_per_cpu_s": median(rate("worker_cpu_s")),
        "pg_events_per_cpu_s": median(rate("pg_cpu_s")),
        "pg_us_per_event": median([r["pg_cpu_s"] / r["events"] * 1e6 for r in runs]),
        "ack_events_per_s": median(rate("ack_wall_s")),
        "events_per_s": median(rate("wall_s")),
        "embedded_events_per_cpu_s": embedded,
    }


def _wait_consumed(dep: Deployment, project_id: int, limit: float = 600) -> None:
    deadline = time.monotonic() + limit
    while True:
        head, pos = dep.consumed(project_id)
        if head and pos >= head:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not consume the inbox ({pos} of {head})")
        time.sleep(0.05)


def _embedded(root: Path, bodies: list[list[bytes]], passes: int) -> float:
    """The embedded server's events per server CPU-second on the same kind of bodies (a project
    of its own, so the bodies' api_key is re-pointed)."""
    data_dir = root / "embedded"
    org = swell_cli("org", "create", "bench", data_dir=data_dir)
    project = swell_cli(
        "project", "create", "bench", "--org", str(org["org_id"]), data_dir=data_dir
    )
    fresh = bench_ingest.build_bodies(project["api_key"], passes + 1, len(bodies[0]))
    rates: list[float] = []
    with swell_server(data_dir) as server:
        _send([server.port], fresh[0])
        for index in range(1, passes + 1):
            cpu0 = server.cpu()
            _send([server.port], fresh[index])
            time.sleep(0.3)  # the fsync and checkpoint a pass triggers count
            rates.append(
                len(fresh[index]) * bench_ingest.EVENTS_PER_REQUEST / (server.cpu() - cpu0)
            )
    return median(rates)


# -- failover --------------------------------------------------------------------------------------


def failover_section(trials: int) -> dict[str, Any]:
    results: list[dict[str, int]] = []
    for trial in range(trials):
        root = Path(tempfile.mkdtemp(prefix="swell-bench-failover-", dir="/tmp"))
        try:
            with Deployment(root) as dep:
                results.append(_trial(dep, trial))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(f"  trial {trial + 1}: {results[-1]}")
    return {
        "trials": trials,
        "kills": sum(r["kills"] for r in results),
        "acknowledged": sum(r["acknowledged"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "duplicated": sum(r["duplicated"] for r in results),
    }


def _trial(dep: Deployment, trial: int) -> dict[str, int]:
    org = dep.cli("org", "create", "bench")
    project = dep.cli("project", "create", "bench", "--org", str(org["org_id"]))
    first = dep.worker()
    apis = [dep.api(), dep.api()]
    stop = threading.Event()
    acked: set[str] = set()
    lock = threading.Lock()

    def send(lane: int) -> None:
        n = 0
        while not stop.is_set():
            port = apis[(lane + n) % 2].port
            events = [
                {"user_id": f"user-{(lane * 7 + i) % 50}", "event_type": "Failover",
                 "insert_id": f"t{trial}-l{lane}-b{n}-e{i}"}
                for i in range(50)
            ]  # fmt: skip
            n += 1
            body = orjson.dumps({"api_key": project["api_key"], "events": events})
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request(
                    "POST", "/batch", body=body, headers={"Content-Type": "application/json"}
                )
                ok = conn.getresponse().status == 200
                conn.close()
            except OSError:
                continue
            if ok:
                with lock:
                    acked.update(e["insert_id"] for e in events)

    threads = [threading.Thread(target=send, args=(lane,), daemon=True) for lane in range(2)]
    for t in threads:
        t.start()
    _wait_for(lambda: len(acked) >= 5000, "5,000 acknowledged events")
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    _wait_for(lambda: len(acked) >= 10_000, "10,000 acknowledged events")
    dep.worker()
    stop.set()
    for t in threads:
        t.join(60)
    stored = _export_ids(apis[0], project)
    return {
        "kills": 1,
        "acknowledged": len(acked),
        "lost": len(acked - set(stored)),
        "duplicated": sum(v - 1 for v in stored.values() if v > 1),
    }


def _wait_for(check: Any, what: str, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {limit:g} s")
        time.sleep(0.05)


def _export_ids(server: Server, project: dict[str, Any]) -> Counter[str]:
    now = time.time()
    start = time.strftime("%Y%m%dT%H", time.gmtime(now - 3600))
    end = time.strftime("%Y%m%dT%H", time.gmtime(now + 3600))
    for _ in range(30):  # the new worker takes the lease once the old one expires
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        conn.request(
            "GET",
            f"/api/2/export?start={start}&end={end}",
            headers={"Authorization": basic_auth(project)},
        )
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        if resp.status == 200:
            return Counter(orjson.loads(line)["$insert_id"] for line in zip_lines(body))
        time.sleep(1)
    raise RuntimeError(f"export answered {resp.status}: {body[:200]!r}")


def run(quick: bool = False, trials: int | None = None) -> dict[str, Any]:
    print("scale-out: ingest through two API nodes and a worker ...")
    ingest = ingest_section(quick)
    print(
        f"  API nodes {ingest['api_events_per_cpu_s']:,.0f}, "
        f"worker {ingest['worker_events_per_cpu_s']:,.0f}, "
        f"PostgreSQL {ingest['pg_events_per_cpu_s']:,.0f} events per CPU-second; "
        f"embedded {ingest['embedded_events_per_cpu_s']:,.0f}"
    )
    count = trials if trials is not None else (2 if quick else 5)
    print(f"scale-out: {count} failover trials ...")
    failover = failover_section(count)
    return {"ingest": ingest, "failover": failover, "loadavg": loadavg()}


def section(result: dict[str, Any]) -> list[str]:
    i, f = result["ingest"], result["failover"]
    per_pass = i["requests_per_pass"] * bench_ingest.EVENTS_PER_REQUEST
    return [
        "## Scale-out: two API nodes and a worker on PostgreSQL and S3",
        "",
        f"`bench/bench_scaleout.py`: a fresh PostgreSQL database on the local server, SeaweedFS "
        f"(tests/s3server.py), one `swell worker` and two `swell serve --role api`; "
        f"{i['passes']} timed passes of {per_pass:,} events in 1000-event `/2/httpapi` requests "
        "spread over both API nodes (two connections each); a pass ends when the worker has "
        "consumed every request. CPU is each process's utime+stime over the pass (PostgreSQL: "
        "every `postgres` process).",
        "",
        "| what | events per CPU-second (median) |",
        "|---|---|",
        f"| API nodes (both) | {i['api_events_per_cpu_s']:,.0f} |",
        f"| worker | {i['worker_events_per_cpu_s']:,.0f} |",
        f"| PostgreSQL | {i['pg_events_per_cpu_s']:,.0f} "
        f"({i['pg_us_per_event']:.1f} µs per event) |",
        "| embedded `swell serve`, same bodies, same run | "
        f"{i['embedded_events_per_cpu_s']:,.0f} |",
        "",
        f"Wall: {i['ack_events_per_s']:,.0f} events/s acknowledged, {i['events_per_s']:,.0f} "
        "events/s from the first request to the last one consumed (two cores for every process).",
        "",
        f"Failover: {f['trials']} trials, each killing (SIGKILL) the worker that owned the project "
        f"while two clients sent to both API nodes, then starting another: "
        f"{f['acknowledged']:,} events acknowledged, **{f['lost']} lost, {f['duplicated']} "
        "duplicated**.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trials", type=int, default=None)
    args = parser.parse_args()
    mp.set_start_method("spawn", force=True)
    result = run(quick=args.quick, trials=args.trials)
    print("\n".join(section(result)))


if __name__ == "__main__":
    main()
