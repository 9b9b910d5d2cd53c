"""Feedback → training set: what the model should have answered, with what it answered from.

Targets, by strength of the decision behind them:

- an expert's **correction** (the correction is the target);
- an expert's **approval** of the bot's answer;
- an **imported** expert answer (`expertbot dataset import`, to seed the loop from a FAQ);
- an answer whose **net rating** (👍 minus 👎 in force) reaches `dataset.min_net_rating`.

Negatively rated answers are never targets (a correction of one is: its target is the
correction). Retracted ratings do not count. Near-duplicate questions are one question: an
expert's decision beats the crowd's, and among those the latest wins. Each example carries the
context it is to be answered from — the passages retrieved for its question where it was asked
(re-retrieved now, so the model learns to answer from today's documents, with citations) — and
lands in a stable split by question: `train`, or `heldout` for the eval gate. The export is
versioned by its content hash.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from base.database import utcnow
from base.errors import InputFileError
from knowledge.evaluation import read_jsonl
from training.config import DatasetConfig
from training.feedback.records import (
    AnswerRecord,
    CuratedKind,
    ImportedExample,
    RatingKind,
    TrainingCandidate,
)
from training.serving.degeneration import QUOTE_MODEL
from training.serving.prompting import Passage


class ExampleKind(StrEnum):
    """Where an example's target comes from: an expert's decision, named as its curated answer's
    kind (a correction, an approval, an import), or ratings that approve of the answer."""

    CORRECTED = CuratedKind.CORRECTED.value
    APPROVED = CuratedKind.APPROVED.value
    IMPORTED = CuratedKind.IMPORTED.value
    RATED = "rated"


KIND_STRENGTH = {
    ExampleKind.CORRECTED: 3,
    ExampleKind.APPROVED: 3,
    ExampleKind.IMPORTED: 2,
    ExampleKind.RATED: 1,
}

# Passages for a question asked where a recorded answer was asked (None: an imported example).
Retrieve = Callable[[str, AnswerRecord | None], Awaitable[list[Passage]]]
Embed = Callable[[Sequence[str]], Awaitable[np.ndarray]]


@dataclass(frozen=True, slots=True)
class Example:
    id: str  # stable: the answer id, or a hash of an imported question
    question: str
    answer: str  # the target
    kind: ExampleKind
    decided_by: str  # the expert, or "ratings"
    decided_at: datetime
    answer_id: str | None = None
    passages: tuple[Passage, ...] = ()
    split: str = "train"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["decided_at"] = self.decided_at.isoformat()
        data["passages"] = [
            {"title": p.title, "heading": p.heading, "uri": p.uri, "text": p.text}
            for p in self.passages
        ]
        return data


@dataclass
class TrainingSet:
    examples: list[Example]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count

    def split(self, name: str) -> list[Example]:
        return [e for e in self.examples if e.split == name]

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.jsonl().encode()).hexdigest()

    def jsonl(self) -> str:
        lines = [json.dumps(e.as_json(), ensure_ascii=False, sort_keys=True) for e in self.examples]
        return "".join(line + "\n" for line in sorted(lines))

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for e in self.examples:
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
        return {
            "examples": len(self.examples),
            "train": len(self.split("train")),
            "heldout": len(self.split("heldout")),
            "kinds": kinds,
            "skipped": dict(self.skipped),
            "hash": self.content_hash,
        }

    def export(self, directory: Path) -> Path:
        """Write `<directory>/ds-<hash12>.jsonl` (and its summary) once; returns the path."""
        digest = self.content_hash
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"ds-{digest[:12]}.jsonl"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(self.jsonl(), encoding="utf-8")
            tmp.replace(path)
            meta = self.summary() | {"created_at": utcnow().isoformat(), "file": path.name}
            path.with_suffix(".json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return path


async def build_training_set(
    candidates: Sequence[TrainingCandidate],
    imported: Sequence[ImportedExample],
    *,
    config: DatasetConfig,
    retrieve: Retrieve,
    embed: Embed,
) -> TrainingSet:
    """`candidates`: the store's `training_candidates()` (answers with their ratings in force and
    corrections); `imported`: its `imported_examples()`."""
    skipped: dict[str, int] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    chosen: list[tuple[Example, AnswerRecord | None]] = []
    for candidate in candidates:
        example = _decide(candidate, config, skip)
        if example is not None:
            chosen.append((example, candidate.answer))
    for item in imported:
        chosen.append(
            (
                Example(
                    id="imp-" + _digest(_normalise(item.question))[:16],
                    question=item.question,
                    answer=item.answer,
                    kind=ExampleKind.IMPORTED,
                    decided_by=item.approved_by,
                    decided_at=item.created_at,
                ),
                None,
            )
        )

    cleaned: list[tuple[Example, AnswerRecord | None]] = []
    for example, asked in chosen:
        answer = example.answer.strip()
        question = example.question.strip()
        if config.scrub:
            answer, question = scrub(answer), scrub(question)
        if not answer or not question:
            skip("empty")
        elif len(answer) > config.max_answer_chars:
            skip("too long")
        else:
            cleaned.append((replace(example, question=question, answer=answer), asked))

    kept = await _dedupe(cleaned, embed, config.dedupe_similarity, skip)
    examples: list[Example] = []
    for example, asked in kept:
        passages = tuple(await retrieve(example.question, asked))
        examples.append(
            replace(
                example,
                passages=passages,
                split=split_of(example.question, config.heldout_fraction),
            )
        )
    examples.sort(key=lambda e: e.id)
    return TrainingSet(examples, skipped)


def _decide(
    candidate: TrainingCandidate, config: DatasetConfig, skip: Callable[[str], None]
) -> Example | None:
    answer = candidate.answer
    ratings = candidate.ratings  # in force only

    def decided(target: str, kind: ExampleKind, by: str, at: datetime) -> Example:
        return Example(
            id=answer.id,
            question=answer.question,
            answer=target,
            kind=kind,
            decided_by=by,
            decided_at=at,
            answer_id=answer.id,
        )

    corrections = [c for c in candidate.corrections if c.approved]
    if corrections:
        correction = max(corrections, key=lambda c: c.created_at)
        return decided(
            correction.text, ExampleKind.CORRECTED, correction.user_id, correction.created_at
        )
    if answer.model == QUOTE_MODEL:
        # A passage quoted in place of a broken generation: approving it says the passage was
        # right, not that the model should answer like that. Only a correction teaches.
        skip("a quoted passage, not a written answer")
        return None
    net = sum(1 for r in ratings if r.kind == RatingKind.UP) - sum(
        1 for r in ratings if r.kind == RatingKind.DOWN
    )
    if net < 0:
        skip("negatively rated")
        return None
    approvals = [r for r in ratings if r.kind == RatingKind.APPROVED and r.expert]
    if approvals:
        approval = max(approvals, key=lambda r: r.updated_at)
        return decided(answer.answer, ExampleKind.APPROVED, approval.user_id, approval.updated_at)
    if net >= config.min_net_rating:
        return decided(
            answer.answer, ExampleKind.RATED, "ratings", max(r.updated_at for r in ratings)
        )
    skip("not enough approval")
    return None


async def _dedupe(
    items: list[tuple[Example, AnswerRecord | None]],
    embed: Embed,
    threshold: float,
    skip: Callable[[str], None],
) -> list[tuple[Example, AnswerRecord | None]]:
    """One example per question: the strongest decision, then the latest, wins."""
    if not items:
        return []
    order = sorted(
        range(len(items)),
        key=lambda i: (KIND_STRENGTH[items[i][0].kind], items[i][0].decided_at),
        reverse=True,
    )
    vectors = np.asarray(await embed([items[i][0].question for i in order]), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    kept: list[int] = []
    for position in range(len(order)):
        if kept and float(np.max(vectors[kept] @ vectors[position])) >= threshold:
            skip("near-duplicate question")
            continue
        kept.append(position)
    return [items[order[p]] for p in kept]


def split_of(question: str, heldout_fraction: float) -> str:
    """`heldout` for a stable share of questions (by their normalised text), else `train`."""
    bucket = int(_digest(_normalise(question))[:8], 16) / 0xFFFFFFFF
    return "heldout" if bucket < heldout_fraction else "train"


_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_PHONE = re.compile(r"(?<![\w/])\+?\d[\d ().-]{7,}\d(?![\w/])")
_SECRETS = [
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),  # API keys in the OpenAI style
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"),  # GitHub tokens
    re.compile(r"(?i)\b(password|passwd|secret|token|api[_-]?key)\s*[:=]\s*\S+"),
]


def scrub(text: str) -> str:
    """E-mail addresses, phone numbers and secrets replaced by placeholders."""
    for pattern in _SECRETS:
        text = pattern.sub(
            lambda m: (m.group(1) + ": [secret]") if m.lastindex else "[secret]", text
        )
    text = _EMAIL.sub("[email]", text)
    return _PHONE.sub(
        lambda m: "[phone]" if sum(ch.isdigit() for ch in m.group()) >= 9 else m.group(), text
    )


def read_import(path: Path) -> list[dict[str, Any]]:
    """Lines `{"question", "answer", "approved_by"}`, optionally with `"access"` (public,
    restricted or private: who may find the answer in the index; default public) and, for
    restricted, `"allowed"` (the channel / group ids); any bad line is an error naming it."""
    rows: list[dict[str, Any]] = []
    keys = ("question", "answer", "approved_by")
    for number, data in read_jsonl(
        path, expected='an object {"question", "answer", "approved_by"}'
    ):
        missing = [k for k in keys if not str(data.get(k) or "").strip()]
        if missing:
            raise InputFileError(f"{path}:{number}: missing {', '.join(missing)}")
        row: dict[str, Any] = {k: str(data[k]).strip() for k in keys}
        row["access"], row["allowed"] = _import_access(data, f"{path}:{number}")
        rows.append(row)
    if not rows:
        raise InputFileError(f"{path} has no examples")
    return rows


def _import_access(data: dict[str, Any], where: str) -> tuple[str, list[str]]:
    access = str(data.get("access") or "public").strip().lower()
    if access not in ("public", "restricted", "private"):
        raise InputFileError(f"{where}: access must be public, restricted or private")
    allowed = data.get("allowed")
    if allowed is None:
        allowed = []
    if not isinstance(allowed, list) or not all(isinstance(a, str) and a.strip() for a in allowed):
        raise InputFileError(f"{where}: allowed must be a list of channel or group ids")
    if access == "restricted" and not allowed:
        raise InputFileError(f"{where}: access restricted needs allowed (channel or group ids)")
    if access != "restricted" and allowed:
        raise InputFileError(f"{where}: allowed applies to access restricted only")
    return access, [a.strip() for a in allowed]


def _normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
