"""Job history: every sync, training run, promotion and rollback, whoever started it.

One row a run, in the shared database: the job, what triggered it (`cli`, `slack:U…`,
`teams:…`, `schedule@<slot>`), when it started and ended, its outcome (`ok`, `failed`,
`refused` when another run held the job, `error` when it crashed) and a one-line summary.
`expertbot status` and the chat `status` show the latest.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from base.database import connection, transaction, utcnow

# Created by the `jobs` namespace's migrations (base/migrations/jobs.py).
metadata = sa.MetaData()

job_runs = sa.Table(
    "job_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job", sa.String(32), nullable=False),
    sa.Column("trigger", sa.String(256), nullable=False),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime),
    sa.Column(
        "outcome", sa.String(16), nullable=False
    ),  # running|ok|failed|refused|error|interrupted
    sa.Column("summary", sa.Text, nullable=False, default=""),
    sa.Index("ix_job_runs_started", "started_at"),
)


class JobHistory:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def start(self, job: str, trigger: str) -> int:
        return await asyncio.to_thread(self._start, job, trigger)

    def _start(self, job: str, trigger: str) -> int:
        with transaction(self.engine, f"recording the start of {job}") as conn:
            result = conn.execute(
                job_runs.insert().values(
                    job=job, trigger=trigger[:256], started_at=utcnow(), outcome="running"
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    async def finish(self, run: int, outcome: str, summary: str) -> None:
        await asyncio.to_thread(self._finish, run, outcome, summary)

    def _finish(self, run: int, outcome: str, summary: str) -> None:
        with transaction(self.engine, "recording the end of a job run") as conn:
            conn.execute(
                job_runs.update()
                .where(job_runs.c.id == run)
                .values(finished_at=utcnow(), outcome=outcome, summary=summary[:2000])
            )

    def recent(self, limit: int = 5, *, job: str | None = None) -> list[dict[str, Any]]:
        """The latest runs, newest first."""
        query = sa.select(job_runs).order_by(job_runs.c.id.desc()).limit(limit)
        if job is not None:
            query = query.where(job_runs.c.job == job)
        with connection(self.engine, "loading the job history") as conn:
            return [dict(row._mapping) for row in conn.execute(query)]
