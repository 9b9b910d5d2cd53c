"""The feedback store: every answer given, what people said about it, and curated answers.

SQLAlchemy on the shared SQL store (SQLite by default, PostgreSQL by URL); its tables' history
is the `training` namespace in base/migrations/. It holds:

- `record(AnswerRecord)` keeps each answered question (question, asker, where, retrieved
  chunks, answer, cited sources, model and adapter, timings) under the Answer's id;
  `link_message(...)` ties the chat message that shows it to that id;
- `rate` / `retract` (👍 / 👎), `add_correction` (an expert's or anyone's), and what the
  training set reads back: `training_candidates`, `imported_examples`, `feedback_counts`;
- `add_curated(...)` stores an expert-approved or corrected answer with its question's
  embedding; `find_curated(...)` returns the one whose question is near-identical to a new
  question (cosine ≥ threshold), if the asker may see every source it cites;
- `expert_answers()` lists the curated answers as the index shows them (with the one access
  label each may carry there), `withdraw_expert_answer` / `withdraw_correction` take one back.

What goes in and comes out are the typed records of `training/feedback/records.py`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from base.database import connection, transaction, utcnow
from base.errors import DatabaseError
from knowledge.models import Access, AccessScope
from training.feedback.records import (
    PUBLIC_ACCESS,
    AnswerAccess,
    AnswerRecord,
    CitedSource,
    CorrectionRecord,
    CuratedAnswer,
    CuratedKind,
    ExpertAnswer,
    ImportedExample,
    RatingKind,
    RatingRecord,
    RetrievedChunk,
    StoredSource,
    TrainingCandidate,
    channel_access,
    combined_access,
)

# The live tables, as the methods below query them; a change here needs a migration in
# base/migrations/training.py (tests/test_migrations.py compares the two).
metadata = sa.MetaData()

answers = sa.Table(
    "answers",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("question", sa.Text, nullable=False),
    sa.Column("asker", sa.String(256), nullable=False),
    sa.Column("platform", sa.String(32), nullable=False),
    sa.Column("where_kind", sa.String(32), nullable=False),  # public | private | dm
    sa.Column("channel", sa.String(256)),
    sa.Column("thread", sa.String(256)),
    sa.Column("retrieved", sa.Text, nullable=False),  # JSON: [{chunk_id, doc, title, score}]
    sa.Column("answer", sa.Text, nullable=False),
    sa.Column("sources", sa.Text, nullable=False),  # JSON: the cited sources, numbered
    sa.Column("abstained", sa.Boolean, nullable=False),
    sa.Column("curated_id", sa.String(36)),  # the curated answer served, if any
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("adapter", sa.String(64)),
    sa.Column("retrieval_s", sa.Float),
    sa.Column("generation_s", sa.Float),
    sa.Column("total_s", sa.Float),
    sa.Column("signals", sa.Text),  # JSON: the answerability signals of its retrieval (m003)
    sa.Index("ix_answers_created", "created_at"),
)

curated_answers = sa.Table(
    "curated_answers",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("question", sa.Text, nullable=False),
    sa.Column("embedding", sa.LargeBinary, nullable=False),  # float32, normalised
    sa.Column("answer", sa.Text, nullable=False),
    sa.Column("sources", sa.Text, nullable=False),  # JSON: [{title, uri, heading, access, allowed}]
    sa.Column("approved_by", sa.String(256), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # approved | corrected | imported
    sa.Column("answer_id", sa.String(36)),  # the bot answer it approves or corrects
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    # JSON [{access, allowed}]: the access of every passage it was written from (m002)
    sa.Column("guards", sa.Text),
    # Who may find it in the index (m004): public | restricted | private, with the allowed
    # channels / groups as JSON; or NULL with `unindexed` saying why no one label fits. Rows of
    # before m004 have neither: it is worked out from their sources and guards when read.
    sa.Column("access", sa.String(16)),
    sa.Column("allowed", sa.Text),
    sa.Column("unindexed", sa.Text),
    sa.Index("ix_curated_active", "active"),
)


# Which chat message shows which answer: reactions, buttons and thread replies refer to it.
answer_messages = sa.Table(
    "answer_messages",
    metadata,
    sa.Column("platform", sa.String(32), primary_key=True),
    sa.Column("conversation", sa.String(256), primary_key=True),
    sa.Column("message_id", sa.String(256), primary_key=True),
    sa.Column("answer_id", sa.String(36), nullable=False),
    sa.Column("thread", sa.String(256)),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Index("ix_answer_messages_answer", "answer_id"),
    sa.Index("ix_answer_messages_thread", "platform", "conversation", "thread"),
)

# One row per (answer, user, kind): rating again revives it, retracting stamps retracted_at.
ratings = sa.Table(
    "ratings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("answer_id", sa.String(36), nullable=False),
    sa.Column("user_id", sa.String(256), nullable=False),
    sa.Column("platform", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # up | down | approved
    sa.Column("source", sa.String(32), nullable=False),  # reaction | button | feedback | action
    sa.Column("expert", sa.Boolean, nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("retracted_at", sa.DateTime),
    sa.UniqueConstraint("answer_id", "user_id", "kind", name="uq_ratings_answer_user_kind"),
    sa.Index("ix_ratings_kind", "kind"),
)

corrections = sa.Table(
    "corrections",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("answer_id", sa.String(36), nullable=False),
    sa.Column("user_id", sa.String(256), nullable=False),
    sa.Column("platform", sa.String(32), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("approved", sa.Boolean, nullable=False),  # an expert's: a training target
    sa.Column("curated_id", sa.String(36)),
    sa.Column("created_at", sa.DateTime, nullable=False),
    # The chat message holding the correction (a thread reply; m004), so that deleting it
    # withdraws it; and when it was withdrawn.
    sa.Column("message_id", sa.String(256)),
    sa.Column("withdrawn_at", sa.DateTime),
    sa.Index("ix_corrections_answer", "answer_id"),
    sa.Index("ix_corrections_message", "platform", "message_id"),
)


class FeedbackStore:
    """The feedback store: answers, the chat messages showing them, ratings, corrections and
    curated answers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, answer: AnswerRecord) -> None:
        """Keep one answer given, under its id."""
        self._execute(
            answers.insert().values(**_answer_values(answer)), doing="recording the answer"
        )

    def get_answer(self, answer_id: str) -> AnswerRecord | None:
        with connection(self.engine, "loading the answer") as conn:
            found = conn.execute(sa.select(answers).where(answers.c.id == answer_id)).first()
        return None if found is None else _answer_record(found)

    def add_curated(
        self,
        *,
        question: str,
        embedding: np.ndarray,
        answer: str,
        sources: Sequence[StoredSource] = (),
        approved_by: str,
        kind: CuratedKind = CuratedKind.APPROVED,
        answer_id: str | None = None,
        guards: Sequence[StoredSource] = (),
        access: AnswerAccess = PUBLIC_ACCESS,
    ) -> str:
        """Store an expert-approved (or corrected, or imported) answer; returns its id. Among
        near-identical questions the newest wins (see find_curated). `guards`: the access of
        passages it was written from beyond its cited sources; it is only served where they are
        visible too. `access`: who may find it in the index."""
        curated_id = str(uuid.uuid4())
        vector = np.asarray(embedding, dtype=np.float32)
        vector = vector / (np.linalg.norm(vector) or 1.0)
        self._execute(
            curated_answers.insert().values(
                id=curated_id,
                created_at=utcnow(),
                question=question,
                embedding=vector.tobytes(),
                answer=answer,
                sources=json.dumps([s.as_json() for s in sources], ensure_ascii=False),
                approved_by=approved_by,
                kind=CuratedKind(kind).value,
                answer_id=answer_id,
                active=True,
                guards=json.dumps([g.as_json() for g in guards], ensure_ascii=False),
                access=access.access,
                allowed=json.dumps(list(access.allowed)),
                unindexed=access.unindexable,
            ),
            doing="storing the curated answer",
        )
        return curated_id

    def find_curated(
        self, embedding: np.ndarray, *, threshold: float, scope: AccessScope | None
    ) -> CuratedAnswer | None:
        """The latest active curated answer whose question's cosine similarity to `embedding`
        is at least `threshold` and whose sources (and guards) are all visible in `scope`."""
        with connection(self.engine, "looking up curated answers") as conn:
            rows = conn.execute(
                sa.select(
                    curated_answers.c.id, curated_answers.c.embedding, curated_answers.c.created_at
                )
                .where(curated_answers.c.active.is_(True))
                .order_by(curated_answers.c.created_at.desc())
            ).all()
        if not rows:
            return None
        query = np.asarray(embedding, dtype=np.float32)
        query = query / (np.linalg.norm(query) or 1.0)
        matrix = np.stack([np.frombuffer(r.embedding, dtype=np.float32) for r in rows])
        if matrix.shape[1] != query.shape[0]:
            return None  # stored with another embedding model
        sims = matrix @ query
        # Newest first among the near-identical: the latest expert decision wins.
        for i in np.flatnonzero(sims >= threshold):
            found = self._curated(rows[int(i)].id, float(sims[int(i)]))
            if found and all(s.visible_in(scope) for s in (*found.sources, *found.guards)):
                return found
        return None

    def curate_answer(
        self,
        answer_id: str,
        *,
        embedding: np.ndarray,
        approved_by: str,
        kind: CuratedKind,
        text: str | None = None,
    ) -> str:
        """Make a recorded answer (approved as is, or with `text` as its correction) a curated
        answer. It keeps the access of everything the answer was written from; in the index it
        is found where all of that is visible or, written from nothing, where it was given."""
        row = self.get_answer(answer_id)
        if row is None:
            raise DatabaseError(f"no answer {answer_id} in the feedback store")
        sources = [cited.source for cited in row.sources]
        guards = {
            StoredSource("", "", "", chunk.access, chunk.allowed)
            for chunk in row.retrieved
            if chunk.access != Access.PUBLIC
        }
        passages = [
            *sources,
            *(StoredSource("", "", "", c.access, c.allowed) for c in row.retrieved),
        ]
        served_access: AnswerAccess | None = None
        if row.curated_id:
            served = self._curated(row.curated_id, 1.0)
            if served is not None:
                sources = list(served.sources)
                guards.update(served.guards)
                passages += [*served.sources, *served.guards]
            served_answer = self._expert_answer(row.curated_id)
            if served_answer is not None:
                served_access = served_answer.scope
        access = combined_access(passages) or channel_access(row.where_kind, row.channel, row.asker)
        if served_access is not None:
            # What it was written from includes the expert answer served: never wider than it.
            access = _narrowest(access, served_access)
        return self.add_curated(
            question=row.question,
            embedding=embedding,
            answer=text if text is not None else row.answer,
            sources=sources,
            approved_by=approved_by,
            kind=kind,
            answer_id=answer_id,
            guards=[StoredSource("", "", "", g.access, g.allowed) for g in guards],
            access=access,
        )

    def deactivate_curated(self, *, answer_id: str, approved_by: str, kind: CuratedKind) -> int:
        """Withdraw the curated answers made from `answer_id` by `approved_by` (a retracted
        approval); returns how many."""
        with transaction(self.engine, "withdrawing the curated answer") as conn:
            result = conn.execute(
                curated_answers.update()
                .where(
                    curated_answers.c.answer_id == answer_id,
                    curated_answers.c.approved_by == approved_by,
                    curated_answers.c.kind == CuratedKind(kind).value,
                    curated_answers.c.active.is_(True),
                )
                .values(active=False)
            )
        return int(result.rowcount or 0)

    def expert_answers(self, *, include_withdrawn: bool = False) -> list[ExpertAnswer]:
        """The experts' answers, newest first: the active ones (and the withdrawn with
        `include_withdrawn`), each with who may find it in the index."""
        query = _expert_answer_query().order_by(
            curated_answers.c.created_at.desc(), curated_answers.c.id.desc()
        )
        if not include_withdrawn:
            query = query.where(curated_answers.c.active.is_(True))
        with connection(self.engine, "loading the expert answers") as conn:
            rows = conn.execute(query).all()
        return [_expert_answer(row) for row in rows]

    def expert_answer(self, curated_id: str) -> ExpertAnswer | None:
        """One expert answer, active or withdrawn, by its id."""
        return self._expert_answer(curated_id)

    def withdraw_expert_answer(self, curated_id: str) -> bool:
        """Take an expert answer back: it is served no more, leaves the index at the next sync
        and the training set at the next build (the correction or approval it came from is
        withdrawn with it). True if it was active."""
        now = utcnow()
        with transaction(self.engine, "withdrawing the expert answer") as conn:
            row = conn.execute(
                sa.select(
                    curated_answers.c.kind,
                    curated_answers.c.answer_id,
                    curated_answers.c.approved_by,
                ).where(curated_answers.c.id == curated_id, curated_answers.c.active.is_(True))
            ).first()
            if row is None:
                return False
            conn.execute(
                curated_answers.update()
                .where(curated_answers.c.id == curated_id)
                .values(active=False)
            )
            conn.execute(
                corrections.update()
                .where(corrections.c.curated_id == curated_id, corrections.c.withdrawn_at.is_(None))
                .values(withdrawn_at=now)
            )
            if row.kind == CuratedKind.APPROVED.value and row.answer_id:
                conn.execute(
                    ratings.update()
                    .where(
                        ratings.c.answer_id == row.answer_id,
                        ratings.c.user_id == row.approved_by,
                        ratings.c.kind == RatingKind.APPROVED.value,
                        ratings.c.retracted_at.is_(None),
                    )
                    .values(retracted_at=now, updated_at=now)
                )
        return True

    def withdraw_correction(
        self, platform: str, message_id: str, *, conversation: str | None = None
    ) -> bool:
        """Withdraw the correction held by chat message `message_id` (it was deleted), and the
        expert answer made of it. `conversation`: only a correction of an answer given there.
        True if one was in force."""
        query = sa.select(corrections.c.id, corrections.c.curated_id).where(
            corrections.c.platform == platform,
            corrections.c.message_id == message_id,
            corrections.c.withdrawn_at.is_(None),
        )
        if conversation is not None:
            query = query.where(
                corrections.c.answer_id.in_(
                    sa.select(answers.c.id).where(answers.c.channel == conversation)
                )
            )
        with transaction(self.engine, "withdrawing the correction") as conn:
            found = conn.execute(query).all()
            if not found:
                return False
            conn.execute(
                corrections.update()
                .where(corrections.c.id.in_([r.id for r in found]))
                .values(withdrawn_at=utcnow())
            )
            curated = [r.curated_id for r in found if r.curated_id]
            if curated:
                conn.execute(
                    curated_answers.update()
                    .where(curated_answers.c.id.in_(curated))
                    .values(active=False)
                )
        return True

    def _expert_answer(self, curated_id: str) -> ExpertAnswer | None:
        with connection(self.engine, "loading the expert answer") as conn:
            row = conn.execute(
                _expert_answer_query().where(curated_answers.c.id == curated_id)
            ).first()
        return None if row is None else _expert_answer(row)

    # -- which chat message shows which answer -------------------------------------------------

    def link_message(
        self,
        *,
        platform: str,
        conversation: str,
        message_id: str,
        answer_id: str,
        thread: str | None = None,
    ) -> None:
        with transaction(self.engine, "linking the message to its answer") as conn:
            exists = conn.execute(
                sa.select(answer_messages.c.answer_id).where(
                    answer_messages.c.platform == platform,
                    answer_messages.c.conversation == conversation,
                    answer_messages.c.message_id == message_id,
                )
            ).first()
            if exists is None:
                conn.execute(
                    answer_messages.insert().values(
                        platform=platform,
                        conversation=conversation,
                        message_id=message_id,
                        answer_id=answer_id,
                        thread=thread,
                        created_at=utcnow(),
                    )
                )

    def answer_for_message(self, platform: str, conversation: str, message_id: str) -> str | None:
        with connection(self.engine, "looking up the message's answer") as conn:
            return conn.execute(
                sa.select(answer_messages.c.answer_id).where(
                    answer_messages.c.platform == platform,
                    answer_messages.c.conversation == conversation,
                    answer_messages.c.message_id == message_id,
                )
            ).scalar()

    def thread_answers(
        self,
        platform: str,
        conversation: str,
        thread: str,
        *,
        since: datetime | None = None,
        last: int | None = None,
    ) -> list[AnswerRecord]:
        """The answers given in a thread, oldest first. `since`: only those given after it
        (UTC); `last`: only the most recent ones."""
        query = sa.select(answers).where(
            answers.c.platform == platform,
            answers.c.channel == conversation,
            answers.c.thread == thread,
        )
        if since is not None:
            query = query.where(answers.c.created_at >= since)
        query = query.order_by(answers.c.created_at.desc(), answers.c.id.desc())
        if last is not None:
            query = query.limit(last)
        with connection(self.engine, "loading the thread's answers") as conn:
            rows = conn.execute(query).all()
        return [_answer_record(r) for r in reversed(rows)]

    # -- ratings and corrections ---------------------------------------------------------------

    def rate(
        self,
        *,
        answer_id: str,
        user_id: str,
        platform: str,
        kind: RatingKind,
        source: str,
        expert: bool = False,
        comment: str | None = None,
    ) -> bool:
        """Record (or revive) `user_id`'s rating of `kind` on an answer; True if it was not in
        force before. Safe with concurrent writers (one row per answer, user and kind)."""
        kind = RatingKind(kind)  # an unknown kind is a ValueError
        now = utcnow()
        key = (
            (ratings.c.answer_id == answer_id)
            & (ratings.c.user_id == user_id)
            & (ratings.c.kind == kind.value)
        )
        with transaction(self.engine, "recording the rating") as conn:
            before = conn.execute(sa.select(ratings.c.retracted_at).where(key)).first()
            values = {
                "answer_id": answer_id,
                "user_id": user_id,
                "platform": platform,
                "kind": kind.value,
                "source": source,
                "expert": expert,
                "comment": comment,
                "created_at": now,
                "updated_at": now,
                "retracted_at": None,
            }
            insert = _dialect_insert(conn)(ratings).values(**values)
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=["answer_id", "user_id", "kind"],
                    set_={
                        "source": source,
                        "expert": expert,
                        "comment": comment if comment is not None else ratings.c.comment,
                        "updated_at": now,
                        "retracted_at": None,
                    },
                )
            )
        return before is None or before.retracted_at is not None

    def retract(self, *, answer_id: str, user_id: str, kind: RatingKind) -> bool:
        """Withdraw a rating (a removed reaction); True if one was in force."""
        with transaction(self.engine, "withdrawing the rating") as conn:
            result = conn.execute(
                ratings.update()
                .where(
                    ratings.c.answer_id == answer_id,
                    ratings.c.user_id == user_id,
                    ratings.c.kind == RatingKind(kind).value,
                    ratings.c.retracted_at.is_(None),
                )
                .values(retracted_at=utcnow(), updated_at=utcnow())
            )
        return bool(result.rowcount)

    def ratings_for(self, answer_id: str, *, active_only: bool = False) -> list[RatingRecord]:
        query = sa.select(ratings).where(ratings.c.answer_id == answer_id).order_by(ratings.c.id)
        if active_only:
            query = query.where(ratings.c.retracted_at.is_(None))
        with connection(self.engine, "loading the answer's ratings") as conn:
            return [_rating(r) for r in conn.execute(query).all()]

    def add_correction(
        self,
        *,
        answer_id: str,
        user_id: str,
        platform: str,
        text: str,
        approved: bool,
        curated_id: str | None = None,
        message_id: str | None = None,
    ) -> str:
        """Keep a correction; `message_id`: the chat message holding it, if it has its own."""
        correction_id = str(uuid.uuid4())
        self._execute(
            corrections.insert().values(
                id=correction_id,
                answer_id=answer_id,
                user_id=user_id,
                platform=platform,
                text=text,
                approved=approved,
                curated_id=curated_id,
                created_at=utcnow(),
                message_id=message_id,
            ),
            doing="recording the correction",
        )
        return correction_id

    def corrections_for(self, answer_id: str) -> list[CorrectionRecord]:
        with connection(self.engine, "loading the answer's corrections") as conn:
            rows = conn.execute(
                sa.select(corrections)
                .where(corrections.c.answer_id == answer_id)
                .order_by(corrections.c.created_at)
            ).all()
        return [_correction(r) for r in rows]

    def training_candidates(self) -> list[TrainingCandidate]:
        """Every answer with a rating in force or a correction (not withdrawn), with its ratings
        in force and its corrections, for the training-set builder."""
        in_force = corrections.c.withdrawn_at.is_(None)
        with connection(self.engine, "loading the training candidates") as conn:
            rated = sa.select(ratings.c.answer_id).where(ratings.c.retracted_at.is_(None))
            corrected = sa.select(corrections.c.answer_id).where(in_force)
            ids = sa.union(rated, corrected).subquery()
            rows = conn.execute(
                sa.select(answers).where(answers.c.id.in_(sa.select(ids.c.answer_id)))
            ).all()
            found = [r.id for r in rows]
            votes = conn.execute(
                sa.select(ratings).where(
                    ratings.c.answer_id.in_(found), ratings.c.retracted_at.is_(None)
                )
            ).all()
            fixes = conn.execute(
                sa.select(corrections).where(corrections.c.answer_id.in_(found), in_force)
            ).all()
        votes_by_id: dict[str, list[RatingRecord]] = {}
        for vote in votes:
            votes_by_id.setdefault(vote.answer_id, []).append(_rating(vote))
        fixes_by_id: dict[str, list[CorrectionRecord]] = {}
        for fix in fixes:
            fixes_by_id.setdefault(fix.answer_id, []).append(_correction(fix))
        return [
            TrainingCandidate(
                _answer_record(row),
                tuple(votes_by_id.get(row.id, ())),
                tuple(fixes_by_id.get(row.id, ())),
            )
            for row in sorted(rows, key=lambda r: r.id)
        ]

    def imported_examples(self) -> list[ImportedExample]:
        """Active curated answers imported from a file."""
        with connection(self.engine, "loading the imported examples") as conn:
            rows = conn.execute(
                sa.select(
                    curated_answers.c.id,
                    curated_answers.c.question,
                    curated_answers.c.answer,
                    curated_answers.c.approved_by,
                    curated_answers.c.created_at,
                ).where(
                    curated_answers.c.kind == CuratedKind.IMPORTED.value,
                    curated_answers.c.active.is_(True),
                )
            ).all()
        return [
            ImportedExample(r.question, r.answer, r.approved_by, r.created_at, id=r.id)
            for r in rows
        ]

    def recent_questions(self, asker: str, *, platform: str, limit: int) -> list[AnswerRecord]:
        """`asker`'s latest answered questions on `platform`, newest first."""
        query = (
            sa.select(answers)
            .where(answers.c.asker == asker, answers.c.platform == platform)
            .order_by(answers.c.created_at.desc(), answers.c.id.desc())
            .limit(limit)
        )
        with connection(self.engine, "loading the asker's questions") as conn:
            return [_answer_record(r) for r in conn.execute(query).all()]

    def answers_to_review(self, *, limit: int) -> list[tuple[AnswerRecord, int]]:
        """The latest answers rated 👎 (in force) or abstained on, each with its 👎 count,
        newest first; those an expert has approved or corrected since are left out."""
        down = (
            sa.select(ratings.c.answer_id, sa.func.count().label("downs"))
            .where(ratings.c.kind == RatingKind.DOWN.value, ratings.c.retracted_at.is_(None))
            .group_by(ratings.c.answer_id)
            .subquery()
        )
        approved = sa.select(ratings.c.answer_id).where(
            ratings.c.kind == RatingKind.APPROVED.value, ratings.c.retracted_at.is_(None)
        )
        corrected = sa.select(corrections.c.answer_id).where(
            corrections.c.approved.is_(True), corrections.c.withdrawn_at.is_(None)
        )
        query = (
            sa.select(answers, sa.func.coalesce(down.c.downs, 0).label("downs"))
            .outerjoin(down, down.c.answer_id == answers.c.id)
            .where(
                (down.c.downs > 0) | answers.c.abstained.is_(True),
                answers.c.id.not_in(approved),
                answers.c.id.not_in(corrected),
            )
            .order_by(answers.c.created_at.desc(), answers.c.id.desc())
            .limit(limit)
        )
        with connection(self.engine, "loading the answers to review") as conn:
            return [(_answer_record(r), int(r.downs)) for r in conn.execute(query).all()]

    def public_well_rated_questions(self, *, limit: int) -> list[str]:
        """Questions asked in public channels whose answers were rated 👍 or approved (and not
        👎), newest first, where everything the answer was written from — retrieved and cited —
        is public: questions anyone may be shown."""
        liked = sa.select(ratings.c.answer_id).where(
            ratings.c.kind.in_([RatingKind.UP.value, RatingKind.APPROVED.value]),
            ratings.c.retracted_at.is_(None),
        )
        disliked = sa.select(ratings.c.answer_id).where(
            ratings.c.kind == RatingKind.DOWN.value, ratings.c.retracted_at.is_(None)
        )
        query = (
            sa.select(answers)
            .where(
                answers.c.where_kind == "public",
                answers.c.abstained.is_(False),
                answers.c.id.in_(liked),
                answers.c.id.not_in(disliked),
            )
            .order_by(answers.c.created_at.desc(), answers.c.id.desc())
            .limit(limit * 5)
        )
        with connection(self.engine, "loading the well-rated questions") as conn:
            rows = [_answer_record(r) for r in conn.execute(query).all()]
        public = Access.PUBLIC.value
        return [
            row.question
            for row in rows
            if all(c.access == public for c in row.retrieved)
            and all(s.source.access == public for s in row.sources)
        ][:limit]

    def feedback_counts(self) -> dict[str, int]:
        """Ratings in force by kind, expert corrections, non-expert comments, answers given."""
        with connection(self.engine, "counting the feedback") as conn:
            by_kind: dict[str, int] = dict(
                conn.execute(
                    sa.select(ratings.c.kind, sa.func.count())
                    .where(ratings.c.retracted_at.is_(None))
                    .group_by(ratings.c.kind)
                ).all()
            )
            by_approval: dict[bool, int] = dict(
                conn.execute(
                    sa.select(corrections.c.approved, sa.func.count())
                    .where(corrections.c.withdrawn_at.is_(None))
                    .group_by(corrections.c.approved)
                ).all()
            )
            total = conn.execute(sa.select(sa.func.count()).select_from(answers)).scalar()
        return {
            "answers": int(total or 0),
            **{kind.value: int(by_kind.get(kind.value, 0)) for kind in RatingKind},
            "corrections": int(by_approval.get(True, 0)),
            "comments": int(by_approval.get(False, 0)),
        }

    def _curated(self, curated_id: str, similarity: float) -> CuratedAnswer | None:
        with connection(self.engine, "loading the curated answer") as conn:
            row = conn.execute(
                sa.select(curated_answers).where(curated_answers.c.id == curated_id)
            ).first()
        if row is None:
            return None
        return CuratedAnswer(
            id=row.id,
            question=row.question,
            answer=row.answer,
            sources=tuple(StoredSource.from_json(s) for s in json.loads(row.sources)),
            approved_by=row.approved_by,
            kind=CuratedKind(row.kind),
            created_at=row.created_at,
            similarity=similarity,
            guards=tuple(StoredSource.from_json(g) for g in json.loads(row.guards or "[]")),
        )

    def _execute(self, statement: Any, *, doing: str) -> None:
        with transaction(self.engine, doing) as conn:
            conn.execute(statement)


