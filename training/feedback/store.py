"""The feedback store: every answer given, what people said about it, and curated answers.

SQLAlchemy on the shared SQL store (SQLite by default, PostgreSQL by URL); its tables' history
is the `training` namespace in base/migrations/. It holds:

- `record(...)` keeps each answered question (question, asker, where, retrieved chunks, answer,
  cited sources, model and adapter, timings) under the Answer's id; `link_message(...)` ties
  the chat message that shows it to that id;
- `rate` / `retract` (👍 / 👎), `add_correction` (an expert's or anyone's), and what the
  training set reads back: `training_candidates`, `imported_examples`, `feedback_counts`;
- `add_curated(...)` stores an expert-approved or corrected answer with its question's
  embedding; `find_curated(...)` returns the one whose question is near-identical to a new
  question (cosine ≥ threshold), if the asker may see every source it cites.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from base.database import connection, transaction, utcnow
from base.errors import DatabaseError
from knowledge.models import Access, AccessScope

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
    sa.Index("ix_corrections_answer", "answer_id"),
)


@dataclass(frozen=True, slots=True)
class StoredSource:
    title: str
    uri: str
    heading: str
    access: str = Access.PUBLIC.value
    allowed: tuple[str, ...] = ()

    def visible_in(self, scope: AccessScope | None) -> bool:
        if scope is None or self.access == Access.PUBLIC:
            return True
        if self.access == Access.PRIVATE:
            return scope.include_private
        return bool(scope.principals & set(self.allowed))

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "uri": self.uri,
            "heading": self.heading,
            "access": self.access,
            "allowed": list(self.allowed),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredSource:
        return cls(
            title=str(data.get("title", "")),
            uri=str(data.get("uri", "")),
            heading=str(data.get("heading", "")),
            access=str(data.get("access", Access.PUBLIC.value)),
            allowed=tuple(data.get("allowed", ())),
        )


@dataclass(frozen=True, slots=True)
class CuratedAnswer:
    id: str
    question: str
    answer: str
    sources: tuple[StoredSource, ...]
    approved_by: str
    kind: str
    created_at: datetime
    similarity: float = 1.0
    guards: tuple[StoredSource, ...] = ()


class FeedbackStore:
    """The feedback store: answers, the chat messages showing them, ratings, corrections and
    curated answers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, **row: Any) -> None:
        """Keep one answer (columns of `answers`; JSON columns as Python values)."""
        for key in ("retrieved", "sources"):
            row[key] = json.dumps(row.get(key, []), ensure_ascii=False)
        row.setdefault("created_at", utcnow())
        self._execute(answers.insert().values(**row), doing="recording the answer")

    def get_answer(self, answer_id: str) -> dict[str, Any] | None:
        with connection(self.engine, "loading the answer") as conn:
            found = conn.execute(sa.select(answers).where(answers.c.id == answer_id)).first()
        if found is None:
            return None
        row = dict(found._mapping)
        row["retrieved"] = json.loads(row["retrieved"])
        row["sources"] = json.loads(row["sources"])
        return row

    def add_curated(
        self,
        *,
        question: str,
        embedding: np.ndarray,
        answer: str,
        sources: Sequence[StoredSource] = (),
        approved_by: str,
        kind: str = "approved",
        answer_id: str | None = None,
        guards: Sequence[StoredSource] = (),
    ) -> str:
        """Store an expert-approved (or corrected, or imported) answer; returns its id. Among
        near-identical questions the newest wins (see find_curated). `guards`: the access of
        passages it was written from beyond its cited sources; it is only served where they are
        visible too."""
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
                kind=kind,
                answer_id=answer_id,
                active=True,
                guards=json.dumps([g.as_json() for g in guards], ensure_ascii=False),
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
        kind: str,
        text: str | None = None,
    ) -> str:
        """Make a recorded answer (approved as is, or with `text` as its correction) a curated
        answer. It keeps the access of everything the answer was written from."""
        row = self.get_answer(answer_id)
        if row is None:
            raise DatabaseError(f"no answer {answer_id} in the feedback store")
        sources = [StoredSource.from_json(s) for s in row["sources"]]
        guards = {
            StoredSource.from_json({"access": r.get("access", "public"), **r})
            for r in row["retrieved"]
            if r.get("access", "public") != Access.PUBLIC.value
        }
        if row["curated_id"]:
            served = self._curated(row["curated_id"], 1.0)
            if served is not None:
                sources = list(served.sources)
                guards.update(served.guards)
        return self.add_curated(
            question=row["question"],
            embedding=embedding,
            answer=text if text is not None else row["answer"],
            sources=sources,
            approved_by=approved_by,
            kind=kind,
            answer_id=answer_id,
            guards=[StoredSource("", "", "", g.access, g.allowed) for g in guards],
        )

    def deactivate_curated(self, *, answer_id: str, approved_by: str, kind: str) -> int:
        """Withdraw the curated answers made from `answer_id` by `approved_by` (a retracted
        approval); returns how many."""
        with transaction(self.engine, "withdrawing the curated answer") as conn:
            result = conn.execute(
                curated_answers.update()
                .where(
                    curated_answers.c.answer_id == answer_id,
                    curated_answers.c.approved_by == approved_by,
                    curated_answers.c.kind == kind,
                    curated_answers.c.active.is_(True),
                )
                .values(active=False)
            )
        return int(result.rowcount or 0)

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
    ) -> list[dict[str, Any]]:
        """The answers given in a thread, oldest first: {id, question, answer, abstained}.
        `since`: only those given after it (UTC); `last`: only the most recent ones."""
        query = sa.select(
            answers.c.id, answers.c.question, answers.c.answer, answers.c.abstained
        ).where(
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
        return [dict(r._mapping) for r in reversed(rows)]

    # -- ratings and corrections ---------------------------------------------------------------

    def rate(
        self,
        *,
        answer_id: str,
        user_id: str,
        platform: str,
        kind: str,
        source: str,
        expert: bool = False,
        comment: str | None = None,
    ) -> bool:
        """Record (or revive) `user_id`'s rating of `kind` on an answer; True if it was not in
        force before. Safe with concurrent writers (one row per answer, user and kind)."""
        if kind not in RATING_KINDS:
            raise ValueError(f"unknown rating kind {kind!r}")
        now = utcnow()
        key = (
            (ratings.c.answer_id == answer_id)
            & (ratings.c.user_id == user_id)
            & (ratings.c.kind == kind)
        )
        with transaction(self.engine, "recording the rating") as conn:
            before = conn.execute(sa.select(ratings.c.retracted_at).where(key)).first()
            values = {
                "answer_id": answer_id,
                "user_id": user_id,
                "platform": platform,
                "kind": kind,
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

    def retract(self, *, answer_id: str, user_id: str, kind: str) -> bool:
        """Withdraw a rating (a removed reaction); True if one was in force."""
        with transaction(self.engine, "withdrawing the rating") as conn:
            result = conn.execute(
                ratings.update()
                .where(
                    ratings.c.answer_id == answer_id,
                    ratings.c.user_id == user_id,
                    ratings.c.kind == kind,
                    ratings.c.retracted_at.is_(None),
                )
                .values(retracted_at=utcnow(), updated_at=utcnow())
            )
        return bool(result.rowcount)

    def ratings_for(self, answer_id: str, *, active_only: bool = False) -> list[dict[str, Any]]:
        query = sa.select(ratings).where(ratings.c.answer_id == answer_id).order_by(ratings.c.id)
        if active_only:
            query = query.where(ratings.c.retracted_at.is_(None))
        with connection(self.engine, "loading the answer's ratings") as conn:
            return [dict(r._mapping) for r in conn.execute(query).all()]

    def add_correction(
        self,
        *,
        answer_id: str,
        user_id: str,
        platform: str,
        text: str,
        approved: bool,
        curated_id: str | None = None,
    ) -> str:
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
            ),
            doing="recording the correction",
        )
        return correction_id

    def corrections_for(self, answer_id: str) -> list[dict[str, Any]]:
        with connection(self.engine, "loading the answer's corrections") as conn:
            rows = conn.execute(
                sa.select(corrections)
                .where(corrections.c.answer_id == answer_id)
                .order_by(corrections.c.created_at)
            ).all()
        return [dict(r._mapping) for r in rows]

    def training_candidates(self) -> list[dict[str, Any]]:
        """Every answer with a rating in force or a correction: {answer, ratings, corrections}
        (ratings in force only), for the training-set builder."""
        with connection(self.engine, "loading the training candidates") as conn:
            rated = sa.select(ratings.c.answer_id).where(ratings.c.retracted_at.is_(None))
            corrected = sa.select(corrections.c.answer_id)
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
                sa.select(corrections).where(corrections.c.answer_id.in_(found))
            ).all()
        by_id: dict[str, dict[str, Any]] = {}
        for row in rows:
            answer = dict(row._mapping)
            answer["retrieved"] = json.loads(answer["retrieved"])
            answer["sources"] = json.loads(answer["sources"])
            by_id[row.id] = {"answer": answer, "ratings": [], "corrections": []}
        for vote in votes:
            by_id[vote.answer_id]["ratings"].append(dict(vote._mapping))
        for fix in fixes:
            by_id[fix.answer_id]["corrections"].append(dict(fix._mapping))
        return [by_id[key] for key in sorted(by_id)]

    def imported_examples(self) -> list[dict[str, Any]]:
        """Active curated answers imported from a file: {question, answer, approved_by,
        created_at}."""
        with connection(self.engine, "loading the imported examples") as conn:
            rows = conn.execute(
                sa.select(
                    curated_answers.c.question,
                    curated_answers.c.answer,
                    curated_answers.c.approved_by,
                    curated_answers.c.created_at,
                ).where(curated_answers.c.kind == "imported", curated_answers.c.active.is_(True))
            ).all()
        return [dict(r._mapping) for r in rows]

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
                    sa.select(corrections.c.approved, sa.func.count()).group_by(
                        corrections.c.approved
                    )
                ).all()
            )
            total = conn.execute(sa.select(sa.func.count()).select_from(answers)).scalar()
        return {
            "answers": int(total or 0),
            "up": int(by_kind.get("up", 0)),
            "down": int(by_kind.get("down", 0)),
            "approved": int(by_kind.get("approved", 0)),
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
            kind=row.kind,
            created_at=row.created_at,
            similarity=similarity,
            guards=tuple(StoredSource.from_json(g) for g in json.loads(row.guards or "[]")),
        )

    def _execute(self, statement: Any, *, doing: str) -> None:
        with transaction(self.engine, doing) as conn:
            conn.execute(statement)


RATING_KINDS = ("up", "down", "approved")


def _dialect_insert(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert
