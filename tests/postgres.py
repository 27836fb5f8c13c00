"""PostgreSQL for the tests: one database per test run, emptied before each test that uses it.

The server is the one at ``SWELL_TEST_POSTGRES_URL`` (default: the local server with trust auth,
``postgresql://postgres@127.0.0.1:5432/postgres``). A run creates ``swell_test_<pid>_<random>``
and drops it at the end; a test that asks for ``pg_url`` gets that database with every table
emptied and every partition dropped (faster than a database per test). Where no server answers,
those tests skip and say why.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ADMIN_URL = os.environ.get(
    "SWELL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass
class PostgresDatabase:
    admin_url: str
    name: str

    @property
    def url(self) -> str:
        params = conninfo_to_dict(self.admin_url)
        host, port = params.get("host", "127.0.0.1"), params.get("port", "5432")
        user = quote(str(params.get("user", "postgres")), safe="")
        if params.get("password"):
            user += ":" + quote(str(params["password"]), safe="")
        return f"postgresql://{user}@{host}:{port}/{self.name}"

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        params = conninfo_to_dict(self.admin_url)
        params["dbname"] = self.name
        return psycopg.connect(make_conninfo("", **params), autocommit=True)

    def reset(self) -> None:
        """Every table empty, every identity restarted and every partition gone; the schema (and
        its version) stays. DELETE, not TRUNCATE: on tables this small it is several times
        faster."""
        with self.connect() as conn:
            conn.execute(RESET)


#: One round trip: drop the partitions, empty the other tables (foreign keys not checked, so
#: in any order) and restart their identity sequences.
RESET = """
DO $$
DECLARE r record;
BEGIN
    SET LOCAL session_replication_role = replica;
    FOR r IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE c.relkind = 'r' LOOP
        EXECUTE format('DROP TABLE %I', r.relname);
    END LOOP;
    FOR r IN SELECT tablename FROM pg_tables
            WHERE schemaname = 'public' AND tablename <> 'swell_schema' LOOP
        EXECUTE format('DELETE FROM %I', r.tablename);
    END LOOP;
    FOR r IN SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' LOOP
        EXECUTE format('ALTER SEQUENCE %I RESTART', r.sequencename);
    END LOOP;
END $$
"""


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[PostgresDatabase]:
    params = conninfo_to_dict(ADMIN_URL)
    params.setdefault("connect_timeout", "3")
    try:
        admin = psycopg.connect(make_conninfo("", **params), autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(
            f"PostgreSQL is not reachable at {ADMIN_URL} ({exc}); set SWELL_TEST_POSTGRES_URL"
        )
    database = PostgresDatabase(ADMIN_URL, f"swell_test_{os.getpid()}_{uuid.uuid4().hex[:8]}")
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database.name)))
        try:
            yield database
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(database.name)
                )
            )


@pytest.fixture
def pg_url(postgres_database: PostgresDatabase) -> str:
    """The run's database, emptied: a test's own PostgreSQL metadata store."""
    postgres_database.reset()
    return postgres_database.url