def _expert_answer_query() -> sa.Select[Any]:
    """Curated answers with where the answer they came from was given (for rows of before m004,
    whose access is worked out when read)."""
    return sa.select(
        curated_answers,
        answers.c.where_kind,
        answers.c.channel,
        answers.c.asker,
    ).select_from(curated_answers.outerjoin(answers, curated_answers.c.answer_id == answers.c.id))


def _expert_answer(row: sa.Row[Any]) -> ExpertAnswer:
    scope = _stored_access(row)
    return ExpertAnswer(
        id=row.id,
        question=row.question,
        answer=row.answer,
        approved_by=row.approved_by,
        kind=CuratedKind(row.kind),
        created_at=row.created_at,
        answer_id=row.answer_id,
        access=scope.access,
        allowed=scope.allowed,
        unindexable=scope.unindexable,
        active=bool(row.active),
        embedding=np.frombuffer(row.embedding, dtype=np.float32),
    )


def _stored_access(row: sa.Row[Any]) -> AnswerAccess:
    """Who may find a curated answer in the index: as stored, or, for a row of before m004,
    from what it was written from (its sources and non-public guards), else where it was given;
    not indexed when neither is known."""
    if row.access is not None:
        return AnswerAccess(row.access, tuple(json.loads(row.allowed or "[]")))
    if row.unindexed is not None:
        return AnswerAccess.not_indexed(row.unindexed)
    passages = [
        StoredSource.from_json(s)
        for s in (*json.loads(row.sources), *json.loads(row.guards or "[]"))
    ]
    found = combined_access(passages)
    if found is not None:
        return found
    if row.kind == CuratedKind.IMPORTED.value:
        return PUBLIC_ACCESS  # imports were public before their lines could say otherwise
    if row.where_kind is not None:
        return channel_access(row.where_kind, row.channel, row.asker)
    return AnswerAccess.not_indexed(
        "recorded before access was kept, from no passages, in an unknown conversation"
    )


