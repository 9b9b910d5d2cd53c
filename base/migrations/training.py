"""The `training` namespace: the feedback store. Frozen: add, never edit."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from base.migrations.runner import Migration


def _m001_answers_and_curated(conn: Connection) -> None:
    metadata = sa.MetaData()
    answers = sa.Table(
        "answers",
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("asker", sa.String(256), nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("where_kind", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(256)),
        sa.Column("thread", sa.String(256)),
        sa.Column("retrieved", sa.Text, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("sources", sa.Text, nullable=False),
        sa.Column("abstained", sa.Boolean, nullable=False),
        sa.Column("curated_id", sa.String(36)),
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
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("sources", sa.Text, nullable=False),
        sa.Column("approved_by", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("answer_id", sa.String(36)),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Index("ix_curated_active", "active"),
    )
    answers.create(conn)
    curated_answers.create(conn)


def _m002_feedback(conn: Connection) -> None:
    metadata = sa.MetaData()
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
    ratings = sa.Table(
        "ratings",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("answer_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
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
        sa.Column("approved", sa.Boolean, nullable=False),
        sa.Column("curated_id", sa.String(36)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Index("ix_corrections_answer", "answer_id"),
    )
    for table in (answer_messages, ratings, corrections):
        table.create(conn)
    # The access of every passage a curated answer was written from (JSON [{access, allowed}]):
    # it is served only where all of them are visible, cited or not. Until this history was
    # frozen (release b7b89f5 included), m001 created curated_answers from the live table,
    # guards and all, and this step found the column there: on such a database it adds nothing.
    columns = {c["name"] for c in sa.inspect(conn).get_columns("curated_answers")}
    if "guards" not in columns:
        conn.execute(sa.text("ALTER TABLE curated_answers ADD COLUMN guards TEXT"))


def _m003_answer_signals(conn: Connection) -> None:
    # JSON {signal: value}: what retrieval said about the question's answerability when it was
    # answered, so that the answerability model can be retrained from the feedback on it.
    conn.execute(sa.text("ALTER TABLE answers ADD COLUMN signals TEXT"))


def _m004_expert_answers(conn: Connection) -> None:
    # Who may find an expert answer in the index (public | restricted | private, with its
    # allowed channels / groups as JSON), or why no one label fits; and the chat message holding
    # a correction, so that deleting the message withdraws it.
    added = (
        ("curated_answers", sa.Column("access", sa.String(16))),
        ("curated_answers", sa.Column("allowed", sa.Text)),
        ("curated_answers", sa.Column("unindexed", sa.Text)),
        ("corrections", sa.Column("message_id", sa.String(256))),
        ("corrections", sa.Column("withdrawn_at", sa.DateTime)),
    )
    for table, column in added:
        kind = column.type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column.name} {kind}"))
    conn.execute(
        sa.text("CREATE INDEX ix_corrections_message ON corrections (platform, message_id)")
    )


MIGRATIONS = (
    Migration("m001_answers_and_curated", _m001_answers_and_curated),
    Migration("m002_feedback", _m002_feedback),
    Migration("m003_answer_signals", _m003_answer_signals),
    Migration("m004_expert_answers", _m004_expert_answers),
)
