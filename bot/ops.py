"""The admin operations — status, sync, retrain, rollback — shared by every way to ask.

The command line, the Slack slash command, Teams' admin messages and the scheduler call these
same functions, so a sync triggered anywhere is the same sync, with the same lock: a second
trigger while one runs is answered "already running since …" (AlreadyRunningError). Every run
is recorded in the job history (bot/job_history.py). Progress is reported through an optional
async callback, results as a `JobResult`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from base.database import redact_url
from base.errors import AdapterError, AlreadyRunningError, ConfigError, NotFoundError
from base.locks import JobLock
from bot import metrics
from bot.claims import open_questions
from bot.core.abstention import RETRAINED, abstention_rule, reranker_name
from bot.core.access import scope_for
from bot.core.answering import merge_passages
from bot.core.question import Question, Where, WhereKind
from bot.job_history import JobHistory
from bot.settings import Settings
from knowledge.answerability import DEFAULT_MODEL, AnswerabilityModel
from knowledge.models import SearchFilters
from knowledge.runtime import Knowledge
from training.feedback.expert_answers import (
    EXPERT_SOURCE,
    expert_answer_text,
    expert_answer_title,
    expert_answer_uri,
)
from training.feedback.records import AnswerAccess, AnswerRecord, CuratedKind, ExpertAnswer
from training.feedback.store import FeedbackStore
from training.learning.answerability import retrain
from training.learning.dataset import Context, TrainingSet, build_training_set, read_import
from training.learning.pipeline import LearningLoop
from training.learning.report import DECIDING
from training.registry import AdapterRegistry
from training.serving.prompting import Passage

log = structlog.get_logger("expertbot.ops")

Report = Callable[[str], Awaitable[None]]

ADMIN_JOBS = ("sync", "retrain", "rollback")
RETRAIN_LOCK = "training.retrain"
# The held-out scores of the serving adapter as the status shows them (the deciding ones, then
# the answer rate and invented values):
# before (what served when it was trained) → after (itself).
SCORE_LABELS = (*DECIDING, ("answered", "answered"), ("invented", "answers with invented values"))


@dataclass(frozen=True, slots=True)
class JobResult:
    job: str
    ok: bool
    summary: str  # one line for a chat message
    details: dict[str, Any] = field(default_factory=dict)


INTERRUPTED = "interrupted: the server was stopping; run it again"


def _recorded(
    job: str,
) -> Callable[
    [Callable[..., Coroutine[Any, Any, JobResult]]], Callable[..., Coroutine[Any, Any, JobResult]]
]:
    """Record every run of the decorated job in the job history (a dry run is not a run)."""

    def wrap(
        method: Callable[..., Coroutine[Any, Any, JobResult]],
    ) -> Callable[..., Coroutine[Any, Any, JobResult]]:
        @functools.wraps(method)
        async def recorded(self: Ops, *args: Any, trigger: str, **kwargs: Any) -> JobResult:
            if kwargs.get("dry_run"):
                return await method(self, *args, trigger=trigger, **kwargs)
            run = await self.history.start(job, trigger)
            started = time.monotonic()

            async def finish(outcome: str, summary: str) -> None:
                metrics.JOB_RUNS.labels(job=job, outcome=outcome).inc()
                metrics.JOB_SECONDS.labels(job=job).observe(time.monotonic() - started)
                await self.history.finish(run, outcome, summary)

            task = asyncio.current_task()
            assert task is not None, "jobs run in a task"
            self.running.add(task)
            with structlog.contextvars.bound_contextvars(job=job, job_run=run):
                try:
                    result = await method(self, *args, trigger=trigger, **kwargs)
                except AlreadyRunningError as exc:
                    await finish("refused", str(exc))
                    raise
                except asyncio.CancelledError:
                    await asyncio.shield(finish("interrupted", INTERRUPTED))
                    raise
                except BaseException as exc:
                    await asyncio.shield(finish("error", f"{exc.__class__.__name__}: {exc}"))
                    raise
                finally:
                    self.running.discard(task)
                await finish("ok" if result.ok else "failed", result.summary)
            for then in self.after_job:  # however it was started: schedule, CLI or chat
                try:
                    await then(result)
                except Exception as exc:
                    log.warning("ops.after_job_failed", error=f"{exc.__class__.__name__}: {exc}")
            return result

        return recorded

    return wrap


@dataclass
class Ops:
    settings: Settings
    knowledge: Knowledge
    store: FeedbackStore
    registry: AdapterRegistry
    # Called with the result of every training run (the chat layers post it to an admin channel).
    announcers: list[Callable[[JobResult], Awaitable[None]]] = field(default_factory=list)
    # Called after every job that ran (the Slack App Home is refreshed for its admins).
    after_job: list[Callable[[JobResult], Awaitable[None]]] = field(default_factory=list)
    worker_pid: int | None = None  # the training worker while one runs in this process
    history: JobHistory = field(init=False)
    running: set[asyncio.Task[Any]] = field(default_factory=set)  # the jobs running here

    def __post_init__(self) -> None:
        self.history = JobHistory(self.store.engine)

    async def interrupt(self) -> int:
        """Stop the jobs running in this process (the server is stopping): each is recorded
        as interrupted and its lock released; a training worker is killed. How many ran."""
        jobs = list(self.running)
        for task in jobs:
            task.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        return len(jobs)

    async def status(self) -> dict[str, Any]:
        """Index size and last sync, the serving adapter and its metrics (and those of what served
        before it, its `baseline`), feedback counts."""
        stats, last = await self.knowledge.status()
        active = await asyncio.to_thread(self.registry.active)
        adapter: dict[str, Any] | None = None
        if active is not None:
            try:
                meta = (await asyncio.to_thread(self.registry.get, active)).meta
            except AdapterError:
                meta = {}
            adapter = {
                "version": active,
                "created_at": meta.get("created_at"),
                "metrics": meta.get("metrics", {}),
                "baseline": meta.get("baseline", {}),
            }
        feedback = await asyncio.to_thread(self.store.feedback_counts)
        runs = await asyncio.to_thread(self.registry.runs)
        last_run: dict[str, Any] | None = None
        if runs:
            last_run = {
                k: runs[-1].get(k)
                for k in (
                    "run",
                    "status",
                    "started_at",
                    "finished_at",
                    "version",
                    "reason",
                    "error",
                )
            }
        return {
            "index": {
                "store": stats.store,
                "documents": stats.documents,
                "chunks": stats.chunks,
                "embedding_model": self.knowledge.embedder.model_name,
            },
            "last_sync": last.as_json() | {"items": len(last.items)} if last else None,
            "model": self.settings.model.base,
            "adapter": adapter,
            "adapter_versions": len(await asyncio.to_thread(self.registry.versions)),
            "last_training_run": last_run,
            "feedback": feedback,
            "schedule": schedule_status(self.settings.schedule),
            "recent_jobs": [
                {k: _iso(v) for k, v in row.items() if k != "id"}
                for row in await asyncio.to_thread(self.history.recent, 5)
            ],
            "database": redact_url(self.settings.resolved_database_url),
            "abstention": await self.abstention(),
            "questions_waiting": await asyncio.to_thread(open_questions, self.store.engine),
        }

    @_recorded("sync")
    async def sync(
        self,
        *,
        trigger: str,
        report: Report | None = None,
        sources: list[str] | None = None,
        feeds: bool | None = None,
    ) -> JobResult:
        """Re-sync the index with the configured sources and the experts' answers, or only the
        sources named (and the experts' answers if `feeds`). AlreadyRunningError if every one
        is syncing already."""
        started = time.monotonic()
        reporter = _Reporter(report)
        knowledge = self.settings.knowledge
        chosen = [knowledge.source(name) for name in sources] if sources is not None else None

        def progress(done: int, total: int, _doc: str) -> None:
            if not total:  # a source that does not say how many it holds
                if done % 500 == 0:
                    reporter.once(done, f"sync: {done} documents so far")
                return
            reached = [m for m in (25, 50, 75) if 100 * done // total >= m]
            if reached:
                reporter.once(max(reached), f"sync: {done}/{total} documents")

        if report is not None:
            await report("sync started")
        result = await self.knowledge.syncer.run(
            sources=chosen,
            feeds=sources is None if feeds is None else feeds,
            trigger=trigger,
            progress=progress,
        )
        await reporter.flush()
        log.info("ops.sync", trigger=trigger, status=result.status, s=time.monotonic() - started)
        ok = result.status == "ok" and not result.failed_sources
        return JobResult("sync", ok, result.summary(), result.as_json())

    @_recorded("retrain")
    async def train(
        self,
        *,
        trigger: str,
        report: Report | None = None,
        dry_run: bool = False,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> JobResult:
        """The learning loop: training set → QLoRA in a worker process → eval gate → registry,
        promoted if it wins (AlreadyRunningError if a run is going on anywhere)."""
        lock = JobLock(self.store.engine, RETRAIN_LOCK)
        async with lock.held():
            if report is not None:
                await report("retrain started: building the training set")
            dataset = await self.training_set()
            milestones = _Milestones(report)

            def event(data: dict[str, Any]) -> None:
                milestones.see(data)
                if on_event is not None:
                    on_event(data)

            loop = LearningLoop(
                self.registry,
                self.settings.training,
                self.settings.prompt,
                self.settings.model.base,
                self.settings.data_dir,
                on_start=self._worker_started,
                abstention=self.settings.answer.abstention_reply,
            )
            try:
                outcome = await loop.run(dataset, trigger=trigger, dry_run=dry_run, on_event=event)
            finally:
                self.worker_pid = None
                await milestones.flush()
        log.info("ops.retrain", trigger=trigger, status=outcome.status, summary=outcome.summary)
        result = JobResult("retrain", outcome.ok, outcome.summary, outcome.as_json())
        if outcome.status in ("promoted", "rejected", "failed"):
            await self._announce(result)
        return result

    @_recorded("answerability")
    async def train_answerability(self, *, trigger: str) -> JobResult:
        """Refit the answerability model with the feedback on abstentions and unsupported answers
        (see training/learning/answerability.py) into the data dir, where serving picks it up
        at its next start."""
        base = await asyncio.to_thread(AnswerabilityModel.load, DEFAULT_MODEL)
        candidates = await asyncio.to_thread(self.store.training_candidates)
        model, counts = retrain(
            base,
            candidates,
            embedder=self.knowledge.embedder.model_name,
            reranker=reranker_name(self.settings),
        )
        path = self.settings.data_dir / RETRAINED
        await asyncio.to_thread(model.save, path)
        log.info("ops.answerability_trained", version=model.version, path=str(path), **counts)
        return JobResult(
            "answerability",
            True,
            f"answerability model {model.version} saved to {path} "
            f"({counts['benchmark']} benchmark questions, "
            f"{counts['answerable_from_feedback']} abstentions experts answered, "
            f"{counts['unanswerable_from_feedback']} unsupported answers rated 👎); "
            "restart the bot to serve it",
            {"version": model.version, "path": str(path), "threshold": model.threshold, **counts},
        )

    async def abstention(self) -> str:
        """Which abstention rule serves, and why (the status line)."""
        try:
            rule = abstention_rule(
                self.settings.answer,
                data_dir=self.settings.data_dir,
                embedder=self.knowledge.embedder.model_name,
                reranker=reranker_name(self.settings),
            )
        except ConfigError as exc:
            return f"error: {exc}"
        line = rule.describe()
        if rule.kind == "classifier":
            counted = await asyncio.to_thread(self.knowledge.search.vocabulary_size)
            if not counted:
                line += (
                    "; until `expertbot sync` counts the documents' words, the similarity "
                    "rule decides"
                )
        return line

    @_recorded("promote")
    async def promote(self, version: str, *, force: bool = False, trigger: str) -> JobResult:
        """Serve `version` (one the gate rejected only with `force`)."""
        candidate = await asyncio.to_thread(self.registry.get, version)
        gate = candidate.meta.get("gate") or {}
        if gate.get("passed") is False and not force:
            reasons = "; ".join(gate.get("reasons") or ["it lost to the serving adapter"])
            raise AdapterError(
                f"{version} did not pass the eval gate ({reasons}); promote it with --force "
                "if you are sure"
            )
        before = await asyncio.to_thread(self.registry.active)
        await asyncio.to_thread(self.registry.promote, version, reason=f"promoted by {trigger}")
        log.info("ops.promote", trigger=trigger, before=before, now=version, forced=force)
        return JobResult(
            "promote",
            True,
            f"{version} serves now (was {before or 'the base model'})",
            {"before": before, "now": version},
        )

    def _worker_started(self, pid: int) -> None:
        self.worker_pid = pid

    async def _announce(self, result: JobResult) -> None:
        for announce in self.announcers:
            try:
                await announce(result)
            except Exception as exc:  # a chat outage must not fail the job
                log.warning("ops.announce_failed", error=f"{exc.__class__.__name__}: {exc}")

    @_recorded("rollback")
    async def rollback(self, version: str | None = None, *, trigger: str) -> JobResult:
        """Serve `version`, or the previously promoted one (or the base model). Serving
        replicas follow the registry and hot-swap."""
        before = await asyncio.to_thread(self.registry.active)
        now = await asyncio.to_thread(self.registry.rollback, version)
        log.info("ops.rollback", trigger=trigger, before=before, now=now)
        return JobResult(
            "rollback",
            True,
            f"rolled back from {before or 'the base model'} to {now or 'the base model'}",
            {"before": before, "now": now},
        )

    async def import_examples(self, path: Path) -> int:
        """Add expert-approved question/answer pairs from a JSONL file (seeding the loop from an
        FAQ): each becomes a curated answer, a training example and, at the next sync, a
        document of the index with the line's access (default public). Returns how many."""
        rows = await asyncio.to_thread(read_import, path)
        vectors = await self._embed([r["question"] for r in rows])
        for row, vector in zip(rows, vectors, strict=True):
            await asyncio.to_thread(
                self.store.add_curated,
                question=row["question"],
                embedding=vector,
                answer=row["answer"],
                approved_by=row["approved_by"],
                kind=CuratedKind.IMPORTED,
                access=AnswerAccess(row["access"], tuple(row["allowed"])),
            )
        log.info("ops.dataset_imported", path=str(path), examples=len(rows))
        return len(rows)

    async def withdraw_expert_answer(self, curated_id: str) -> tuple[ExpertAnswer, bool]:
        """Withdraw the expert answer `curated_id`: served no more at once, out of the index at
        the next sync. Returns it and whether it was active (NotFoundError if there is none)."""
        found = await asyncio.to_thread(self.store.expert_answer, curated_id)
        if found is None:
            raise NotFoundError(
                f"no expert answer {curated_id} (see `expertbot dataset list --all`)"
            )
        withdrawn = await asyncio.to_thread(self.store.withdraw_expert_answer, curated_id)
        log.info("ops.expert_answer_withdrawn", curated_id=curated_id, was_active=withdrawn)
        return found, withdrawn

    async def training_set(self) -> TrainingSet:
        """The training set as the feedback store stands now (see training/learning/dataset.py)."""
        candidates = await asyncio.to_thread(self.store.training_candidates)
        imported = await asyncio.to_thread(self.store.imported_examples)
        experts = await asyncio.to_thread(self.store.expert_answers)
        stored = np.stack([e.embedding for e in experts]) if experts else None

        async def context(question: str, asked: AnswerRecord | None) -> Context:
            # Its own expert answers: of the answer it was asked as, or of the same question
            # (stored embeddings are normalised; a question's own expert answer is left out of
            # its retrieval, so the gate measures reading, not the answer served back).
            own: list[ExpertAnswer] = []
            if stored is not None:
                vector = (await self._embed([question]))[0]
                sims = stored @ (vector / (np.linalg.norm(vector) or 1.0))
                own = [
                    e
                    for e, sim in zip(experts, sims, strict=True)
                    if (asked is not None and e.answer_id == asked.id)
                    or sim >= self.settings.dataset.dedupe_similarity
                ]
                own.sort(key=lambda e: e.created_at, reverse=True)
            return await self._context_for(question, asked, own)

        return await build_training_set(
            candidates,
            imported,
            config=self.settings.dataset,
            retrieve=context,
            embed=self._embed,
            abstention=self.settings.answer.abstention_reply,
        )

    async def export_dataset(self) -> tuple[Path, TrainingSet]:
        dataset = await self.training_set()
        path = await asyncio.to_thread(dataset.export, self.settings.data_dir / "datasets")
        return path, dataset

    async def _context_for(
        self, question: str, asked: AnswerRecord | None, own: Sequence[ExpertAnswer] = ()
    ) -> Context:
        """What the question retrieves today where it was asked (imported ones: as if in a
        public channel), as the prompt shows passages, with its own expert answers (`own`)
        left out of the retrieval and given apart as its gold passages."""
        if asked is None:
            where = Where()
            asker = "import"
        else:
            where = Where(WhereKind(asked.where_kind), asked.channel, asked.platform)
            asker = asked.asker
        scope = scope_for(Question(question, asker=asker, where=where), self.settings.answer)
        k = self.settings.answer.passages
        left_out = {e.id for e in own}
        retrieval = await self.knowledge.search.retrieve(
            question, k=k + len(left_out), filters=SearchFilters(scope=scope)
        )
        hits = [
            h for h in retrieval.hits if not (h.source == EXPERT_SOURCE and h.doc_id in left_out)
        ]
        return Context(
            tuple(merge_passages(hits[:k])),
            tuple(
                Passage(
                    title=expert_answer_title(e),
                    heading="",
                    uri=expert_answer_uri(e.id),
                    text=expert_answer_text(e),
                    doc_id=e.id,
                )
                for e in own
            ),
        )

    async def _embed(self, texts: Sequence[str]) -> np.ndarray:
        """Question embeddings as answering computes them (so imported curated answers match)."""
        return np.stack([await self.knowledge.search.embed(text) for text in texts])


class _Reporter:
    """Sends progress lines from synchronous callbacks (each key once) without waiting for
    them; `flush` waits for what was sent."""

    def __init__(self, report: Report | None) -> None:
        self.report = report
        self.pending: set[asyncio.Task[None]] = set()
        self.said: set[object] = set()

    def once(self, key: object, text: str) -> None:
        if self.report is None or key in self.said:
            return
        self.said.add(key)
        task = asyncio.ensure_future(self.report(text))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def flush(self) -> None:
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)


