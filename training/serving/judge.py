"""`GeneratorJudge`: the serving model as a reranker (knowledge/reranking.py `Reranker`).

It reads each candidate passage with the question in one batched forward pass (no generation)
and scores it one of two zero-shot ways:

- "yes-no": the model is asked, in its own chat template, whether the passage contains the
  answer; the score is log P(yes) − log P(no) of its first answer token (case and space
  variants counted together): the log-odds it gives the passage.
- "query-likelihood": the mean log-probability of the question's tokens after "Passage: …
  Please write a question based on this passage. Question:" (Sachan et al. 2022, "Improving
  Passage Retrieval with Zero-Shot Question Generation").

bench/reranking.py measures both on the example handbook; the default is the one that ranked
better there. Passages and the question are cut to token budgets so that a batch stays well
inside the context window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, get_args

from base.errors import ConfigError
from training.serving.generation import Generator, Message

Scoring = Literal["yes-no", "query-likelihood"]
SCORINGS: tuple[Scoring, ...] = get_args(Scoring)
DEFAULT_SCORING: Scoring = "query-likelihood"

PASSAGE_TOKENS = 320
QUESTION_TOKENS = 64
# Upper bound of characters per token, to cut absurdly long texts before counting their tokens.
_MAX_CHARS_PER_TOKEN = 16

_YES = ("yes", "Yes", " yes", " Yes", "YES")
_NO = ("no", "No", " no", " No", "NO")


def yes_no_question(question: str, passage: str) -> str:
    return (
        f"Passage: {passage}\nQuestion: {question}\n"
        "Does the passage contain the answer to the question? Answer yes or no."
    )


def question_prompt(passage: str) -> str:
    return f"Passage: {passage}\nPlease write a question based on this passage.\nQuestion:"


class GeneratorJudge:
    """A `Reranker` that asks the serving generator (in-process backend only)."""

    def __init__(
        self,
        generator: Generator,
        *,
        scoring: Scoring = DEFAULT_SCORING,
        passage_tokens: int = PASSAGE_TOKENS,
        question_tokens: int = QUESTION_TOKENS,
    ) -> None:
        if not generator.can_score:
            raise ConfigError(
                "the generator judge needs the in-process model (model.backend = transformers); "
                "use knowledge.rerank.kind = cross-encoder or off"
            )
        if scoring not in SCORINGS:
            raise ConfigError(
                f"unknown judge scoring {scoring!r}; use one of {', '.join(SCORINGS)}"
            )
        self._generator = generator
        self.scoring = scoring
        self._passage_tokens = passage_tokens
        self._question_tokens = question_tokens

    @property
    def name(self) -> str:
        """Base model and scoring: scores of another of these are on another scale. The served
        adapter judges too, but it is not in the name: adapters are fine-tuned from the same
        base nightly, and an answerability model tied to one would stop serving at every
        promotion (`expertbot answerability train` refits it on the feedback since)."""
        return judge_name(self._generator.model_name, self.scoring)

    async def score(self, question: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        count = self._generator.count_tokens
        question = cut_to_tokens(" ".join(question.split()), self._question_tokens, count)
        cut = [cut_to_tokens(p.strip(), self._passage_tokens, count) for p in passages]
        if self.scoring == "yes-no":
            prompts = [
                self._generator.render((Message("user", yes_no_question(question, p)),))
                for p in cut
            ]
            odds = await self._generator.next_token_logprobs(prompts, (_YES, _NO))
            return [yes - no for yes, no in odds]
        pairs = [(question_prompt(p), f" {question}") for p in cut]
        logprobs = await self._generator.continuation_logprobs(pairs)
        return [sum(lp) / len(lp) if lp else float("-inf") for lp in logprobs]


def judge_name(model: str, scoring: str = DEFAULT_SCORING) -> str:
    return f"generator:{model}:{scoring}"


def cut_to_tokens(text: str, budget: int, count_tokens: Callable[[str], int]) -> str:
    """The longest prefix of `text` with at most `budget` tokens (the whole text when it fits)."""
    if count_tokens(text) <= budget:
        return text
    text = text[: budget * _MAX_CHARS_PER_TOKEN]
    low, high = 0, len(text)
    while low < high:  # the longest prefix that fits: a binary search over characters
        middle = (low + high + 1) // 2
        if count_tokens(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip()
