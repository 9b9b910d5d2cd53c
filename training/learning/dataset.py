"""Feedback → training set: what the model should have answered, with what it answered from.

Targets, by strength of the decision behind them:

- an expert's **correction** (the correction is the target);
- an expert's **approval** of the bot's answer;
- an **imported** expert answer (`expertbot dataset import`, to seed the loop from a FAQ);
- an answer whose **net rating** (👍 minus 👎 in force) reaches `dataset.min_net_rating`.

Negatively rated answers are never targets (a correction of one is: its target is the
correction). Retracted ratings do not count. Near-duplicate questions are one question: an
expert's decision beats the crowd's, and among those the latest wins. Each example lands in a
stable split by question: `train`, or `heldout` for the eval gate. The export is versioned by its
content hash.

Facts live in the documents, and experts' answers are documents too (the `expert-answers`
source): the adapter is to learn to *read* the passages it is shown — the company's terms,
format, citations, and when to say it does not know — not to memorise values. So each example
carries the context it is to be answered from, as serving would show it (re-retrieved now,
where it was asked, with the question's own expert answer left out of the retrieval):

- **grounded** (the default recipe, after RAFT): a training example shows its gold passage —
  the question's own expert answer as the index holds it — among the retrieved distractors, at
  a stable position, and its target cites the passages that hold its facts with `[n]`. For a
  share of the questions (`1 - dataset.gold_share` of all examples) a second example shows the
  distractors only, without any passage that holds the answer's facts, and its target is the
  abstention sentence: where the answer is absent, the model learns to say so.
- **retrieved** (the previous recipe, kept for comparison): the passages as retrieved, own
  expert answer left out, and the target as given — which teaches the model to state values no
  passage holds.

Held-out examples are never rearranged: the gate shows them what retrieval finds without their
own expert answer, so it measures reading, not recall of the training targets.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
from training.scoring import fact_in, key_facts
from training.serving.citations import cited_numbers
from training.serving.degeneration import QUOTE_MODEL
from training.serving.prompting import Passage, strip_citations


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


@dataclass(frozen=True, slots=True)
class Context:
    """What a question retrieves for its example where it was asked: the passages as serving
    would show them, the question's own expert answers left out, and those expert answers as the
    index holds them (its gold passages)."""

    passages: tuple[Passage, ...]
    own: tuple[Passage, ...] = ()


# The context of a question asked where a recorded answer was asked (None: an imported example).
Retrieve = Callable[[str, AnswerRecord | None], Awaitable[Context]]
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
    # Grounded training examples: True shows the gold passage, False leaves it out (the target
    # is the abstention); None: shown as retrieved (held-out examples, the retrieved recipe).
    gold: bool | None = None

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
    # Training questions whose answer's facts no document passage holds: the adapter can only
    # learn to read them in their expert answer (served from the expert-answers source).
    only_in_expert_answers: list[str] = field(default_factory=list)

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
            "gold_absent": sum(1 for e in self.examples if e.gold is False),
            "only_in_expert_answers": len(self.only_in_expert_answers),
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
    abstention: str,
) -> TrainingSet:
    """`candidates`: the store's `training_candidates()` (answers with their ratings in force and
    corrections); `imported`: its `imported_examples()`; `abstention`: what serving says when
    the passages do not hold the answer (the gold-absent examples' target)."""
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
    only_in_expert_answers: list[str] = []
    absent: list[Example] = []
    for example, asked in kept:
        context = await retrieve(example.question, asked)
        split = split_of(example.question, config.heldout_fraction)
        if split == "heldout" or config.context == "retrieved":
            examples.append(replace(example, passages=context.passages, split=split))
            continue
        facts = key_facts(example.answer)
        held = {p: _held(p, facts) for p in (*context.passages, *context.own)}
        if facts and not any(held[p] == 1.0 for p in context.passages):
            only_in_expert_answers.append(example.question)
        shown, without = grounded(example, context, held, abstention)
        examples.append(shown)
        if without is not None:
            absent.append(without)
    # The gold-absent copies: (1 - gold_share) of the training examples, so (1 - share) / share
    # of the questions, chosen by a stable hash among those whose gold is known.
    wanted = round(
        sum(1 for e in examples if e.gold) * (1.0 - config.gold_share) / config.gold_share
    )
    absent.sort(key=lambda e: _digest(f"gold-absent\0{e.id}"))
    examples += absent[:wanted]
    examples.sort(key=lambda e: e.id)
    return TrainingSet(examples, skipped, sorted(only_in_expert_answers))


def grounded(
    example: Example, context: Context, held: Mapping[Passage, float], abstention: str
) -> tuple[Example, Example | None]:
    """The training examples of one question (see the module's docstring): its gold passage
    among the distractors, with a cited target; and, where its gold is known (an expert answer,
    or passages stating all the answer's facts), the distractors alone — without any passage
    stating half its facts or more — with the abstention as the target. `held`: the share of
    the answer's facts each passage states."""
    shown = max(len(context.passages), 1)
    if context.own:
        distractors = [p for p in context.passages if p not in context.own][: shown - 1]
        at = _bucket(example.id, "gold-position", shown)
        passages = (*distractors[:at], context.own[0], *distractors[at:])
        gold_at = at + 1
    else:  # an answer the bot wrote and people rated up: it was written from what it retrieved
        passages, gold_at = context.passages, None
    with_gold = replace(
        example, passages=passages, answer=cite(example.answer, passages, held, gold_at), gold=True
    )
    holding = [p for p in context.passages if held[p] >= 0.5]
    if not (context.own or any(held[p] == 1.0 for p in holding)):
        return with_gold, None
    without = replace(
        example,
        id=f"{example.id}-absent",
        passages=tuple(p for p in context.passages if p not in context.own and p not in holding),
        answer=abstention,
        gold=False,
    )
    return with_gold, without


def cite(
    answer: str, passages: Sequence[Passage], held: Mapping[Passage, float], gold_at: int | None
) -> str:
    """The target citing, as served answers do, `[n]` before the final full stop: its gold
    passage and any other that states all its facts; without a gold, the passages that state
    the most of its facts (half or more). An answer with nothing to cite keeps the citations it
    has when they still point at shown passages."""
    shares = [held[p] for p in passages]
    if gold_at is not None:
        numbers = [n for n, share in enumerate(shares, 1) if n == gold_at or share == 1.0]
    else:
        best = max(shares, default=0.0)
        numbers = [n for n, share in enumerate(shares, 1) if best >= 0.5 and share == best]
    if not numbers:
        valid = all(1 <= n <= len(passages) for n in cited_numbers(answer))
        return answer if valid else strip_citations(answer)
    text = strip_citations(answer).rstrip()
    marker = "[" + ", ".join(str(n) for n in numbers) + "]"
    if text and text[-1] in ".!?":
        return f"{text[:-1]} {marker}{text[-1]}"
    return f"{text} {marker}"


def _held(passage: Passage, facts: Sequence[str]) -> float:
    """The share of the facts a passage states (0 when there are none)."""
    if not facts:
        return 0.0
    return sum(fact_in(fact, passage.shown) for fact in facts) / len(facts)


def _bucket(key: str, salt: str, size: int) -> int:
    return int(_digest(f"{salt}\0{key}")[:8], 16) % size


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
    return "heldout" if in_share(question, heldout_fraction) else "train"


def in_share(question: str, fraction: float, *, salt: str = "") -> bool:
    """Whether a question falls in a stable `fraction` of all questions (by its normalised
    text; another `salt`, another draw)."""
    key = f"{salt}\0{_normalise(question)}" if salt else _normalise(question)
    return int(_digest(key)[:8], 16) / 0xFFFFFFFF < fraction


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