class _Milestones(_Reporter):
    """Chat-sized progress of a training run: its start, halfway, evaluation."""

    def see(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "training":
            self.once("start", f"training on {event['examples']} examples, {event['total']} steps")
        elif kind == "step" and event["step"] * 2 >= event["total"]:
            self.once(
                "half", f"training: step {event['step']}/{event['total']}, loss {event['loss']:.3f}"
            )
        elif kind == "eval":
            self.once("eval", "training done; comparing with the serving adapter")


def status_lines(status: dict[str, Any]) -> list[str]:
    """The status as short lines (chat and terminal)."""
    index = status["index"]
    lines = [f"Index: {index['documents']} documents, {index['chunks']} chunks ({index['store']})"]
    last = status.get("last_sync")
    if last:
        lines.append(
            f"Last sync: {last['finished_at'] or last['started_at']} UTC, {last['status']} "
            f"({last['added']} added, {last['updated']} updated, {last['deleted']} deleted)"
        )
    else:
        lines.append("Last sync: never")
    adapter = status.get("adapter")
    if adapter:
        scores, baseline = adapter["metrics"], adapter.get("baseline") or {}
        shown = [
            f"{label} {baseline[key]:.2f} → {scores[key]:.2f}"
            if isinstance(baseline.get(key), int | float)
            else f"{label} {scores[key]:.2f}"
            for key, label in SCORE_LABELS
            if isinstance(scores.get(key), int | float)
        ]
        compared = ", before → after" if any("→" in score for score in shown) else ""
        lines.append(
            f"Model: {status['model']} + adapter {adapter['version']} (held-out scores{compared}: "
            f"{', '.join(shown) or 'none'})"
        )
    else:
        lines.append(f"Model: {status['model']} (no adapter serving)")
    run = status.get("last_training_run")
    if run:
        outcome = {
            "promoted": f"{run['version']} promoted",
            "rejected": f"{run['version']} not promoted (lost to the serving adapter)",
            "failed": f"failed: {run.get('error')}",
            "skipped": f"skipped: {run.get('reason')}",
            "running": "running",
        }.get(str(run["status"]), str(run["status"]))
        lines.append(f"Last training run: {run['finished_at'] or run['started_at']} UTC, {outcome}")
    else:
        lines.append("Last training run: never")
    lines.append(f"Abstention: {status['abstention']}")
    waiting = status.get("questions_waiting") or {}
    if waiting:
        lines.append(
            "Questions waiting: "
            + ", ".join(f"{count} {state}" for state, count in sorted(waiting.items()))
            + " (answered by a replica, or resumed when its lease runs out)"
        )
    fb = status["feedback"]
    lines.append(
        f"Feedback: {fb['answers']} answers, {fb['up']} 👍, {fb['down']} 👎, "
        f"{fb['approved']} approved, {fb['corrections']} corrections, {fb['comments']} comments"
    )
    schedule = status.get("schedule") or {}
    planned = [
        f"{job} `{entry['cron']}` (next {entry['next']} {schedule.get('timezone', '')})".rstrip()
        for job, entry in (schedule.get("jobs") or {}).items()
    ]
    lines.append(
        "Schedule: "
        + ("; ".join(planned) if planned else "none (jobs run when an admin triggers them)")
    )
    for run in status.get("recent_jobs") or []:
        when = run["finished_at"] or run["started_at"]
        lines.append(
            f"Job: {run['job']} by {run['trigger']} at {when} UTC: {run['outcome']}"
            + (f" — {run['summary']}" if run.get("summary") else "")
        )
    return lines


def _iso(value: Any) -> Any:
    return value.isoformat(sep=" ", timespec="seconds") if hasattr(value, "isoformat") else value


def schedule_status(config: Any) -> dict[str, Any]:
    """The configured jobs with their next run (computed from the cron expression)."""
    from bot.schedule import next_run

    jobs = {}
    for job, cron in (("sync", config.sync), ("retrain", config.train)):
        if cron:
            upcoming = next_run(cron, config.timezone)
            jobs[job] = {
                "cron": cron,
                "next": upcoming.strftime("%Y-%m-%d %H:%M:%S") if upcoming else None,
            }
    return {"timezone": config.timezone, "jobs": jobs}
