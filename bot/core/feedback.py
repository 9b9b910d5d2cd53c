"""What experts and askers say about answers, whatever the chat platform.

Slack and Teams turn reactions, buttons, feedback invokes and corrections into these calls;
who counts as an expert is theirs to decide (platform user ids and groups). Effects:

- 👍 / 👎 are ratings from anyone; buttons are exclusive (one vote per person), reactions are
  independent (Slack lets one person add both);
- an expert's approval is a rating *and* a curated answer, served as is to the next
  near-identical question; withdrawing it withdraws the curated answer;
- an expert's correction is an approved training target and a curated answer; anyone else's
  is kept as a comment only; deleting the message that holds it withdraws it.

Curated answers are served at once to near-identical questions, and indexed as documents of the
`expert-answers` source at the next sync (training/feedback/expert_answers.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from bot import metrics
from knowledge.search import KnowledgeSearch
from training.feedback.records import CuratedKind, RatingKind
from training.feedback.store import FeedbackStore

log = structlog.get_logger("expertbot.feedback")


@dataclass(frozen=True, slots=True)
class Correction:
    id: str
    approved: bool  # an expert's: a training target and a curated answer
    curated_id: str | None


class Feedback:
    def __init__(self, store: FeedbackStore, search: KnowledgeSearch) -> None:
        self.store = store
        self.search = search

    async def rate(
        self,
        answer_id: str,
        user: str,
        kind: RatingKind,
        *,
        platform: str,
        source: str,
        exclusive: bool = False,
        comment: str | None = None,
    ) -> bool:
        """A 👍 (`up`) or 👎 (`down`); `exclusive` withdraws the user's opposite vote."""
        if kind not in (RatingKind.UP, RatingKind.DOWN):
            raise ValueError(f"not a rating: {kind!r}")
        if exclusive:
            opposite = RatingKind.DOWN if kind == RatingKind.UP else RatingKind.UP
            await asyncio.to_thread(
                self.store.retract, answer_id=answer_id, user_id=user, kind=opposite
            )
        changed = await asyncio.to_thread(
            self.store.rate,
            answer_id=answer_id,
            user_id=user,
            platform=platform,
            kind=kind,
            source=source,
            comment=comment,
        )
        if changed:
            metrics.FEEDBACK.labels(kind=kind).inc()
        log.info("feedback.rated", answer_id=answer_id, kind=kind, source=source, new=changed)
        return changed

    async def retract(self, answer_id: str, user: str, kind: RatingKind) -> bool:
        if kind == RatingKind.APPROVED:
            return await self.withdraw_approval(answer_id, user)
        retracted = await asyncio.to_thread(
            self.store.retract, answer_id=answer_id, user_id=user, kind=kind
        )
        log.info("feedback.retracted", answer_id=answer_id, kind=kind, found=retracted)
        return retracted

    async def approve(self, answer_id: str, expert: str, *, platform: str, source: str) -> bool:
        """An expert's approval (the caller checked that `expert` is one). True if new."""
        changed = await asyncio.to_thread(
            self.store.rate,
            answer_id=answer_id,
            user_id=expert,
            platform=platform,
            kind=RatingKind.APPROVED,
            source=source,
            expert=True,
        )
        if changed:
            metrics.FEEDBACK.labels(kind=RatingKind.APPROVED).inc()
            curated_id = await self._curate(answer_id, expert, kind=CuratedKind.APPROVED)
            log.info("feedback.approved", answer_id=answer_id, curated_id=curated_id)
        return changed

    async def withdraw_approval(self, answer_id: str, expert: str) -> bool:
        retracted = await asyncio.to_thread(
            self.store.retract, answer_id=answer_id, user_id=expert, kind=RatingKind.APPROVED
        )
        if retracted:
            await asyncio.to_thread(
                self.store.deactivate_curated,
                answer_id=answer_id,
                approved_by=expert,
                kind=CuratedKind.APPROVED,
            )
            log.info("feedback.approval_withdrawn", answer_id=answer_id)
        return retracted

    async def correct(
        self,
        answer_id: str,
        user: str,
        text: str,
        *,
        platform: str,
        expert: bool,
        message_id: str | None = None,
    ) -> Correction:
        """Keep a correction; an expert's becomes the curated answer to that question.
        `message_id`: the chat message holding it (deleting that message withdraws it)."""
        text = text.strip()
        if not text:
            raise ValueError("an empty correction")
        curated_id = (
            await self._curate(answer_id, user, kind=CuratedKind.CORRECTED, text=text)
            if expert
            else None
        )
        correction_id = await asyncio.to_thread(
            self.store.add_correction,
            answer_id=answer_id,
            user_id=user,
            platform=platform,
            text=text,
            approved=expert,
            curated_id=curated_id,
            message_id=message_id,
        )
        metrics.FEEDBACK.labels(kind="correction" if expert else "comment").inc()
        log.info("feedback.corrected", answer_id=answer_id, approved=expert, curated_id=curated_id)
        return Correction(correction_id, expert, curated_id)

    async def withdraw_correction(
        self, platform: str, message_id: str, *, conversation: str | None = None
    ) -> bool:
        """The message holding a correction was deleted: withdraw the correction and its
        curated answer (no longer served; out of the index at the next sync)."""
        withdrawn = await asyncio.to_thread(
            self.store.withdraw_correction, platform, message_id, conversation=conversation
        )
        if withdrawn:
            log.info("feedback.correction_withdrawn", message_id=message_id)
        return withdrawn

    async def _curate(
        self, answer_id: str, expert: str, *, kind: CuratedKind, text: str | None = None
    ) -> str:
        row = await asyncio.to_thread(self.store.get_answer, answer_id)
        if row is None:
            raise LookupError(f"no answer {answer_id}")
        vector = await self.search.embed(row.question)
        return await asyncio.to_thread(
            self.store.curate_answer,
            answer_id,
            embedding=vector,
            approved_by=expert,
            kind=kind,
            text=text,
        )
