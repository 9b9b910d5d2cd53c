"""The SQL store every part of expertbot shares (SQLite by default, PostgreSQL by URL).

Every statement runs inside `transaction(engine, doing)` (writes) or `connection(engine, doing)`
(reads): a SQL error in either becomes a `DatabaseError` of one line that says what was being
done and on which database, without its password or the statement. Every SQLite transaction
begins IMMEDIATE, which keeps concurrent writers from dead-locking.

The schema is the history in `base/migrations/`, applied by `migrate_all` at start-up.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from base.errors import DatabaseError


def utcnow() -> datetime:
    """Naive UTC: what both SQLite and PostgreSQL `TIMESTAMP` columns store here."""
    return datetime.now(UTC).replace(tzinfo=None)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def redact_url(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def make_engine(url: str) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseError(f"not a database URL: {redact_url(url)}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            _enable_wal(cur)
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    try:
        return sa.create_engine(url, pool_pre_ping=True)
    except Exception as exc:
        raise DatabaseError(
            f"cannot use database {redact_url(url)}: {exc.__class__.__name__}"
        ) from exc


def _enable_wal(cur: Any) -> None:
    """Switch the database file to WAL (persistent: a no-op once done).

    Switching needs an exclusive lock, and SQLite answers "database is locked" at once, without
    its busy handler, when several processes open a new database together: retry for a while."""
    deadline = time.monotonic() + 30
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01 + random.random() * 0.05)


def ping(engine: Engine) -> None:
    """Raise DatabaseError ("cannot reach the database …") unless the database answers."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseError(
            f"cannot reach the database {redact_url(str(engine.url))}: {_reason(exc)}"
        ) from exc


@contextlib.contextmanager
def transaction(
    engine: Engine, doing: str, *, handled: tuple[type[sa.exc.SQLAlchemyError], ...] = ()
) -> Iterator[Connection]:
    """A transaction for `doing` ("recording the answer"), committed when the block ends.

    Any SQL error in it, the commit's included, becomes a DatabaseError naming `doing`; those
    in `handled` reach the caller as they are, for the few that are an answer rather than a
    failure (an `IntegrityError` meaning "someone else got there first")."""
    with database_errors(engine, doing, handled=handled), engine.begin() as conn:
        yield conn


@contextlib.contextmanager
def connection(engine: Engine, doing: str) -> Iterator[Connection]:
    """A connection for reading, for `doing` ("loading the last sync"); nothing is committed.
    SQL errors become a DatabaseError as in `transaction`."""
    with database_errors(engine, doing), engine.connect() as conn:
        yield conn


@contextlib.contextmanager
def database_errors(
    engine: Engine, doing: str, *, handled: tuple[type[sa.exc.SQLAlchemyError], ...] = ()
) -> Iterator[None]:
    """Turn a SQL error raised in the block into a DatabaseError: "`doing` failed on <the URL
    without its password>: <the kind of error>". The statement and its values stay out: they
    may hold what people wrote; the original error is chained for the crash log."""
    try:
        yield
    except handled:
        raise
    except sa.exc.SQLAlchemyError as exc:
        where = redact_url(str(engine.url))
        raise DatabaseError(f"{doing} failed on {where}: {_reason(exc)}") from exc


def _reason(exc: sa.exc.SQLAlchemyError) -> str:
    """The kind of a SQL error, without its message (PostgreSQL's may quote a row's values):
    SQLAlchemy's class and the driver's own name for it (psycopg's `UndefinedTable`, SQLite's
    `SQLITE_BUSY`)."""
    reason = exc.__class__.__name__
    orig = getattr(exc, "orig", None)
    if isinstance(orig, sqlite3.Error) and getattr(orig, "sqlite_errorname", None):
        return f"{reason} ({orig.sqlite_errorname})"
    if orig is not None and orig.__class__.__name__ != reason:
        return f"{reason} ({orig.__class__.__name__})"
    return reason
