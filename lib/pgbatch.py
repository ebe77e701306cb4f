"""Batched statements through Django's own database connection, the cheap way on PostgreSQL.

The usage worker writes a batch of events with one statement per table: the rows go as one
array per column and the statement reads them with ``unnest()``, so it has the same text
whatever the batch's size. On PostgreSQL such a statement runs here on a psycopg cursor with
server-side binding (Django's cursors bind client-side: they would compose every array into
the SQL text and have the server parse it), its parameters in binary format (``%s`` in the
statements is sent as psycopg's ``%b``), and prepared on the connection the first time
(psycopg keeps it for the connection's life), so a batch costs the database no parsing and
the worker no quoting.

The cursor shares Django's connection and so its transaction (``transaction.atomic``) and
its ``on_commit`` hooks. Statements run this way bypass Django's query log and execute
wrappers. Every column goes as an array literal in text (see ``array``), so statements cast
every array parameter to its column's type (``%s::bigint[]``).

Prepared statements live in the database session: behind PgBouncer in transaction mode they
need PgBouncer 1.21 or later with ``max_prepared_statements`` set.

Elsewhere (SQLite in development) ``available()`` is false and callers take their ORM path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
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


def check_health() -> None:
    """Django's health check, as its own cursors run it on their first use in a request or task
    (``CONN_HEALTH_CHECKS``): a connection the database dropped since is closed, and the next
    use opens a new one. These cursors bypass Django's, so callers run it before their
    transaction; inside one it is left alone (closing there would break the transaction)."""
    if not connection.in_atomic_block:
        connection.close_if_health_check_failed()


@contextmanager
def cursor() -> Iterator[Any]:
    """A server-side binding cursor on Django's connection (PostgreSQL only)."""
    if not available():
        raise RuntimeError("lib.pgbatch needs PostgreSQL")
    check_health()
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # Django turns psycopg's prepared statements off (its own cursors bind client-side and
        # never use them); these statements ask for it, and only they are prepared.
        raw.prepare_threshold = _ONLY_WHEN_ASKED
    with psycopg.Cursor(raw) as cur:
        yield cur


@contextmanager
def pipeline() -> Iterator[None]:
    """The statements run in the block (on any of these cursors) go to the server without
    waiting for each other (psycopg's pipeline mode): a ``fetchall()`` waits for what was sent
    up to its statement, one round trip, and the block's end for the rest, one more, which is
    also where any of them raises its error. ``execute``'s count of rows is unknown there. The
    server still runs them one after the other, each as a statement of its own."""
    if not available():
        raise RuntimeError("lib.pgbatch needs PostgreSQL")
    check_health()
    connection.ensure_connection()
    with connection.connection.pipeline():
        yield


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime | date):
        return value.isoformat()  # (an aware datetime carries its offset)
    return str(value)  # an int or a Decimal


def _quoted(value: str | None) -> str:
    # An array literal's element in double quotes, where only a backslash and a double quote
    # are escaped: any text, an empty one or one spelt NULL included, reads back as itself.
    if value is None:
        return "NULL"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_BOOL = {True: "t", False: "f", None: "NULL"}

# Joins texts in one C-level pass: no element of an array literal holds it (PostgreSQL's text
# cannot hold a NUL), and a column whose joined texts show it too often falls back to quoting
# each element.
_SEPARATOR = "\x00"


def _texts(values: Sequence[str | None]) -> str:
    """A column of texts: each quoted at once where no element needs escaping or is NULL (the
    usual case: names, ids, statuses), else element by element (``_quoted``)."""
    try:
        joined = _SEPARATOR.join(values)  # type: ignore[arg-type]
    except TypeError:  # a NULL (None) among them
        joined = None
    if (
        joined is not None
        and '"' not in joined
        and "\\" not in joined
        and joined.count(_SEPARATOR) == len(values) - 1
    ):
        return '{"' + joined.replace(_SEPARATOR, '","') + '"}'
    return "{" + ",".join(map(_quoted, values)) + "}"


def _stamp(value: datetime | date | None) -> str:
    return "NULL" if value is None else value.isoformat()


def _number(value: int | Decimal | None) -> str:
    return "NULL" if value is None else str(value)


def array(values: Sequence[Any]) -> str:
    """One column's parameter: an array literal (text, which the statement casts), built with
    a few C-level string operations where psycopg would dump each element in Python. A column
    holds one type (and NULLs): its first value picks the way."""
    first = next((value for value in values if value is not None), None)
    if isinstance(first, str):
        return _texts(values)
    if isinstance(first, bool):
        return "{" + ",".join(map(_BOOL.__getitem__, values)) + "}"
    if isinstance(first, int | Decimal):
        if None in values:
            return "{" + ",".join(map(_number, values)) + "}"
        return "{" + ",".join(map(str, values)) + "}"
    if isinstance(first, datetime | date):
        # (an aware datetime carries its offset) A column of a few distinct times (a rollup's
        # hours, a batch's one clock reading) spells each once.
        distinct = set(values)
        if len(distinct) * 2 <= len(values):
            spelt = {value: _stamp(value) for value in distinct}
            return "{" + ",".join(map(spelt.__getitem__, values)) + "}"
        return "{" + ",".join(map(_stamp, values)) + "}"
    return "{" + ",".join(map(_literal, values)) + "}"


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[str]:
    """Rows turned into one parameter per column (``array``), ``width`` of them also when
    there is no row. Statements cast each to its column's type: ``%s::bigint[]``."""
    if not rows:
        return ["{}" for _ in range(width)]
    return [array(column) for column in zip(*rows, strict=True)]


@lru_cache(maxsize=256)
def _binary(sql: str) -> str:
    # psycopg's ``%b``: the parameter in binary format (``%s`` lets it choose, and it sends
    # lists as text, quoted element by element).
    return sql.replace("%s", "%b")


def execute(cur: Any, sql: str, params: Sequence[Any]) -> int:
    """Runs ``sql`` (``%s`` placeholders) prepared, with binary parameters and results;
    returns the rows it affected."""
    cur.execute(_binary(sql), params, prepare=True, binary=True)
    return int(cur.rowcount)


def fetch(cur: Any, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Runs ``sql`` as ``execute`` does; returns its rows."""
    cur.execute(_binary(sql), params, prepare=True, binary=True)
    return list(cur.fetchall())
