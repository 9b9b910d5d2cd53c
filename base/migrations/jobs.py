"""The `jobs` namespace: the job history (bot/job_history.py). Frozen: add, never edit."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from base.migrations.runner import Migration


def _m001_job_runs(conn: Connection) -> None:
    sa.Table(
        "job_runs",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(32), nullable=False),
        sa.Column("trigger", sa.String(256), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Index("ix_job_runs_started", "started_at"),
    ).create(conn)


MIGRATIONS = (Migration("m001_job_runs", _m001_job_runs),)
