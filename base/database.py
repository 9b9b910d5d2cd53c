"""The SQL store every part of expertbot shares (SQLite by default, PostgreSQL by URL).

Schema changes go through numbered migrations, kept per namespace (`knowledge`, later
`training`, …) in `schema_migrations`. Applying them is safe with several processes starting
at once: PostgreSQL serialises on an advisory lock, SQLite on its write lock (every transaction
here begins IMMEDIATE, which also keeps concurrent SQLite writers from dead-locking).
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    import sqlite3

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
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseError(
            f"cannot reach the database {redact_url(str(engine.url))}: {exc.__class__.__name__}"
        ) from exc


@dataclass(frozen=True, slots=True)
class Migration:
    name: str  # "m001_initial": applied in list order, recorded by name
    apply: Callable[[Connection], None]


_migrations_table = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("namespace", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("applied_at", sa.DateTime, nullable=False),
)


def migrate(engine: Engine, namespace: str, migrations: Sequence[Migration]) -> list[str]:
    """Apply the migrations of `namespace` not applied yet; returns their names."""
    applied: list[str] = []
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(namespace)}
                )
            _migrations_table.create(conn, checkfirst=True)
            done = set(
                conn.execute(
                    sa.select(_migrations_table.c.name).where(
                        _migrations_table.c.namespace == namespace
                    )
                ).scalars()
            )
            for migration in migrations:
                if migration.name in done:
                    continue
                migration.apply(conn)
                conn.execute(
                    _migrations_table.insert().values(
                        namespace=namespace, name=migration.name, applied_at=utcnow()
                    )
                )
                applied.append(migration.name)
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseError(
            f"migrating {namespace} on {redact_url(str(engine.url))} failed: {exc.__class__.__name__}: "
            f"{getattr(exc, 'orig', None) or exc}"
        ) from exc
    return applied


def _lock_key(namespace: str) -> int:
    return zlib.crc32(f"expertbot.migrate.{namespace}".encode())
