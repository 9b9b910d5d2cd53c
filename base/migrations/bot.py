"""The `bot` namespace: claims on platform events and the questions kept with them
(bot/claims.py). Frozen: add, never edit."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from base.migrations.runner import Migration


def _m001_processed_events(conn: Connection) -> None:
    sa.Table(
        "processed_events",
        sa.MetaData(),
        sa.Column("platform", sa.String(32), primary_key=True),
        sa.Column("event_id", sa.String(256), primary_key=True),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Index("ix_processed_events_received", "received_at"),
    ).create(conn)


def _m002_durable_questions(conn: Connection) -> None:
    # A question is kept with its claim until answered: its state, the question itself and
    # where its reply goes (JSON), who answers it and until when, the messages its answer
    # posted so far, and how many times it was taken. Earlier rows (no state) are done.
    added = (
        sa.Column("state", sa.String(16)),
        sa.Column("question", sa.Text),
        sa.Column("reply", sa.Text),
        sa.Column("owner", sa.String(128)),
        sa.Column("lease_until", sa.DateTime),
        sa.Column("messages", sa.Text),
        sa.Column("attempts", sa.Integer),
        sa.Column("finished_at", sa.DateTime),
    )
    for column in added:
        kind = column.type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE processed_events ADD COLUMN {column.name} {kind}"))
    conn.execute(
        sa.text("CREATE INDEX ix_processed_events_open ON processed_events (state, lease_until)")
    )


MIGRATIONS = (
    Migration("m001_processed_events", _m001_processed_events),
    Migration("m002_durable_questions", _m002_durable_questions),
)
