"""Hypothesis strategies shared by the ingest tests."""

from __future__ import annotations

from hypothesis import strategies as st

#: Any JSON value an SDK could send: integers up to uint64 (orjson's range), nested a few levels.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
