"""The insert_id dedup window: which (project, device, insert_id) keys were seen in the last 7 days.

Ingestion checks every event with an ``insert_id`` against the window, so it lives in memory and
is never looked up in the metadata store one key at a time. Memory per key is what bounds it:

* **frozen keys**, the bulk: one sorted ``int64`` array of keys and a parallel ``uint16`` array of
  the hour each key was first seen in (relative to a base hour): 10 bytes a key. A batch is
  checked with one vectorised binary search (numpy ``searchsorted``).
* **recent keys**: a Python set (about 76 bytes a key) and one ``array('q')`` per hour, for the
  keys seen since the last freeze. It is merged into the frozen arrays once it holds more than
  1/32 of the frozen keys (at least 65,536), so it adds about 2.5 bytes a key on average and the
  O(n) merge runs once per n/32 new keys.

The window slides an hour at a time (:meth:`DedupWindow.expire`): keys first seen in hours wholly
before the cut-off are dropped. It holds at most ``max_keys`` keys (``SWELL_DEDUP_MAX_KEYS``).
Beyond that the oldest hours are forgotten early, a tenth of the cap at a time, so the window
is shorter than 7 days until traffic falls; if only the current hour is left and it alone is over
the cap, new keys are not remembered (their events are stored, but a retry of them would be
stored again). Both are counted (:attr:`forgotten_early`, :attr:`not_remembered`) and logged as a
warning at most once a minute.

The metadata store saves keys by hour of first sight (``StateChanges.dedup``) and gives them back
as packed arrays per hour (``load_dedup`` -> ``DedupChunk``), so a start-up load is a copy and
one sort, not a Python object per key.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import logging
import sys
import time
from array import array
from collections.abc import Iterable, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from swell.model import DedupChunk

logger = logging.getLogger("swell.dedup")

DEDUP_WINDOW_MS: Final = 7 * 24 * 3600 * 1000
HOUR_MS: Final = 3600 * 1000
#: The recent set is merged into the frozen arrays when it holds this many keys, or 1/32 of
#: the frozen keys if that is more.
FREEZE_MIN_KEYS: Final = 65_536
FREEZE_FRACTION: Final = 32
#: Hour offsets are 16-bit: a key first seen more than this many hours after the base hour (7
#: years; only an imported record from the future can be) is filed under the last one.
_MAX_OFFSET: Final = 65_535
_WARN_EVERY_S: Final = 60.0

Int64Array = npt.NDArray[np.int64]
HourArray = npt.NDArray[np.uint16]
_NO_HITS: Final[frozenset[int]] = frozenset()


def dedup_key(project_id: int, device_id: str | None, insert_id: str) -> int:
    """A stable 64-bit key for (project, device, insert_id): what the dedup window remembers."""
    text = f"{project_id}\x00{device_id or ''}\x00{insert_id}"
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True
    )


def pack_keys(keys: Iterable[int]) -> bytes:
    """Keys as a DedupChunk carries them: little-endian int64."""
    packed = array("q", keys)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


class DedupWindow:
    """The keys of the last 7 days, in about 10 bytes each. Not thread-safe (the store's loop)."""

    def __init__(self, max_keys: int = 50_000_000) -> None:
        #: Most keys held; beyond it the oldest hours are forgotten early.
        self.max_keys = max_keys
        #: Keys dropped before their 7 days were up, and keys not remembered at all, because
        #: the window was full.
        self.forgotten_early = 0
        self.not_remembered = 0
        self._base = 0  # hour that offset 0 of _hours stands for
        self._keys: Int64Array = np.empty(0, np.int64)
        self._hours: HourArray = np.empty(0, np.uint16)
        self._frozen_by_hour: dict[int, int] = {}  # hour -> frozen keys first seen in it
        self._recent: set[int] = set()
        self._recent_by_hour: dict[int, array[int]] = {}
        #: Keys not saved yet: key -> (project, first seen ms).
        self._dirty: dict[int, tuple[int, int]] = {}
        self._warned = -_WARN_EVERY_S

    def __len__(self) -> int:
        return len(self._keys) + len(self._recent)

    def __contains__(self, key: int) -> bool:
        return key in self._recent or key in self._frozen_hits([key])

    @property
    def dirty(self) -> int:
        return len(self._dirty)

    def nbytes(self) -> int:
        """Bytes held by the frozen arrays (the recent set is not counted)."""
        return int(self._keys.nbytes + self._hours.nbytes)

    # -- ingestion ---------------------------------------------------------------------------------

    def admit(self, project: int, keys: Sequence[int | None], now_ms: int) -> list[bool]:
        """For each key, True if it is new (it is remembered, first seen at ``now_ms``) or None
        (no insert_id), False if the window holds it already (the event is a duplicate). A key
        that repeats within ``keys`` is new only the first time."""
        hits = self._frozen_hits(keys)
        recent, dirty = self._recent, self._dirty
        bucket: array[int] | None = None
        first_seen = (project, now_ms)
        fresh: list[bool] = []
        room = self.max_keys - len(self)
        for key in keys:
            if key is None:
                fresh.append(True)
                continue
            if key in recent or key in hits:
                fresh.append(False)
                continue
            if room <= 0:
                if not self._make_room(now_ms):
                    self.not_remembered += 1
                    self._warn()
                    fresh.append(True)
                    continue
                room = self.max_keys - len(self)
                bucket = None  # the current hour's bucket may have been replaced
            if bucket is None:
                bucket = self._bucket(now_ms // HOUR_MS)
            recent.add(key)
            bucket.append(key)
            dirty[key] = first_seen
            fresh.append(True)
            room -= 1
        self._maybe_freeze()
        return fresh

    def remember(self, project: int, key: int, seen_ms: int) -> bool:
        """Add a key first seen at ``seen_ms`` (log replay, import); False if the window holds it
        already (it counts from the first occurrence) or is full."""
        if key in self._recent or key in self._frozen_hits([key]):
            return False
        if len(self) >= self.max_keys and not self._make_room(seen_ms):
            self.not_remembered += 1
            self._warn()
            return False
        self._recent.add(key)
        self._bucket(seen_ms // HOUR_MS).append(key)
        self._dirty[key] = (project, seen_ms)
        self._maybe_freeze()
        return True

    def take_dirty(self) -> list[tuple[int, int, int]]:
        """(project, key, seen_ms) of every key remembered since the last call, to be saved."""
        rows = [(p, k, ms) for k, (p, ms) in self._dirty.items()]
        self._dirty.clear()
        return rows

    def restore_dirty(self, rows: Iterable[tuple[int, int, int]]) -> None:
        """Mark rows ``take_dirty`` returned as unsaved again (their save failed)."""
        for project, key, seen_ms in rows:
            self._dirty.setdefault(key, (project, seen_ms))

    # -- start-up ----------------------------------------------------------------------------------

    def load(self, chunks: Iterable[DedupChunk]) -> None:
        """Take the saved window (start-up, before any other call): newest hours first, up to
        ``max_keys``; older hours beyond the cap are counted as forgotten early."""
        self._load(chunks)
        # The sort's temporaries (about 3x the window) would otherwise stay in the heap, which
        # swell keeps freed memory in (cli.keep_freed_memory): hand them back once, here.
        _release_freed_memory()

    def _load(self, chunks: Iterable[DedupChunk]) -> None:
        by_hour: dict[int, list[Int64Array]] = {}
        for chunk in chunks:
            keys = np.frombuffer(chunk.keys, dtype="<i8").astype(np.int64, copy=False)
            if len(keys):
                by_hour.setdefault(chunk.hour, []).append(keys)
        runs: list[Int64Array] = []
        run_hours: list[int] = []
        total = len(self)
        for hour in sorted(by_hour, reverse=True):
            keys = np.concatenate(by_hour[hour]) if len(by_hour[hour]) > 1 else by_hour[hour][0]
            if total + len(keys) > self.max_keys:
                self.forgotten_early += sum(
                    len(k) for h in by_hour if h <= hour for k in by_hour[h]
                )
                self._warn()
                break
            runs.append(np.sort(keys))
            run_hours.append(hour)
            total += len(keys)
        if not runs:
            return
        runs.reverse()  # oldest hour first, so equal keys end up ordered by hour
        run_hours.reverse()
        base = min(run_hours)
        keys = np.concatenate([self._keys, *runs])
        offsets = [self._offsets(self._hours, base)]
        offsets += [
            np.full(len(run), min(hour - base, _MAX_OFFSET), np.uint16)
            for run, hour in zip(runs, run_hours, strict=True)
        ]
        hours = np.concatenate(offsets)
        # Sorted runs: the stable sort merges them instead of sorting from scratch.
        order = np.argsort(keys, kind="stable")
        self._keys, self._hours, self._base = keys[order], hours[order], base
        for run, hour in zip(runs, run_hours, strict=True):
            self._frozen_by_hour[hour] = self._frozen_by_hour.get(hour, 0) + len(run)
        self._drop_repeats()

    # -- sliding -----------------------------------------------------------------------------------

    def expire(self, before_ms: int) -> int:
        """Drop keys first seen in hours wholly before ``before_ms`` (they can no longer match);
        returns how many were dropped."""
        last_hour = before_ms // HOUR_MS  # keys of this hour may still be inside the window
        dropped = self._drop_recent(lambda hour: hour < last_hour)
        dropped += self._drop_frozen(lambda hour: hour < last_hour)
        self._maybe_freeze()
        return dropped

    def _make_room(self, now_ms: int) -> bool:
        """Forget the oldest hours (not the current one) until a tenth of the cap is free; False
        if nothing older than ``now_ms``'s hour is left to forget."""
        current = now_ms // HOUR_MS
        hours = sorted({*self._frozen_by_hour, *self._recent_by_hour} - {current})
        target = self.max_keys - max(1, self.max_keys // 10)
        counts = {
            h: self._frozen_by_hour.get(h, 0) + len(self._recent_by_hour.get(h, ())) for h in hours
        }
        chosen: set[int] = set()
        size = len(self)
        for hour in hours:
            if size <= target:
                break
            chosen.add(hour)
            size -= counts[hour]
        if not chosen:
            return False
        dropped = self._drop_recent(chosen.__contains__) + self._drop_frozen(chosen.__contains__)
        self.forgotten_early += dropped
        self._warn()
        return len(self) < self.max_keys

    # -- internals ---------------------------------------------------------------------------------

    def _bucket(self, hour: int) -> array[int]:
        bucket = self._recent_by_hour.get(hour)
        if bucket is None:
            bucket = self._recent_by_hour[hour] = array("q")
        return bucket

    def _frozen_hits(self, keys: Sequence[int | None]) -> frozenset[int] | set[int]:
        """The keys among ``keys`` that the frozen arrays hold."""
        frozen = self._keys
        if not len(frozen) or not keys:
            return _NO_HITS
        wanted = np.array(
            keys if None not in keys else [k for k in keys if k is not None], np.int64
        )
        if not len(wanted):
            return _NO_HITS
        at = np.searchsorted(frozen, wanted)
        np.minimum(at, len(frozen) - 1, out=at)
        found = wanted[frozen[at] == wanted]
        return set(found.tolist()) if len(found) else _NO_HITS

    def _maybe_freeze(self) -> None:
        if len(self._recent) >= max(FREEZE_MIN_KEYS, len(self._keys) // FREEZE_FRACTION):
            self.freeze()

    def freeze(self) -> None:
        """Merge the recent keys into the frozen arrays (O(frozen keys))."""
        if not self._recent:
            return
        hours = list(self._recent_by_hour)
        base = min([*hours, *self._frozen_by_hour]) if self._frozen_by_hour else min(hours)
        new_keys = np.concatenate(
            [np.frombuffer(self._recent_by_hour[h], dtype=np.int64) for h in hours]
        )
        new_hours = np.concatenate(
            [
                np.full(len(self._recent_by_hour[h]), min(h - base, _MAX_OFFSET), np.uint16)
                for h in hours
            ]
        )
        order = np.argsort(new_keys, kind="stable")
        new_keys, new_hours = new_keys[order], new_hours[order]
        old_hours = self._offsets(self._hours, base)
        # Merge two sorted arrays: each new key goes before the old keys not smaller than it.
        at = np.searchsorted(self._keys, new_keys) + np.arange(len(new_keys))
        size = len(self._keys) + len(new_keys)
        keys = np.empty(size, np.int64)
        offsets = np.empty(size, np.uint16)
        old = np.ones(size, bool)
        old[at] = False
        keys[at], offsets[at] = new_keys, new_hours
        keys[old], offsets[old] = self._keys, old_hours
        self._keys, self._hours, self._base = keys, offsets, base
        for hour in hours:
            self._frozen_by_hour[hour] = self._frozen_by_hour.get(hour, 0) + len(
                self._recent_by_hour[hour]
            )
        self._recent.clear()
        self._recent_by_hour.clear()

    def _offsets(self, hours: HourArray, base: int) -> HourArray:
        """``hours`` (offsets from self._base) as offsets from ``base`` (which is not later)."""
        shift = self._base - base
        if shift == 0 or not len(hours):
            return hours
        shifted = hours.astype(np.int64) + shift
        return np.minimum(shifted, _MAX_OFFSET).astype(np.uint16)

    def _drop_recent(self, doomed: Any) -> int:
        dropped = 0
        for hour in [h for h in self._recent_by_hour if doomed(h)]:
            bucket = self._recent_by_hour.pop(hour)
            self._recent.difference_update(bucket)
            dropped += len(bucket)
        return dropped

    def _drop_frozen(self, doomed: Any) -> int:
        hours = [h for h in self._frozen_by_hour if doomed(h)]
        if not hours:
            return 0
        offsets = np.array([h - self._base for h in hours if 0 <= h - self._base <= _MAX_OFFSET])
        keep = ~np.isin(self._hours, offsets.astype(np.uint16)) if len(offsets) else None
        before = len(self._keys)
        if keep is not None:
            self._keys, self._hours = self._keys[keep], self._hours[keep]
        for hour in hours:
            del self._frozen_by_hour[hour]
        return before - len(self._keys)

    def _drop_repeats(self) -> None:
        """A key saved under two hours (remembered again after it was forgotten early) is kept
        once, under its latest hour."""
        if len(self._keys) < 2:
            return
        same = self._keys[1:] == self._keys[:-1]
        if not same.any():
            return
        # Runs of equal keys are ordered by hour (stable sort of hour-ordered runs): keep the last.
        keep = np.ones(len(self._keys), bool)
        keep[:-1][same] = False
        for offset, count in zip(*np.unique(self._hours[~keep], return_counts=True), strict=True):
            hour = int(offset) + self._base
            self._frozen_by_hour[hour] -= int(count)
            if not self._frozen_by_hour[hour]:
                del self._frozen_by_hour[hour]
        self._keys, self._hours = self._keys[keep], self._hours[keep]

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._warned < _WARN_EVERY_S:
            return
        self._warned = now
        oldest = min([*self._frozen_by_hour, *self._recent_by_hour], default=None)
        span = "" if oldest is None else f"; it now starts {time.time() / 3600 - oldest:.0f} h ago"
        logger.warning(
            "the insert_id dedup window is full (SWELL_DEDUP_MAX_KEYS=%d)%s: %d keys forgotten "
            "before their 7 days, %d not remembered so far",
            self.max_keys,
            span,
            self.forgotten_early,
            self.not_remembered,
        )


def _release_freed_memory() -> None:
    """glibc's malloc_trim(0): return free heap pages to the kernel (nothing elsewhere)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass
