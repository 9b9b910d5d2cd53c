"""The learning loop's run: training set → QLoRA in a worker process → eval gate → registry.

    plan (enough new data?) → export the set → worker: fine-tune, score candidate and serving
    on the held-out split → gate → add the candidate to the registry (with its report) →
    promote it if it won; serving replicas follow the registry and hot-swap.

The candidate is trained from the base model on the whole current training set (not stacked
on the serving adapter), so every version is reproducible from its data hash and config; the
serving version is recorded as its `parent` and is what it must beat. A run that fails — the
worker raises, is killed, or runs past `training.timeout_s` — changes nothing that serves; it
is recorded as failed with its reason, its log kept in the run folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from base.errors import ExpertbotError
from training.config import GateConfig, PromptConfig, TrainingConfig
from training.learning.dataset import TrainingSet
from training.learning.finetune import plan_steps
from training.learning.report import deciding_scores, write_report
from training.learning.worker import EVENT_PREFIX, RESULT, WorkerSpec
from training.registry import AdapterRegistry

log = structlog.get_logger("expertbot.training")

OnEvent = Callable[[dict[str, Any]], None]


class TrainingFailed(ExpertbotError):
    """The training worker did not produce a candidate (said why)."""


# -- plan ------------------------------------------------------------------------------------


def example_keys(dataset: TrainingSet) -> list[str]:
    """One key per example and its content: a changed target is a new example."""
    return sorted(
        hashlib.sha256(f"{e.id}\0{e.question}\0{e.answer}".encode()).hexdigest()[:16]
        for e in dataset.examples
    )


@dataclass
class Plan:
    examples: int
    train: int
    heldout: int
    new_examples: int
    steps: int
    serving: str | None
    keys: list[str]
    skip: str | None = None  # why the run would not train

    def as_json(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "train": self.train,
            "heldout": self.heldout,
            "new_examples": self.new_examples,
            "steps": self.steps,
            "serving": self.serving,
            "skip": self.skip,
        }


def plan_run(
    dataset: TrainingSet,
    config: TrainingConfig,
    *,
    last_run: dict[str, Any] | None,
    serving: str | None,
) -> Plan:
    keys = example_keys(dataset)
    seen = set(last_run.get("example_keys", [])) if last_run else set()
    new = len(set(keys) - seen)
    train, heldout = len(dataset.split("train")), len(dataset.split("heldout"))
    plan = Plan(
        examples=len(keys),
        train=train,
        heldout=heldout,
        new_examples=new,
        steps=plan_steps(train, config) if train else 0,
        serving=serving,
        keys=keys,
    )
    if train < config.min_examples:
        plan.skip = f"too little data: {train} training examples (at least {config.min_examples})"
    elif heldout < config.gate.min_heldout:
        plan.skip = (
            f"too few held-out questions to compare adapters: {heldout} "
            f"(at least {config.gate.min_heldout})"
        )
    elif last_run is not None and new < config.min_new_examples:
        plan.skip = (
            f"too little new data: {new} new or changed examples since run {last_run['run']} "
            f"(at least {config.min_new_examples})"
        )
    return plan


# -- gate ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...]  # why not (or, when promoted, what it won)


_EPSILON = 1e-9  # 0.62 - 0.60 is a gain of 0.02


def judge(before: dict[str, Any], after: dict[str, Any], gate: GateConfig) -> Decision:
    """Promote only if the candidate's key-fact recall is not worse (beyond `recall_tolerance`),
    it wins on grounding, abstention on unanswerable probes or valid citations (by
    `grounding_gain`, `abstention_gain`, `citation_gain`), and none of those nor the share of
    questions answered falls past its tolerance. A score missing on either side is not compared.
    Token F1 does not decide: it rewards answers in the experts' phrasing with invented values."""
    problems: list[str] = []
    wins: list[str] = []
    notes: list[str] = []
    recall_before, recall_after = before.get("key_fact_recall"), after.get("key_fact_recall")
    if recall_before is None or recall_after is None:
        notes.append("key-fact recall not compared (not measured on both sides)")
    elif recall_after < recall_before - gate.recall_tolerance - _EPSILON:
        problems.append(f"key-fact recall fell from {recall_before:.2f} to {recall_after:.2f}")
    else:
        notes.append(f"key-fact recall {recall_before:.2f} → {recall_after:.2f}")
    checks = (
        ("grounding", "grounding", gate.grounding_gain, gate.grounding_tolerance),
        ("abstention", "abstention", gate.abstention_gain, gate.abstention_tolerance),
        ("citation_validity", "valid citations", gate.citation_gain, gate.citation_tolerance),
        ("answered", "answered", None, gate.answered_tolerance),
    )
    for key, label, gain, tolerance in checks:
        b, a = before.get(key), after.get(key)
        if b is None or a is None:
            continue
        if a < b - tolerance - _EPSILON:
            problems.append(f"{label} fell from {b:.2f} to {a:.2f}{_invented(before, after, key)}")
        elif gain is not None and a - b >= gain - _EPSILON:
            wins.append(f"{label} {b:.2f} → {a:.2f}")
    if not wins:
        problems.append(
            f"no gain in grounding (by {gate.grounding_gain:.2f}), abstention on unanswerable "
            f"questions (by {gate.abstention_gain:.2f}) or valid citations "
            f"(by {gate.citation_gain:.2f}){_invented(before, after, 'grounding')}"
        )
    if problems:
        return Decision(False, (*problems, *notes))
    return Decision(True, (*notes, *wins))


