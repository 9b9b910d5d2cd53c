"""Tables of the `knowledge` namespace and their numbered migrations."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from base.database import Migration, migrate
from base.locks import job_locks

metadata = sa.MetaData()

sync_runs = sa.Table(
    "sync_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("status", sa.String(16), nullable=False),  # running | ok | failed | interrupted
    sa.Column("trigger", sa.String(64), nullable=False),
    sa.Column("holder", sa.String(256), nullable=False),
    sa.Column("store", sa.String(32), nullable=False),
    sa.Column("sources", sa.Text, nullable=False),  # JSON list of {name, path}
    sa.Column("added", sa.Integer, nullable=False, default=0),
    sa.Column("updated", sa.Integer, nullable=False, default=0),
    sa.Column("deleted", sa.Integer, nullable=False, default=0),
    sa.Column("unchanged", sa.Integer, nullable=False, default=0),
    sa.Column("skipped", sa.Integer, nullable=False, default=0),
    sa.Column("failed", sa.Integer, nullable=False, default=0),
    sa.Column("chunks_written", sa.Integer, nullable=False, default=0),
    sa.Column("chunks_embedded", sa.Integer, nullable=False, default=0),
    sa.Column("duration_s", sa.Float),
    sa.Column("error", sa.Text),
)

sync_items = sa.Table(
    "sync_items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "run_id", sa.Integer, sa.ForeignKey("sync_runs.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("source", sa.String(256), nullable=False),
    sa.Column("doc_id", sa.Text, nullable=False),
    sa.Column(
        "action", sa.String(16), nullable=False
    ),  # added | updated | deleted | skipped | failed
    sa.Column("reason", sa.Text),
    sa.Index("ix_sync_items_run", "run_id"),
)


def _m001_initial(conn: Connection) -> None:
    for table in (job_locks, sync_runs, sync_items):
        table.create(conn)


MIGRATIONS = [Migration("m001_initial", _m001_initial)]


def migrate_knowledge(engine: Engine) -> list[str]:
    return migrate(engine, "knowledge", MIGRATIONS)
