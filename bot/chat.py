"""What every chat platform says and does the same way: admin commands, job runs, the texts that
tell people what happened to their question, rating or correction, and the training report.

Slack and Teams differ in how they carry a message (blocks and threads, activities and cards);
who may run a job, how a job is run and reported, and what a person is told are one piece of
code here, so both platforms behave alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from base.errors import AlreadyRunningError, ExpertbotError
from bot.core.question import Answer, Turn
from bot.ops import JobResult, Ops, Report
from training.feedback.records import AnswerRecord
from training.learning.report import metrics_table

log = structlog.get_logger("expertbot.chat")

APOLOGY = "Sorry — I couldn't answer that just now. Please try again in a minute."
BUSY = "Sorry — I'm answering a lot of questions right now. Please ask again in a minute."
NOT_AN_ANSWER = "This works on expertbot's answers only."


def curated_note(answer: Answer, name: Callable[[str], str] = str) -> str | None:
    """The mark on an expert-approved answer served as is; `name` renders the approver's id."""
    if not answer.curated:
        return None
    by = (answer.approved_by or "").strip()
    return "✅ Expert-approved answer" + (f" (approved by {name(by)})" if by else "")


def thread_history(answers: Sequence[AnswerRecord]) -> tuple[Turn, ...]:
    """A thread's earlier answers (`FeedbackStore.thread_answers`) as the turns a follow-up
    question carries, oldest first."""
    turns: list[Turn] = []
    for row in answers:
        turns += [Turn("user", row.question), Turn("assistant", row.answer)]
    return tuple(turns)


def parse_command(text: str) -> tuple[str, str]:
    """`"rollback v0002"` → `("rollback", "v0002")`; the command word is lower-cased."""
    word, _, rest = (text or "").strip().partition(" ")
    return word.lower(), rest.strip()


def refused(command: str) -> str:
    return f"Sorry, `{command}` is for admins only — nothing was run."


def cannot_answer(reason: object) -> str:
    """The asker can fix it (an empty or too long question): say what is wrong."""
    return f"I can't answer that: {reason}."


def rating_thanks(up: bool, how_to_correct: str) -> str:
    if up:
        return "Thanks — glad it helped."
    return f"Thanks — noted. {how_to_correct}"


def correction_thanks(expert: bool, who: str = "") -> str:
    """What the person who sent a correction is told; `who` is how the platform names them."""
    name = f" {who}" if who else ""
    if expert:
        return (
            f"Thanks{name} — correction saved. I'll give this answer to the same question from "
            "now on, and it joins the next training run."
        )
    return (
        f"Thanks{name} — noted as a comment. An expert's correction is needed to change the answer."
    )


async def run_admin_job(ops: Ops, job: str, arg: str, *, trigger: str, report: Report) -> str:
    """Run `sync`, `retrain` or `rollback [version]` (the caller checked the admin), sending
    progress through `report`; returns the closing line. Never raises: a refusal, a clear
    error or a crash each end in one line (a crash is logged with its traceback)."""
    try:
        result: JobResult
        if job == "sync":
            result = await ops.sync(trigger=trigger, report=report)
        elif job == "retrain":
            result = await ops.train(trigger=trigger, report=report)
        elif job == "rollback":
            result = await ops.rollback(arg or None, trigger=trigger)
        else:
            raise ValueError(f"not an admin job: {job!r}")
        return f"{'✅' if result.ok else '⚠️'} {job}: {result.summary}"
    except AlreadyRunningError as exc:
        return f"⏳ {exc}"
    except ExpertbotError as exc:  # said clearly: config, adapters, data
        return f"⚠️ {job}: {exc}"
    except Exception as exc:
        log.error(
            "chat.job_failed", job=job, error=f"{exc.__class__.__name__}: {exc}", exc_info=exc
        )
        return f"❌ {job} failed: {exc.__class__.__name__}. The logs have the details."


@dataclass(frozen=True, slots=True)
class Announcement:
    """A training run's outcome as the admin channel sees it."""

    headline: str  # "✅ retrain: v0001 promoted: key-fact recall 0.20 → 0.85, grounding …"
    table: str | None  # the before/after metrics (a Markdown table)
    version: str | None
    loss_curve: Path | None  # the PNG, where the run got that far

    @classmethod
    def of(cls, result: JobResult) -> Announcement:
        details = result.details
        prefix = {"promoted": "✅", "rejected": "🛑", "failed": "❌"}.get(
            str(details.get("status")), "ℹ️"
        )
        table = None
        if details.get("before") and details.get("after"):
            serving = (details.get("plan") or {}).get("serving") or "base model"
            table = metrics_table(details["before"], details["after"], serving=serving)
        curve = details.get("loss_curve")
        return cls(
            headline=f"{prefix} {result.job}: {result.summary}",
            table=table,
            version=details.get("version"),
            loss_curve=Path(curve) if curve and Path(curve).is_file() else None,
        )
