"""The `schedule` namespace: APScheduler's job store (bot/schedule.py). Frozen: add, never edit."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from base.migrations.runner import Migration


def _m001_scheduled_jobs(conn: Connection) -> None:
    # APScheduler 3's SQLAlchemyJobStore table (its `jobs_t`), as 3.11 defines it, written out
    # here so that another APScheduler cannot change it. The job store creates the table itself
    # if missing when it starts (checkfirst, like ours): created here first, under the migration
    # lock, replicas starting together do not race in that CREATE TABLE.
    sa.Table(
        "scheduled_jobs",
        sa.MetaData(),
        sa.Column("id", sa.Unicode(191), primary_key=True),
        sa.Column("next_run_time", sa.Float(25)),
        sa.Column("job_state", sa.LargeBinary, nullable=False),
        sa.Index("ix_scheduled_jobs_next_run_time", "next_run_time"),
    ).create(conn, checkfirst=True)


MIGRATIONS = (Migration("m001_scheduled_jobs", _m001_scheduled_jobs),)
