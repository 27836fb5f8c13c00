from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, strategies as st

from swell.userprops import OPERATIONS, apply_user_properties

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=5)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)
keys = st.sampled_from(["a", "b", "c", "plan", "tags"])
states = st.dictionaries(keys, values, max_size=5)
plain_updates = st.dictionaries(keys, values, max_size=5)
updates = st.dictionaries(
    st.sampled_from(OPERATIONS) | keys,
    st.dictionaries(keys, values, max_size=3) | values,
    max_size=6,
)


# -- examples ------------------------------------------------------------------------------------


def test_plain_keys_set() -> None:
    assert apply_user_properties({"a": 1, "b": 2}, {"b": 3, "c": [4]}) == {"a": 1, "b": 3, "c": [4]}


def test_set_and_set_once() -> None:
    state = {"plan": "free"}
    update = {"$setOnce": {"plan": "pro", "first_seen": "2025"}, "$set": {"name": "Ann"}}
    assert apply_user_properties(state, update) == {
        "plan": "free",
        "first_seen": "2025",
        "name": "Ann",
    }


def test_set_once_runs_before_set() -> None:
    assert apply_user_properties({}, {"$set": {"a": 2}, "$setOnce": {"a": 1}}) == {"a": 2}


def test_unset_removes_keys_whatever_the_value() -> None:
    assert apply_user_properties({"a": 1, "b": 2}, {"$unset": {"a": "-", "zz": "-"}}) == {"b": 2}


def test_unset_runs_before_set_once() -> None:
    assert apply_user_properties({"a": 1}, {"$unset": {"a": "-"}, "$setOnce": {"a": 2}}) == {"a": 2}


def test_clear_all_clears_first() -> None:
    assert apply_user_properties({"a": 1, "b": 2}, {"$clearAll": "-"}) == {}
    assert apply_user_properties({"a": 1}, {"$clearAll": "-", "$set": {"c": 3}}) == {"c": 3}


@pytest.mark.parametrize(
    ("state", "operand", "expected"),
    [
        ({}, 5, 5),
        ({"n": 2}, 3, 5),
        ({"n": 2}, -2.5, -0.5),
        ({"n": "2"}, 3, 5),  # numeric strings count (Amplitude accepts them)
        ({"n": 2}, "1.5", 3.5),
        ({"n": "1e2"}, 1, 101.0),
        ({"n": 2**63 - 1}, 1, float(2**63)),  # beyond int64 degrades to float
    ],
)
def test_add(state: dict[str, Any], operand: object, expected: float) -> None:
    result = apply_user_properties(state, {"$add": {"n": operand}})
    assert result["n"] == expected
    assert type(result["n"]) is type(expected)


@pytest.mark.parametrize(
    ("state", "operand"),
    [
        ({"n": "abc"}, 1),
        ({"n": [1]}, 1),
        ({"n": True}, 1),
        ({"n": 1}, "x"),
        ({"n": 1}, None),
        ({"n": 1}, False),
        ({"n": 1}, "1_000"),
        ({"n": 1}, "nan"),
        ({"n": 1}, " 1"),
    ],
)
def test_add_ignores_non_numeric(state: dict[str, Any], operand: object) -> None:
    assert apply_user_properties(state, {"$add": {"n": operand}}) == state


def test_append_and_prepend() -> None:
    state = {"tags": ["b"], "one": "x"}
    assert apply_user_properties(
        state, {"$append": {"tags": ["c", "d"], "one": "y", "new": 1}}
    ) == {
        "tags": ["b", "c", "d"],
        "one": ["x", "y"],
        "new": [1],
    }
    assert apply_user_properties(state, {"$prepend": {"tags": ["z", "a"], "one": "w"}}) == {
        "tags": ["z", "a", "b"],
        "one": ["w", "x"],
    }


def test_append_allows_duplicates() -> None:
    assert apply_user_properties({"t": [1]}, {"$append": {"t": 1}}) == {"t": [1, 1]}


def test_pre_and_post_insert_skip_present_values() -> None:
    state = {"t": ["a", "b"]}
    assert apply_user_properties(state, {"$postInsert": {"t": ["b", "c", "c", "d"]}}) == {
        "t": ["a", "b", "c", "d"]
    }
    assert apply_user_properties(state, {"$preInsert": {"t": ["x", "a", "y"]}}) == {
        "t": ["x", "y", "a", "b"]
    }
    assert apply_user_properties({}, {"$postInsert": {"t": "a"}}) == {"t": ["a"]}
    assert apply_user_properties({"t": "a"}, {"$preInsert": {"t": "a"}}) == {"t": ["a"]}


def test_insert_distinguishes_true_from_one() -> None:
    assert apply_user_properties({"t": [1]}, {"$postInsert": {"t": [True, 1.0]}}) == {
        "t": [1, True]
    }


def test_remove_removes_every_instance() -> None:
    state = {"t": ["a", "b", "a", "c"], "s": "a"}
    assert apply_user_properties(state, {"$remove": {"t": "a", "s": "a", "none": "a"}}) == {
        "t": ["b", "c"],
        "s": "a",  # scalars are left alone
    }
    assert apply_user_properties(state, {"$remove": {"t": ["a", "c"]}})["t"] == ["b"]


