"""The feedback vocabulary and the records the feedback store keeps and hands back.

`RatingKind` and `CuratedKind` are the kinds as stored (their values are the stored strings).
`AnswerRecord` is one answer given, as the answering core records it and as readers get it back;
`RatingRecord` and `CorrectionRecord` are what people said about it; `TrainingCandidate` and
`ImportedExample` are what the training set is built from; `CuratedAnswer` is an expert's answer
served as is, with the access (`StoredSource`) of everything it was written from; `ExpertAnswer`
is the same answer as the index shows it, with the one access label (`AnswerAccess`) it may carry
there: `combined_access` and `channel_access` decide it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np

from base.database import utcnow
from knowledge.models import Access, AccessScope


class RatingKind(StrEnum):
    """What a rating says: 👍, 👎, or an expert's approval."""

    UP = "up"
    DOWN = "down"
    APPROVED = "approved"


class CuratedKind(StrEnum):
    """How a curated answer came to be."""

    APPROVED = "approved"  # an expert approved the bot's answer as it was
    CORRECTED = "corrected"  # an expert wrote the right answer
    IMPORTED = "imported"  # an expert's answer from a file (`expertbot dataset import`)


@dataclass(frozen=True, slots=True)
class StoredSource:
    """A document an answer was written from, with who may see it."""

    title: str
    uri: str
    heading: str
    access: str = Access.PUBLIC.value
    allowed: tuple[str, ...] = ()

    def visible_in(self, scope: AccessScope | None) -> bool:
        """Whether it may be shown in `scope` (None: no access filtering)."""
        return scope is None or scope.sees(self.access, self.allowed)

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "uri": self.uri,
            "heading": self.heading,
            "access": self.access,
            "allowed": list(self.allowed),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StoredSource:
        return cls(
            title=str(data.get("title", "")),
            uri=str(data.get("uri", "")),
            heading=str(data.get("heading", "")),
            access=str(data.get("access", Access.PUBLIC.value)),
            allowed=tuple(data.get("allowed", ())),
        )


@dataclass(frozen=True, slots=True)
class CitedSource:
    """A source an answer cites as `[number]`."""

    number: int
    source: StoredSource

    def as_json(self) -> dict[str, Any]:
        return {"number": self.number} | self.source.as_json()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CitedSource:
        return cls(int(data.get("number", 0)), StoredSource.from_json(data))


