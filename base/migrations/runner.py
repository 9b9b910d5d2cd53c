"""Applying the schema history: each namespace's migrations in order, each recorded by name.

Safe with several processes starting at once: PostgreSQL serialises them on advisory locks,
SQLite on its write lock (the transaction begins IMMEDIATE), and everything pending is applied
in one transaction, so a failure leaves the database as it was.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from base.database import database_errors, transaction, utcnow


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of a namespace's history; its `apply` holds its own DDL, never a live table."""

    name: str  # "m001_initial": applied in list order, recorded by name
    apply: Callable[[Connection], None]


# The runner's own bookkeeping: which (namespace, name) is applied. Rows written by every
# release so far look the same, which is how an existing database is recognised.
schema_migrations = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("namespace", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("applied_at", sa.DateTime, nullable=False),
)


def migrate(engine: Engine, history: Mapping[str, Sequence[Migration]]) -> list[str]:
    """Apply the migrations of `history` (namespace → migrations, in order) not applied yet;
    returns them as "namespace/name"."""
    applied: list[str] = []
    with transaction(engine, "migrating the database") as conn:
        if conn.dialect.name == "postgresql":
            # One lock a namespace, always taken in the same order: processes of an earlier
            # release, which lock the namespace they migrate and nothing else, wait for us too.
            for namespace in history:
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(namespace)}
                )
        schema_migrations.create(conn, checkfirst=True)
        done = set(
            conn.execute(sa.select(schema_migrations.c.namespace, schema_migrations.c.name)).all()
        )
        for namespace, migrations in history.items():
            for migration in migrations:
                if (namespace, migration.name) in done:
                    continue
                with database_errors(engine, f"migrating {namespace} to {migration.name}"):
                    migration.apply(conn)
                conn.execute(
                    schema_migrations.insert().values(
                        namespace=namespace, name=migration.name, applied_at=utcnow()
                    )
                )
                applied.append(f"{namespace}/{migration.name}")
    return applied


def _lock_key(namespace: str) -> int:
    return zlib.crc32(f"expertbot.migrate.{namespace}".encode())
