"""Random sequences of ingest, seal, checkpoint, export, DSAR reads, compaction, injected faults,
kills and restarts. Whatever the sequence, every acknowledged event is exported exactly once once
the faults end, sealed parts match their catalog size and CRC, and an export or DSAR that
answers at all answers with everything acknowledged before it (nothing is half-visible)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from swell.backends.faults import Faults
from swell.backends.filelog import FileLog
from swell.errors import StorageError
from swell.parts import decompress_blocks
from swell.settings import Settings
from swell.store import Store
from tests.conftest import crash, http_context
from tests.faults.conftest import PROJECT, FakeMonotonic, exported, hours_ago, open_store

USERS = [f"user-{n:02d}" for n in range(6)]
#: (operation, whether the call may take effect before the error).
OPERATIONS = [
    ("blobs.put", True),
    ("blobs.read", False),
    ("meta.add_part", True),
    ("meta.allocate_part_seq", True),
    ("meta.save_state", True),
    ("meta.load_state", False),
    ("meta.allocate_amplitude_ids", True),
    ("meta.parts", False),
    ("meta.user_blocks", False),
    ("meta.amplitude_ids_for_user", False),
    # part rewriting (compaction)
    ("meta.crowded_hours", False),
    ("meta.doom_blobs", True),
    ("meta.replace_parts", True),
    ("meta.take_doomed_blobs", True),
    ("meta.forget_blobs", True),
    ("blobs.delete", True),
]


@dataclass
class Totals:
    """What every run of the machine did, summed (bench/fault_trials.py reports it)."""

    trials: int = 0
    steps: int = 0
    faults_injected: int = 0
    kills: int = 0
    restarts: int = 0
    acknowledged: int = 0
    refused: int = 0
    lost: int = 0
    duplicated: int = 0
    #: Hours compaction merged.
    compacted: int = 0
    by_operation: Counter[str] = field(default_factory=Counter)


TOTALS = Totals()


class StoreUnderFaults(RuleBasedStateMachine):
    embedded = False

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="swell-faults-"))
        name = uuid.uuid4().hex
        base = Settings(
            data_dir=self.tmp,
            seal_check_seconds=3600,
            log_segment_bytes=2048,
            replaced_blob_grace_seconds=0,  # replaced blobs go at the next sweep
        )
        self.settings = (
            base
            if self.embedded
            else base.replace(metadata_url=f"memory://{name}", blob_url=f"memory://{name}")
        )
        self.faults = Faults()
        self.acked: Counter[str] = Counter()  # insert_id -> times acknowledged (always 1)
        self.by_user: dict[str, set[str]] = {u: set() for u in USERS}
        self.attempted: set[str] = set()  # refused batches: never acknowledged
        self.ids = itertools.count()
        self.store: Store | None = self.run(self._open())
        TOTALS.trials += 1

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _open(self) -> Store:
        try:
            store = await open_store(self.settings, self.faults)
        except StorageError:  # recovery itself met a fault: the operator fixes it, restarts
            self.faults.heal()
            store = await open_store(self.settings, self.faults)
        store.sealer.clock = FakeMonotonic()
        return store

    @property
    def live(self) -> Store:
        assert self.store is not None
        return self.store

    # -- client traffic ----------------------------------------------------------------------------

    @rule(hours_back=st.integers(0, 3), size=st.integers(1, 25), user=st.sampled_from(USERS))
    def ingest(self, hours_back: int, size: int, user: str) -> None:
        TOTALS.steps += 1
        batch = [
            {
                "user_id": user,
                "event_type": "Stateful",
                "insert_id": f"i{next(self.ids)}",
                "event_properties": {"pad": "p" * 300},
            }
            for _ in range(size)
        ]
        ids = {str(e["insert_id"]) for e in batch}
        try:
            self.run(self.live.ingest(batch, http_context(PROJECT, hours_ago(hours_back))))
        except StorageError:
            self.attempted |= ids
            TOTALS.refused += len(ids)
            return
        self.acked.update(ids)
        self.by_user[user] |= ids
        TOTALS.acknowledged += len(ids)

    @rule()
    def export(self) -> None:
        TOTALS.steps += 1
        try:
            stored = self.run(exported(self.live, hours=6))
        except StorageError:
            return
        self._check_complete(stored)

    @rule(user=st.sampled_from(USERS))
    def dsar_read(self, user: str) -> None:
        """What a DSAR job reads: seal the user's open parts, then their indexed blocks."""
        TOTALS.steps += 1
        try:
            found = self.run(self._user_lines(user))
        except StorageError:
            return
        assert self.by_user[user] <= found, sorted(self.by_user[user] - found)[:5]

    async def _user_lines(self, user: str) -> set[str]:
        store = self.live
        await store.seal_user(PROJECT, user, set())
        aids = await store.meta.amplitude_ids_for_user(PROJECT, user)
        found: set[str] = set()
        for located in await store.meta.user_blocks(PROJECT, aids):
            for block in located.blocks:
                start, end = located.part.block_range(block)
                raw = decompress_blocks(await store.blobs.read(located.part.key, start, end))
                for line in raw.splitlines():
                    record = orjson.loads(line)
                    if record["user_id"] == user:
                        found.add(record["$insert_id"])
        return found

    # -- the store's own work ----------------------------------------------------------------------

    @rule()
    def seal_everything(self) -> None:
        TOTALS.steps += 1
        with contextlib.suppress(StorageError):
            self.run(self.live.seal(lambda part: True))

    @rule(min_parts=st.integers(2, 4))
    def compact(self, min_parts: int) -> None:
        TOTALS.steps += 1
        with contextlib.suppress(StorageError):
            TOTALS.compacted += len(self.run(self.live.compact(min_parts=min_parts)))

    @rule()
    def checkpoint(self) -> None:
        TOTALS.steps += 1
        with contextlib.suppress(StorageError):
            self.run(self.live.checkpoint(force=True))

    @rule(seconds=st.sampled_from([0.0, 1.0, 40.0]))
    def background(self, seconds: float) -> None:
        TOTALS.steps += 1
        clock = self.live.sealer.clock
        assert isinstance(clock, FakeMonotonic)
        clock.now += seconds
        self.run(self.live._background_step())

    # -- faults --------------------------------------------------------------------------------

    @rule(
        which=st.sampled_from(OPERATIONS),
        error=st.sampled_from(["ENOSPC", "EIO", "timeout"]),
        times=st.none() | st.integers(1, 3),
        skip=st.integers(0, 2),
        after=st.booleans(),
    )
    def inject(
        self, which: tuple[str, bool], error: str, times: int | None, skip: int, after: bool
    ) -> None:
        op, may_take_effect = which
        self.faults.fail(op, error, times=times, skip=skip, after=after and may_take_effect)

    @rule()
    def heal(self) -> None:
        self.faults.heal()

    @rule()
    def kill(self) -> None:
        TOTALS.kills += 1
        self.run(crash(self.live))
        self.store = None
        self.store = self.run(self._open())

    @rule()
    def restart(self) -> None:
        TOTALS.restarts += 1
        self.run(self.live.aclose())
        self.store = None
        self.store = self.run(self._open())

    @precondition(lambda self: self.store is not None)
    @invariant()
    def unsealed_parts_keep_their_log_frames(self) -> None:
        pinned = self.live.sealer.pinned_lsn()
        log = self.live.log
        assert isinstance(log, FileLog)
        if pinned is not None and log._segments:
            assert log._segments[0][0] <= pinned, (log._segments[0][0], pinned)

    # -- the end -------------------------------------------------------------------------------

    def _check_complete(self, stored: Counter[str]) -> None:
        missing = set(self.acked) - set(stored)
        assert not missing, (
            f"{len(missing)} acknowledged events missing, e.g. {sorted(missing)[:3]}"
        )
        duplicated = [k for k, v in stored.items() if v > 1]
        assert not duplicated, duplicated[:3]
        assert set(stored) <= set(self.acked) | self.attempted

    def teardown(self) -> None:
        try:
            TOTALS.faults_injected += sum(self.faults.injected.values())
            TOTALS.by_operation.update(self.faults.injected)
            self.faults.heal()
            if self.store is not None:
                self.run(crash(self.live))  # the hardest end: no clean shutdown
            self.store = self.run(self._open())
            stored = self.run(exported(self.live, hours=6))
            TOTALS.lost += len(set(self.acked) - set(stored))
            TOTALS.duplicated += sum(v - 1 for v in stored.values() if v > 1)
            self._check_complete(stored)
            self.run(self.live.aclose())
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


class EmbeddedStoreUnderFaults(StoreUnderFaults):
    embedded = True


FAST = settings(
    max_examples=300,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStoreUnderFaults = StoreUnderFaults.TestCase
TestStoreUnderFaults.settings = FAST
TestEmbeddedStoreUnderFaults = EmbeddedStoreUnderFaults.TestCase
TestEmbeddedStoreUnderFaults.settings = settings(FAST, max_examples=40)
