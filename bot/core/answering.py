"""The answering core: Question → Answer, streamed.

    clean the question → access scope → curated answer? → retrieve → abstain? → prompt →
    generate (streamed, citations checked and renumbered on the fly) → record → Answer

`stream()` yields text deltas and, last, the `Answer`; `answer()` returns the Answer only.
"""

from __future__ import annotations

import asyncio
import re
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator, Sequence

import structlog

from base.errors import DatabaseError, QueryError
from bot import metrics
from bot.core.abstention import AbstentionRule, Decision
from bot.core.access import scope_for
from bot.core.config import AnswerConfig
from bot.core.question import Answer, Passage, Question, Source, Timings
from knowledge.models import Access, Hit, SearchFilters
from knowledge.search import KnowledgeSearch, Retrieval
from training.config import PromptConfig
from training.feedback.records import (
    AnswerRecord,
    CitedSource,
    CuratedAnswer,
    RetrievedChunk,
    StoredSource,
)
from training.feedback.store import FeedbackStore
from training.scoring import says_it_does_not_know
from training.serving.citations import CitationRewriter
from training.serving.degeneration import QUOTE_MODEL, OutputGuard
from training.serving.generation import GenerationRequest, Generator
from training.serving.prompting import PromptBuilder

log = structlog.get_logger("expertbot.answer")

# Said above a passage quoted in place of a model's broken output (see training.serving.
# degeneration), so that nobody takes it for a written answer.
QUOTE_INTRO = (
    "I couldn't write a reliable answer to this, so here is the most relevant passage, quoted"
)
QUOTE_CHARS = 1200  # a passage quoted longer than this is cut after a sentence

_WORD = re.compile(r"\w+")
_CONTROL = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]"
)


