"""The experts' answers as documents of the index: the source `expert-answers`.

Every active expert answer (an approval, a correction, an imported line) is one document:
its title `Expert answer: <question>`, one section holding the question, the answer, who gave it
and when (`expert_answer_text`, which the training set shows too), its access the one the
answer was given (`ExpertAnswer.access`). Among near-identical questions only the newest answer
is indexed: the latest expert decision wins, as on the fast path (`FeedbackStore.find_curated`).
An answer whose access no one label can say without widening stays out, with its reason.
`ExpertAnswersFeed` hands them to every sync (`knowledge.sync.DocumentFeed`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC
from typing import TYPE_CHECKING

import numpy as np

from knowledge.models import Access, Document, Section, sha256_hex
from knowledge.sync import FeedListing
from training.feedback.records import CuratedKind, ExpertAnswer

if TYPE_CHECKING:
    from training.feedback.store import FeedbackStore

EXPERT_SOURCE = "expert-answers"
# Questions this similar (cosine of their embeddings) are one question: the newest answer wins.
SAME_QUESTION = 0.95


def expert_answer_title(answer: ExpertAnswer) -> str:
    """The title of an expert answer's document."""
    return f"Expert answer: {answer.question}"


def expert_answer_text(answer: ExpertAnswer) -> str:
    """The passage an expert answer is shown as: the question, the answer, who gave it, when."""
    verb = "approved" if answer.kind == CuratedKind.APPROVED else "answered"
    return (
        f"Question: {answer.question}\n"
        f"Answer: {answer.answer}\n"
        f"({verb} by {answer.approved_by} on {answer.created_at:%Y-%m-%d})"
    )


def expert_answer_uri(curated_id: str) -> str:
    return f"expertbot://{EXPERT_SOURCE}/{curated_id}"


def index_plan(answers: Sequence[ExpertAnswer]) -> list[tuple[ExpertAnswer, str | None]]:
    """Each active answer of `answers` with why it is not indexed (None: it is). Superseded: a
    newer active answer to a near-identical question exists."""
    active = sorted(
        (a for a in answers if a.active), key=lambda a: (a.created_at, a.id), reverse=True
    )
    kept: list[ExpertAnswer] = []
    plan: list[tuple[ExpertAnswer, str | None]] = []
    for answer in active:  # newest first
        newer = _same_question(answer, kept)
        kept.append(answer)
        if newer is not None:
            plan.append((answer, f"superseded by the newer expert answer {newer.id}"))
        elif answer.unindexable is not None:
            plan.append((answer, answer.unindexable))
        else:
            plan.append((answer, None))
    return plan


def expert_answer_document(answer: ExpertAnswer) -> Document:
    """One expert answer as a parsed document; its content hash covers its text and access."""
    text = expert_answer_text(answer)
    access = Access(answer.access or Access.PRIVATE)
    allowed = answer.allowed if access is Access.RESTRICTED else ()
    return Document(
        source=EXPERT_SOURCE,
        doc_id=answer.id,
        title=expert_answer_title(answer),
        uri=expert_answer_uri(answer.id),
        modified=answer.created_at.replace(tzinfo=UTC).timestamp(),  # stored as naive UTC
        content_hash=sha256_hex(f"{text}\x00{access.value}\x00{','.join(allowed)}"),
        access=access,
        allowed=tuple(allowed),
        sections=(Section((), text),),
    )


class ExpertAnswersFeed:
    """The active expert answers of the feedback store, as the `expert-answers` source."""

    name = EXPERT_SOURCE

    def __init__(self, store: FeedbackStore) -> None:
        self.store = store

    async def listing(self) -> FeedListing:
        answers = await asyncio.to_thread(self.store.expert_answers)
        documents: list[Document] = []
        skipped: dict[str, str] = {}
        for answer, reason in index_plan(answers):
            if reason is None:
                documents.append(expert_answer_document(answer))
            elif answer.unindexable is not None and reason == answer.unindexable:
                skipped[answer.id] = f"not indexed: {reason}"
        return FeedListing(documents, skipped)


def _same_question(answer: ExpertAnswer, newer: Sequence[ExpertAnswer]) -> ExpertAnswer | None:
    """The first of `newer` whose question is near-identical to `answer`'s."""
    for other in newer:
        if other.embedding.shape != answer.embedding.shape:
            continue  # embedded by another model: not comparable
        if float(np.dot(other.embedding, answer.embedding)) >= SAME_QUESTION:
            return other
    return None