@dataclass(frozen=True, slots=True)
class RetrievedChunk:
    """A chunk retrieved for a question (shown to the model, cited or not)."""

    chunk_id: str
    doc: str
    title: str = ""
    score: float = 0.0
    access: str = Access.PUBLIC.value
    allowed: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "doc": self.doc,
            "title": self.title,
            "score": self.score,
            "access": self.access,
            "allowed": list(self.allowed),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RetrievedChunk:
        return cls(
            chunk_id=str(data.get("chunk_id", "")),
            doc=str(data.get("doc", "")),
            title=str(data.get("title", "")),
            score=float(data.get("score", 0.0)),
            access=str(data.get("access", Access.PUBLIC.value)),
            allowed=tuple(data.get("allowed", ())),
        )


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """One answer given: the question, who asked it where, what was retrieved for it, the answer
    and the sources it cites, the model that wrote it and how long it took."""

    id: str
    question: str
    asker: str
    platform: str
    where_kind: str  # public | private | dm
    channel: str | None
    thread: str | None
    answer: str
    abstained: bool
    model: str
    adapter: str | None = None
    retrieved: tuple[RetrievedChunk, ...] = ()
    sources: tuple[CitedSource, ...] = ()
    curated_id: str | None = None  # the curated answer served, if any
    retrieval_s: float | None = None
    generation_s: float | None = None
    total_s: float | None = None
    # What retrieval said about answerability ({signal: value}; None for curated answers and
    # answers recorded before signals were kept).
    signals: dict[str, float | None] | None = None
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class RatingRecord:
    """One person's rating of one kind on an answer; `retracted_at` is set once withdrawn."""

    id: int
    answer_id: str
    user_id: str
    platform: str
    kind: RatingKind
    source: str  # how it was given: reaction | button | feedback_loop | card
    expert: bool
    comment: str | None
    created_at: datetime
    updated_at: datetime
    retracted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CorrectionRecord:
    """A correction of an answer: an expert's (`approved`) is a training target, anyone else's a
    comment."""

    id: str
    answer_id: str
    user_id: str
    platform: str
    text: str
    approved: bool
    curated_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TrainingCandidate:
    """An answer with a rating in force or a correction, with those ratings and corrections."""

    answer: AnswerRecord
    ratings: tuple[RatingRecord, ...] = ()
    corrections: tuple[CorrectionRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class ImportedExample:
    """An expert's question and answer imported from a file; `id` is its curated answer's."""

    question: str
    answer: str
    approved_by: str
    created_at: datetime
    id: str = ""


@dataclass(frozen=True, slots=True)
class CuratedAnswer:
    """An expert's answer, served as is to near-identical questions where everything it was
    written from (`sources` cited, `guards` not) is visible."""

    id: str
    question: str
    answer: str
    sources: tuple[StoredSource, ...]
    approved_by: str
    kind: CuratedKind
    created_at: datetime
    similarity: float = 1.0
    guards: tuple[StoredSource, ...] = ()


@dataclass(frozen=True, slots=True)
class AnswerAccess:
    """Who may find an expert answer in the index: one access label and its allowed channels /
    groups, or, where no one label says it without widening, `unindexable`: why it stays out of
    the index (the fast path, which checks every passage exactly, still serves it)."""

    access: str | None
    allowed: tuple[str, ...] = ()
    unindexable: str | None = None

    @classmethod
    def not_indexed(cls, reason: str) -> AnswerAccess:
        return cls(None, (), reason)

    def describe(self) -> str:
        """`public`, `restricted to C1, C2`, `private` or `not indexed: <why>`."""
        if self.access is None:
            return f"not indexed: {self.unindexable}"
        if self.access == Access.RESTRICTED:
            return f"restricted to {', '.join(self.allowed)}"
        return self.access


PUBLIC_ACCESS = AnswerAccess(Access.PUBLIC.value)


def combined_access(passages: Iterable[StoredSource]) -> AnswerAccess | None:
    """The access of an answer written from `passages`, never wider than any of them; None for
    no passages (the caller then decides, e.g. by the channel it was given in).

    All public: public. Public passages narrow nothing; of the others, all restricted: restricted
    to the channels / groups every one of them allows; all private: private. An empty
    intersection, or private and restricted passages together, cannot be one label without
    widening: not indexed."""
    passages = list(passages)
    if not passages:
        return None
    guarded = [p for p in passages if p.access != Access.PUBLIC]
    if not guarded:
        return PUBLIC_ACCESS
    kinds = {p.access for p in guarded}
    if kinds == {Access.PRIVATE.value}:
        return AnswerAccess(Access.PRIVATE.value)
    if kinds != {Access.RESTRICTED.value}:
        return AnswerAccess.not_indexed(
            "written from both private and restricted passages (no one label covers them)"
        )
    shared = set(guarded[0].allowed).intersection(*(p.allowed for p in guarded[1:]))
    if not shared:
        return AnswerAccess.not_indexed(
            "written from restricted passages that no one channel or group may all see"
        )
    return AnswerAccess(Access.RESTRICTED.value, tuple(sorted(shared)))


def channel_access(where_kind: str, channel: str | None, asker: str) -> AnswerAccess:
    """The scope of the conversation an answer was given in: a public channel is public; a
    private channel or group chat restricted to it; a DM restricted to its asker and to it."""
    if where_kind == "public":
        return PUBLIC_ACCESS
    if where_kind == "private":
        if not channel:
            return AnswerAccess.not_indexed("given in a private conversation of unknown id")
        return AnswerAccess(Access.RESTRICTED.value, (channel,))
    principals = tuple(dict.fromkeys(p for p in (asker, channel) if p))
    if not principals:
        return AnswerAccess.not_indexed("given in a direct message of unknown id")
    return AnswerAccess(Access.RESTRICTED.value, principals)


@dataclass(frozen=True, slots=True)
class ExpertAnswer:
    """An expert's answer (approved, corrected or imported) as the index and `expertbot dataset
    list` show it. `access` / `allowed` say who may find it; `unindexable`, when set, why no one
    may (it is then served by the fast path only). `embedding` is its question's (normalised),
    telling near-identical questions apart."""

    id: str
    question: str
    answer: str
    approved_by: str
    kind: CuratedKind
    created_at: datetime
    answer_id: str | None
    access: str | None
    allowed: tuple[str, ...]
    unindexable: str | None
    active: bool
    embedding: np.ndarray = field(repr=False, compare=False)

    @property
    def scope(self) -> AnswerAccess:
        return AnswerAccess(self.access, self.allowed, self.unindexable)