def _narrowest(*scopes: AnswerAccess) -> AnswerAccess:
    """The access that every one of `scopes` allows (not indexed if one is not)."""
    for scope in scopes:
        if scope.access is None:
            return scope
    passages = [StoredSource("", "", "", s.access or "", s.allowed) for s in scopes]
    return combined_access(passages) or PUBLIC_ACCESS


def _answer_values(answer: AnswerRecord) -> dict[str, Any]:
    """An answer as the columns of `answers` (its retrieved chunks and sources as JSON)."""
    return {
        "id": answer.id,
        "created_at": answer.created_at,
        "question": answer.question,
        "asker": answer.asker,
        "platform": answer.platform,
        "where_kind": answer.where_kind,
        "channel": answer.channel,
        "thread": answer.thread,
        "retrieved": json.dumps([c.as_json() for c in answer.retrieved], ensure_ascii=False),
        "answer": answer.answer,
        "sources": json.dumps([s.as_json() for s in answer.sources], ensure_ascii=False),
        "abstained": answer.abstained,
        "curated_id": answer.curated_id,
        "model": answer.model,
        "adapter": answer.adapter,
        "retrieval_s": answer.retrieval_s,
        "generation_s": answer.generation_s,
        "total_s": answer.total_s,
        "signals": json.dumps(answer.signals) if answer.signals is not None else None,
    }


