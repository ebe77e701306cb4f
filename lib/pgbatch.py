"""Batched statements through Django's own database connection, the cheap way on PostgreSQL.

The usage worker writes a batch of events with one statement per table: the rows go as one
array per column and the statement reads them with ``unnest()``, so it has the same text
whatever the batch's size. On PostgreSQL such a statement runs here on a psycopg cursor with
server-side binding (Django's cursors bind client-side: they would compose every array into
the SQL text and have the server parse it), its parameters in binary format, and prepared on
the connection the first time (psycopg keeps the prepared statement for the connection's
life), so a batch costs the database one plan-free execution per table and the worker no
quoting at all.

The cursor shares Django's connection and so its transaction (``transaction.atomic``) and
its ``on_commit`` hooks. Statements run this way bypass Django's query log and execute
wrappers. psycopg sends a list of integers as the smallest array type that holds them, so
statements cast every array parameter to the column's type (``%s::bigint[]``).

Prepared statements live in the database session: behind PgBouncer in transaction mode they
need PgBouncer 1.21 or later with ``max_prepared_statements`` set.

Elsewhere (SQLite in development) ``available()`` is false and callers take their ORM path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import connection

try:  # (psycopg is the PostgreSQL driver: absent in an SQLite-only install)
    import psycopg
except ImportError:  # pragma: no cover
    psycopg = None  # type: ignore[assignment]


# A threshold no statement reaches: psycopg prepares only what is executed with prepare=True.
_ONLY_WHEN_ASKED = 2**62


def available() -> bool:
    """True when the default database is PostgreSQL (through psycopg 3)."""
    return connection.vendor == "postgresql" and psycopg is not None


@contextmanager
def cursor() -> Iterator[Any]:
    """A server-side binding cursor on Django's connection (PostgreSQL only)."""
    if not available():
        raise RuntimeError("lib.pgbatch needs PostgreSQL")
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # Django turns psycopg's prepared statements off (its own cursors bind client-side and
        # never use them); these statements ask for it, and only they are prepared.
        raw.prepare_threshold = _ONLY_WHEN_ASKED
    with psycopg.Cursor(raw) as cur:
        yield cur


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows turned into one list per column (``width`` columns, also when there is no row)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


def execute(cur: Any, sql: str, params: Sequence[Any]) -> int:
    """Runs ``sql`` prepared with binary parameters; returns the rows it affected."""
    cur.execute(sql, params, prepare=True, binary=True)
    return int(cur.rowcount)


def fetch(cur: Any, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Runs ``sql`` prepared with binary parameters and results; returns its rows."""
    cur.execute(sql, params, prepare=True, binary=True)
    return list(cur.fetchall())
