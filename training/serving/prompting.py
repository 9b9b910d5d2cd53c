"""From a question, its retrieved passages and the thread's history to the model's messages.

The same builder serves answering and training (RAG-aware fine-tuning learns on the prompts it
will be served with). Budgets are counted with the model's own tokenizer:

- passages, best first, numbered [1]…[n] in the order they are shown, until `context_tokens`;
- the thread's earlier turns, latest first, until `history_tokens` (older ones are dropped);
- the question, cut to `question_tokens`;
- finally the whole rendered prompt must leave `max_new_tokens` in the context window, else
  passages are dropped from the end.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from training.config import PromptConfig
from training.serving.generation import Message

_CITATION_MARK = re.compile(r"\s?\[\d{1,3}(?:\s*[,;]\s*\d{1,3})*\]")


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved chunk as the model sees it (numbered when shown)."""

    title: str
    heading: str
    uri: str
    text: str
    chunk_id: str = ""
    doc_id: str = ""
    access: str = "public"
    allowed: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.title} › {self.heading}" if self.heading else self.title

    @property
    def shown(self) -> str:
        """What the model reads of it, after its number: the label, then the text."""
        return f"{self.label}\n{self.text.strip()}"


@dataclass(frozen=True, slots=True)
class Turn:
    """An earlier message of the thread: the asker's (`user`) or the bot's (`assistant`)."""

    role: Literal["user", "assistant"]
    text: str


# Lines of the prompt's layout that a model should never write: seeing one means it has started
# to echo the prompt (small models do), so generation stops there.
LAYOUT_STOPS = ("\nContext passages:", "\nQuestion: ", "\nAnswer from the passages above")


@dataclass(frozen=True, slots=True)
class Prompt:
    messages: tuple[Message, ...]
    passages: tuple[Passage, ...]  # as numbered in the prompt: passages[0] is [1]
    history_turns: int  # how many earlier turns were kept
    question: str  # as given to the model (possibly cut)
    tokens: int  # of the rendered prompt
    passages_dropped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def stop(self) -> tuple[str, ...]:
        """Where an answer must end: the prompt's layout lines, and a passage header echoed
        ("[2] Title › Heading", whatever its number)."""
        headers = {f"] {p.title} › " if p.heading else f"] {p.title}\n" for p in self.passages}
        return LAYOUT_STOPS + tuple(sorted(headers))


def strip_citations(text: str) -> str:
    """Remove [n] markers (used on the bot's earlier answers: their numbers meant other passages)."""
    return _CITATION_MARK.sub("", text)


def format_passages(passages: Sequence[Passage]) -> str:
    return "\n\n".join(f"[{n}] {p.shown}" for n, p in enumerate(passages, 1))


def user_message(question: str, passages: Sequence[Passage]) -> str:
    return (
        f"Context passages:\n\n{format_passages(passages)}\n\n"
        f"Question: {question}\n\n"
        "Answer from the passages above and cite them like [1]."
    )


class PromptBuilder:
    def __init__(
        self,
        config: PromptConfig,
        *,
        count_tokens: Callable[[str], int],
        render: Callable[[tuple[Message, ...]], str],
        context_window: int,
        max_new_tokens: int,
    ) -> None:
        self.config = config
        self.count_tokens = count_tokens
        self.render = render
        self.context_window = context_window
        self.max_new_tokens = max_new_tokens
        self._system_kept: bool | None = None

    @property
    def system_role_supported(self) -> bool:
        """Whether the chat template shows a system message (Phi-3's drops it silently)."""
        if self._system_kept is None:
            probe = "\u2063system-probe\u2063"
            rendered = self.render(
                (Message("system", probe), Message("user", "hello")),
            )
            self._system_kept = probe in rendered
        return self._system_kept

    def build(
        self,
        question: str,
        passages: Sequence[Passage],
        history: Sequence[Turn] = (),
        *,
        answer: str | None = None,
    ) -> Prompt:
        """The messages for `question`. With `answer`, the assistant's reply is appended (a
        training example); the budget then leaves room for it instead of max_new_tokens."""
        notes: list[str] = []
        original = question.strip()
        question = self._cut(original, self.config.question_tokens)
        if question != original:
            notes.append("question cut to its token budget")
        chosen = self._fit_passages(passages)
        turns = self._fit_history(history)
        reply_budget = self.count_tokens(answer) + 8 if answer is not None else self.max_new_tokens
        limit = self.context_window - reply_budget
        while True:
            messages = self._messages(question, chosen, turns, answer)
            tokens = self.count_tokens(self.render(self._without_answer(messages, answer)))
            if tokens <= limit or (not chosen and not turns):
                break
            if chosen:
                chosen = chosen[:-1]
            else:
                turns = turns[1:]
        return Prompt(
            messages=messages,
            passages=tuple(chosen),
            history_turns=len(turns),
            question=question,
            tokens=tokens,
            passages_dropped=len(passages) - len(chosen),
            notes=notes,
        )

    def _messages(
        self,
        question: str,
        passages: Sequence[Passage],
        turns: Sequence[Turn],
        answer: str | None,
    ) -> tuple[Message, ...]:
        system = self.config.system_prompt.strip()
        out: list[Message] = []
        if system and self.system_role_supported:
            out.append(Message("system", system))
        for turn in turns:
            text = strip_citations(turn.text) if turn.role == "assistant" else turn.text
            out.append(Message(turn.role, text))
        content = user_message(question, passages)
        if system and not self.system_role_supported:
            # Fold the instructions into the first user message so the model still reads them.
            if out:
                out[0] = Message("user", f"{system}\n\n{out[0].content}")
            else:
                content = f"{system}\n\n{content}"
        out.append(Message("user", content))
        if answer is not None:
            out.append(Message("assistant", answer))
        return tuple(out)

    @staticmethod
    def _without_answer(messages: tuple[Message, ...], answer: str | None) -> tuple[Message, ...]:
        return messages[:-1] if answer is not None else messages

    def _fit_passages(self, passages: Sequence[Passage]) -> list[Passage]:
        chosen: list[Passage] = []
        used = 0
        for passage in passages:
            cost = self.count_tokens(f"[{len(chosen) + 1}] {passage.label}\n{passage.text}") + 2
            if used + cost > self.config.context_tokens:
                continue  # a smaller, lower-ranked passage may still fit
            chosen.append(passage)
            used += cost
        return chosen

    def _fit_history(self, history: Sequence[Turn]) -> list[Turn]:
        kept: list[Turn] = []
        used = 0
        for turn in reversed(history):
            cost = self.count_tokens(turn.text) + 4
            if used + cost > self.config.history_tokens:
                break
            kept.append(turn)
            used += cost
        kept.reverse()
        # Chat templates expect a conversation to start with the user.
        while kept and kept[0].role != "user":
            kept.pop(0)
        return kept

    def _cut(self, text: str, budget: int) -> str:
        if self.count_tokens(text) <= budget:
            return text
        lo, hi = 0, len(text)
        while lo < hi:  # the longest prefix within budget
            mid = (lo + hi + 1) // 2
            if self.count_tokens(text[:mid]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return text[:lo].rstrip() + " …"
