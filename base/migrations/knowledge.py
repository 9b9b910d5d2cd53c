"""The `knowledge` namespace: job leases and sync reports. Frozen: add, never edit."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from base.migrations.runner import Migration


def _m001_initial(conn: Connection) -> None:
    metadata = sa.MetaData()
    job_locks = sa.Table(
        "job_locks",
        metadata,
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("holder", sa.String(256), nullable=False),
        sa.Column("acquired_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    sync_runs = sa.Table(
        "sync_runs",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(256), nullable=False),
        sa.Column("store", sa.String(32), nullable=False),
        sa.Column("sources", sa.Text, nullable=False),
        sa.Column("added", sa.Integer, nullable=False),
        sa.Column("updated", sa.Integer, nullable=False),
        sa.Column("deleted", sa.Integer, nullable=False),
        sa.Column("unchanged", sa.Integer, nullable=False),
        sa.Column("skipped", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("chunks_written", sa.Integer, nullable=False),
        sa.Column("chunks_embedded", sa.Integer, nullable=False),
        sa.Column("duration_s", sa.Float),
        sa.Column("error", sa.Text),
    )
    sync_items = sa.Table(
        "sync_items",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id",
            sa.Integer,
            sa.ForeignKey("sync_runs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("doc_id", sa.Text, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Index("ix_sync_items_run", "run_id"),
    )
    for table in (job_locks, sync_runs, sync_items):
        table.create(conn)


def _m002_vocabulary(conn: Connection) -> None:
    metadata = sa.MetaData()
    # Each indexed document's distinct terms, by who may see it (public, private, or
    # restricted to a set of channels / groups): kept so that changing or deleting the
    # document takes its terms back out of the counts.
    document_terms = sa.Table(
        "document_terms",
        metadata,
        sa.Column("source", sa.String(256), primary_key=True),
        sa.Column("doc_id", sa.Text, primary_key=True),
        sa.Column("visibility", sa.Text, nullable=False),
        sa.Column("terms", sa.Text, nullable=False),
    )
    # In how many documents of each visibility a term occurs (term "" counts the documents).
    term_frequencies = sa.Table(
        "term_frequencies",
        metadata,
        sa.Column("term", sa.String(64), primary_key=True),
        sa.Column("visibility", sa.Text, primary_key=True),
        sa.Column("documents", sa.Integer, nullable=False),
    )
    for table in (document_terms, term_frequencies):
        table.create(conn)


def _m003_source_states(conn: Connection) -> None:
    sa.Table(
        "source_states",
        sa.MetaData(),
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("cursor", sa.Text, nullable=False),
        sa.Column("synced_at", sa.DateTime),
        sa.Column("run_id", sa.Integer),
        sa.Column("documents", sa.Integer, nullable=False),
        sa.Column("attempted_at", sa.DateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
    ).create(conn)


MIGRATIONS = (
    Migration("m001_initial", _m001_initial),
    Migration("m002_vocabulary", _m002_vocabulary),
    Migration("m003_source_states", _m003_source_states),
)
