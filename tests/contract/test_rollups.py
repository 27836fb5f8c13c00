"""The rollups contract (backends/base.py ``Rollups``): written by ``add_part``, read exactly,
forgotten per user; run against every metadata backend."""

from __future__ import annotations

import pytest

from swell.backends.base import Metadata
from swell.errors import AlreadyExists
from swell.model import Rollup
from tests.contract.test_metadata import part, project

DAY = 86_400_000


def rollup(
    user_days: list[tuple[int, int]],
    countries: dict[tuple[int, int], list[str]] | None = None,
    sessions: tuple[tuple[int, int, int, int], ...] = (),
    events: tuple[tuple[int, str, int], ...] = (),
) -> Rollup:
    firsts: dict[int, int] = {}
    for day, aid in user_days:
        firsts[aid] = min(day, firsts.get(aid, day))
    groups = sorted(
        (day, "country", c, aid) for (day, aid), values in (countries or {}).items() for c in values
    )
    return Rollup(
        user_days=tuple(sorted(user_days)),
        user_groups=tuple(groups),
        first_days=tuple(sorted(firsts.items())),
        sessions=sessions,
        event_counts=events,
    )


async def test_distinct_users_stay_exact_across_parts(meta: Metadata) -> None:
    p = await project(meta)
    await meta.add_part(part(p, 10, 0), [], rollup=rollup([(100, 1), (100, 2), (101, 1)]))
    await meta.add_part(part(p, 11, 0), [], rollup=rollup([(100, 1), (100, 3), (102, 2)]))
    days = [(d, d) for d in range(99, 104)]
    assert await meta.count_users(p, days) == [{}, {"": 3}, {"": 1}, {"": 1}, {}]
    assert await meta.count_users(p, [(100, 102)]) == [{"": 3}]
    assert await meta.count_users(p, [(100, 100), (101, 102)]) == [{"": 3}, {"": 2}]
    assert await meta.count_users(p, days, new=True) == [{}, {"": 3}, {}, {}, {}]
    other = await meta.create_project("other", 1, "k2", "h2")
    assert await meta.count_users(other, days) == [{}] * 5


async def test_a_failed_add_part_writes_no_rollup(meta: Metadata) -> None:
    p = await project(meta)
    await meta.add_part(part(p, 10, 0), [], rollup=rollup([(100, 1)]))
    with pytest.raises(AlreadyExists):
        await meta.add_part(part(p, 10, 0), [], rollup=rollup([(100, 9), (105, 9)]))
    assert await meta.count_users(p, [(100, 105)]) == [{"": 1}]


async def test_first_days_move_to_the_earliest_day_seen(meta: Metadata) -> None:
    p = await project(meta)
    await meta.add_part(part(p, 10, 0), [], rollup=rollup([(105, 1), (105, 2)]))
    await meta.add_part(part(p, 11, 0), [], rollup=rollup([(103, 1)]))  # older history
    days = [(d, d) for d in range(103, 106)]
    assert await meta.count_users(p, days, new=True) == [{"": 1}, {}, {"": 1}]


async def test_grouped_counts_count_a_user_in_each_of_its_values(meta: Metadata) -> None:
    p = await project(meta)
    first = rollup([(100, 1), (100, 2)], {(100, 1): ["US"], (100, 2): ["DE"]})
    second = rollup([(100, 1), (101, 3)], {(100, 1): ["DE"], (101, 3): ["US"]})
    await meta.add_part(part(p, 10, 0), [], rollup=first)
    await meta.add_part(part(p, 11, 0), [], rollup=second)
    assert await meta.count_users(p, [(100, 100), (101, 101)], group_by="country") == [
        {"US": 1, "DE": 2},
        {"US": 1},
    ]
    assert await meta.count_users(p, [(100, 101)], group_by="country") == [{"US": 2, "DE": 2}]
    new = await meta.count_users(p, [(100, 100), (101, 101)], new=True, group_by="country")
    assert new == [{"US": 1, "DE": 2}, {"US": 1}]


async def test_sessions_widen_across_parts(meta: Metadata) -> None:
    p = await project(meta)
    start = 100 * DAY + 1000
    await meta.add_part(
        part(p, 10, 0), [], rollup=rollup([(100, 1)], sessions=((1, 7, start, start + 5000),))
    )
    await meta.add_part(
        part(p, 11, 0),
        [],
        rollup=rollup(
            [(100, 1)], sessions=((1, 7, start + 2000, start + 9000), (2, 7, start, start))
        ),
    )
    assert await meta.session_totals(p, 100, 101) == {100: (2, 9000)}
    assert await meta.session_totals(p, 101, 101) == {}


async def test_event_type_totals_add_up_and_list_every_type(meta: Metadata) -> None:
    p = await project(meta)
    await meta.add_part(
        part(p, 10, 0), [], rollup=rollup([], events=((100, "a", 2), (90, "old", 1)))
    )
    await meta.add_part(
        part(p, 11, 0), [], rollup=rollup([], events=((100, "a", 3), (101, "b\x00", 1)))
    )
    assert await meta.event_type_totals(p, 100, 101) == {"a": 5, "b\x00": 1, "old": 0}


async def test_forgetting_users_removes_them_from_every_rollup(meta: Metadata) -> None:
    p = await project(meta)
    start = 100 * DAY
    r = rollup(
        [(100, 1), (100, 2), (101, 1)],
        {(100, 1): ["US"], (100, 2): ["US"]},
        sessions=((1, 5, start, start + 4000), (2, 5, start, start + 1000)),
        events=((100, "a", 3),),
    )
    await meta.add_part(part(p, 10, 0), [], rollup=r)
    await meta.forget_user_rollups(p, [1], event_counts=[(100, "a", 2)])
    assert await meta.count_users(p, [(100, 100), (101, 101)]) == [{"": 1}, {}]
    assert await meta.count_users(p, [(100, 101)], new=True) == [{"": 1}]
    assert await meta.count_users(p, [(100, 100)], group_by="country") == [{"US": 1}]
    assert await meta.session_totals(p, 100, 100) == {100: (1, 1000)}
    assert await meta.event_type_totals(p, 100, 100) == {"a": 1}


async def test_annotations_are_kept_per_project_in_date_order(meta: Metadata) -> None:
    p = await project(meta)
    other = await meta.create_project("other", 1, "k2", "h2")
    late = await meta.add_annotation(p, "2024-05-02", "launch", "v2", "abc")
    early = await meta.add_annotation(p, "2024-05-01", "prep", "", None)
    await meta.add_annotation(other, "2024-05-01", "elsewhere", "", None)
    assert [a.label for a in await meta.annotations(p)] == ["prep", "launch"]
    assert late.id != early.id
    assert (late.date, late.details, late.chart_id) == ("2024-05-02", "v2", "abc")
