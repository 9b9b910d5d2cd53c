"""The `bot` namespace: claims on platform events (bot/claims.py). Frozen: add, never edit."""

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


MIGRATIONS = (Migration("m001_processed_events", _m001_processed_events),)
