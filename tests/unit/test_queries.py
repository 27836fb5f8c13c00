"""The named-query files: the parser reads back what was written, refuses malformed files, and each
dialect's file and migrations load, every query is used by its backend."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from swell.backends.queries import (
    QueryFileError,
    load_migrations,
    load_queries,
    parse_queries,
)

BACKENDS = Path(__file__).parents[2] / "src" / "swell" / "backends"

names = st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True)
sql_lines = st.from_regex(r"[A-Za-z0-9(),*=%?{} ._']{1,40}", fullmatch=True).filter(
    lambda line: line.strip() != "" and not line.lstrip().startswith("--")
)
bodies = st.lists(sql_lines, min_size=1, max_size=4).map("\n".join)
comments = st.lists(st.from_regex(r"-- [a-z ]{0,30}", fullmatch=True), max_size=2)


@settings(max_examples=40)
@given(
    st.dictionaries(names, st.tuples(comments, bodies, comments), min_size=1, max_size=8),
    comments,
)
def test_parsed_queries_are_what_was_written(queries, header) -> None:
    text = "\n".join(header) + "\n"
    for name, (before, body, after) in queries.items():
        text += "\n".join([f"-- name: {name}", *before, body, *after, ""]) + "\n"
    parsed = parse_queries(text)
    assert dict(parsed) == {name: body.strip() for name, (_, body, _) in queries.items()}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("SELECT 1\n-- name: a\nSELECT 2", "before its first name"),
        ("-- name: a\nSELECT 1\n-- name: a\nSELECT 2", "twice"),
        ("-- name: a\n-- only a comment\n-- name: b\nSELECT 2", "has no SQL"),
        ("-- just a comment", "names no query"),
    ],
)
def test_malformed_query_files_are_refused(text: str, problem: str) -> None:
    with pytest.raises(QueryFileError, match=problem):
        parse_queries(text)


def test_an_unknown_name_says_which_file_was_searched() -> None:
    with pytest.raises(KeyError, match=r"sql/postgres/queries\.sql"):
        load_queries("postgres")["no_such_query"]


@pytest.mark.parametrize(
    ("dialect", "modules"),
    [("sqlite", ["sqlite.py"]), ("postgres", ["postgres.py", "postgres_cluster.py"])],
)
def test_every_query_of_a_dialect_is_used_by_its_backend(dialect: str, modules: list[str]) -> None:
    source = "".join((BACKENDS / module).read_text() for module in modules)
    unused = [name for name in load_queries(dialect) if f'"{name}"' not in source]
    assert unused == []
    assert [m.version for m in load_migrations(dialect)] == list(
        range(1, len(load_migrations(dialect)) + 1)
    )


def test_both_dialects_name_their_corresponding_statements_alike() -> None:
    shared = set(load_queries("sqlite")) & set(load_queries("postgres"))
    # The statements every metadata backend needs, under one name in both files.
    for name in ("insert_part", "parts", "claim_job", "extend_lease", "save_position", "find_key"):
        assert name in shared
