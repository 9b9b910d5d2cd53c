"""Every stored question answered once: by the replica that claimed it, or by another one.

    a platform's listener → `EventClaims.claim_question` (before the 200) → `Intake.begin`
        → the platform's `Replier.answer` in a task, the lease renewed every `renew_s`
    every `scan_s`, on each replica: `take_expired` → the same, for questions whose replica died

A question older than `delivery.max_age_s` when its turn comes gets a short apology instead
of a stale answer, and one whose answer was begun more than `delivery.max_attempts` times (it
keeps killing whoever answers it) gets the usual apology: either counts as its one reply. The platforms post both
in place of whatever an earlier try had posted.

On the way down (`stop`), nothing new starts, answers in flight get `server.drain_s` to
finish, and what is left is released: another replica resumes it within `scan_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from base.errors import ExpertbotError
from bot import metrics
from bot.chat import APOLOGY
from bot.claims import EventClaims, Pending
from bot.delivery import Note, Started
from bot.settings import DeliveryConfig

log = structlog.get_logger("expertbot.intake")

TOO_OLD = (
    "Sorry — I was interrupted while answering this, and it is too old now for a reliable "
    "answer. Please ask again."
)


class Replier(Protocol):
    """How a platform answers a stored question (Slack, Teams)."""

    async def answer(self, pending: Pending, note: Note, started: Started) -> bool:
        """Answer `pending`, in place of `pending.messages` where an earlier try posted some;
        call `note` with each message posted and `started` when the answer begins (both go to
        `deliver`). True when answered; False when the asker was told why not."""
        ...

    async def apologize(self, pending: Pending, text: str) -> None:
        """Tell the asker `text` instead of an answer (in place of `pending.messages`)."""


class Intake:
    def __init__(self, claims: EventClaims, config: DeliveryConfig, *, capacity: int = 64) -> None:
        """`capacity`: how many answers this replica takes on at once when resuming others'
        questions (`model.max_queue`: beyond it the model turns questions away as busy)."""
        self.claims = claims
        self.config = config
        self.capacity = capacity
        self.repliers: dict[str, Replier] = {}
        self.accepting = True  # False once stopping: questions claimed now are left to others
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._held: dict[tuple[str, str], Pending] = {}  # what the tasks answer (leases renewed)
        self._loops: list[asyncio.Task[None]] = []

    def add(self, platform: str, replier: Replier) -> None:
        self.repliers[platform] = replier

    def begin(self, pending: Pending) -> None:
        """Answer a question this replica has just claimed and holds."""
        key = (pending.platform, pending.event_id)
        if key in self._tasks:
            return
        task = asyncio.create_task(self._answer(pending), name=f"answer {pending.event_id}")
        self._tasks[key] = task
        self._held[key] = pending

        def done(_: asyncio.Task[None]) -> None:
            self._tasks.pop(key, None)
            self._held.pop(key, None)

        task.add_done_callback(done)

    async def _answer(self, pending: Pending) -> None:
        replier = self.repliers.get(pending.platform)
        if replier is None:  # that platform is not configured here: leave it to one that is
            await self.claims.release(pending)
            return
        with structlog.contextvars.bound_contextvars(
            platform=pending.platform, event_id=pending.event_id
        ):
            try:
                answered = await self._reply(replier, pending)
            except asyncio.CancelledError:
                raise  # stopping: `stop` releases it
            except Exception as exc:  # its lease runs out and it is resumed, here or elsewhere
                log.error(
                    "delivery.reply_failed",
                    error=f"{exc.__class__.__name__}: {exc}",
                    attempts=pending.attempts,
                )
                return
            await self._record(pending, answered)

    async def _record(self, pending: Pending, answered: bool) -> None:
        """Record that `pending` got its reply, however long the database takes to come back:
        left open, it would be resumed and answered a second time."""
        delay = 0.5
        while True:
            try:
                await self.claims.finish(pending, answered=answered)
                return
            except ExpertbotError as exc:
                log.warning("delivery.finish_retrying", error=str(exc), in_s=delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, self.config.renew_s)

    async def _reply(self, replier: Replier, pending: Pending) -> bool:
        if pending.age_s > self.config.max_age_s:
            log.warning("delivery.too_old", age_s=round(pending.age_s, 1))
            metrics.APOLOGIES.labels(platform=pending.platform, reason="too_old").inc()
            await replier.apologize(pending, TOO_OLD)
            return True  # the apology is its one reply
        if pending.attempts > self.config.max_attempts:
            log.error("delivery.gave_up", attempts=pending.attempts)
            metrics.APOLOGIES.labels(platform=pending.platform, reason="attempts").inc()
            await replier.apologize(pending, APOLOGY)
            return False
        if pending.resumed:
            log.info("delivery.resumed", attempts=pending.attempts, in_place=bool(pending.messages))
            metrics.RESUMED.labels(platform=pending.platform).inc()

        async def note(message_id: str) -> None:
            await self.claims.note_message(pending, message_id)

        async def started() -> None:
            await self.claims.answering(pending)

        return await replier.answer(pending, note, started)

    # -- the loops ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Renew this replica's leases and resume expired ones, until `stop`."""
        self._loops = [  # renewing first: it runs until the very end of `stop`
            asyncio.create_task(self._every(self.config.renew_s, self._renew), name="renew"),
            asyncio.create_task(self._every(self.config.scan_s, self.resume), name="resume"),
        ]

    async def _every(self, period_s: float, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                await job()
            except ExpertbotError as exc:  # the database is away: try again next time
                log.warning("delivery.loop_failed", job=job.__name__, error=str(exc))
            await asyncio.sleep(period_s)

    async def _renew(self) -> None:
        if self._held:
            await self.claims.renew(list(self._held.values()))

    async def resume(self) -> int:
        """Take the questions whose lease ran out and answer them; how many were taken."""
        room = self.capacity - len(self._tasks)
        if not self.accepting or room <= 0:
            return 0  # what is left waits for a replica with room
        taken = await self.claims.take_expired(limit=min(room, 20))
        for pending in taken:
            self.begin(pending)
        return len(taken)

    async def idle(self) -> None:
        """Wait until no answer is in flight here."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def stop(self, drain_s: float) -> None:
        """Start nothing more; let answers in flight finish within `drain_s`; release the
        rest for another replica."""
        self.accepting = False
        for loop in self._loops[1:]:  # resuming stops; renewing goes on while answers drain
            loop.cancel()
        if self._tasks:
            log.info("delivery.draining", answers=len(self._tasks), drain_s=drain_s)
            tasks = list(self._tasks.values())
            late = set(tasks)
            if drain_s > 0:
                _, late = await asyncio.wait(tasks, timeout=drain_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        with contextlib.suppress(ExpertbotError):
            released = await self.claims.release()
            if released:
                log.info("delivery.released", questions=released)
