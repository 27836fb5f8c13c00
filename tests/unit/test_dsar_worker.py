"""The job queue (over every metadata backend) and the worker loop that drives DSAR jobs: claim,
lease, retry, give up, and wait out storage outages without using up attempts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from swell.backends.base import Metadata
from swell.backends.memory import MemoryMetadata
from swell.backends.postgres import PostgresMetadata
from swell.backends.sqlite import SQLiteMetadata
from swell.errors import BlobStoreUnavailable, StorageError
from swell.jobs import LEASE, Worker, backoff
from swell.model import Job
from tests.conftest import FakeClock

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def meta(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Metadata]:
    db: Metadata = (
        MemoryMetadata()
        if request.param == "memory"
        else PostgresMetadata(request.getfixturevalue("pg_url"))
        if request.param == "postgres"
        else SQLiteMetadata(tmp_path / "meta.db")
    )
    await db.create_org("acme", "k" * 32, "h")
    yield db
    await db.aclose()


async def claim(meta: Metadata, worker: str, at: datetime) -> Job | None:
    return await meta.claim_job(worker, at, at + LEASE)


class Handler:
    kind = "dsar"

    def __init__(self, meta: Metadata, failures: int = 0) -> None:
        self.meta = meta
        self.failures = failures
        self.runs: list[Job] = []
        self.given_up: list[tuple[int, str]] = []

    async def run(self, job: Job) -> None:
        self.runs.append(job)
        if len(self.runs) <= self.failures:
            raise RuntimeError("boom")
        await self.meta.finish_dsar(job.id, job.ref, 0, T0 + timedelta(days=2))

    async def give_up(self, job: Job, reason: str) -> None:
        self.given_up.append((job.id, reason))
        await self.meta.fail_dsar(job.id, job.ref, reason)

    async def housekeep(self) -> None:
        return None


async def test_a_job_is_claimed_once(meta):
    created = await meta.create_dsar(1, "alice", None, "2024-01-01", "2024-01-02", T0)
    claims = await asyncio.gather(*(claim(meta, f"w{i}", T0) for i in range(5)))
    claimed = [c for c in claims if c is not None]
    assert claimed == [Job(claimed[0].id, "dsar", created.id, 1)]


async def test_a_job_is_not_claimed_before_it_is_due(meta):
    await meta.create_dsar(1, "alice", None, "2024-01-01", "2024-01-02", T0)
    assert await claim(meta, "w", T0 - timedelta(seconds=1)) is None
    assert await claim(meta, "w", T0) is not None


async def test_running_jobs_are_requeued_at_start_and_count_attempts(meta):
    await meta.create_dsar(1, "alice", None, "2024-01-01", "2024-01-02", T0)
    first = await claim(meta, "dead", T0)
    assert await claim(meta, "w", T0) is None
    assert await meta.requeue_running_jobs() == 1
    again = await claim(meta, "w", T0)
    assert again is not None
    assert (again.id, again.attempts) == (first.id, 2)


async def test_failed_attempts_are_retried_then_succeed(meta):
    created = await meta.create_dsar(1, "alice", None, "2024-01-01", "2024-01-02", T0)
    clock = FakeClock(T0)
    handler = Handler(meta, failures=2)
    worker = Worker(meta, [handler], clock=clock)
    assert await worker.run_pending() == 2  # the first retry is immediate, the next is not
    assert (await meta.get_dsar(created.id)).status == "staging"
    clock.now += backoff(2)
    assert await worker.run_pending() == 1
    done = await meta.get_dsar(created.id)
    assert (done.status, [j.attempts for j in handler.runs]) == ("done", [1, 2, 3])


async def test_a_job_that_keeps_failing_is_given_up(meta):
    created = await meta.create_dsar(1, "alice", None, "2024-01-01", "2024-01-02", T0)
    clock = FakeClock(T0)
    handler = Handler(meta, failures=99)
    worker = Worker(meta, [handler], clock=clock, max_attempts=3)
    for _ in range(3):
        await worker.run_pending()
        clock.now += timedelta(minutes=10)
    failed = await meta.get_dsar(created.id)
    assert failed.status == "failed"
    assert failed.fail_reason == "Internal error after 3 attempts"
    assert len(handler.runs) == 3


async def test_the_worker_wakes_for_new_jobs_and_stops_cleanly(meta):
    clock = FakeClock(T0)
    handler = Handler(meta)
    worker = Worker(meta, [handler], clock=clock, poll_seconds=3600)
    worker.start()
    try:
        created = await meta.create_dsar(1, "alice", None, "2024-01-01", "2024-01-02", T0)
        worker.wake()
        for _ in range(1000):
            if (await meta.get_dsar(created.id)).status == "done":
                break
            await asyncio.sleep(0.005)
        assert (await meta.get_dsar(created.id)).status == "done"
    finally:
        await worker.aclose()


def test_backoff_grows_and_is_capped():
    assert backoff(1) == timedelta(0)
    assert backoff(2) < backoff(3) < backoff(4)
    assert backoff(50) == timedelta(minutes=5)


async def test_a_job_interrupted_too_often_is_given_up_without_running_again(meta):
    """Each restart requeues a job the process was running when it died; a job that keeps killing
    the process must not be started forever."""
    created = await meta.create_dsar(1, "alice", None, "2024-01-01", "2024-01-02", T0)
    for _ in range(3):  # three claims, each ended by the process dying
        assert await claim(meta, "dead", T0) is not None
        assert await meta.requeue_running_jobs() == 1
    handler = Handler(meta)
    worker = Worker(meta, [handler], clock=FakeClock(T0), max_attempts=3)
    assert await worker.run_pending() == 1
    assert handler.runs == []
    failed = await meta.get_dsar(created.id)
    assert (failed.status, failed.fail_reason) == ("failed", "Internal error after 3 attempts")
    assert await claim(meta, "w", T0 + timedelta(days=1)) is None


class FlakyQueue:
    """Forwards to the real queue, but the first retry_job fails (e.g. the database is locked)."""

    def __init__(self, inner: Metadata) -> None:
        self.inner = inner
        self.retry_failures = 1

    async def retry_job(
        self, job_id: int, error: str, run_after: datetime, *, count_attempt: bool = True
    ) -> None:
        if self.retry_failures:
            self.retry_failures -= 1
            raise StorageError("metadata database error: database is locked")
        await self.inner.retry_job(job_id, error, run_after, count_attempt=count_attempt)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_job_is_not_left_running_when_recording_a_failed_attempt_fails(meta):
    created = await meta.create_dsar(1, "alice", None, "2024-01-01", "2024-01-02", T0)
    handler = Handler(meta, failures=1)
    worker = Worker(FlakyQueue(meta), [handler], clock=FakeClock(T0), poll_seconds=0.01)
    worker.start()
    try:
        for _ in range(1000):
            if (await meta.get_dsar(created.id)).status == "done":
                break
            await asyncio.sleep(0.005)
    finally:
        await worker.aclose()
    assert (await meta.get_dsar(created.id)).status == "done"
    assert [j.attempts for j in handler.runs] == [1, 2]


async def test_a_job_whose_lease_ran_out_is_claimed_again(meta):
    await meta.create_dsar(1, "alice", None, "2024-01-01", "2024-01-02", T0)
    first = await claim(meta, "dead", T0)
    assert first is not None
    assert await claim(meta, "w", T0 + LEASE - timedelta(seconds=1)) is None
    again = await claim(meta, "w", T0 + LEASE)
    assert again is not None
    assert (again.id, again.attempts) == (first.id, 2)
    # The first worker has lost it; the new one keeps it.
    assert not await meta.extend_lease(first.id, "dead", T0 + 3 * LEASE)
    assert await meta.extend_lease(first.id, "w", T0 + 3 * LEASE)
    assert await claim(meta, "x", T0 + 2 * LEASE) is None


class StorageDownHandler(Handler):
    """Fails with an unavailable blob store ``outage`` times, then succeeds."""

    def __init__(self, meta: Metadata, outage: int) -> None:
        super().__init__(meta)
        self.outage = outage

    async def run(self, job: Job) -> None:
        self.runs.append(job)
        if len(self.runs) <= self.outage:
            raise BlobStoreUnavailable("blob store unavailable: No space left on device")
        await self.meta.finish_dsar(job.id, job.ref, 0, T0 + timedelta(days=2))


async def test_a_storage_outage_delays_a_job_without_using_up_its_attempts(meta):
    created = await meta.create_dsar(1, "alice", None, "2024-01-01", "2024-01-02", T0)
    clock = FakeClock(T0)
    handler = StorageDownHandler(meta, outage=8)
    worker = Worker(meta, [handler], clock=clock, max_attempts=3)
    for _ in range(20):
        await worker.run_pending()
        clock.advance(seconds=31)
    done = await meta.get_dsar(created.id)
    assert done.status == "done"
    assert len(handler.runs) == 9
    assert {j.attempts for j in handler.runs} == {1}  # an outage is not the job's failure