class Answerer:
    def __init__(
        self,
        *,
        search: KnowledgeSearch,
        generator: Generator,
        config: AnswerConfig,
        prompt: PromptConfig,
        rule: AbstentionRule,
        store: FeedbackStore | None = None,
        max_new_tokens: int = 384,
    ) -> None:
        self.search = search
        self.rule = rule
        self.max_new_tokens = max_new_tokens
        self.generator = generator
        self.config = config
        self.prompt_config = prompt
        self.store = store
        self._builder: PromptBuilder | None = None

    @property
    def builder(self) -> PromptBuilder:
        if self._builder is None:  # needs the started generator's tokenizer
            self._builder = PromptBuilder(
                self.prompt_config,
                count_tokens=self.generator.count_tokens,
                render=self.generator.render,
                context_window=self.generator.context_window,
                max_new_tokens=self.max_new_tokens,
            )
        return self._builder

    async def answer(self, question: Question) -> Answer:
        final: Answer | None = None
        async for item in self.stream(question):
            if isinstance(item, Answer):
                final = item
        assert final is not None
        return final

    async def stream(self, question: Question) -> AsyncIterator[str | Answer]:
        """Text deltas as they are written, then the final Answer."""
        started = time.perf_counter()
        metrics.QUESTIONS.labels(platform=question.where.platform).inc()
        text = self.clean(question.text)
        answer_id = str(uuid.uuid4())
        scope = scope_for(question, self.config)
        # Every later log line of this request (the platform's included) names the answer.
        structlog.contextvars.bind_contextvars(answer_id=answer_id)
        bound = log.bind(where=question.where.kind.value)

        # While it is being looked up, the question is "expected" by the generator: a batch
        # about to start may wait for it (model.batch_max_wait_ms) instead of leaving it behind.
        with self.generator.expecting():
            query = self._retrieval_query(text, question)
            # A curated answer must match the question itself, not a follow-up's search query.
            vector = await self.search.embed(text)
            curated = (
                await asyncio.to_thread(
                    self.store.find_curated,
                    vector,
                    threshold=self.config.curated_similarity,
                    scope=scope,
                )
                if self.store is not None
                else None
            )
            retrieval = None
            decision: Decision | None = None
            prompt = None
            if curated is None:
                retrieval = await self.search.retrieve(
                    query,
                    vector=vector if query == text else None,
                    k=self.config.passages,
                    filters=SearchFilters(scope=scope),
                )
                decision = self.rule.decide(retrieval)
            retrieved_at = time.perf_counter()
            if retrieval and decision is not None and decision.answer:
                hits = prefer_viewed(retrieval.hits, question.viewing)
                prompt = self.builder.build(text, merge_passages(hits), question.history)
            prompted_at = time.perf_counter()

        if curated is not None:
            answer = self._curated(answer_id, text, curated, started)
            yield answer.text
            await self._record(question, answer, curated=curated)
            bound.info("answer.curated", curated_id=curated.id, similarity=curated.similarity)
            yield answer
            return
        assert retrieval is not None and decision is not None
        if prompt is None:
            answer = self._abstain(answer_id, text, started, retrieved_at - started, decision.score)
            yield answer.text
            await self._record(question, answer, retrieval=retrieval)
            bound.info(
                "answer.abstained",
                rule=decision.rule,
                score=round(decision.score, 4),
                similarity=round(retrieval.similarity, 4),
            )
            yield answer
            return

        rewriter = CitationRewriter(len(prompt.passages))
        # Nothing is shown before it is clearly an answer, and a loop stops the model at once.
        guard = OutputGuard(
            instructions=[m.content for m in prompt.messages if m.role == "system"]
            + [prompt.messages[-1].content],
            passages=[p.text for p in prompt.passages],
        )
        parts: list[str] = []
        first_token: float | None = None
        stream = self.generator.stream(GenerationRequest(prompt.messages, stop=prompt.stop))
        async with stream:
            async for delta in stream:
                written = rewriter.feed(delta)
                if not parts:
                    written = written.lstrip()
                if not written:
                    continue
                parts.append(written)
                shown = guard.feed(written)
                if guard.reason is not None:
                    break
                if shown:
                    if first_token is None:
                        first_token = time.perf_counter() - started
                    yield shown
        tail = rewriter.finish() if guard.reason is None else ""
        if tail.strip():
            parts.append(tail)
            guard.feed(tail)
        held = guard.finish()
        if held.strip():
            if first_token is None:
                first_token = time.perf_counter() - started
            yield held
        generated_at = time.perf_counter()
        stats = stream.stats
        body = "".join(parts).strip()
        timings = Timings(
            retrieval_s=retrieved_at - started,
            prompt_s=prompted_at - retrieved_at,
            queued_s=stats.queued_s if stats else 0.0,
            first_token_s=first_token,
            generation_s=generated_at - prompted_at,
            total_s=time.perf_counter() - started,
        )
        if guard.reason is not None:
            # What the model wrote is no answer: the best passage, quoted
            # and cited, replaces it; where some of it was shown, the final Answer replaces that.
            passage = prompt.passages[0]
            answer = self._quote(answer_id, text, passage, prompt.passages, timings, decision.score)
            if not guard.released:
                yield answer.text
            await self._record(question, answer, retrieval=retrieval)
            bound.info(
                "answer.quoted",
                reason=guard.reason,
                shown=guard.released,
                model=stats.model if stats else self.generator.model_name,
                adapter=stats.adapter if stats else self.generator.adapter,
                written_chars=len(body),
                passages=len(prompt.passages),
                total_ms=round(timings.total_s * 1000),
            )
            yield answer
            return
        sources = tuple(
            Source(n, p.title, p.uri, p.heading, excerpt=p.text)
            for n, p in enumerate((prompt.passages[i - 1] for i in rewriter.order), 1)
        )
        model_abstained = not sources and says_it_does_not_know(body)
        answer = Answer(
            id=answer_id,
            question=text,
            text=body,
            sources=sources,
            abstained=model_abstained,
            curated=False,
            model=stats.model if stats else self.generator.model_name,
            adapter=stats.adapter if stats else self.generator.adapter,
            timings=timings,
            passages=prompt.passages,
            invalid_citations=rewriter.invalid,
            finish_reason=stats.finish_reason if stats else "stop",
            answerability=decision.score,
        )
        await self._record(question, answer, retrieval=retrieval)
        bound.info(
            "answer.generated",
            passages=len(prompt.passages),
            cited=len(answer.sources),
            invalid_citations=rewriter.invalid,
            tokens=stats.completion_tokens if stats else None,
            total_ms=round(timings.total_s * 1000),
        )
        yield answer

    def clean(self, text: str) -> str:
        """The question without control characters; QueryError if empty or too long."""
        text = unicodedata.normalize("NFC", _CONTROL.sub(" ", text or ""))
        text = "\n".join(" ".join(line.split()) for line in text.splitlines()).strip()
        if not text:
            raise QueryError("the question is empty")
        if len(text) > self.config.max_question_chars:
            raise QueryError(
                f"the question is too long ({len(text):,} characters; the limit is "
                f"{self.config.max_question_chars:,}): ask it in fewer words"
            )
        return text

    @staticmethod
    def _retrieval_query(text: str, question: Question) -> str:
        """A follow-up ("and in Portugal?") is searched together with the asker's previous
        question, which carries its subject."""
        previous = [t.text for t in question.history if t.role == "user"]
        return f"{previous[-1]} {text}" if previous else text

    def _abstain(
        self, answer_id: str, text: str, started: float, retrieval_s: float, answerability: float
    ) -> Answer:
        return Answer(
            id=answer_id,
            question=text,
            text=self.config.abstention_reply,
            sources=(),
            abstained=True,
            curated=False,
            model=self.generator.model_name,
            adapter=self.generator.adapter,
            timings=Timings(retrieval_s=retrieval_s, total_s=time.perf_counter() - started),
            answerability=answerability,
        )

    def _quote(
        self,
        answer_id: str,
        text: str,
        passage: Passage,
        passages: tuple[Passage, ...],
        timings: Timings,
        answerability: float,
    ) -> Answer:
        quoted = "\n".join(f"> {line}".rstrip() for line in excerpt(passage.text).splitlines())
        return Answer(
            id=answer_id,
            question=text,
            text=f"{QUOTE_INTRO} [1]:\n\n{quoted}",
            sources=(Source(1, passage.title, passage.uri, passage.heading, excerpt=passage.text),),
            abstained=False,
            curated=False,
            model=QUOTE_MODEL,  # recorded so: no model wrote it (the log names the one that failed)
            adapter=None,
            timings=timings,
            passages=passages,
            answerability=answerability,
        )

    def _curated(self, answer_id: str, text: str, curated: CuratedAnswer, started: float) -> Answer:
        elapsed = time.perf_counter() - started
        return Answer(
            id=answer_id,
            question=text,
            text=curated.answer,
            sources=tuple(
                Source(n, s.title, s.uri, s.heading) for n, s in enumerate(curated.sources, 1)
            ),
            abstained=False,
            curated=True,
            model=self.generator.model_name,
            adapter=self.generator.adapter,
            timings=Timings(retrieval_s=elapsed, total_s=elapsed),
            approved_by=curated.approved_by,
        )

    async def _record(
        self,
        question: Question,
        answer: Answer,
        *,
        retrieval: Retrieval | None = None,
        curated: CuratedAnswer | None = None,
    ) -> None:
        kind = (
            "curated"
            if answer.curated
            else "abstained"
            if answer.abstained
            else "quoted"
            if answer.model == QUOTE_MODEL
            else "generated"
        )
        timings = answer.timings
        metrics.answered(
            question.where.platform,
            kind,
            timings.retrieval_s,
            timings.generation_s,
            timings.total_s,
        )
        if self.store is None or not self.config.record:
            return
        record = AnswerRecord(
            id=answer.id,
            question=answer.question,
            asker=question.asker,
            platform=question.where.platform,
            where_kind=question.where.kind.value,
            channel=question.where.channel,
            thread=question.where.thread,
            retrieved=tuple(
                RetrievedChunk(h.chunk_id, h.doc_id, h.title, h.score, h.access, h.allowed)
                for h in (retrieval.hits if retrieval else ())
            ),
            answer=answer.text,
            sources=tuple(
                CitedSource(s.number, self._stored(s, answer, curated)) for s in answer.sources
            ),
            abstained=answer.abstained,
            curated_id=curated.id if curated else None,
            model=answer.model,
            adapter=answer.adapter,
            retrieval_s=answer.timings.retrieval_s,
            generation_s=answer.timings.generation_s,
            total_s=answer.timings.total_s,
            signals=retrieval.signals.as_json() if retrieval else None,
        )
        try:
            await asyncio.to_thread(self.store.record, record)
        except DatabaseError as exc:  # the asker still gets the answer
            log.error("answer.record_failed", answer_id=answer.id, error=str(exc))

    @staticmethod
    def _stored(source: Source, answer: Answer, curated: CuratedAnswer | None) -> StoredSource:
        """A cited source with who may see it: kept with the answer, so that an expert's approval
        of it never serves the answer where its sources are not visible."""
        if curated is not None and source.number <= len(curated.sources):
            served = curated.sources[source.number - 1]
            access, allowed = served.access, served.allowed
        else:
            access, allowed = next(
                (
                    (p.access, p.allowed)
                    for p in answer.passages
                    if (p.uri, p.heading) == (source.uri, source.heading)
                ),
                (Access.PRIVATE.value, ()),  # unknown: the most restrictive
            )
        return StoredSource(source.title, source.uri, source.heading, access, tuple(allowed))


