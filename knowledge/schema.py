"""The sync reports' tables as knowledge/reports.py queries them. Their history, which
creates them, is the `knowledge` namespace in base/migrations/; a change here needs a migration
there (tests/test_migrations.py compares the two)."""

from __future__ import annotations

import sqlalchemy as sa

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

# Each source's last sync: its cursor (whatever the connector keeps to list only changes: ETags,
# modified-since stamps, delta tokens) as of the last listing that finished, and how that went.
source_states = sa.Table(
    "source_states",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("location", sa.Text, nullable=False),
    sa.Column("cursor", sa.Text, nullable=False),  # JSON
    sa.Column("synced_at", sa.DateTime),  # the last listing that finished (the cursor's age)
    sa.Column("run_id", sa.Integer),  # the sync report of the last attempt
    sa.Column("documents", sa.Integer, nullable=False),  # what that listing held
    sa.Column("attempted_at", sa.DateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # ok | failed
    sa.Column("error", sa.Text),
)
