"""The admin operations — status, sync, retrain, rollback — shared by every way to ask.

The command line, the Slack slash command, Teams' admin messages and (later) the scheduler call
these same functions, so a sync triggered anywhere is the same sync, with the same lock: a
second trigger while one runs is answered "already running since …" (AlreadyRunningError).
Progress is reported through an optional async callback, results as a `JobResult`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from bot.core.access import scope_for
from bot.core.answering import merge_passages
from bot.core.question import Question, Where, WhereKind
from bot.settings import Settings
from knowledge.database import redact_url
from knowledge.errors import AdapterError, ExpertbotError
from knowledge.models import SearchFilters
from knowledge.runtime import Knowledge
from training.dataset import TrainingSet, build_training_set, read_import
from training.prompting import Passage
from training.registry import AdapterRegistry
from training.store import AnswerStore

log = structlog.get_logger("expertbot.ops")

Report = Callable[[str], Awaitable[None]]

ADMIN_JOBS = ("sync", "retrain", "rollback")


class JobUnavailableError(ExpertbotError):
    """The job cannot run in this installation (said why)."""


@dataclass(frozen=True, slots=True)
class JobResult:
    job: str
    ok: bool
    summary: str  # one line for a chat message
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ops:
    settings: Settings
    knowledge: Knowledge
    store: AnswerStore
    registry: AdapterRegistry

    async def status(self) -> dict[str, Any]:
        """Index size and last sync, the serving adapter and its metrics, feedback counts."""
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
            }
        feedback = await asyncio.to_thread(self.store.feedback_counts)
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
            "feedback": feedback,
            "database": redact_url(self.settings.resolved_database_url),
        }

    async def sync(self, *, trigger: str, report: Report | None = None) -> JobResult:
        """Re-sync the index with the configured sources (AlreadyRunningError if one runs)."""
        started = time.monotonic()
        marks = {25, 50, 75}
        pending: set[asyncio.Task[None]] = set()

        def progress(done: int, total: int, _doc: str) -> None:
            if report is None or not total:
                return
            pct = 100 * done // total
            reached = {m for m in marks if pct >= m}
            if reached:
                marks.difference_update(reached)
                task = asyncio.ensure_future(report(f"sync: {done}/{total} documents"))
                pending.add(task)
                task.add_done_callback(pending.discard)

        if report is not None:
            await report("sync started")
        result = await self.knowledge.syncer.run(trigger=trigger, progress=progress)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        log.info("ops.sync", trigger=trigger, status=result.status, s=time.monotonic() - started)
        return JobResult("sync", result.status == "ok", result.summary(), result.as_json())

    async def retrain(self, *, trigger: str, report: Report | None = None) -> JobResult:
        """Fine-tune on the training set, gate, promote (the learning-loop pipeline)."""
        raise JobUnavailableError(
            "retraining needs the learning-loop pipeline (dataset, QLoRA, eval gate), which is "
            "not in this build yet; feedback is being collected for it"
        )

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
        FAQ): each becomes a curated answer and a training example. Returns how many."""
        rows = await asyncio.to_thread(read_import, path)
        vectors = await self._embed([r["question"] for r in rows])
        for row, vector in zip(rows, vectors, strict=True):
            await asyncio.to_thread(
                self.store.add_curated,
                question=row["question"],
                embedding=vector,
                answer=row["answer"],
                approved_by=row["approved_by"],
                kind="imported",
            )
        log.info("ops.dataset_imported", path=str(path), examples=len(rows))
        return len(rows)

    async def training_set(self) -> TrainingSet:
        """The training set as the feedback store stands now (see training/dataset.py)."""
        candidates = await asyncio.to_thread(self.store.training_candidates)
        imported = await asyncio.to_thread(self.store.imported_examples)
        return await build_training_set(
            candidates,
            imported,
            config=self.settings.dataset,
            retrieve=self._passages_for,
            embed=self._embed,
        )

    async def export_dataset(self) -> tuple[Path, TrainingSet]:
        dataset = await self.training_set()
        path = await asyncio.to_thread(dataset.export, self.settings.data_dir / "datasets")
        return path, dataset

    async def _passages_for(self, question: str, asked: dict[str, Any] | None) -> list[Passage]:
        """What the question retrieves today, where it was asked (imported ones: as if in a
        public channel), as the prompt shows passages."""
        if asked is None:
            where = Where()
            asker = "import"
        else:
            where = Where(WhereKind(asked["where_kind"]), asked["channel"], asked["platform"])
            asker = asked["asker"]
        scope = scope_for(Question(question, asker=asker, where=where), self.settings.answer)
        retrieval = await self.knowledge.search.retrieve(
            question, k=self.settings.answer.passages, filters=SearchFilters(scope=scope)
        )
        return merge_passages(retrieval.hits)

    async def _embed(self, texts: Sequence[str]) -> np.ndarray:
        """Question embeddings as answering computes them (so imported curated answers match)."""
        return np.stack([await self.knowledge.search.embed(text) for text in texts])


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
        metrics = ", ".join(f"{k} {v}" for k, v in sorted(adapter["metrics"].items())) or "none"
        lines.append(
            f"Model: {status['model']} + adapter {adapter['version']} (metrics: {metrics})"
        )
    else:
        lines.append(f"Model: {status['model']} (no adapter serving)")
    fb = status["feedback"]
    lines.append(
        f"Feedback: {fb['answers']} answers, {fb['up']} 👍, {fb['down']} 👎, "
        f"{fb['approved']} approved, {fb['corrections']} corrections, {fb['comments']} comments"
    )
    lines.append("Schedule: none (jobs run when an admin triggers them)")
    return lines