def _invented(before: dict[str, Any], after: dict[str, Any], key: str) -> str:
    """Where grounding is the reason: how the share of answers with invented values moved."""
    b, a = before.get("invented"), after.get("invented")
    if key != "grounding" or b is None or a is None or a <= b:
        return ""
    return f"; answers with invented values {b:.2f} → {a:.2f}"


# -- the worker ------------------------------------------------------------------------------


async def run_worker(
    spec: WorkerSpec,
    run_dir: Path,
    *,
    timeout_s: float,
    on_event: OnEvent | None = None,
    on_start: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run the worker process on `spec`; its result, or TrainingFailed. Cancelling kills it."""
    spec_path = run_dir / "spec.json"
    spec.write(spec_path)
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    errors: list[str] = []
    with open(run_dir / "worker.log", "wb") as logfile:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "training.learning.worker",
            str(spec_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=logfile,
            env=env,
        )
        if on_start:
            on_start(proc.pid)

        async def read_events() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith(EVENT_PREFIX):
                    continue
                try:
                    event = json.loads(line[len(EVENT_PREFIX) :])
                except ValueError:
                    continue
                if event.get("event") == "error":
                    errors.append(str(event.get("error")))
                if on_event:
                    on_event(event)

        try:
            await asyncio.wait_for(asyncio.gather(read_events(), proc.wait()), timeout_s)
        except TimeoutError:
            await _kill(proc)
            raise TrainingFailed(
                f"training ran past training.timeout_s ({timeout_s:g} s)"
            ) from None
        except BaseException:
            await _kill(proc)
            raise
    code = proc.returncode
    result_path = run_dir / RESULT
    if code != 0 or not result_path.is_file():
        if errors:
            reason = errors[-1]
        elif code is not None and code < 0:
            reason = f"the training process was killed (signal {-code})"
        else:
            reason = f"the training process exited with status {code}"
        raise TrainingFailed(f"{reason}; its log: {run_dir / 'worker.log'}")
    result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    return result


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 30)


# -- the whole run ---------------------------------------------------------------------------


@dataclass
class RunOutcome:
    status: str  # skipped | planned (dry run) | promoted | rejected | failed
    summary: str
    plan: Plan
    run: str | None = None
    version: str | None = None
    serving: str | None = None  # what serves after the run
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    reasons: tuple[str, ...] = ()
    train: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None
    loss_curve: Path | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def as_json(self) -> dict[str, Any]:
        train = {k: v for k, v in self.train.items() if k != "losses"}
        return {
            "status": self.status,
            "summary": self.summary,
            "plan": self.plan.as_json(),
            "run": self.run,
            "version": self.version,
            "serving": self.serving,
            "before": self.before,
            "after": self.after,
            "reasons": list(self.reasons),
            "train": train,
            "report": str(self.report) if self.report else None,
            "loss_curve": str(self.loss_curve) if self.loss_curve else None,
            "error": self.error,
        }


@dataclass
class LearningLoop:
    registry: AdapterRegistry
    training: TrainingConfig
    prompt: PromptConfig
    base: str  # model.base as configured (recorded with every version)
    data_dir: Path
    on_start: Callable[[int], None] | None = None  # gets the worker's pid
    abstention: str = ""  # what serving says when it will not answer

    def plan(self, dataset: TrainingSet) -> Plan:
        serving = self.registry.active()
        return plan_run(
            dataset, self.training, last_run=self.registry.last_trained_run(), serving=serving
        )

    async def run(
        self,
        dataset: TrainingSet,
        *,
        trigger: str = "cli",
        dry_run: bool = False,
        on_event: OnEvent | None = None,
    ) -> RunOutcome:
        if not dry_run:
            await asyncio.to_thread(self._close_interrupted_runs)
        plan = await asyncio.to_thread(self.plan, dataset)
        if plan.skip:
            if not dry_run:  # a dry run writes nothing
                await asyncio.to_thread(self._record_skip, dataset, plan, trigger)
            return RunOutcome("skipped", f"skipped: {plan.skip}", plan, serving=plan.serving)
        if dry_run:
            return RunOutcome(
                "planned",
                f"would train on {plan.train} examples ({plan.new_examples} of the set's "
                f"{plan.examples} new or changed) for "
                f"{plan.steps} steps and compare with {plan.serving or 'the base model'} on "
                f"{plan.heldout} held-out questions",
                plan,
                serving=plan.serving,
            )
        dataset_path = await asyncio.to_thread(dataset.export, self.data_dir / "datasets")
        run_dir = await asyncio.to_thread(
            self.registry.start_run,
            trigger=trigger,
            data_hash=dataset.content_hash,
            dataset=str(dataset_path),
            serving=plan.serving,
            examples=plan.examples,
            new_examples=plan.new_examples,
            pid=os.getpid(),
        )
        log.info("training.started", run=run_dir.name, examples=plan.train, steps=plan.steps)
        try:
            base_path = await asyncio.to_thread(self._base_path)
            spec = WorkerSpec(
                base=base_path,
                dataset=str(dataset_path),
                output=str(run_dir / "adapter"),
                serving=str(self.registry.path(plan.serving)) if plan.serving else None,
                training=self.training.model_dump(mode="json"),
                prompt=self.prompt.model_dump(mode="json"),
                abstention=self.abstention,
            )
            result = await run_worker(
                spec,
                run_dir,
                timeout_s=self.training.timeout_s,
                on_event=_logging(run_dir.name, on_event),
                on_start=self.on_start,
            )
        except (TrainingFailed, ExpertbotError, OSError) as exc:
            await asyncio.to_thread(self.registry.finish_run, run_dir, "failed", error=str(exc))
            log.error("training.failed", run=run_dir.name, error=str(exc))
            return RunOutcome(
                "failed",
                f"training failed: {exc}. {plan.serving or 'The base model'} still serves.",
                plan,
                run=run_dir.name,
                serving=plan.serving,
                error=str(exc),
            )
        except BaseException:
            await asyncio.to_thread(
                self.registry.finish_run, run_dir, "failed", error="interrupted"
            )
            raise
        try:
            return await asyncio.to_thread(self._conclude, dataset, plan, run_dir, result)
        except Exception as exc:  # e.g. the registry's storage is full: nothing was promoted
            await asyncio.to_thread(
                self.registry.finish_run,
                run_dir,
                "failed",
                error=f"{exc.__class__.__name__}: {exc}",
            )
            raise

    def _conclude(
        self, dataset: TrainingSet, plan: Plan, run_dir: Path, result: dict[str, Any]
    ) -> RunOutcome:
        before, after, train = result["before"], result["after"], result["train"]
        decision = judge(before, after, self.training.gate)
        version = self.registry.next_version()
        adapter_dir = run_dir / "adapter"
        report, curve = write_report(
            adapter_dir,
            version=version,
            parent=plan.serving,
            before=before,
            after=after,
            decision=decision,
            train=train,
            data_hash=dataset.content_hash,
            dataset=dataset.summary(),
            only_in_expert_answers=dataset.only_in_expert_answers,
        )
        added = self.registry.add(
            adapter_dir,
            version=version,
            meta={
                "base": self.base,
                "parent": plan.serving,
                "data_hash": dataset.content_hash,
                "dataset": dataset.summary(),
                "training": self.training.model_dump(mode="json"),
                "metrics": after,
                "baseline": before,
                "gate": {"passed": decision.promote, "reasons": list(decision.reasons)},
                "train": {k: v for k, v in train.items() if k != "losses"},
                "run": run_dir.name,
            },
        )
        shutil.rmtree(adapter_dir, ignore_errors=True)  # the registry holds its copy
        status = "promoted" if decision.promote else "rejected"
        if decision.promote:
            self.registry.promote(version, reason=f"promoted by run {run_dir.name}")
        self.registry.finish_run(
            run_dir, status, version=version, example_keys=plan.keys, reasons=list(decision.reasons)
        )
        serving = version if decision.promote else plan.serving
        log.info("training.finished", run=run_dir.name, status=status, version=version)
        scores = deciding_scores(before, after) or "no deciding score measured"
        summary = (
            f"{version} promoted: {scores} on {plan.heldout} held-out questions"
            if decision.promote
            else f"{version} not promoted ({'; '.join(decision.reasons)}); "
            f"{plan.serving or 'the base model'} still serves"
        )
        return RunOutcome(
            status,
            summary,
            plan,
            run=run_dir.name,
            version=version,
            serving=serving,
            before=before,
            after=after,
            reasons=decision.reasons,
            train=train,
            report=added.path / report.name,
            loss_curve=added.path / curve.name if curve else None,
        )

    def _base_path(self) -> str:
        from training.serving.demo import resolve_base

        return resolve_base(self.base, self.data_dir)[0]

    def _record_skip(self, dataset: TrainingSet, plan: Plan, trigger: str) -> None:
        run_dir = self.registry.start_run(
            trigger=trigger, data_hash=dataset.content_hash, examples=plan.examples
        )
        self.registry.finish_run(run_dir, "skipped", reason=plan.skip)

    def _close_interrupted_runs(self) -> None:
        """Runs still marked running when the retrain lease is ours died with their process."""
        for record in self.registry.runs():
            if record.get("status") == "running":
                self.registry.finish_run(
                    Path(record["path"]), "failed", error="interrupted (the process ended)"
                )


def _logging(run: str, then: OnEvent | None) -> OnEvent:
    """Log the worker's progress (about every tenth of the steps, with the loss), then pass on."""

    def on_event(event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "step":
            every = max(1, event["total"] // 10)
            if event["step"] % every == 0 or event["step"] == event["total"]:
                log.info(
                    "training.progress",
                    run=run,
                    step=event["step"],
                    total=event["total"],
                    loss=round(event["loss"], 4),
                )
        elif kind in ("loading", "training", "saved"):
            log.info(
                f"training.{kind}", run=run, **{k: v for k, v in event.items() if k != "event"}
            )
        if then is not None:
            then(event)

    return on_event
