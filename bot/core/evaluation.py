"""`expertbot eval answers`: answer a file of questions and score what a user would notice.

Each line: {"question": ..., "answerable": true|false, optional "answer": reference}
(a line with "doc" but no "answerable", as in the retrieval eval files, counts as answerable).
Per question: abstained or not, sources cited, citation validity, and token F1 against the
reference where given. In total: the share of answerable questions answered, of unanswerable
ones abstained, of answers with valid citations, mean F1 and latency.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.errors import InputFileError, QueryError
from bot.core.answering import Answerer
from bot.core.question import Answer, Question, Where, WhereKind
from knowledge.evaluation import read_jsonl
from training.scoring import token_f1
from training.serving.degeneration import QUOTE_MODEL


@dataclass(frozen=True, slots=True)
class AnswerCase:
    question: str
    answerable: bool
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class AnswerOutcome:
    case: AnswerCase
    answer: Answer | None
    error: str | None = None

    @property
    def abstained(self) -> bool:
        return self.answer is None or self.answer.abstained

    @property
    def correct(self) -> bool:
        """Answered an answerable question, or abstained on an unanswerable one."""
        return self.abstained != self.case.answerable

    @property
    def citations_valid(self) -> bool | None:
        """For an answer (not an abstention): it cites at least one passage and every number it
        wrote matched a passage. None for abstentions."""
        if self.answer is None or self.answer.abstained:
            return None
        return bool(self.answer.sources) and self.answer.invalid_citations == 0

    @property
    def f1(self) -> float | None:
        if self.answer is None or self.case.reference is None or not self.case.answerable:
            return None
        return token_f1(self.answer.text, self.case.reference)

    def as_json(self) -> dict[str, Any]:
        answer = self.answer
        return {
            "question": self.case.question,
            "answerable": self.case.answerable,
            "abstained": self.abstained,
            "correct": self.correct,
            "answer": answer.text if answer else None,
            "sources": [s.as_json() for s in answer.sources] if answer else [],
            "quoted": answer.model == QUOTE_MODEL if answer else False,
            "answerability": answer.answerability if answer else None,
            "retrieval_s": round(answer.timings.retrieval_s, 4) if answer else None,
            "citations_valid": self.citations_valid,
            "invalid_citations": answer.invalid_citations if answer else 0,
            "f1": None if self.f1 is None else round(self.f1, 4),
            "total_s": round(answer.timings.total_s, 3) if answer else None,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class AnswerMetrics:
    questions: int
    answerable: int
    unanswerable: int
    answered_rate: float | None  # answerable questions answered
    abstained_rate: float | None  # unanswerable questions abstained
    citation_validity: float | None  # answers with valid citations
    mean_f1: float | None
    errors: int
    latency_p50_s: float | None  # of the generated (not abstained) answers
    model: str | None
    adapter: str | None
    quoted_rate: float | None = None  # answers that quote a passage instead of a broken output
    retrieval_p50_ms: float | None = None  # embedding, search and the abstention decision
    abstention_rule: str | None = None  # which rule decided (see bot/core/abstention.py)

    def as_json(self) -> dict[str, Any]:
        return {
            k: (round(v, 4) if isinstance(v, float) else v)
            for k, v in {
                "questions": self.questions,
                "answerable": self.answerable,
                "unanswerable": self.unanswerable,
                "answered_rate": self.answered_rate,
                "abstained_rate": self.abstained_rate,
                "citation_validity": self.citation_validity,
                "mean_f1": self.mean_f1,
                "errors": self.errors,
                "latency_p50_s": self.latency_p50_s,
                "model": self.model,
                "adapter": self.adapter,
                "quoted_rate": self.quoted_rate,
                "retrieval_p50_ms": self.retrieval_p50_ms,
                "abstention_rule": self.abstention_rule,
            }.items()
        }


def load_answer_cases(path: Path) -> list[AnswerCase]:
    cases = []
    for number, data in read_jsonl(path, expected='an object with a "question" string'):
        if not isinstance(data.get("question"), str):
            raise InputFileError(f'{path}:{number}: expected an object with a "question" string')
        answerable = data.get("answerable", "doc" in data or "answer" in data)
        if not isinstance(answerable, bool):
            raise InputFileError(f'{path}:{number}: "answerable" must be true or false')
        reference = data.get("answer")
        if reference is not None and not isinstance(reference, str):
            raise InputFileError(f'{path}:{number}: "answer" must be a string')
        cases.append(AnswerCase(data["question"], answerable, reference))
    if not cases:
        raise InputFileError(f"{path} holds no questions")
    return cases


async def evaluate_answers(
    answerer: Answerer,
    cases: Sequence[AnswerCase],
    *,
    where: WhereKind = WhereKind.PUBLIC,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[AnswerMetrics, list[AnswerOutcome]]:
    outcomes: list[AnswerOutcome] = []
    for n, case in enumerate(cases, 1):
        question = Question(case.question, asker="eval", where=Where(where, platform="eval"))
        try:
            outcomes.append(AnswerOutcome(case, await answerer.answer(question)))
        except QueryError as exc:  # a bad question is an outcome, not the end of the run
            outcomes.append(AnswerOutcome(case, None, error=str(exc)))
        if progress:
            progress(n, len(cases))
    return summarise(outcomes, rule=answerer.rule.describe()), outcomes


def summarise(outcomes: Sequence[AnswerOutcome], *, rule: str | None = None) -> AnswerMetrics:
    answerable = [o for o in outcomes if o.case.answerable]
    unanswerable = [o for o in outcomes if not o.case.answerable]
    validity = [o.citations_valid for o in outcomes if o.citations_valid is not None]
    f1s = [o.f1 for o in outcomes if o.f1 is not None]
    latencies = [o.answer.timings.total_s for o in outcomes if o.answer and not o.abstained]
    last = next((o.answer for o in reversed(outcomes) if o.answer), None)
    given = [o.answer for o in outcomes if o.answer and not o.answer.abstained]
    retrieval = [o.answer.timings.retrieval_s * 1000 for o in outcomes if o.answer]
    return AnswerMetrics(
        questions=len(outcomes),
        answerable=len(answerable),
        unanswerable=len(unanswerable),
        answered_rate=_share(not o.abstained for o in answerable),
        abstained_rate=_share(o.abstained for o in unanswerable),
        citation_validity=_share(validity),
        mean_f1=statistics.fmean(f1s) if f1s else None,
        errors=sum(1 for o in outcomes if o.error),
        latency_p50_s=statistics.median(latencies) if latencies else None,
        model=last.model if last else None,
        adapter=last.adapter if last else None,
        quoted_rate=_share(a.model == QUOTE_MODEL for a in given),
        retrieval_p50_ms=statistics.median(retrieval) if retrieval else None,
        abstention_rule=rule,
    )


def _share(flags: Any) -> float | None:
    values = [bool(f) for f in flags]
    return sum(values) / len(values) if values else None
