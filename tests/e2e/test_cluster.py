"""The scale-out deployment, as processes: API nodes and workers on one PostgreSQL database and
one shared blob store. Events acknowledged by one node are exported by another, a DSAR POSTed to
one is polled on another, and killing the worker that owns a project, or an API node, while
clients send loses nothing that was acknowledged and stores nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import LiveServer, hours_around_now, zip_lines
from tests.e2e.test_postgres import cli, dsar_round_trip, export, post, wait_for

pytestmark = pytest.mark.slow


class Cluster:
    """Nodes started by a test, all sharing one database and one blob directory."""

    def __init__(self, root: Path, pg_url: str) -> None:
        self.root = root
        self.env = {
            "SWELL_METADATA_URL": pg_url,
            "SWELL_BLOB_URL": f"file://{root / 'blobs'}",
            "SWELL_LEASE_SECONDS": "3",
            "SWELL_SEAL_WAIT_SECONDS": "10",
        }
        self.servers: list[LiveServer] = []
        self.workers: list[subprocess.Popen[bytes]] = []

    def api(self, name: str) -> LiveServer:
        server = LiveServer(self.root / name, {**self.env, "SWELL_ROLE": "api"}).start()
        self.servers.append(server)
        return server

    def worker(self, name: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "swell", "worker", "--data-dir", str(self.root / name)],
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()
        self.workers.append(proc)
        return proc

    def stop(self) -> None:
        for server in self.servers:
            if server.proc is not None and server.proc.poll() is None:
                server.kill()
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path, pg_url)
    yield nodes
    nodes.stop()


def keys(cluster: Cluster) -> tuple[dict[str, Any], dict[str, Any]]:
    org = cli("org", "create", "acme", data_dir=cluster.root / "cli", env=cluster.env)
    project = cli(
        "project", "create", "web", "--org", str(org["org_id"]),
        data_dir=cluster.root / "cli", env=cluster.env,
    )  # fmt: skip
    return org, project


def batch(tag: str, n: int, user: str = "alice-cluster") -> list[dict[str, Any]]:
    return [
        {"user_id": f"{user}-{i % 3}", "event_type": "Scaled", "insert_id": f"{tag}-{i}"}
        for i in range(n)
    ]


def exported_ids(
    server: LiveServer, project: dict[str, Any], owner_pending: bool = False
) -> Counter[str] | None:
    """What an export of the hours around now holds; None for a 503 ``owner`` when
    ``owner_pending`` (a worker is still starting and has not sealed yet)."""
    resp = export(server.url, project, hours_around_now())
    if resp.status_code == 404:
        return Counter()
    if owner_pending and resp.status_code == 503 and resp.json()["cause"] == "owner":
        return None
    assert resp.status_code == 200, resp.text
    return Counter(orjson.loads(line)["$insert_id"] for line in zip_lines(resp.content))


@pytest.fixture(params=["file", "s3"])
def any_cluster(request: pytest.FixtureRequest, cluster: Cluster) -> Cluster:
    """The cluster with its parts on a shared directory, or on S3 (SeaweedFS)."""
    if request.param == "s3":
        cluster.env["SWELL_BLOB_URL"] = request.getfixturevalue("s3_url")
    return cluster


def test_what_one_node_acknowledges_another_exports_and_a_dsar_crosses_nodes(
    any_cluster: Cluster,
) -> None:
    cluster = any_cluster
    org, project = keys(cluster)
    cluster.worker("worker")
    a, b = cluster.api("a"), cluster.api("b")
    acked: set[str] = set()
    for n in range(5):
        events = batch(f"a{n}", 20)
        assert post(a.url, project["api_key"], events).status_code == 200
        acked |= {e["insert_id"] for e in events}
    started = time.monotonic()
    assert exported_ids(b, project) == Counter(dict.fromkeys(acked, 1))
    assert time.monotonic() - started < 10  # read-your-writes across nodes
    rows = dsar_round_trip(a.url, org, "alice-cluster-1")  # POSTed to a ...
    assert {r["$insert_id"] for r in rows} == {i for i in acked if int(i.split("-")[1]) % 3 == 1}
    # ... and its status polled on b.
    auth = (org["api_key"], org["secret_key"])
    status = httpx.get(f"{b.url}/api/2/dsar/requests/1", auth=auth, timeout=30).json()
    assert status["status"] == "done"
    assert status["urls"]
    assert all(url.startswith(f"{b.url}/") for url in status["urls"])  # b's own address


def test_an_api_node_without_a_worker_answers_503_owner_for_reads(cluster: Cluster) -> None:
    _, project = keys(cluster)
    cluster.env["SWELL_SEAL_WAIT_SECONDS"] = "1"
    a = cluster.api("a")
    assert post(a.url, project["api_key"], batch("x", 3)).status_code == 200  # acknowledged
    resp = httpx.get(
        f"{a.url}/api/2/export",
        params=hours_around_now(),
        auth=(project["api_key"], project["secret_key"]),
        timeout=60,
    )
    assert resp.status_code == 503
    assert resp.json()["cause"] == "owner"
    cluster.worker("late")  # a worker comes: the acknowledged events are there
    # (until it has taken the lease and sealed, within the 1 s wait, reads still answer 503)
    wait_for(
        lambda: (
            exported_ids(a, project, owner_pending=True) == Counter({f"x-{i}": 1 for i in range(3)})
        ),
        "export",
    )


def hammer(
    urls: list[str], api_key: str, stop: threading.Event, acked: set[str], threads: int = 4
) -> list[threading.Thread]:
    """Send batches round-robin to ``urls`` until ``stop``; record what was acknowledged."""
    lock = threading.Lock()

    def work(worker: int) -> None:
        n = 0
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                url = urls[(worker + n) % len(urls)]
                events = batch(f"w{worker}-{n}", 25)
                n += 1
                try:
                    resp = client.post(f"{url}/batch", json={"api_key": api_key, "events": events})
                except httpx.TransportError:
                    continue
                if resp.status_code == 200:
                    with lock:
                        acked.update(e["insert_id"] for e in events)

    started = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(threads)]
    for thread in started:
        thread.start()
    return started


def test_killing_the_owning_worker_under_load_loses_nothing(any_cluster: Cluster) -> None:
    cluster = any_cluster
    _, project = keys(cluster)
    first = cluster.worker("first")
    a, b = cluster.api("a"), cluster.api("b")
    stop, acked = threading.Event(), set[str]()
    threads = hammer([a.url, b.url], project["api_key"], stop, acked)
    wait_for(lambda: len(acked) > 1500, "acknowledged events")
    first.send_signal(signal.SIGKILL)  # the owner, mid-stream
    first.wait(30)
    wait_for(lambda: len(acked) > 3000, "more acknowledged events")  # the API nodes go on
    cluster.worker("second")  # takes the project over once the lease expires
    stop.set()
    for thread in threads:
        thread.join(30)
    stored = exported_ids(b, project)
    missing = acked - set(stored)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
    assert max(stored.values()) == 1, [k for k, v in stored.items() if v > 1][:3]


def test_killing_an_api_node_mid_request_loses_nothing_it_acknowledged(
    cluster: Cluster,
) -> None:
    _, project = keys(cluster)
    cluster.worker("worker")
    a, b = cluster.api("a"), cluster.api("b")
    stop, acked = threading.Event(), set[str]()
    threads = hammer([a.url], project["api_key"], stop, acked)
    wait_for(lambda: len(acked) > 1000, "acknowledged events")
    assert a.proc is not None
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(30)
    stop.set()
    for thread in threads:
        thread.join(30)
    stored = exported_ids(b, project)
    assert acked <= set(stored)
    assert max(stored.values()) == 1


def test_import_and_generate_work_against_the_scale_out_deployment(cluster: Cluster) -> None:
    _, project = keys(cluster)
    cluster.worker("worker")
    a = cluster.api("a")
    acked = {e["insert_id"] for e in batch("live", 10)}
    assert post(a.url, project["api_key"], batch("live", 10)).status_code == 200
    now = time.time()
    records = [
        {
            "uuid": f"00000000-0000-4000-8000-{n:012d}",
            "event_type": "Imported",
            "user_id": "imported-user",
            "amplitude_id": 5_000_000 + n,
            "$insert_id": f"imp-{n}",
            "server_upload_time": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime(now)),
        }
        for n in range(30)
    ]
    path = cluster.root / "history.json"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    pid = str(project["project_id"])
    result = cli(
        "import", str(path), "--project", pid, data_dir=cluster.root / "cli", env=cluster.env
    )
    assert (result["events"], result["skipped"]) == (30, 0)
    again = cli(
        "import", str(path), "--project", pid, data_dir=cluster.root / "cli", env=cluster.env
    )
    assert (again["events"], again["skipped"]) == (0, 30)  # idempotent here too
    generated = cli(
        *("generate", "--project", pid, "--events", "500", "--days", "1", "--users", "20"),
        data_dir=cluster.root / "cli",
        env=cluster.env,
    )
    assert generated["events"] == 500
    # The worker got the project back and goes on consuming the inbox.
    assert post(a.url, project["api_key"], batch("after", 5)).status_code == 200
    acked |= {e["insert_id"] for e in batch("after", 5)}
    stored = exported_ids(a, project)
    assert acked | {r["$insert_id"] for r in records} <= set(stored)
    resp = httpx.get(
        f"{a.url}/api/2/export",
        params={"start": time.strftime("%Y%m%dT%H", time.gmtime(now - 2 * 86400)),
                "end": time.strftime("%Y%m%dT%H", time.gmtime(now + 3600))},
        auth=(project["api_key"], project["secret_key"]),
        timeout=60,
    )  # fmt: skip
    assert resp.status_code == 200
    assert len(zip_lines(resp.content)) == 10 + 5 + 30 + 500
