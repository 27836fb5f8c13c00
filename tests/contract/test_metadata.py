"""The metadata store contract: what every metadata backend does, run against each one.

The job queue's and the budget's contracts run over the same backends in
tests/unit/test_dsar_worker.py and tests/unit/test_ratelimit.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from swell.backends.base import Metadata
from swell.errors import AlreadyExists, Conflict, NotFound
from swell.model import DedupChunk, IndexEntry, Part, StateChanges
from tests.contract.conftest import Opener

T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)


def part(project_id: int, hour: int, seq: int, *, max_lsn: int = 0, crc: int = 1) -> Part:
    return Part(
        project_id=project_id,
        hour=hour,
        seq=seq,
        size=300,
        crc32=crc,
        events=3,
        min_time="2024-03-01 12:00:00.000000",
        max_time="2024-03-01 12:59:00.000000",
        max_lsn=max_lsn,
        block_offsets=(0, 100, 200),
    )


async def project(meta: Metadata) -> int:
    org = await meta.create_org("acme", "org-key", "org-hash")
    return await meta.create_project("web", org, "project-key", "project-hash")


# -- keys ----------------------------------------------------------------------------------------


async def test_keys_find_their_org_or_project(meta: Metadata) -> None:
    org = await meta.create_org("acme", "ok", "oh")
    web = await meta.create_project("web", org, "pk", "ph")
    found_org, found_project = await meta.find_key("ok"), await meta.find_key("pk")
    assert found_org is not None
    assert found_project is not None
    assert (found_org.org_id, found_org.project_id, found_org.secret_hash) == (org, None, "oh")
    assert (found_project.org_id, found_project.project_id) == (org, web)
    assert await meta.find_key("nope") is None
    assert await meta.all_orgs() == [org]
    assert await meta.org_projects(org) == [web]


async def test_a_project_needs_its_org(meta: Metadata) -> None:
    with pytest.raises(NotFound):
        await meta.create_project("web", 999, "pk", "ph")


async def test_rotating_replaces_every_key_of_that_owner_only(meta: Metadata) -> None:
    org = await meta.create_org("acme", "ok", "oh")
    web = await meta.create_project("web", org, "pk", "ph")
    await meta.rotate_key(org, web, "pk2", "ph2")
    assert await meta.find_key("pk") is None
    rotated = await meta.find_key("pk2")
    assert rotated is not None
    assert rotated.project_id == web
    assert await meta.find_key("ok") is not None  # the org's key is untouched
    await meta.rotate_key(org, None, "ok2", "oh2")
    assert await meta.find_key("ok") is None
    assert await meta.find_key("pk2") is not None


# -- catalog and user index --------------------------------------------------------------------


async def test_parts_come_back_in_hour_and_seq_order_within_the_range(meta: Metadata) -> None:
    p = await project(meta)
    for hour, seq in [(10, 1), (9, 0), (10, 0), (12, 0)]:
        await meta.add_part(part(p, hour, seq), [])
    assert [(x.hour, x.seq) for x in await meta.parts(p, 9, 11)] == [(9, 0), (10, 0), (10, 1)]
    assert await meta.parts(p + 1, 0, 99) == []
    stored = (await meta.parts(p, 12, 12))[0]
    assert stored == part(p, 12, 0)  # every field round-trips


async def test_add_part_is_all_or_nothing(meta: Metadata) -> None:
    p = await project(meta)
    entries = [IndexEntry(5, "alice", (0, 2), 2)]
    await meta.add_part(part(p, 10, 0), entries)
    with pytest.raises(AlreadyExists):
        await meta.add_part(part(p, 10, 0, crc=2), [IndexEntry(6, "bob", (1,), 1)])
    assert [x.crc32 for x in await meta.parts(p, 10, 10)] == [1]
    assert await meta.user_blocks(p, [6]) == []  # the refused part's index rows are not there
    assert await meta.amplitude_ids_for_user(p, "bob") == []
    located = await meta.user_blocks(p, [5])
    assert [(u.amplitude_id, u.part.seq, u.blocks, u.events) for u in located] == [
        (5, 0, (0, 2), 2)
    ]


async def test_part_numbers_are_never_handed_out_twice(meta_opener: Opener) -> None:
    meta = meta_opener.metadata()
    p = await project(meta)
    await meta.add_part(part(p, 10, 4), [])  # recorded before any allocation
    seqs = await asyncio.gather(*(meta.allocate_part_seq(p, 10) for _ in range(5)))
    assert sorted(seqs) == [5, 6, 7, 8, 9]
    assert await meta.allocate_part_seq(p, 11) == 0  # per (project, hour)
    await meta.aclose()
    reopened = meta_opener.metadata()
    try:
        assert await reopened.allocate_part_seq(p, 10) == 10  # an unused number stays used
    finally:
        await reopened.aclose()


async def test_watermarks_are_the_highest_sealed_lsn_per_hour(meta: Metadata) -> None:
    p = await project(meta)
    await meta.add_part(part(p, 10, 0, max_lsn=7), [])
    await meta.add_part(part(p, 10, 1, max_lsn=3), [])
    await meta.add_part(part(p, 11, 0, max_lsn=9), [])
    assert await meta.sealed_watermarks() == {(p, 10): 7, (p, 11): 9}


async def test_user_index_links_user_ids_to_every_amplitude_id(meta: Metadata) -> None:
    p = await project(meta)
    await meta.add_part(
        part(p, 10, 0), [IndexEntry(5, "alice", (0,), 1), IndexEntry(6, None, (1,), 1)]
    )
    await meta.add_part(part(p, 11, 0), [IndexEntry(7, "alice", (2,), 4)])
    await meta.save_state(StateChanges(users=[(p, "alice", 8)], lsn=1))
    assert await meta.amplitude_ids_for_user(p, "alice") == [5, 7, 8]
    located = await meta.user_blocks(p, [7, 5, 5])
    assert sorted((u.amplitude_id, u.part.hour) for u in located) == [(5, 10), (7, 11)]


# -- identity state ----------------------------------------------------------------------------


async def test_state_round_trips_and_its_position_only_moves_forward(meta_opener: Opener) -> None:
    meta = meta_opener.metadata()
    p = await project(meta)
    props = orjson.dumps({"plan": "pro"})
    await meta.save_state(
        StateChanges(
            users=[(p, "alice", 101)],
            devices=[(p, "d1", 101, False)],
            props=[(p, 101, props)],
            groups=[(p, "org", "acme", orjson.dumps({"seats": 5}))],
            lsn=20,
            next_amplitude_id=150,
        )
    )
    await meta.save_state(StateChanges(lsn=10, next_amplitude_id=120))  # an older position
    await meta.aclose()
    meta = meta_opener.metadata()
    try:
        lsn, next_id = await meta.state_position()
        assert (lsn, next_id >= 150) == (20, True)
        snap = await meta.load_state(p, ["alice", "bob"], ["d1"], [], [("org", "acme")])
        assert snap.users == {"alice": 101}
        assert snap.devices == {"d1": (101, False)}
        assert snap.props == {101: {"plan": "pro"}}
        assert snap.groups == {("org", "acme"): {"seats": 5}}
        other = await meta.load_state(p + 1, ["alice"], [], [101], [])
        assert (other.users, other.props) == ({}, {})
    finally:
        await meta.aclose()


async def test_amplitude_id_blocks_are_disjoint_and_above_every_floor(meta: Metadata) -> None:
    blocks = await asyncio.gather(*(meta.allocate_amplitude_ids(100, 0) for _ in range(4)))
    ranges = sorted((first, first + 100) for first in blocks)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ranges))
    top = ranges[-1][1]
    assert await meta.allocate_amplitude_ids(10, top + 1000) >= top + 1000
    await meta.save_state(StateChanges(next_amplitude_id=10**13, lsn=1))  # an imported id
    assert await meta.allocate_amplitude_ids(1, 0) >= 10**13
    _, next_id = await meta.state_position()
    assert next_id >= 10**13 + 1


async def test_the_dedup_window_is_kept_by_hour_and_pruned_by_hour(meta: Metadata) -> None:
    hour = 3_600_000

    def keys(chunks: list[DedupChunk]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for chunk in chunks:
            out.setdefault(chunk.hour, []).extend(array_of(chunk.keys))
        return {h: sorted(v) for h, v in out.items()}

    rows = [(1, 11, 3 * hour + 5), (1, 12, 4 * hour + 5), (2, 13, 4 * hour + 9)]
    await meta.save_state(StateChanges(dedup=rows, lsn=1))
    # A later checkpoint adds to an hour already saved: the hour holds both.
    await meta.save_state(StateChanges(dedup=[(1, -(2**63), 4 * hour + 20)], lsn=2))
    wanted = {4: [-(2**63), 12, 13]}
    assert keys(await meta.load_dedup(4 * hour)) == wanted
    assert await meta.prune_dedup(4 * hour) == 1  # hour 3 went whole
    assert keys(await meta.load_dedup(0)) == wanted


def array_of(packed: bytes) -> list[int]:
    """Keys as DedupChunk packs them (little-endian int64)."""
    return [
        int.from_bytes(packed[i : i + 8], "little", signed=True) for i in range(0, len(packed), 8)
    ]


# -- DSAR requests -------------------------------------------------------------------------------


async def test_a_dsar_request_moves_through_its_states(meta: Metadata) -> None:
    org = await meta.create_org("acme", "ok", "oh")
    created = await meta.create_dsar(org, "alice", None, "2024-01-01", "2024-01-31", T0)
    assert (created.status, created.outputs, created.expires_at) == ("staging", 0, None)
    assert await meta.get_dsar(created.id + 100) is None
    job = await meta.claim_job("w", T0, T0 + timedelta(minutes=1))
    assert job is not None
    assert job.ref == created.id
    await meta.start_dsar(created.id)
    await meta.reserve_dsar_outputs(created.id, 3)
    await meta.finish_dsar(job.id, created.id, 2, T0 + timedelta(days=2))
    done = await meta.get_dsar(created.id)
    assert done is not None
    assert (done.status, done.outputs, done.slots) == ("done", 2, 3)
    assert done.expires_at == T0 + timedelta(days=2)
    assert await meta.expired_dsars(T0 + timedelta(days=1)) == []
    assert [r.id for r in await meta.expired_dsars(T0 + timedelta(days=2))] == [created.id]
    await meta.mark_dsar_purged(created.id)
    assert await meta.expired_dsars(T0 + timedelta(days=3)) == []
    await meta.start_dsar(created.id)  # a finished request is left alone
    again = await meta.get_dsar(created.id)
    assert again is not None
    assert again.status == "done"
    assert again.purged


async def test_a_failed_dsar_keeps_its_reason_and_no_outputs(meta: Metadata) -> None:
    org = await meta.create_org("acme", "ok", "oh")
    created = await meta.create_dsar(org, None, 42, "2024-01-01", "2024-01-31", T0)
    job = await meta.claim_job("w", T0, T0 + timedelta(minutes=1))
    assert job is not None
    await meta.fail_dsar(job.id, created.id, "too many events")
    failed = await meta.get_dsar(created.id)
    assert failed is not None
    assert (failed.status, failed.fail_reason, failed.outputs) == ("failed", "too many events", 0)
    assert await meta.claim_job("w", T0 + timedelta(days=1), T0 + timedelta(days=2)) is None


# -- listing and deleting ------------------------------------------------------------------------


async def test_orgs_and_projects_are_listed_with_what_they_hold(meta: Metadata) -> None:
    acme = await meta.create_org("acme", "ok1", "h")
    other = await meta.create_org("other", "ok2", "h")
    web = await meta.create_project("web", acme, "pk1", "h")
    ios = await meta.create_project("ios", acme, "pk2", "h")
    await meta.add_part(part(web, 10, 0), [])
    await meta.add_part(part(web, 11, 0), [])
    orgs = await meta.list_orgs()
    assert [(o.id, o.name, o.projects) for o in orgs] == [(acme, "acme", 2), (other, "other", 0)]
    assert all(o.created_at for o in orgs)
    projects = await meta.list_projects()
    assert [(p.id, p.org_id, p.name, p.parts, p.events) for p in projects] == [
        (web, acme, "web", 2, 6),
        (ios, acme, "ios", 0, 0),
    ]
    assert await meta.list_projects(other) == []


async def test_only_an_empty_project_can_be_deleted(meta: Metadata) -> None:
    org = await meta.create_org("acme", "ok", "h")
    full = await meta.create_project("full", org, "pk1", "h")
    empty = await meta.create_project("empty", org, "pk2", "h")
    await meta.add_part(part(full, 10, 0), [])
    await meta.save_state(StateChanges(users=[(empty, "alice", 5)], lsn=1))
    with pytest.raises(Conflict):
        await meta.delete_project(full)
    await meta.delete_project(empty)
    assert [p.id for p in await meta.list_projects()] == [full]
    assert await meta.find_key("pk2") is None
    assert await meta.amplitude_ids_for_user(empty, "alice") == []
    with pytest.raises(NotFound):
        await meta.delete_project(empty)
    assert await meta.find_key("pk1") is not None
    # A deleted project's id is not given again (its insert_ids may be in a dedup window).
    assert await meta.create_project("next", org, "pk3", "h") == empty + 1


async def test_import_keys_are_kept_per_hour_with_their_part(meta: Metadata) -> None:
    p = await project(meta)
    await meta.add_part(part(p, 10, 0), [], import_keys=[1, 2, 3])
    await meta.add_part(part(p, 10, 1), [], import_keys=[4])
    await meta.add_part(part(p, 11, 0), [])
    with pytest.raises(AlreadyExists):
        await meta.add_part(part(p, 10, 1), [], import_keys=[99])
    assert await meta.import_keys(p, 10) == {1, 2, 3, 4}
    assert await meta.import_keys(p, 11) == set()


async def test_parts_before_an_hour_are_dropped_with_their_index(meta: Metadata) -> None:
    p = await project(meta)
    old_hour, month_later = 10, 10 + 24 * 40  # two months of user-index tables
    await meta.add_part(part(p, old_hour, 0), [IndexEntry(5, "alice", (0,), 1)], import_keys=[7])
    await meta.add_part(part(p, month_later, 0), [IndexEntry(5, "alice", (1,), 1)])
    await meta.add_part(part(p, month_later + 1, 0), [IndexEntry(6, "bob", (0,), 1)])
    dropped = await meta.drop_parts_before(month_later + 1)
    assert [(d.hour, d.seq) for d in dropped] == [(old_hour, 0), (month_later, 0)]
    assert [(x.hour, x.seq) for x in await meta.parts(p, 0, 10**6)] == [(month_later + 1, 0)]
    assert await meta.user_blocks(p, [5]) == []
    assert [u.amplitude_id for u in await meta.user_blocks(p, [6])] == [6]
    assert await meta.import_keys(p, old_hour) == set()
    assert await meta.drop_parts_before(month_later + 1) == []


# -- part rewriting (compaction, deletion) ------------------------------------------------------


def rewritten(project_id: int, hour: int, seq: int, gen: int, *, crc: int = 7) -> Part:
    return dataclasses.replace(part(project_id, hour, seq, max_lsn=9, crc=crc), gen=gen)


async def test_replacing_parts_swaps_rows_and_index_in_one_step(meta: Metadata) -> None:
    p = await project(meta)
    old = [part(p, 10, 0, max_lsn=4), part(p, 10, 1, max_lsn=9), part(p, 10, 2, max_lsn=6)]
    for i, old_part in enumerate(old):
        await meta.add_part(
            old_part, [IndexEntry(500 + i, f"u{i}", (0,), 1), IndexEntry(900, None, (1,), 2)]
        )
    await meta.add_part(part(p, 11, 0), [IndexEntry(900, None, (2,), 1)], import_keys=[1])
    await meta.add_part(part(p, 10, 5), [], import_keys=[])  # absent from the rewrite: stays
    new = rewritten(p, 10, 0, gen=6)
    assert new.key != new.name
    assert new.name == old[0].name
    await meta.doom_blobs([new.key], T0 + timedelta(days=1))
    await meta.replace_parts(
        old, [(new, [IndexEntry(900, "u9", (0, 1), 6)])], [500, 501, 502, 900], T0
    )
    assert await meta.parts(p, 10, 10) == [new, part(p, 10, 5)]
    blocks = await meta.user_blocks(p, [500, 501, 502, 900])
    assert sorted((b.amplitude_id, b.part.hour, b.part.seq, b.blocks) for b in blocks) == [
        (900, 10, 0, (0, 1)),
        (900, 11, 0, (2,)),
    ]
    assert (await meta.user_blocks(p, [900]))[0].part == new
    assert await meta.amplitude_ids_for_user(p, "u9") == [900]
    assert await meta.amplitude_ids_for_user(p, "u1") == [501]  # links are not the rewrite's
    assert (await meta.sealed_watermarks())[(p, 10)] == 9
    # The old blobs are doomed at the grace's end, the new one is spared.
    assert await meta.take_doomed_blobs(T0 - timedelta(seconds=1), T0) == []
    later = T0 + timedelta(days=2)
    taken = await meta.take_doomed_blobs(later, later + timedelta(minutes=1))
    assert sorted(taken) == sorted(o.key for o in old)
    assert await meta.take_doomed_blobs(later, later) == []  # taken: not again until retry_at
    await meta.forget_blobs(taken)
    assert await meta.take_doomed_blobs(later + timedelta(days=1), later) == []
    # A later seal of the hour still gets a number above every one handed out.
    assert await meta.allocate_part_seq(p, 10) >= 6


async def test_a_stale_rewrite_changes_nothing(meta: Metadata) -> None:
    p = await project(meta)
    old = [part(p, 10, 0), part(p, 10, 1)]
    for old_part in old:
        await meta.add_part(old_part, [IndexEntry(500, None, (0,), 1)], import_keys=[old_part.seq])
    first = rewritten(p, 10, 0, gen=2)
    second = rewritten(p, 10, 0, gen=3, crc=8)
    await meta.doom_blobs([first.key, second.key], T0 + timedelta(days=1))
    await meta.replace_parts(old, [(first, [IndexEntry(500, None, (0,), 2)])], [500], T0)
    with pytest.raises(Conflict):  # the old parts went with the first rewrite
        await meta.replace_parts(old, [(second, [IndexEntry(500, None, (0,), 2)])], [500], T0)
    with pytest.raises(Conflict):  # same seq, other gen: not the part as recorded
        await meta.replace_parts([dataclasses.replace(first, gen=99)], [(second, [])], [500], T0)
    assert await meta.parts(p, 10, 10) == [first]
    assert [b.part for b in await meta.user_blocks(p, [500])] == [first]
    assert await meta.import_keys(p, 10) == {0, 1}  # import keys stay with the hour


async def test_a_rewrite_whose_blob_was_swept_is_refused(meta: Metadata) -> None:
    p = await project(meta)
    old = part(p, 10, 0)
    await meta.add_part(old, [IndexEntry(500, None, (0,), 1)])
    new = rewritten(p, 10, 0, gen=1)
    await meta.doom_blobs([new.key], T0)
    assert await meta.take_doomed_blobs(T0, T0 + timedelta(minutes=1)) == [new.key]  # a sweep
    with pytest.raises(Conflict):
        await meta.replace_parts([old], [(new, [])], [500], T0)
    assert await meta.parts(p, 10, 10) == [old]


async def test_a_rewrite_may_leave_no_part(meta: Metadata) -> None:
    p = await project(meta)
    old = part(p, 10, 0)
    await meta.add_part(old, [IndexEntry(500, "gone", (0,), 3)], import_keys=[42])
    await meta.replace_parts([old], [], [500], T0)
    assert await meta.parts(p, 10, 10) == []
    assert await meta.user_blocks(p, [500]) == []
    assert await meta.import_keys(p, 10) == {42}
    assert await meta.take_doomed_blobs(T0, T0) == [old.key]


async def test_doomed_blobs_are_taken_once_in_due_order(meta: Metadata) -> None:
    await meta.doom_blobs(["a/1", "a/2"], T0 + timedelta(seconds=2))
    await meta.doom_blobs(["a/3"], T0 + timedelta(seconds=1))
    await meta.doom_blobs(["a/2"], T0 + timedelta(seconds=5))  # doomed again: the new time
    far = T0 + timedelta(days=9)
    assert await meta.take_doomed_blobs(T0 + timedelta(seconds=3), far, limit=1) == ["a/3"]
    assert await meta.take_doomed_blobs(T0 + timedelta(seconds=3), far) == ["a/1"]
    assert await meta.take_doomed_blobs(T0 + timedelta(seconds=10), far) == ["a/2"]
    # A sweep that died: its keys are taken again once their retry time comes.
    assert await meta.take_doomed_blobs(far, far) == ["a/1", "a/2", "a/3"]
    await meta.forget_blobs(["a/1", "a/2", "a/3"])
    assert await meta.take_doomed_blobs(far + timedelta(days=1), far) == []


async def test_a_taken_blob_is_never_spared_until_doomed_again(meta: Metadata) -> None:
    p = await project(meta)
    old = part(p, 10, 0)
    await meta.add_part(old, [])
    new = rewritten(p, 10, 0, gen=1)
    await meta.doom_blobs([new.key], T0)
    await meta.take_doomed_blobs(T0, T0 + timedelta(days=1))
    with pytest.raises(Conflict):
        await meta.replace_parts([old], [(new, [])], [], T0)
    await meta.doom_blobs([new.key], T0 + timedelta(days=1))  # written again, doomed again
    await meta.replace_parts([old], [(new, [])], [], T0)
    assert await meta.parts(p, 10, 10) == [new]


async def test_crowded_hours_are_the_ended_hours_with_many_parts(meta: Metadata) -> None:
    p = await project(meta)
    for hour, count in ((5, 4), (6, 1), (7, 5), (9, 6)):
        for seq in range(count):
            await meta.add_part(part(p, hour, seq), [])
    assert await meta.crowded_hours(9, 4) == [(p, 5), (p, 7)]
    assert await meta.crowded_hours(10, 5) == [(p, 7), (p, 9)]
    assert await meta.crowded_hours(10, 4, limit=1) == [(p, 5)]


async def test_crowded_hours_of_one_project(meta: Metadata) -> None:
    p = await project(meta)
    q = await meta.create_project("app", 1, "other-key", "other-hash")
    for owner in (p, q):
        for seq in range(3):
            await meta.add_part(part(owner, 5, seq), [])
    assert await meta.crowded_hours(9, 3) == [(p, 5), (q, 5)]
    assert await meta.crowded_hours(9, 3, project_id=q) == [(q, 5)]


async def test_an_hour_made_only_of_rewritten_parts_is_not_crowded(meta: Metadata) -> None:
    p = await project(meta)
    old = [part(p, 5, seq) for seq in range(3)]
    for old_part in old:
        await meta.add_part(old_part, [])
    new = [rewritten(p, 5, 0, gen=3), rewritten(p, 5, 1, gen=4)]
    await meta.doom_blobs([n.key for n in new], T0 + timedelta(days=1))
    await meta.replace_parts(old, [(n, []) for n in new], [], T0)
    assert await meta.crowded_hours(9, 2) == []
    await meta.add_part(part(p, 5, 5), [])  # a late seal: crowded again
    assert await meta.crowded_hours(9, 2) == [(p, 5)]


# -- operating: job counts -----------------------------------------------------------------------


async def test_jobs_are_counted_by_kind_and_status(meta: Metadata) -> None:
    assert await meta.job_counts() == {}
    org = await meta.create_org("acme", "ok", "oh")
    for user in ("a", "b", "c"):
        await meta.create_dsar(org, user, None, "2024-01-01", "2024-01-31", T0)
    assert await meta.job_counts() == {("dsar", "queued"): 3}
    first = await meta.claim_job("w", T0, T0 + timedelta(minutes=1))
    second = await meta.claim_job("w", T0, T0 + timedelta(minutes=1))
    assert first is not None
    assert second is not None
    await meta.fail_dsar(first.id, first.ref, "too many events")
    assert await meta.job_counts() == {
        ("dsar", "queued"): 1,
        ("dsar", "running"): 1,
        ("dsar", "failed"): 1,
    }
    await meta.complete_job(second.id)
    assert await meta.job_counts() == {
        ("dsar", "queued"): 1,
        ("dsar", "done"): 1,
        ("dsar", "failed"): 1,
    }
