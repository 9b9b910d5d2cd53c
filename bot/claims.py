"""Exactly one answer per platform event, across retries, duplicates and replicas.

Slack re-delivers an event it has not seen acknowledged in 3 s (`X-Slack-Retry-Num`), and may
deliver one twice; with several bot replicas behind a load balancer each copy can land on a
different process. The first to insert the event id into the shared database claims it; every
other copy is acknowledged and dropped. Claims older than `keep` are purged.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from base.database import transaction, utcnow
from base.errors import DatabaseError

log = structlog.get_logger("expertbot.claims")

# Created by the `bot` namespace's migrations (base/migrations/bot.py).
metadata = sa.MetaData()

processed_events = sa.Table(
    "processed_events",
    metadata,
    sa.Column("platform", sa.String(32), primary_key=True),
    sa.Column("event_id", sa.String(256), primary_key=True),
    sa.Column("received_at", sa.DateTime, nullable=False),
    sa.Index("ix_processed_events_received", "received_at"),
)


class EventClaims:
    def __init__(self, engine: Engine, *, keep: timedelta = timedelta(days=2)) -> None:
        self.engine = engine
        self.keep = keep
        self._claims = 0

    async def claim(self, platform: str, event_id: str) -> bool:
        """True for the first delivery of this event anywhere; False for every other copy."""
        return await asyncio.to_thread(self._claim, platform, event_id)

    def _claim(self, platform: str, event_id: str) -> bool:
        try:
            with transaction(
                self.engine, f"claiming the event {event_id}", handled=(sa.exc.IntegrityError,)
            ) as conn:
                conn.execute(
                    processed_events.insert().values(
                        platform=platform, event_id=event_id, received_at=utcnow()
                    )
                )
        except sa.exc.IntegrityError:  # its id is in already: another copy claimed it
            log.info("delivery.duplicate", platform=platform, event_id=event_id)
            return False
        self._claims += 1
        if self._claims % 500 == 1:
            self._purge()
        return True

    def _purge(self) -> None:
        try:
            with transaction(self.engine, "purging old event claims") as conn:
                conn.execute(
                    processed_events.delete().where(
                        processed_events.c.received_at < utcnow() - self.keep
                    )
                )
        except DatabaseError as exc:  # housekeeping only: the claim itself succeeded
            log.warning("delivery.purge_failed", error=str(exc))
