"""The durable log: frames come back exactly as appended, across segments and torn tails."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import given, settings, strategies as st

from swell.backends import filelog as wal
from swell.model import FrameKind


async def _write(directory: Path, bodies: list[bytes], segment_bytes: int) -> None:
    log = wal.FileLog(directory, segment_bytes=segment_bytes)
    list(log.open())
    for i, body in enumerate(bodies):
        log.append(FrameKind.EVENTS, 7, i, body)
    await log.sync()  # one flush: far more pieces than one writev call takes
    await log.aclose()


def _read(directory: Path) -> list[tuple[int, int, int, bytes]]:
    log = wal.FileLog(directory)
    return [(f.lsn, f.project_id, f.hour, f.body) for f in log.open()]


def test_a_large_flush_reads_back_exactly(tmp_path: Path) -> None:
    bodies = [f"line {i}\n".encode() * (i % 5) for i in range(1500)]
    asyncio.run(_write(tmp_path, bodies, 64 * 1024 * 1024))
    assert _read(tmp_path) == [(i + 1, 7, i, b) for i, b in enumerate(bodies)]


@settings(max_examples=30, deadline=None)
@given(bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=40), cut=st.integers(1, 50))
def test_a_torn_tail_loses_only_the_last_frame(bodies: list[bytes], cut: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        asyncio.run(_write(directory, bodies, 64 * 1024 * 1024))
        (segment,) = directory.glob("*.wal")
        data = segment.read_bytes()
        last = wal.HEADER.size + wal.PAYLOAD_HEAD.size + len(bodies[-1])
        segment.write_bytes(data[: len(data) - min(cut, last)])
        frames = _read(directory)
        assert [f[3] for f in frames] == bodies[:-1]
        assert len(segment.read_bytes()) == len(data) - last  # the torn bytes were cut off
