"""Identity and user state: amplitude_id resolution, user and group properties, insert_id dedup.

The state lives in memory (a cache over the metadata store, loaded per batch in one round trip)
and is written behind in batches. It is a function of the log: every change is either carried by an
event record (user_id, device_id, amplitude_id, user_properties, $insert_id) or by a STATE frame,
so after a crash the saved state plus a replay of the newer frames gives back exactly the state the
acknowledged events saw. See docs/compatibility.md#identity for the rules copied from Amplitude.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from swell.dedup import DEDUP_WINDOW_MS, HOUR_MS, DedupWindow, dedup_key
from swell.enrich import RequestContext, build_record, new_uuids
from swell.model import EPOCH, DedupChunk, StateChanges, hour_of_ts, parse_ts
from swell.rollups import Fact, fact
from swell.userprops import apply_user_properties

if TYPE_CHECKING:
    from swell.backends.base import IdentityStore

#: amplitude_ids reserved from the metadata store at a time (at least one batch's worth).
AMPLITUDE_ID_BLOCK = 4096

__all__ = ["AMPLITUDE_ID_BLOCK", "DEDUP_WINDOW_MS", "EnrichedBatch", "Identity", "dedup_key"]

_ABSENT = 0
_EMPTY: dict[str, Any] = {}  # never mutated: apply_user_properties returns new dicts

#: Event types whose user/group properties change state (they are stored as rows too).
IDENTIFY_EVENT = "$identify"
GROUP_IDENTIFY_EVENT = "$groupidentify"


def _ms(dt: datetime) -> int:
    return int((dt - EPOCH).total_seconds() * 1000)


@dataclass(slots=True)
class EnrichedBatch:
    """Accepted events as stored, in order: their lines and the keys the part index needs."""

    lines: list[bytes] = field(default_factory=list)
    amplitude_ids: list[int] = field(default_factory=list)
    user_ids: list[str | None] = field(default_factory=list)
    #: Their rollup facts (swell.rollups.fact).
    facts: list[Fact] = field(default_factory=list)


class Identity:
    """Identity state of every project. Owned by the store; not thread-safe."""

    def __init__(self, *, max_cached: int = 1_000_000, max_dedup_keys: int = 50_000_000) -> None:
        #: amplitude_ids reserved from the metadata store and not handed out yet: [next, end).
        self._aid_next = 0
        self._aid_end = 0
        #: No amplitude_id below this may be handed out (every id seen is below it).
        self._aid_floor = 0
        #: Cached users, devices, property states and groups kept (each) once saved; the rest
        #: is read back from the metadata store when needed.
        self.max_cached = max_cached
        #: Bumped whenever cached state is dropped, so a load that awaited can tell.
        self._evictions = 0
        self._window_checked = -60.0
        self._window_cutoff = 0
        self._users: dict[tuple[int, str], int] = {}
        self._devices: dict[tuple[int, str], tuple[int, bool]] = {}
        self._props: dict[tuple[int, int], dict[str, Any]] = {}
        self._groups: dict[tuple[int, str, str], dict[str, Any]] = {}
        #: The insert_id dedup window (swell.dedup), loaded at start-up.
        self.dedup = DedupWindow(max_dedup_keys)
        self._loaded_props: set[tuple[int, int]] = set()
        self._dirty_users: set[tuple[int, str]] = set()
        self._dirty_devices: set[tuple[int, str]] = set()
        self._dirty_props: set[tuple[int, int]] = set()
        self._dirty_groups: set[tuple[int, str, str]] = set()

    # -- loading ---------------------------------------------------------------------------------

    async def prepare(
        self,
        store: IdentityStore,
        project_id: int,
        events: Sequence[Mapping[str, Any]],
        now: datetime,
        *,
        reserve: bool = True,
    ) -> list[int | None]:
        """Load whatever these events (or identify / group identify calls) need that is not
        cached yet, in one metadata round trip.

        With ``reserve``, also reserves enough amplitude_ids for every event to get a new one.
        Returns each event's dedup key (None without an ``insert_id``), for ``enrich``, which
        must follow without an await in between.
        """
        needed = len(events) if reserve else 0
        while True:
            generation = self._evictions
            keys, missing = self._missing(project_id, events)
            if missing is None:
                if self._aid_end - self._aid_next >= needed:
                    return keys
                await self._reserve_amplitude_ids(store, needed)
                continue
            users, devices, aids, groups = missing
            snap = await store.load_state(project_id, users, devices, aids, groups)
            # Another request may have filled a key meanwhile: never overwrite cached state.
            for uid in users:
                self._users.setdefault((project_id, uid), snap.users.get(uid, _ABSENT))
            for did in devices:
                self._devices.setdefault((project_id, did), snap.devices.get(did, (_ABSENT, True)))
            wanted = aids | set(snap.users.values()) | {d[0] for d in snap.devices.values()}
            for aid in wanted:
                pkey = (project_id, aid)
                if pkey not in self._loaded_props:
                    self._loaded_props.add(pkey)
                    if aid in snap.props:
                        self._props.setdefault(pkey, snap.props[aid])
            for gkey in groups:
                self._groups.setdefault((project_id, *gkey), snap.groups.get(gkey, {}))
            if self._evictions == generation and self._aid_end - self._aid_next >= needed:
                # Nothing was dropped while we waited, so all these events need is cached; the
                # caller enriches them before its next await.
                return keys

    async def _reserve_amplitude_ids(self, store: IdentityStore, needed: int) -> None:
        count = max(needed, AMPLITUDE_ID_BLOCK)
        first = await store.allocate_amplitude_ids(count, self._aid_floor)
        self._aid_next, self._aid_end = first, first + count
        self._aid_floor = max(self._aid_floor, first + count)

    def _missing(
        self, project_id: int, events: Sequence[Mapping[str, Any]]
    ) -> tuple[
        list[int | None],
        tuple[set[str], set[str], set[int], set[tuple[str, str]]] | None,
    ]:
        """Each event's dedup key, and the users, devices, property states and groups they need
        that are not cached (None when nothing is missing)."""
        users: set[str] = set()
        devices: set[str] = set()
        aids: set[int] = set()
        groups: set[tuple[str, str]] = set()
        keys: list[int | None] = []
        cached_users, cached_devices, loaded = self._users, self._devices, self._loaded_props
        for event in events:
            get = event.get
            uid, did = get("user_id"), get("device_id")
            if type(uid) is str:
                aid = cached_users.get((project_id, uid))
                if aid is None:
                    users.add(uid)
                elif aid and (project_id, aid) not in loaded:
                    aids.add(aid)
            if type(did) is str:
                device = cached_devices.get((project_id, did))
                if device is None:
                    devices.add(did)
                elif device[0] and (project_id, device[0]) not in loaded:
                    aids.add(device[0])
            # Only ingested events carry ``insert_id``; an imported record's ``$insert_id`` enters
            # the window in ``observe``, and only if it is recent enough to matter.
            insert_id = get("insert_id")
            key = None
            if type(insert_id) is str:
                key = dedup_key(project_id, did if type(did) is str else None, insert_id)
            keys.append(key)
            if "amplitude_id" in event:
                aid = get("amplitude_id")
                if type(aid) is int and (project_id, aid) not in loaded:
                    aids.add(aid)
            if "groups" in event or "group_type" in event:
                pairs = _group_pairs(get("groups"))
                group_type, group_value = get("group_type"), get("group_value")
                if group_type is not None and group_value is not None:  # a /groupidentify call
                    pairs = [*pairs, (str(group_type), [str(group_value)])]
                for gtype, gvalues in pairs:
                    for gvalue in gvalues:
                        if (project_id, gtype, gvalue) not in self._groups:
                            groups.add((gtype, gvalue))
        if users or devices or aids or groups:
            return keys, (users, devices, aids, groups)
        return keys, None

    # -- enrichment ------------------------------------------------------------------------------

    def enrich(
        self,
        events: Sequence[Mapping[str, Any]],
        ctx: RequestContext,
        dedup_keys: Sequence[int | None],
    ) -> EnrichedBatch:
        """Turn validated events into stored records; duplicates (by insert_id) are dropped.

        ``dedup_keys`` is what ``prepare`` returned for the same events.
        """
        project = ctx.project_id
        now_ms = _ms(ctx.server_upload)
        out = EnrichedBatch()
        lines, aids, uids, facts = out.lines, out.amplitude_ids, out.user_ids, out.facts
        users, devices, props = self._users, self._devices, self._props
        fresh = self.dedup.admit(project, dedup_keys, now_ms)
        processed = ctx.server_upload
        dumps = orjson.dumps
        for event, new, uuid in zip(events, fresh, new_uuids(len(events)), strict=True):
            if not new:
                continue
            get = event.get
            uid = get("user_id")
            did = get("device_id")
            # The common case, a known user on a device already linked to them, needs no writes.
            aid = users.get((project, uid), _ABSENT) if uid else _ABSENT
            if aid == _ABSENT or (did and devices.get((project, did)) != (aid, False)):
                aid = self._resolve(project, uid, did)
            pkey = (project, aid)
            state = props.get(pkey, _EMPTY)
            updated = False
            if "user_properties" in event:
                update = get("user_properties")
                if update and not get("$skip_user_properties_sync"):
                    new_state = apply_user_properties(state, update)
                    if new_state != state:
                        props[pkey] = state = new_state
                        self._dirty_props.add(pkey)
                        updated = True
            event_id = get("event_id")
            record = build_record(
                event,
                ctx,
                amplitude_id=aid,
                user_properties=state,
                group_properties=(
                    self._group_properties(project, event) if "groups" in event else _EMPTY
                ),
                # Validated as a finite number: 7.0 is event 7, as session_id is truncated too.
                event_id=(int(event_id) if event_id is not None else int(uuid[:8], 16) >> 2),
                uuid=uuid,
                processed=processed,
                user_properties_updated=updated,
            )
            lines.append(dumps(record))
            aids.append(aid)
            uids.append(uid)
            facts.append(fact(record))
        return out

    def cached_amplitude_id(self, project: int, user_id: str) -> int | None:
        """The amplitude_id this process holds for a user id, saved or not (None if not cached)."""
        aid = self._users.get((project, user_id), _ABSENT)
        return None if aid == _ABSENT else aid

    def _resolve(self, project: int, uid: str | None, did: str | None) -> int:
        """Amplitude's rules: user_id wins; a device's anonymous history joins its first user;
        anonymous events after a known user get that user's id; user ids are never merged."""
        if uid:
            aid = self._users.get((project, uid), _ABSENT)
            if aid == _ABSENT:
                device_aid, anonymous = (
                    self._devices.get((project, did), (_ABSENT, True)) if did else (_ABSENT, True)
                )
                aid = device_aid if device_aid != _ABSENT and anonymous else self._new_aid()
                self._users[(project, uid)] = aid
                self._dirty_users.add((project, uid))
            if did and self._devices.get((project, did)) != (aid, False):
                self._devices[(project, did)] = (aid, False)
                self._dirty_devices.add((project, did))
            return aid
        assert did, "validated events carry a user_id or a device_id"
        device_aid, _ = self._devices.get((project, did), (_ABSENT, True))
        if device_aid != _ABSENT:
            return device_aid
        aid = self._new_aid()
        self._devices[(project, did)] = (aid, True)
        self._dirty_devices.add((project, did))
        return aid

    def _new_aid(self) -> int:
        aid = self._aid_next
        assert aid < self._aid_end, "prepare reserves an amplitude_id for every event"
        self._aid_next += 1
        return aid

    def raise_amplitude_id_floor(self, floor: int) -> None:
        """Never hand out an amplitude_id below ``floor`` (saved state's next id, or an id seen)."""
        self._aid_floor = max(self._aid_floor, floor)
        if self._aid_next < floor:
            self._aid_next = min(floor, self._aid_end)  # an exhausted block reserves a new one

    @property
    def next_amplitude_id(self) -> int:
        """The id the next new user or device gets, if it is already reserved (else the floor)."""
        return self._aid_next if self._aid_next < self._aid_end else self._aid_floor

    def _group_properties(
        self, project: int, event: Mapping[str, Any]
    ) -> dict[str, dict[str, dict[str, Any]]]:
        result: dict[str, dict[str, dict[str, Any]]] = {}
        update = event.get("group_properties")
        is_group_identify = event.get("event_type") == GROUP_IDENTIFY_EVENT
        for gtype, gvalues in _group_pairs(event.get("groups")):
            for gvalue in gvalues:
                gkey = (project, gtype, gvalue)
                props = self._groups.get(gkey, {})
                if is_group_identify and isinstance(update, Mapping) and update:
                    props = apply_user_properties(props, update)
                    self._groups[gkey] = props
                    self._dirty_groups.add(gkey)
                result.setdefault(gtype, {})[gvalue] = props
        return result

    # -- identify calls --------------------------------------------------------------------------

    def identify(self, project: int, identifications: Sequence[Mapping[str, Any]]) -> bytes:
        """Apply /identify calls; returns the STATE frame body that replays them."""
        users, devices, props = [], [], []
        for ident in identifications:
            uid, did = ident.get("user_id"), ident.get("device_id")
            aid = self._resolve(project, uid, did)
            if uid:
                users.append([uid, aid])
            if did:
                devices.append([did, *self._devices[(project, did)]])
            update = ident.get("user_properties")
            if isinstance(update, Mapping) and update:
                pkey = (project, aid)
                self._props[pkey] = apply_user_properties(self._props.get(pkey, {}), update)
                self._dirty_props.add(pkey)
                props.append([aid, self._props[pkey]])
        return orjson.dumps({"users": users, "devices": devices, "props": props})

    def group_identify(self, project: int, identifications: Sequence[Mapping[str, Any]]) -> bytes:
        """Apply /groupidentify calls; returns the STATE frame body that replays them.

        Call ``prepare`` for the same identifications first, or saved group state is overwritten.
        """
        groups = []
        for ident in identifications:
            gkey = (project, str(ident["group_type"]), str(ident["group_value"]))
            update = ident.get("group_properties") or {}
            self._groups[gkey] = apply_user_properties(self._groups.get(gkey, {}), update)
            self._dirty_groups.add(gkey)
            groups.append([gkey[1], gkey[2], self._groups[gkey]])
        return orjson.dumps({"groups": groups})

    # -- replay and import -----------------------------------------------------------------------

    def observe(self, project: int, record: Mapping[str, Any], *, overwrite: bool = True) -> None:
        """Take the state an existing record shows (log replay, or import with overwrite=False)."""
        aid = record.get("amplitude_id")
        if not isinstance(aid, int):
            return
        if aid >= self._aid_floor or self._aid_next <= aid < self._aid_end:
            self.raise_amplitude_id_floor(aid + 1)
        uid, did = record.get("user_id"), record.get("device_id")
        if isinstance(uid, str) and uid:
            self._set(self._users, self._dirty_users, (project, uid), aid, overwrite)
        if isinstance(did, str) and did:
            value = (aid, not uid)
            self._set(self._devices, self._dirty_devices, (project, did), value, overwrite)
        props = record.get("user_properties")
        if isinstance(props, dict):
            self._loaded_props.add((project, aid))
            self._set(self._props, self._dirty_props, (project, aid), props, overwrite)
        insert_id = record.get("$insert_id")
        upload = record.get("server_upload_time")
        if isinstance(insert_id, str) and isinstance(upload, str):
            window_start = self._window_start()
            if (hour_of_ts(upload) + 1) * HOUR_MS <= window_start:
                return  # history (an import) from an hour before the window: it can never match
            seen = _ms(parse_ts(upload))
            if seen < window_start:
                return
            key = dedup_key(project, did if isinstance(did, str) else None, insert_id)
            self.dedup.remember(project, key, seen)

    @staticmethod
    def _set(cache: dict[Any, Any], dirty: set[Any], key: Any, value: Any, overwrite: bool) -> None:
        if overwrite or cache.get(key, _ABSENT) in (_ABSENT, (_ABSENT, True)):
            cache[key] = value
            dirty.add(key)

    def replay_state(self, project: int, body: bytes) -> None:
        """Re-apply a STATE frame written by identify or group_identify."""
        change = orjson.loads(body)
        for uid, aid in change.get("users", []):
            self._users[(project, uid)] = aid
            self._dirty_users.add((project, uid))
            self.raise_amplitude_id_floor(aid + 1)
        for did, aid, anonymous in change.get("devices", []):
            self._devices[(project, did)] = (aid, anonymous)
            self._dirty_devices.add((project, did))
        for aid, props in change.get("props", []):
            self._props[(project, aid)] = props
            self._loaded_props.add((project, aid))
            self._dirty_props.add((project, aid))
        for gtype, gvalue, props in change.get("groups", []):
            self._groups[(project, gtype, gvalue)] = props
            self._dirty_groups.add((project, gtype, gvalue))

    # -- persistence -----------------------------------------------------------------------------

    @property
    def dirty(self) -> int:
        return (
            len(self._dirty_users)
            + len(self._dirty_devices)
            + len(self._dirty_props)
            + len(self._dirty_groups)
            + self.dedup.dirty
        )

    def take_changes(self, lsn: int) -> StateChanges:
        """Everything changed since the last call, stamped with the log position it reflects."""
        changes = StateChanges(next_amplitude_id=self._aid_floor, lsn=lsn)
        changes.users = [(p, u, self._users[(p, u)]) for p, u in self._dirty_users]
        changes.devices = [(p, d, *self._devices[(p, d)]) for p, d in self._dirty_devices]
        changes.props = [(p, a, orjson.dumps(self._props[(p, a)])) for p, a in self._dirty_props]
        changes.groups = [
            (p, t, v, orjson.dumps(self._groups[(p, t, v)])) for p, t, v in self._dirty_groups
        ]
        changes.dedup = self.dedup.take_dirty()
        for dirty in (
            self._dirty_users,
            self._dirty_devices,
            self._dirty_props,
            self._dirty_groups,
        ):
            dirty.clear()
        return changes

    def restore_changes(self, changes: StateChanges) -> None:
        """Mark what ``take_changes`` returned as unsaved again (its save failed). Newer values
        taken since are kept: the next save writes them."""
        self._dirty_users.update((p, u) for p, u, _ in changes.users)
        self._dirty_devices.update((p, d) for p, d, _, _ in changes.devices)
        self._dirty_props.update((p, a) for p, a, _ in changes.props)
        self._dirty_groups.update((p, t, v) for p, t, v, _ in changes.groups)
        self.dedup.restore_dirty(changes.dedup)

    def _window_start(self) -> int:
        """Epoch ms before which an insert_id no longer deduplicates (cached for a minute)."""
        now = time.monotonic()
        if now >= self._window_checked + 60:
            self._window_checked = now
            self._window_cutoff = int(time.time() * 1000) - DEDUP_WINDOW_MS
        return self._window_cutoff

    def load_dedup(self, chunks: Iterable[DedupChunk]) -> None:
        """Take the saved dedup window (start-up only)."""
        self.dedup.load(chunks)

    def evict(self) -> int:
        """Drop saved (clean) cached state beyond ``max_cached`` entries per map, oldest first
        (a tenth more, so this runs rarely). Call right after a save; returns how many went."""
        dropped = 0
        caches: tuple[tuple[dict[Any, Any], set[Any]], ...] = (
            (self._users, self._dirty_users),
            (self._devices, self._dirty_devices),
            (self._props, self._dirty_props),
            (self._groups, self._dirty_groups),
        )
        for cache, dirty in caches:
            excess = len(cache) - self.max_cached
            if excess <= 0:
                continue
            wanted = excess + self.max_cached // 10
            victims = []
            for key in cache:  # insertion order: the oldest first
                if key not in dirty:
                    victims.append(key)
                    if len(victims) >= wanted:
                        break
            for key in victims:
                del cache[key]
            if cache is self._props:
                self._loaded_props.difference_update(victims)
            dropped += len(victims)
        if len(self._loaded_props) > self.max_cached:  # also marks users with no properties
            props = self._props
            self._loaded_props = {k for k in self._loaded_props if k in props}
            dropped += 1
        if dropped:
            self._evictions += 1
        return dropped

    def forget_dedup_before(self, before_ms: int) -> int:
        """Drop insert_ids first seen in hours wholly before ``before_ms`` (they can no longer
        match); returns how many were dropped."""
        return self.dedup.expire(before_ms)

    @property
    def dedup_window_size(self) -> int:
        return len(self.dedup)


def _group_pairs(groups: object) -> Iterable[tuple[str, list[str]]]:
    if not isinstance(groups, Mapping):
        return []
    pairs = []
    for gtype, value in groups.items():
        values = value if isinstance(value, list) else [value]
        pairs.append((str(gtype), [str(v) for v in values if v is not None]))
    return pairs