def _answer_record(row: sa.Row[Any]) -> AnswerRecord:
    return AnswerRecord(
        id=row.id,
        question=row.question,
        asker=row.asker,
        platform=row.platform,
        where_kind=row.where_kind,
        channel=row.channel,
        thread=row.thread,
        answer=row.answer,
        abstained=bool(row.abstained),
        model=row.model,
        adapter=row.adapter,
        retrieved=tuple(RetrievedChunk.from_json(c) for c in json.loads(row.retrieved)),
        sources=tuple(CitedSource.from_json(s) for s in json.loads(row.sources)),
        curated_id=row.curated_id,
        retrieval_s=row.retrieval_s,
        generation_s=row.generation_s,
        total_s=row.total_s,
        signals=json.loads(row.signals) if row.signals else None,
        created_at=row.created_at,
    )


def _rating(row: sa.Row[Any]) -> RatingRecord:
    return RatingRecord(
        id=row.id,
        answer_id=row.answer_id,
        user_id=row.user_id,
        platform=row.platform,
        kind=RatingKind(row.kind),
        source=row.source,
        expert=bool(row.expert),
        comment=row.comment,
        created_at=row.created_at,
        updated_at=row.updated_at,
        retracted_at=row.retracted_at,
    )


def _correction(row: sa.Row[Any]) -> CorrectionRecord:
    return CorrectionRecord(
        id=row.id,
        answer_id=row.answer_id,
        user_id=row.user_id,
        platform=row.platform,
        text=row.text,
        approved=bool(row.approved),
        curated_id=row.curated_id,
        created_at=row.created_at,
    )


def _dialect_insert(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert
