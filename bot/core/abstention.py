"""Answer or abstain: the rule that decides from what retrieval found.

- "classifier" (default): the answerability model (knowledge/answerability.py) judges the
  retrieval's signals. It is used only with the embedding model and reranker it was trained
  with; with any other the similarity rule serves instead, and `status` says why.
- "similarity": the best chunk's cosine similarity must reach `answer.min_similarity`.
- "generator": the generator judge's yes / no log-odds for the best passage (knowledge.rerank
  kind "generator", scoring "yes-no") must reach `answer.min_judge_score`: for a capable
  generator, its own reading of whether the passages hold the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog

from base.errors import ConfigError
from bot.core.config import AnswerConfig
from bot.settings import Settings
from knowledge.answerability import DEFAULT_MODEL, AnswerabilityModel
from knowledge.search import Retrieval
from training.serving.demo import served_name
from training.serving.judge import judge_name

log = structlog.get_logger("expertbot.abstention")

RETRAINED = "answerability.json"  # in the data dir: the model retrained from feedback


@dataclass(frozen=True)
class Decision:
    answer: bool
    score: float  # what the rule compared with its threshold
    rule: str


@dataclass(frozen=True)
class AbstentionRule:
    kind: str  # the rule in force: classifier, similarity or generator
    config: AnswerConfig
    model: AnswerabilityModel | None = None
    fallback: str | None = None  # why the configured rule is not the one in force

    def decide(self, retrieval: Retrieval) -> Decision:
        if not retrieval.hits:
            return Decision(False, 0.0, self.kind)
        if self.kind == "classifier" and self.model is not None:
            if retrieval.vocabulary_documents == 0:
                # An index synced before the vocabulary was kept: until the next sync fills it,
                # the classifier would read every word as unknown.
                return self._similarity(retrieval)
            p = self.model.probability(retrieval.signals)
            threshold = self.config.min_answerability
            return Decision(
                p >= (self.model.threshold if threshold is None else threshold), p, self.kind
            )
        if self.kind == "generator":
            score = retrieval.signals.rerank
            if score is None:  # no judge ran: nothing says the passages answer
                return Decision(False, float("-inf"), self.kind)
            return Decision(score >= self.config.min_judge_score, score, self.kind)
        return self._similarity(retrieval)

    def _similarity(self, retrieval: Retrieval) -> Decision:
        similarity = retrieval.similarity
        return Decision(similarity >= self.config.min_similarity, similarity, "similarity")

    def describe(self) -> str:
        if self.kind == "classifier" and self.model is not None:
            threshold = self.config.min_answerability
            line = self.model.describe()
            if threshold is not None:
                line += f"; threshold set to {threshold:.2f}"
            return line
        if self.kind == "generator":
            return f"generator judge (answers when its score is ≥ {self.config.min_judge_score})"
        line = (
            f"similarity (answers when the best passage's cosine is ≥ {self.config.min_similarity})"
        )
        return f"{line}: {self.fallback}" if self.fallback else line


def reranker_name(settings: Settings) -> str | None:
    """The configured reranker's name (`Reranker.name`), from the settings alone: what an
    answerability model must have been trained with to serve."""
    rerank = settings.knowledge.rerank
    if rerank.kind == "off":
        return None
    if rerank.kind == "cross-encoder":
        return f"cross-encoder:{rerank.model}"
    return judge_name(served_name(settings.model.base), rerank.scoring)


def model_path(config: AnswerConfig, data_dir: Path) -> Path:
    """The answerability model to use: the configured file, else one retrained from feedback
    in the data dir, else the one that ships."""
    if config.answerability_model is not None:
        return config.answerability_model
    retrained = data_dir / RETRAINED
    return retrained if retrained.is_file() else DEFAULT_MODEL


def abstention_rule(
    config: AnswerConfig, *, data_dir: Path, embedder: str, reranker: str | None
) -> AbstentionRule:
    """The rule `config` asks for, given the embedding model and reranker that serve.

    A configured model file that cannot be read is an error (at start-up); the shipped model
    not matching the embedder or reranker is not: the similarity rule serves, and says why."""
    if config.abstention == "similarity":
        return AbstentionRule("similarity", config)
    if config.abstention == "generator":
        if reranker is None or not reranker.startswith("generator:"):
            raise ConfigError(
                'answer.abstention = "generator" needs the generator judge: set '
                'knowledge.rerank.kind = "generator"'
            )
        if not reranker.endswith(":yes-no"):
            raise ConfigError(
                'answer.abstention = "generator" reads the judge\'s yes / no: set '
                'knowledge.rerank.scoring = "yes-no"'
            )
        return AbstentionRule("generator", config)
    path = model_path(config, data_dir)
    model = AnswerabilityModel.load(path)
    reason = model.mismatch(embedder, reranker)
    if reason is not None:
        fallback = f"the answerability model {model.version} is not used: {reason}"
        if path != DEFAULT_MODEL:
            fallback += " (retrain it: expertbot answerability train)"
        log.warning("abstention.model_not_used", model=str(path), reason=reason)
        return AbstentionRule("similarity", config, fallback=fallback)
    return AbstentionRule("classifier", config, model=model)
