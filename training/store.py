"""The feedback store, as far as answering needs it: every answer given, and curated answers.

SQLAlchemy on the shared SQL store (SQLite by default, PostgreSQL by URL), namespace
`training`, numbered migrations. The learning-loop issue adds ratings, corrections and the
training set on top; here:

- `record(...)` keeps each answered question (question, asker, where, retrieved chunks, answer,
  cited sources, model and adapter, timings) under the Answer's id;
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

from knowledge.database import Migration, migrate, utcnow
from knowledge.errors import DatabaseError
from knowledge.models import Access, AccessScope

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
    sa.Index("ix_curated_active", "active"),
)


def _m001_answers_and_curated(conn: Connection) -> None:
    answers.create(conn)
    curated_answers.create(conn)


MIGRATIONS = [Migration("m001_answers_and_curated", _m001_answers_and_curated)]


def migrate_training(engine: Engine) -> list[str]:
    return migrate(engine, "training", MIGRATIONS)


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


class AnswerStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def migrate(self) -> None:
        migrate_training(self.engine)

    def record(self, **row: Any) -> None:
        """Keep one answer (columns of `answers`; JSON columns as Python values)."""
        for key in ("retrieved", "sources"):
            row[key] = json.dumps(row.get(key, []), ensure_ascii=False)
        row.setdefault("created_at", utcnow())
        self._execute(answers.insert().values(**row))

    def get_answer(self, answer_id: str) -> dict[str, Any] | None:
        with self._connect() as conn:
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
    ) -> str:
        """Store an expert-approved (or corrected, or imported) answer; returns its id. Among
        near-identical questions the newest wins (see find_curated)."""
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
            )
        )
        return curated_id

    def find_curated(
        self, embedding: np.ndarray, *, threshold: float, scope: AccessScope | None
    ) -> CuratedAnswer | None:
        """The latest active curated answer whose question's cosine similarity to `embedding`
        is at least `threshold` and whose sources are all visible in `scope`."""
        with self._connect() as conn:
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
            if found and all(s.visible_in(scope) for s in found.sources):
                return found
        return None

    def _curated(self, curated_id: str, similarity: float) -> CuratedAnswer | None:
        with self._connect() as conn:
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
        )

    def _connect(self) -> Any:
        try:
            return self.engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"cannot reach the database: {exc.__class__.__name__}") from exc

    def _execute(self, statement: Any) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(statement)
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(
                f"writing to the feedback store failed: {exc.__class__.__name__}"
            ) from exc
