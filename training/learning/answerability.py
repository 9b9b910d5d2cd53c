"""Retraining the answerability model from what experts said about answers and abstentions.

Two kinds of feedback say the abstention rule was wrong, and become training rows with the
signals recorded when the question was answered:

- an abstention that an expert then answered (a correction from an expert): the documents did
  hold the answer, so the question was answerable;
- an answer that cited nothing and that an expert rated 👎: nothing supported it, so the
  question was not answerable from the documents.

The rows the shipped model was trained on (the benchmark corpora) stay in, when their signals
come from the same embedding model and reranker; otherwise only feedback rows are used, and
there must be enough of both kinds.
"""

from __future__ import annotations

from collections.abc import Sequence

from base.errors import ConfigError
from knowledge.answerability import AnswerabilityModel, Row, features_for
from training.feedback.records import RatingKind, TrainingCandidate
from training.serving.degeneration import QUOTE_MODEL

MIN_EACH = 10  # feedback rows of each kind needed when there are no benchmark rows to add to


def feedback_rows(candidates: Sequence[TrainingCandidate], features: Sequence[str]) -> list[Row]:
    rows = []
    for candidate in candidates:
        answer = candidate.answer
        if answer.signals is None or answer.curated_id is not None:
            continue
        if any(answer.signals.get(name) is None for name in features):
            continue  # recorded with another reranker (or none)
        values = tuple(float(answer.signals[name] or 0.0) for name in features)
        corrected = any(c.approved for c in candidate.corrections)
        unsupported_down = (
            not answer.abstained
            and not answer.sources
            and answer.model != QUOTE_MODEL
            and any(r.expert and r.kind is RatingKind.DOWN for r in candidate.ratings)
        )
        if answer.abstained and corrected:
            rows.append(Row(values, 1, f"feedback:{answer.id}"))
        elif unsupported_down:
            rows.append(Row(values, 0, f"feedback:{answer.id}"))
    return rows


def retrain(
    base: AnswerabilityModel,
    candidates: Sequence[TrainingCandidate],
    *,
    embedder: str,
    reranker: str | None,
) -> tuple[AnswerabilityModel, dict[str, int]]:
    """A model fitted on `base`'s benchmark rows (when they fit this embedder and reranker)
    and the feedback rows of `candidates`; with counts of each."""
    features = features_for(reranker)
    fresh = feedback_rows(candidates, features)
    kept: list[Row] = []
    if base.mismatch(embedder, reranker) is None and tuple(base.features) == tuple(features):
        kept = [r for r in base.rows if r.origin.startswith("bench:")]
    counts = {
        "benchmark": len(kept),
        "answerable_from_feedback": sum(r.label for r in fresh),
        "unanswerable_from_feedback": sum(1 - r.label for r in fresh),
    }
    if (
        not kept
        and min(counts["answerable_from_feedback"], counts["unanswerable_from_feedback"]) < MIN_EACH
    ):
        raise ConfigError(
            f"not enough feedback to train an answerability model for embedder {embedder!r} "
            f"and reranker {reranker or 'off'}: it needs {MIN_EACH} abstentions an expert then "
            f"answered and {MIN_EACH} answers without sources an expert rated 👎 (there are "
            f"{counts['answerable_from_feedback']} and {counts['unanswerable_from_feedback']})"
        )
    model = AnswerabilityModel.fit(
        [*kept, *fresh],
        embedder=embedder,
        reranker=reranker,
        features=features,
        summary={**base.summary, "retrained_from_feedback": len(fresh)}
        if kept
        else {"retrained_from_feedback": len(fresh)},
    )
    return model, counts
