"""Exactly one answer per platform event, across retries, duplicates, replicas and crashes.

Slack re-delivers an event it has not seen acknowledged in 3 s (`X-Slack-Retry-Num`), and may
deliver one twice; with several bot replicas behind a load balancer each copy can land on a
different process. The first to insert the event id into the shared database claims it; every
other copy is acknowledged and dropped.

A question is stored with its claim, in the same transaction, before the platform gets its
200: what answering it needs (the question as asked, with its place, asker and groups, and
where the reply goes). From then on it has a state:

    received   stored, leased to the replica that claimed it (or to nobody, when that one is
               stopping: any replica takes it)
    answering  being answered by the replica holding the lease, which renews it while it works
    answered   its one reply was posted: the answer, or an apology for a question too old
    failed     the asker was told why there is no answer

A lease that runs out (the replica crashed, was killed, or released it on its way down) lets
any replica `take` the question, once: the take is a compare-and-set on the lease. The
messages an answer has posted so far are kept with it, so that whoever finishes it finishes
them in place. An event that needs no answer (a reaction, a correction) is claimed with no
state. Claims older than `keep` are purged.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Engine

from base.database import connection, transaction, utcnow
from base.errors import DatabaseError
from bot.core.question import Question

log = structlog.get_logger("expertbot.claims")

# Created by the `bot` namespace's migrations (base/migrations/bot.py).
metadata = sa.MetaData()

processed_events = sa.Table(
    "processed_events",
    metadata,
    sa.Column("platform", sa.String(32), primary_key=True),
    sa.Column("event_id", sa.String(256), primary_key=True),
    sa.Column("received_at", sa.DateTime, nullable=False),
    sa.Column("state", sa.String(16)),
    sa.Column("question", sa.Text),
    sa.Column("reply", sa.Text),
    sa.Column("owner", sa.String(128)),
    sa.Column("lease_until", sa.DateTime),
    sa.Column("messages", sa.Text),
    sa.Column("attempts", sa.Integer),
    sa.Column("finished_at", sa.DateTime),
    sa.Index("ix_processed_events_received", "received_at"),
    sa.Index("ix_processed_events_open", "state", "lease_until"),
)

RECEIVED, ANSWERING, ANSWERED, FAILED = "received", "answering", "answered", "failed"
OPEN = (RECEIVED, ANSWERING)


@dataclass(frozen=True, slots=True)
class Pending:
    """A stored question, held by this replica until it is answered or released."""

    platform: str
    event_id: str
    question: Question
    reply: dict[str, Any]  # where and how the platform posts the reply (its own keys)
    received_at: datetime
    messages: tuple[str, ...] = ()  # what an earlier try posted: finished in place
    attempts: int = 1  # the tries that started writing an answer, this one included
    resumed: bool = False  # taken over from a replica that stopped or died

    @property
    def held(self) -> bool:
        """Leased to the replica that claimed it (False: claimed while stopping, for another)."""
        return self.attempts > 0

    @property
    def age_s(self) -> float:
        return (utcnow() - self.received_at).total_seconds()


def replica_name() -> str:
    """This process, as lease owners are named: host, pid and a random part (a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class EventClaims:
    def __init__(
        self,
        engine: Engine,
        *,
        keep: timedelta = timedelta(days=2),
        lease_s: float = 30.0,
        owner: str | None = None,
    ) -> None:
        self.engine = engine
        self.keep = keep
        self.lease = timedelta(seconds=lease_s)
        self.owner = owner or replica_name()
        self._claims = 0

    # -- claiming ------------------------------------------------------------------------------

    async def claim(self, platform: str, event_id: str) -> bool:
        """True for the first delivery of this event anywhere; False for every other copy."""
        return await asyncio.to_thread(self._insert, platform, event_id, {})

    async def claim_question(
        self,
        platform: str,
        event_id: str,
        question: Question,
        reply: dict[str, Any],
        *,
        hold: bool = True,
    ) -> Pending | None:
        """Claim the event and store its question with the claim, leased to this replica
        (`hold`) or to nobody (a replica on its way down: another one answers). None for every
        copy after the first."""
        now = utcnow()
        attempts = 1 if hold else 0
        values: dict[str, Any] = {
            "state": RECEIVED,
            "question": json.dumps(question.as_record()),
            "reply": json.dumps(reply),
            "owner": self.owner if hold else None,
            "lease_until": now + self.lease if hold else now,
            "messages": "[]",
            "attempts": attempts,
        }
        if not await asyncio.to_thread(self._insert, platform, event_id, values, now):
            return None
        return Pending(platform, event_id, question, reply, now, attempts=attempts)

    def _insert(
        self,
        platform: str,
        event_id: str,
        values: dict[str, Any],
        now: datetime | None = None,
    ) -> bool:
        try:
            with transaction(
                self.engine, f"claiming the event {event_id}", handled=(sa.exc.IntegrityError,)
            ) as conn:
                conn.execute(
                    processed_events.insert().values(
                        platform=platform, event_id=event_id, received_at=now or utcnow(), **values
                    )
                )
        except sa.exc.IntegrityError:  # its id is in already: another copy claimed it
            log.info("delivery.duplicate", platform=platform, event_id=event_id)
            return False
        self._claims += 1
        if self._claims % 500 == 1:
            self._purge()
        return True

    # -- the life of a held question -----------------------------------------------------------

    async def answering(self, pending: Pending) -> None:
        """The answer has begun (past retrieval and the model's queue): from now on a replica
        dying while it writes counts as a try of this question."""
        await asyncio.to_thread(self._set, pending, {"state": ANSWERING}, "starting to answer")

    async def note_message(self, pending: Pending, message_id: str) -> None:
        """Remember a message the answer posted (a resumed answer finishes it in place)."""
        await asyncio.to_thread(self._note_message, pending, message_id)

    async def finish(self, pending: Pending, *, answered: bool) -> None:
        values = {
            "state": ANSWERED if answered else FAILED,
            "owner": None,
            "lease_until": None,
            "finished_at": utcnow(),
        }
        await asyncio.to_thread(self._set, pending, values, "recording the reply")

    def _set(self, pending: Pending, values: dict[str, Any], doing: str) -> None:
        with transaction(self.engine, f"{doing} to {pending.event_id}") as conn:
            conn.execute(_row(pending).values(**values))

    def _note_message(self, pending: Pending, message_id: str) -> None:
        with transaction(self.engine, f"linking a message to {pending.event_id}") as conn:
            row = conn.execute(sa.select(processed_events.c.messages).where(_key(pending))).scalar()
            messages = json.loads(row or "[]")
            if message_id not in messages:
                messages.append(message_id)
                conn.execute(_row(pending).values(messages=json.dumps(messages)))

    # -- leases ------------------------------------------------------------------------------

    async def renew(self, held: Sequence[Pending]) -> int:
        """Extend the leases of `held`, the questions this replica is answering now (not every
        row it owns: one whose answer ended without being recorded must run out and be
        resumed). How many were extended."""
        return await asyncio.to_thread(self._renew, held)

    def _renew(self, held: Sequence[Pending]) -> int:
        renewed = 0
        with transaction(self.engine, "renewing the leases on questions") as conn:
            for platform in {p.platform for p in held}:
                renewed += conn.execute(
                    processed_events.update()
                    .where(processed_events.c.owner == self.owner)
                    .where(processed_events.c.state.in_(OPEN))
                    .where(processed_events.c.platform == platform)
                    .where(
                        processed_events.c.event_id.in_(
                            [p.event_id for p in held if p.platform == platform]
                        )
                    )
                    .values(lease_until=utcnow() + self.lease)
                ).rowcount
        return renewed

    async def release(self, pending: Pending | None = None) -> int:
        """Let go of `pending` (every question held here when None): any replica may take it
        at once. How many were released."""
        return await asyncio.to_thread(self._release, pending)

    def _release(self, pending: Pending | None) -> int:
        with transaction(self.engine, "releasing questions") as conn:
            query = (
                processed_events.update()
                .where(processed_events.c.owner == self.owner)
                .where(processed_events.c.state.in_(OPEN))
            )
            if pending is not None:
                query = query.where(_key(pending))
            return conn.execute(query.values(owner=None, lease_until=utcnow())).rowcount

    async def take_expired(self, limit: int = 20) -> list[Pending]:
        """The questions whose lease ran out, now leased to this replica: each is taken by one
        replica only (another that read the same rows finds them taken)."""
        return await asyncio.to_thread(self._take_expired, limit)

    def _take_expired(self, limit: int) -> list[Pending]:
        now = utcnow()
        with connection(self.engine, "looking for questions to resume") as conn:
            keys = conn.execute(
                sa.select(processed_events.c.platform, processed_events.c.event_id)
                .where(processed_events.c.state.in_(OPEN))
                .where(processed_events.c.lease_until < now)
                .order_by(processed_events.c.received_at)
                .limit(limit)
            ).all()
        taken: list[Pending] = []
        for platform, event_id in keys:
            with transaction(self.engine, f"resuming {event_id}") as conn:
                won = conn.execute(
                    processed_events.update()
                    .where(processed_events.c.platform == platform)
                    .where(processed_events.c.event_id == event_id)
                    .where(processed_events.c.state.in_(OPEN))
                    .where(processed_events.c.lease_until < now)
                    .values(
                        owner=self.owner,
                        lease_until=utcnow() + self.lease,
                        state=RECEIVED,
                        # A try counts once it had started writing the answer: a question that
                        # only waited (for the model, behind others) on a replica that died
                        # has not been tried.
                        attempts=processed_events.c.attempts
                        + sa.case((processed_events.c.state == ANSWERING, 1), else_=0),
                    )
                ).rowcount
                if won:
                    taken.append(_pending(conn, platform, event_id))
        return taken

    def _purge(self) -> None:
        try:
            with transaction(self.engine, "purging old event claims") as conn:
                conn.execute(
                    processed_events.delete()
                    .where(processed_events.c.received_at < utcnow() - self.keep)
                    .where(
                        sa.or_(
                            processed_events.c.state.is_(None),
                            processed_events.c.state.not_in(OPEN),
                        )
                    )
                )
        except DatabaseError as exc:  # housekeeping only: the claim itself succeeded
            log.warning("delivery.purge_failed", error=str(exc))


def open_questions(engine: Engine) -> dict[str, int]:
    """How many questions wait in each open state (for `expertbot status`)."""
    with connection(engine, "counting open questions") as conn:
        rows = conn.execute(
            sa.select(processed_events.c.state, sa.func.count())
            .where(processed_events.c.state.in_(OPEN))
            .group_by(processed_events.c.state)
        ).all()
    return {state: count for state, count in rows}


def _key(pending: Pending) -> sa.ColumnElement[bool]:
    return sa.and_(
        processed_events.c.platform == pending.platform,
        processed_events.c.event_id == pending.event_id,
    )


def _row(pending: Pending) -> sa.Update:
    return processed_events.update().where(_key(pending))


def _pending(conn: Connection, platform: str, event_id: str) -> Pending:
    row = conn.execute(
        sa.select(processed_events)
        .where(processed_events.c.platform == platform)
        .where(processed_events.c.event_id == event_id)
    ).one()
    return Pending(
        platform=platform,
        event_id=event_id,
        question=Question.from_record(json.loads(row.question)),
        reply=json.loads(row.reply or "{}"),
        received_at=row.received_at,
        messages=tuple(json.loads(row.messages or "[]")),
        attempts=max(row.attempts or 0, 1),
        resumed=True,
    )
