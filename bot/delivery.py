"""An answer's way to the person who asked, the same on every platform: `deliver()`.

    the question → the core's stream → throttled deltas → the final Answer → its messages,
    linked to the answer (ratings and corrections on them find it)

Each platform shows the answer through a `Sink`: Slack a chat stream or a message posted then
updated, Teams its streaming response. What the asker is told when there is no answer is decided
here, once:

- `OverloadedError` (too many questions are waiting): `BUSY`; logged as a warning.
- `QueryError` (the asker can fix it: an empty or too long question): what is wrong.
- Anything else: `APOLOGY`; the cause is logged with its traceback, never shown.

Whatever was shown before the failure stays; the sink ends it and adds the reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from base.errors import ExpertbotError, OverloadedError, QueryError
from bot.chat import APOLOGY, BUSY, cannot_answer
from bot.core.answering import Answerer
from bot.core.question import Answer, Question

log = structlog.get_logger("expertbot.delivery")

# Told the id of each message an answer posts (bot/intake.py keeps them with the question).
Note = Callable[[str], Awaitable[None]]
# Told when the answer begins: the core's first words (after retrieval and the model's queue).
Started = Callable[[], Awaitable[None]]


class Sink(Protocol):
    """Where one answer is shown: a platform's message(s) in the asker's conversation."""

    @property
    def interval_s(self) -> float:
        """The least time between two `delta` calls (0: each delta as it is written)."""
        ...

    async def delta(self, text: str) -> None:
        """Show more of the answer: what was written since the last call."""

    async def finished(self, answer: Answer, unsent: str) -> Sequence[str]:
        """Show the final answer; `unsent` is its end, written since the last `delta`. Returns
        the ids of the messages that show it."""
        ...

    async def failed(self, text: str | None, unsent: str) -> None:
        """The answer broke off: end what was shown (`unsent` was written after it) and tell
        the asker `text`; None when the server is stopping and nobody is told."""


async def deliver(
    answerer: Answerer,
    question: Question | Awaitable[Question],
    sink: Sink,
    *,
    started: Started | None = None,
) -> Answer | None:
    """Answer `question` through `sink` and link the messages that show it to the answer.

    `question` may still be being looked up (the thread's history, the asker's groups): a
    failure there is told like any other. `started` is awaited once, at the core's first words.
    Returns the Answer; None where the asker was told why there is none."""
    progress = _Progress(sink)
    try:
        if not isinstance(question, Question):
            question = await question
        answer = await _stream(answerer, question, progress, started)
        shown = await sink.finished(answer, progress.take())
        await _link(answerer, question, answer, shown)
        return answer
    except OverloadedError as exc:
        log.warning("answer.overloaded", error=str(exc))
        await _fail(sink, BUSY, progress.take())
    except QueryError as exc:  # the asker can fix it: say what is wrong
        await _fail(sink, cannot_answer(exc), progress.take())
    except Exception as exc:
        log.error("answer.failed", error=f"{exc.__class__.__name__}: {exc}", exc_info=exc)
        await _fail(sink, APOLOGY, progress.take())
    except asyncio.CancelledError:  # the server is stopping: never leave a stream open
        await _fail(sink, None, progress.take())
        raise
    return None


class _Progress:
    """The deltas handed to the sink at most every `sink.interval_s`; what arrives in between
    waits for the next call (the first delta goes at once)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.unsent = ""
        self.last: float | None = None

    async def add(self, text: str) -> None:
        self.unsent += text
        now = time.monotonic()
        if self.last is not None and now - self.last < self.sink.interval_s:
            return
        self.last = now
        await self.sink.delta(self.take())

    def take(self) -> str:
        text, self.unsent = self.unsent, ""
        return text


async def _stream(
    answerer: Answerer, question: Question, progress: _Progress, started: Started | None
) -> Answer:
    items = answerer.stream(question)
    answer: Answer | None = None
    try:
        async for item in items:
            if started is not None:
                await _begun(started)
                started = None
            if isinstance(item, Answer):
                answer = item
            else:
                await progress.add(item)
    finally:
        # Closed now, not when collected: an answer broken off stops its generation at once.
        if isinstance(items, AsyncGenerator):
            await items.aclose()
    assert answer is not None, "the answer stream ends with the Answer"
    return answer


async def _link(
    answerer: Answerer, question: Question, answer: Answer, message_ids: Sequence[str]
) -> None:
    where = question.where
    if answerer.store is None or where.channel is None:
        return
    for message_id in message_ids:
        await asyncio.to_thread(
            answerer.store.link_message,
            platform=where.platform,
            conversation=where.channel,
            message_id=message_id,
            answer_id=answer.id,
            thread=where.thread,
        )


async def _begun(started: Started) -> None:
    try:
        await started()
    except ExpertbotError as exc:  # bookkeeping: the answer goes on
        log.warning("answer.start_unrecorded", error=str(exc))


async def _fail(sink: Sink, text: str | None, unsent: str) -> None:
    try:
        await sink.failed(text, unsent)
    except Exception as exc:  # the platform refused even that: nothing more to tell anyone
        log.error("answer.reply_failed", error=f"{exc.__class__.__name__}: {exc}")
