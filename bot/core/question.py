"""A question as the core receives it, and the answer it gives.

Slack and Teams turn their events into a `Question` and render the `Answer`; the CLI does the
same. Nothing here knows a platform.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from training.serving.prompting import Passage, Turn

__all__ = ["Answer", "Passage", "Question", "Source", "Timings", "Turn", "Where", "WhereKind"]


class WhereKind(StrEnum):
    """Where a question was asked; it decides which documents may be used."""

    PUBLIC = "public"  # a public channel: public documents only
    PRIVATE = "private"  # a private channel or group chat: plus documents restricted to it
    DM = "dm"  # a direct message: plus the asker's groups, and private ones if permitted


@dataclass(frozen=True, slots=True)
class Where:
    kind: WhereKind = WhereKind.PUBLIC
    channel: str | None = None
    platform: str = "cli"
    thread: str | None = None


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    asker: str = "anonymous"
    where: Where = field(default_factory=Where)
    history: tuple[Turn, ...] = ()  # the thread's earlier turns, oldest first
    asker_groups: frozenset[str] = frozenset()  # e.g. Slack user groups, AAD groups
    # What the asker is looking at (a channel's id and name): it may rank what the answer uses,
    # never widen it (`where` alone decides the documents).
    viewing: tuple[str, ...] = ()

    def as_record(self) -> dict[str, Any]:
        """The question as JSON, to be answered later (by another process, too) exactly as it
        was asked: the same place, asker and groups, hence the same documents."""
        return {
            "text": self.text,
            "asker": self.asker,
            "where": {
                "kind": self.where.kind.value,
                "channel": self.where.channel,
                "platform": self.where.platform,
                "thread": self.where.thread,
            },
            "history": [[turn.role, turn.text] for turn in self.history],
            "asker_groups": sorted(self.asker_groups),
        } | ({"viewing": list(self.viewing)} if self.viewing else {})

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Question:
        where = record["where"]
        return cls(
            text=record["text"],
            asker=record["asker"],
            where=Where(
                kind=WhereKind(where["kind"]),
                channel=where["channel"],
                platform=where["platform"],
                thread=where["thread"],
            ),
            history=tuple(Turn(role, text) for role, text in record["history"]),
            asker_groups=frozenset(record["asker_groups"]),
            viewing=tuple(record.get("viewing") or ()),
        )


@dataclass(frozen=True, slots=True)
class Source:
    number: int  # as cited in the answer text: [number]
    title: str
    uri: str
    heading: str
    excerpt: str = ""  # the cited passage's text (Teams shows it in the citation's pop-up)

    @property
    def label(self) -> str:
        return f"{self.title} › {self.heading}" if self.heading else self.title

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "title": self.title,
            "uri": self.uri,
            "heading": self.heading,
        }


@dataclass(frozen=True, slots=True)
class Timings:
    retrieval_s: float = 0.0  # embedding the question and searching
    prompt_s: float = 0.0  # assembling the prompt within its budgets
    queued_s: float = 0.0  # waiting for the model
    first_token_s: float | None = None  # from the question to the first streamed text
    generation_s: float = 0.0
    total_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if v is not None else None) for k, v in self._items()}

    def _items(self) -> list[tuple[str, float | None]]:
        return [
            ("retrieval_s", self.retrieval_s),
            ("prompt_s", self.prompt_s),
            ("queued_s", self.queued_s),
            ("first_token_s", self.first_token_s),
            ("generation_s", self.generation_s),
            ("total_s", self.total_s),
        ]


@dataclass(frozen=True, slots=True)
class Answer:
    id: str  # the answer is recorded under this id (feedback refers to it)
    question: str
    text: str
    sources: tuple[Source, ...]  # only the cited ones, numbered as in `text`
    abstained: bool
    curated: bool  # an expert-approved answer served as is
    model: str
    adapter: str | None
    timings: Timings
    passages: tuple[Passage, ...] = ()  # what the model was shown, in prompt order
    invalid_citations: int = 0  # citation numbers the model wrote that matched no passage
    approved_by: str | None = None  # for a curated answer
    finish_reason: str = "stop"
    # What the abstention rule scored the retrieval (classifier: P(answerable); similarity:
    # the best cosine; generator: the judge's score); None for curated answers.
    answerability: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "answer": self.text,
            "sources": [
                {"title": s.title, "uri": s.uri, "heading": s.heading} for s in self.sources
            ],
            # What the model was shown (whether or not it cited them).
            "passages": [
                {"title": p.title, "uri": p.uri, "heading": p.heading} for p in self.passages
            ],
            "abstained": self.abstained,
            "curated": self.curated,
            "answerability": None if self.answerability is None else round(self.answerability, 4),
            "model": self.model,
            "adapter": self.adapter,
            "timings": self.timings.as_json(),
        }
