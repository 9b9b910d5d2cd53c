"""Configuration of the answering core (part of the one `Settings` object)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_settings import NoDecode


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


# A list of ids; in the environment, comma-separated (`EXPERTBOT_SLACK__EXPERTS=U01ABC,U02DEF`)
# or a JSON list.
IdList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]


class AnswerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    passages: int = Field(default=5, ge=1, le=50, description="Passages retrieved per question.")
    abstention: Literal["classifier", "similarity", "generator"] = Field(
        default="classifier",
        description="How to decide that the passages hold no answer (and abstain without "
        "calling the model): the answerability classifier over retrieval signals; the best "
        "passage's cosine similarity (min_similarity); or the generator judge's score "
        "(min_judge_score, needs knowledge.rerank.kind = generator). The classifier serves "
        "only with the embedding model and reranker it was trained with; otherwise the "
        "similarity rule does (`expertbot status` says which).",
    )
    answerability_model: Path | None = Field(
        default=None,
        description="The classifier's file; default: the one `expertbot answerability train` "
        "wrote into the data dir, else the one that ships.",
    )
    min_answerability: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Answer when the classifier's probability is at least this; default: the "
        "threshold saved with the model (balanced on its training questions).",
    )
    min_similarity: float = Field(
        default=0.45,
        ge=-1.0,
        le=1.0,
        description="The similarity rule: abstain when no passage is at least this similar to "
        "the question (cosine, embedding model). 0.45 is the highest threshold that still lets "
        "≥ 90 % of answerable questions through on both calibration corpora "
        "(bench/abstention.py, docs/benchmarks.md); re-calibrate for another embedding model.",
    )
    min_judge_score: float = Field(
        default=0.0,
        description="The generator rule: answer when the judge's score of the best passage is "
        "at least this (log-odds of yes over no: 0 = as likely as not).",
    )
    abstain_message: str = "I couldn't find this in our knowledge base, so I won't guess."
    where_to_ask: str = Field(
        default="",
        description="Appended to an abstention, e.g. 'Try #help-desk or it@example.com.'",
    )
    curated_similarity: float = Field(
        default=0.95,
        ge=0.5,
        le=1.0,
        description="A curated (expert-approved) answer is served when its question is at "
        "least this similar to the new one.",
    )
    private_readers: list[str] = Field(
        default_factory=list,
        description="User ids or groups whose DMs may use private documents.",
    )
    max_question_chars: int = Field(default=4000, ge=16)
    record: bool = Field(default=True, description="Keep every answer in the feedback store.")

    @property
    def abstention_reply(self) -> str:
        """What the bot says when it will not answer: the message, then where to ask."""
        return " ".join(p for p in (self.abstain_message.strip(), self.where_to_ask.strip()) if p)
