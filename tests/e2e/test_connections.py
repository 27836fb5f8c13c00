"""Connections are bounded: idle, slow and oversized ones cannot keep other clients out.

Each test runs a live ``swell serve`` on 127.0.0.1 with small limits, so they are reached quickly.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer

#: The server's own open-file limit: with no connection cap, 300 idle connections exhaust it.
OPEN_FILES = 256
IDLE = 300


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return sock


def _closed_by_server(sock: socket.socket) -> bytes | None:
    """What the server sent before closing (b"" if nothing), or None if it is still open."""
    sock.settimeout(0.0)
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return None
    except ConnectionResetError:
        return b""
    return data


def _ingest(server: LiveServer, project: dict[str, Any], n: int) -> httpx.Response:
    event = {"user_id": "conn-user", "event_type": "e", "insert_id": f"conn-{n}"}
    return httpx.post(
        f"{server.url}/2/httpapi",
        json={"api_key": project["api_key"], "events": [event]},
        timeout=30,
    )


@pytest.fixture
def limited(live_keys: tuple[Path, dict[str, Any], dict[str, Any]]) -> Iterator[LiveServer]:
    env = {
        "SWELL_HTTP_HEADER_TIMEOUT_SECONDS": "0.5",
        "SWELL_HTTP_REQUEST_TIMEOUT_SECONDS": "1",
        "SWELL_HTTP_MAX_HEADER_BYTES": "8192",
        "SWELL_MAX_CONCURRENT_REQUESTS": "1",
    }
    server = LiveServer(live_keys[0], env=env, open_files=OPEN_FILES).start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.terminate()


def test_more_idle_connections_than_fit_do_not_keep_requests_out(
    live_keys: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    # Long timeouts: the idle connections stay until the cap itself makes room.
    env = {"SWELL_HTTP_HEADER_TIMEOUT_SECONDS": "600", "SWELL_MAX_CONNECTIONS": "100"}
    server = LiveServer(live_keys[0], env=env, open_files=OPEN_FILES).start()
    project = live_keys[2]
    try:
        with contextlib.ExitStack() as stack:
            idle = [stack.enter_context(_connect(server.port)) for _ in range(IDLE)]
            for n in range(5):
                assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200
                resp = _ingest(server, project, n)
                assert resp.status_code == 200, resp.text
            # The server closed idle connections to make room, the oldest first (connections
            # accepted in the same loop turn tie, so the order is checked by halves).
            closed = {i for i, sock in enumerate(idle) if _closed_by_server(sock) is not None}
            assert len(closed) >= IDLE - 100
            assert set(range(IDLE // 2)) <= closed
        assert server.terminate() == 0
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()


def test_a_connection_that_sends_nothing_or_trickles_its_head_is_closed(limited):
    silent = _connect(limited.port)
    slow = _connect(limited.port)
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the end of the head
    for sock in (silent, slow):
        sock.settimeout(30)
        data = sock.recv(65536)  # the server closes it after the header timeout
        sock.close()
        if sock is slow:
            assert data.startswith(b"HTTP/1.1 408 ")
        else:
            assert data == b""
    assert httpx.get(f"{limited.url}/healthz", timeout=30).status_code == 200


def test_a_request_whose_body_stalls_is_cut_off_and_logged_once(limited, live_keys):
    project = live_keys[2]
    sock = _connect(limited.port)
    sock.sendall(
        b"POST /2/httpapi HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b'{"api_key":'
    )
    sock.settimeout(30)
    assert sock.recv(65536) == b""  # closed after the request timeout
    sock.close()
    assert _ingest(limited, project, 1).status_code == 200
    log = limited.log_path.read_text(errors="replace")
    assert "Traceback" not in log


def test_an_oversized_request_head_is_431(limited):
    sock = _connect(limited.port)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    sock.settimeout(30)
    data = sock.recv(65536)
    sock.close()
    assert data.startswith(b"HTTP/1.1 431 ")


def test_requests_beyond_the_concurrency_limit_are_503_in_the_surfaces_shape(limited, live_keys):
    project = live_keys[2]
    held = _connect(limited.port)
    # Expect: 100-continue: the server says "continue" only once the handler reads the body,
    # so once it has, the one request allowed is in progress.
    held.sendall(
        b"POST /2/httpapi HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Type: application/json\r\nContent-Length: 20\r\n\r\n"
    )
    held.settimeout(30)
    assert held.recv(65536).startswith(b"HTTP/1.1 100 ")
    busy = httpx.get(f"{limited.url}/healthz", timeout=30)
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["code"] == 503
    dsar = httpx.get(f"{limited.url}/api/2/dsar/requests/1", timeout=30)
    assert dsar.status_code == 503
    assert set(dsar.json()) == {"error"}
    held.sendall(b'{"api_key":"nope"}  ')
    assert b" 400 " in held.recv(65536).split(b"\r\n")[0]
    held.close()
    assert _ingest(limited, project, 2).status_code == 200
