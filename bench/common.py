"""Shared helpers for the benchmarks: server processes, /proc sampling, the swell CLI, stats.

Every server a benchmark starts listens on 127.0.0.1 only and is stopped by it (SIGTERM, then
wait). CPU time and memory are read from /proc/<pid>/{stat,status}, so they count the server
process alone (all of its threads), not the load client that shares the machine with it.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(port: int, path: str) -> int | None:
    """Status of a GET on 127.0.0.1, or None if nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_write_bytes(pid: int) -> int:
    """Bytes a process has caused to be written to storage (``write_bytes`` of /proc/<pid>/io)."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise KeyError("write_bytes")


def proc_status_kib(pid: int, key: str) -> int:
    """A ``VmRSS``/``VmHWM``-style line of /proc/<pid>/status, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE // 1024


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread; ``peak`` is the maximum."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.before = proc_rss_kib(pid)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, proc_rss_kib(self.pid))
            except (OSError, ValueError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, proc_rss_kib(self.pid))


@dataclass
class Server:
    """A server in its own process on a free loopback port, healthy once ``health`` answers."""

    name: str
    argv: list[str]
    health_path: str = "/healthz"
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120) -> Server:
        self.port = free_port()
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {err}")
            if http_status(self.port, self.health_path) == 200:
                # stderr is only read on failure; drain it so a chatty server never blocks.
                threading.Thread(target=self._drain, daemon=True).start()
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not become healthy within {timeout} s")

    def _drain(self) -> None:
        if self.proc is not None and self.proc.stderr is not None:
            for _ in self.proc.stderr:
                pass

    def cpu(self) -> float:
        return proc_cpu_seconds(self.pid)

    def stop(self, timeout: float = 120) -> int | None:
        """SIGTERM, then wait (swell seals and fsyncs on shutdown); SIGKILL as a last resort."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def swell_server(data_dir: Path, env: dict[str, str] | None = None) -> Server:
    return Server(
        "swell serve",
        [PYTHON, "-m", "swell", "serve", "--data-dir", str(data_dir), "--port", "{port}"],
        env=env or {},
    )


def uvicorn_server(name: str, app: str, env: dict[str, str] | None = None) -> Server:
    """A bench/ app under uvicorn with the defaults ``swell serve`` uses (uvloop, httptools)."""
    return Server(
        name,
        [
            *(PYTHON, "-m", "uvicorn", "--app-dir", str(BENCH_DIR), app),
            *("--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning"),
            "--no-access-log",
        ],
        env=env or {},
    )


def swell_cli(
    *args: str, data_dir: Path, timeout: float = 3600, env: dict[str, str] | None = None
) -> dict[str, Any]:
    out = subprocess.run(
        [PYTHON, "-m", "swell", *args, "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def create_project(data_dir: Path) -> dict[str, Any]:
    """A fresh org and project; returns the project's ids and keys."""
    org = swell_cli("org", "create", "bench", data_dir=data_dir)
    return swell_cli("project", "create", "bench", "--org", str(org["org_id"]), data_dir=data_dir)


def create_org_project(
    data_dir: Path, name: str = "bench"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A fresh org and a project in it: ``(org, project)``, each with its ids and keys."""
    org = swell_cli("org", "create", name, data_dir=data_dir)
    project = swell_cli("project", "create", name, "--org", str(org["org_id"]), data_dir=data_dir)
    return org, project


def basic_auth(keys: dict[str, Any]) -> str:
    """The ``Authorization`` header for an org's or a project's ``api_key``/``secret_key``."""
    pair = f"{keys['api_key']}:{keys['secret_key']}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def wait_until_idle(
    server: Server,
    *,
    min_seconds: float = 0.0,
    window: float = 0.25,
    idle_cpu: float = 0.02,
    timeout: float = 600,
) -> float:
    """Wait until a server has been up ``min_seconds`` and used under ``idle_cpu`` CPU-seconds in
    each of two consecutive ``window``-second windows (start-up or housekeeping work done);
    returns the seconds waited."""
    started = time.monotonic()
    quiet = 0
    while time.monotonic() - started < timeout:
        cpu = server.cpu()
        time.sleep(window)
        quiet = quiet + 1 if server.cpu() - cpu < idle_cpu else 0
        if quiet >= 2 and time.monotonic() - started >= min_seconds:
            break
    return time.monotonic() - started


def children_cpu_seconds() -> float:
    """utime + stime of every child process waited for so far (e.g. ``swell`` CLI runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def machine() -> dict[str, str]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    load = os.getloadavg()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram": f"{mem_kib / 1024**2:.1f} GiB",
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    }


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def write_section(title: str, lines: list[str], path: Path) -> None:
    """Put a section (``lines``, starting with its ``title`` heading) into the report in place of
    the last run's, or before "## Reproduce"."""
    text = path.read_text() if path.exists() else ""
    block = "\n".join(lines) + "\n"
    if title in text:
        start = text.index(title)
        rest = text.find("\n## ", start + len(title))
        text = text[:start] + block + (text[rest + 1 :] if rest >= 0 else "")
    elif "## Reproduce" in text:
        at = text.index("## Reproduce")
        text = text[:at] + block + "\n" + text[at:]
    else:
        text += "\n" + block
    path.write_text(text)
