"""The `teams` namespace: Teams conversation references (bot/teams/references.py). Frozen: add,
never edit."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from base.migrations.runner import Migration


def _m001_teams_conversations(conn: Connection) -> None:
    sa.Table(
        "teams_conversations",
        sa.MetaData(),
        sa.Column("conversation", sa.String(512), primary_key=True),
        sa.Column("reference", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    ).create(conn)


MIGRATIONS = (Migration("m001_teams_conversations", _m001_teams_conversations),)