def excerpt(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text`, or its beginning up to `limit` characters, cut after a sentence where one ends in
    the second half (else after a word), marked " …"."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind(".\n"), cut.rfind("\n"))
    end = end + 1 if end >= limit // 2 else cut.rfind(" ")
    return cut[: end if end > 0 else limit].rstrip() + " …"


def prefer_viewed(hits: Sequence[Hit], viewing: Sequence[str]) -> list[Hit]:
    """`hits` with those about what the asker is looking at first (`Question.viewing`: a
    channel's id and name): restricted to that channel, or naming it in their document, title or
    heading. Only an order: the hits are those the question's access scope already admits."""
    marks = {v.lower() for v in viewing if v}
    if not marks:
        return list(hits)

    def about(hit: Hit) -> bool:
        words = set(_WORD.findall(f"{hit.doc_id} {hit.title} {hit.heading}".lower()))
        return bool(marks & ({a.lower() for a in hit.allowed} | words))

    return sorted(hits, key=lambda hit: not about(hit))


def merge_passages(hits: Sequence[Hit]) -> list[Passage]:
    """One passage per (document, heading), in the rank of its best chunk: neighbouring chunks
    of one section become one passage (and one source), not several identical-looking ones."""
    merged: dict[tuple[str, str, str], list[Hit]] = {}
    for hit in hits:
        merged.setdefault((hit.source, hit.doc_id, hit.heading), []).append(hit)
    passages = []
    for group in merged.values():
        first = group[0]
        text = "\n".join(h.text.strip() for h in group)
        passages.append(
            Passage(
                title=first.title,
                heading=first.heading,
                uri=first.uri,
                text=text,
                chunk_id=first.chunk_id,
                doc_id=first.doc_id,
                access=first.access,
                allowed=first.allowed,
            )
        )
    return passages
