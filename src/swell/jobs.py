"""The worker loop: claim -> run -> finish, or retry with backoff; plain asyncio, no HTTP.

Jobs live in the metadata store (swell.backends.base.JobQueue). A claim marks a job ``running``
atomically. A job still ``running`` when a worker starts was interrupted (the process stopped
mid-job) and goes back to the queue: handlers write their results under deterministic keys and
publish them last, so running a job twice never duplicates output. The interrupted attempt counts:
a job claimed more than ``max_attempts`` times is given up without running again. Requeueing at
start assumes one worker per metadata store, which the data-directory lock guarantees for the
embedded backend; besides, every claim is a lease that the worker renews while the job runs, and a
job whose lease ran out can be claimed again.

A job that fails because a dependency is unavailable (StorageError: the blob store is full, the
metadata store is down) is not the job's fault: it is retried with capped backoff, and the attempt
does not count, so an outage never fails a request; it only delays it.

The loop wakes when :meth:`Worker.wake` is called (e.g. right after a request is stored), and
otherwise every ``poll_seconds`` to pick up retries that became due and to run housekeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from swell.errors import StorageError
from swell.logs import job_context
from swell.model import Job

if TYPE_CHECKING:
    from swell.backends.base import JobQueue

logger = logging.getLogger("swell.jobs")

#: Attempts before a job is given up (its handler records the failure).
MAX_ATTEMPTS = 5
#: Longest wait before a retry.
MAX_BACKOFF = timedelta(minutes=5)
#: Longest wait before retrying a job that met an unavailable dependency.
MAX_STORAGE_BACKOFF = timedelta(seconds=30)
#: How long a claim holds a job; the worker renews it every third of that while the job runs.
LEASE = timedelta(seconds=60)


class JobHandler(Protocol):
    #: The job kind this handler runs.
    kind: str

    async def run(self, job: Job) -> None:
        """Do the job and record its outcome. Raise to have it retried."""
        ...

    async def give_up(self, job: Job, reason: str) -> None:
        """Record the failure of a job that failed ``MAX_ATTEMPTS`` times."""
        ...

    async def housekeep(self) -> None:
        """Periodic cleanup (e.g. expired outputs)."""
        ...


def backoff(attempts: int) -> timedelta:
    """Delay before the next attempt: none after the first failure, then 2, 4, 8... seconds."""
    if attempts <= 1:
        return timedelta(0)
    return min(MAX_BACKOFF, timedelta(seconds=2 ** min(attempts - 1, 20)))


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        handlers: Sequence[JobHandler],
        *,
        clock: Callable[[], datetime],
        name: str = "worker",
        poll_seconds: float = 1.0,
        max_attempts: int = MAX_ATTEMPTS,
        sole_worker: bool = True,
    ) -> None:
        self.queue = queue
        self.handlers = {h.kind: h for h in handlers}
        self.clock = clock
        self.name = name
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        #: The only worker on its queue (the embedded store's lock guarantees it): a job found
        #: running is then an interrupted one of ours and goes back to the queue at once. With
        #: several workers, only an expired lease frees a job.
        self.sole_worker = sole_worker
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        #: Consecutive storage failures per job (they do not count as attempts).
        self._storage_failures: dict[int, int] = {}

    def wake(self) -> None:
        """Look for jobs now (no await: safe to call from a request handler)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run_forever(), name=f"swell-{self.name}")

    async def aclose(self, grace_seconds: float = 30.0) -> None:
        """Stop after the job in progress (cancel it after ``grace_seconds``; it is retried)."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace_seconds)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        finally:
            self._task = None

    async def run_forever(self) -> None:
        if self.sole_worker:
            with contextlib.suppress(StorageError):  # the loop below retries what fails
                requeued = await self.queue.requeue_running_jobs()
                if requeued:
                    logger.info("%s: %d interrupted job(s) queued again", self.name, requeued)
        while not self._stopping:
            self._wake.clear()  # before claiming, so a wake during the work is not lost
            try:
                await self.run_pending()
                await self.housekeep()
            except Exception as exc:
                if isinstance(exc, StorageError):
                    logger.warning("%s: job loop waits for storage: %s", self.name, exc.message)
                else:
                    logger.exception("%s: job loop failed; will retry", self.name)
                # Recording an outcome may have failed too: nothing runs now, so a job still
                # marked running was ours and goes back to the queue instead of waiting for its
                # lease to run out (only when no other worker shares the queue).
                if self.sole_worker:
                    with contextlib.suppress(Exception):
                        await self.queue.requeue_running_jobs()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()

    async def run_pending(self) -> int:
        """Run every job that is due now; returns how many were run."""
        count = 0
        while not self._stopping:
            now = self.clock()
            job = await self.queue.claim_job(self.name, now, now + LEASE)
            if job is None:
                break
            await self.run_job(job)
            count += 1
        return count

    async def run_job(self, job: Job) -> None:
        """Run one claimed job; every line logged meanwhile carries its id (swell.logs)."""
        with job_context(job.id):
            await self._run_job(job)

    async def _run_job(self, job: Job) -> None:
        handler = self.handlers.get(job.kind)
        if handler is None:
            logger.error("%s: no handler for job %d of kind %r", self.name, job.id, job.kind)
            await self.queue.retry_job(job.id, "no handler", self.clock() + MAX_BACKOFF)
            return
        if job.attempts > self.max_attempts:
            # Only a requeue at start gets here: the last attempt ended with the process and the
            # attempts are used up. Running it again could take the process down again.
            logger.error("%s: job %d was interrupted %d times", self.name, job.id, job.attempts - 1)
            await handler.give_up(job, f"Internal error after {job.attempts - 1} attempts")
            return
        renew = asyncio.create_task(self._renew(job))
        try:
            await handler.run(job)
            self._storage_failures.pop(job.id, None)
        except StorageError as exc:
            failures = self._storage_failures.get(job.id, 0) + 1
            self._storage_failures[job.id] = failures
            delay = min(MAX_STORAGE_BACKOFF, backoff(failures))
            logger.warning(
                "%s: job %d waits for storage (retry in %s): %s",
                self.name,
                job.id,
                delay,
                exc.message,
            )
            await self.queue.retry_job(
                job.id, f"{type(exc).__name__}: {exc}", self.clock() + delay, count_attempt=False
            )
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if job.attempts >= self.max_attempts:
                logger.exception("%s: job %d failed %d times", self.name, job.id, job.attempts)
                await handler.give_up(job, f"Internal error after {job.attempts} attempts")
            else:
                logger.warning(
                    "%s: job %d attempt %d failed: %s", self.name, job.id, job.attempts, reason
                )
                await self.queue.retry_job(job.id, reason, self.clock() + backoff(job.attempts))
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew

    async def _renew(self, job: Job) -> None:
        """Keep the job's lease while it runs."""
        while True:
            await asyncio.sleep(LEASE.total_seconds() / 3)
            try:
                held = await self.queue.extend_lease(job.id, self.name, self.clock() + LEASE)
            except StorageError as exc:
                logger.warning("%s: renewing job %d failed: %s", self.name, job.id, exc.message)
                continue
            if not held:
                logger.warning("%s: job %d is no longer leased to this worker", self.name, job.id)
                return

    async def housekeep(self) -> None:
        for handler in self.handlers.values():
            await handler.housekeep()