def test_operation_order_is_fixed() -> None:
    update = {
        "$remove": {"t": "x"},
        "$postInsert": {"t": "x"},
        "$append": {"t": "y"},
        "$add": {"n": 1},
        "$set": {"n": 10, "t": []},
        "$clearAll": "-",
    }
    # clearAll, set (n=10, t=[]), add (n=11), append (t=[y]), postInsert (t=[y, x]), remove x
    assert apply_user_properties({"old": 1}, update) == {"n": 11, "t": ["y"]}


def test_non_object_operation_values_are_ignored() -> None:
    state = {"a": 1}
    for op in ("$set", "$setOnce", "$add", "$append", "$unset", "$remove", "$postInsert"):
        assert apply_user_properties(state, {op: "a"}) == state
        assert apply_user_properties(state, {op: ["a"]}) == state


def test_plain_keys_apply_before_set_when_mixed() -> None:
    assert apply_user_properties({}, {"a": 1, "b": 1, "$set": {"b": 2}}) == {"a": 1, "b": 2}


# -- properties ----------------------------------------------------------------------------------


@given(state=states, props=plain_updates)
def test_set_then_read_back(state: dict[str, Any], props: dict[str, Any]) -> None:
    result = apply_user_properties(state, {"$set": props})
    assert {k: result[k] for k in props} == props
    assert {k: v for k, v in result.items() if k not in props} == {
        k: v for k, v in state.items() if k not in props
    }


@given(state=states, props=plain_updates)
def test_plain_keys_equal_set(state: dict[str, Any], props: dict[str, Any]) -> None:
    assert apply_user_properties(state, props) == apply_user_properties(state, {"$set": props})


@given(state=states, props=plain_updates)
def test_set_once_never_overwrites(state: dict[str, Any], props: dict[str, Any]) -> None:
    result = apply_user_properties(state, {"$setOnce": props})
    for key, value in state.items():
        assert result[key] == value
    for key, value in props.items():
        assert result[key] == state.get(key, value)


@given(start=st.integers(-(10**12), 10**12), a=st.integers(-(10**12), 10**12), b=st.integers())
def test_add_is_commutative_over_ints(start: int, a: int, b: int) -> None:
    b %= 10**12
    state = {"n": start}
    ab = apply_user_properties(apply_user_properties(state, {"$add": {"n": a}}), {"$add": {"n": b}})
    ba = apply_user_properties(apply_user_properties(state, {"$add": {"n": b}}), {"$add": {"n": a}})
    assert ab == ba == {"n": start + a + b}


@given(current=st.lists(scalars, max_size=5), operand=scalars | st.lists(scalars, max_size=5))
def test_append_grows_by_operand_count(current: list[Any], operand: Any) -> None:
    result = apply_user_properties({"t": current}, {"$append": {"t": operand}})
    count = len(operand) if isinstance(operand, list) else 1
    assert len(result["t"]) == len(current) + count
    assert result["t"][: len(current)] == current


@given(current=st.lists(scalars, max_size=5), operand=scalars | st.lists(scalars, max_size=5))
def test_prepend_keeps_existing_at_the_end(current: list[Any], operand: Any) -> None:
    result = apply_user_properties({"t": current}, {"$prepend": {"t": operand}})
    assert result["t"][len(result["t"]) - len(current) :] == current


@given(
    state=states,
    op=st.sampled_from(["$postInsert", "$preInsert"]),
    operand=values,
)
def test_inserts_are_idempotent(state: dict[str, Any], op: str, operand: Any) -> None:
    once = apply_user_properties(state, {op: {"t": operand}})
    assert apply_user_properties(once, {op: {"t": operand}}) == once


simple = st.integers(-3, 3) | st.sampled_from(["a", "b", ""])


@given(
    current=st.lists(simple, max_size=8),
    operand=simple | st.lists(simple, max_size=3),
)
def test_remove_leaves_no_instance(current: list[Any], operand: Any) -> None:
    result = apply_user_properties({"t": current}, {"$remove": {"t": operand}})
    removed = operand if isinstance(operand, list) else [operand]
    assert result["t"] == [item for item in current if item not in removed]
    assert not set(result["t"]) & set(removed)


@given(state=states, drop=st.lists(keys, max_size=3))
def test_unset_removes(state: dict[str, Any], drop: list[str]) -> None:
    result = apply_user_properties(state, {"$unset": dict.fromkeys(drop, "-")})
    assert result == {k: v for k, v in state.items() if k not in drop}


@given(state=states)
def test_clear_all_empties(state: dict[str, Any]) -> None:
    assert apply_user_properties(state, {"$clearAll": "-"}) == {}


@given(state=states, update=updates)
def test_never_mutates_inputs(state: dict[str, Any], update: dict[str, Any]) -> None:
    state_before, update_before = copy.deepcopy(state), copy.deepcopy(update)
    result = apply_user_properties(state, update)
    assert result is not state
    assert state == state_before
    assert update == update_before
