"""The schedule: index re-sync (hourly) and the QLoRA refresh (nightly), inside `expertbot serve`
or `expertbot jobs`, once across replicas.

- APScheduler 3's `AsyncIOScheduler` with a SQLAlchemy job store in the shared database. The
  jobs are textual references to `run_scheduled` here, which calls the same `Ops` functions the
  CLI and the chat commands call. `max_instances=1`, coalescing, and no misfire limit: a run
  missed while every process was down runs once after start-up.
- Once across replicas: APScheduler 3 does not coordinate schedulers sharing a job store, so
  each scheduled run first claims its slot (the job and the cron fire time it belongs to) in
  the database; only the first process to claim it runs the job, the others log and move on.
  A run still going when the next slot comes (or a manual trigger) meets the job's own lease:
  "already running since …", recorded as refused.
- A source with its own `schedule` re-syncs on it, alone (job `sync:<name>`); the global sync
  job covers the other sources and the experts' answers. Sources sync under their own leases,
  so the two never wait for each other.
- Cron expressions: five fields (minute hour day month weekday), or six with seconds first.
  An empty expression disables the job.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, ConfigDict, Field, field_validator

from base.errors import AlreadyRunningError
from bot.claims import EventClaims

if TYPE_CHECKING:
    from bot.ops import JobResult, Ops

log = structlog.get_logger("expertbot.schedule")

JOBS = {"sync": "expertbot.sync", "train": "expertbot.train"}
SOURCE_JOB = "sync:"  # + a source's name: that source on its own schedule
# The job store's table, created by the `schedule` namespace's migration (base/migrations/).
JOB_TABLE = "scheduled_jobs"
NO_SOURCES = "no knowledge.sources configured (EXPERTBOT_KNOWLEDGE__SOURCES or the TOML file)"
_CRON_FIELDS = ("minute", "hour", "day", "month", "day_of_week")


class ScheduleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sync: str = Field(
        default="0 * * * *", description="Index re-sync (cron; empty: off). Default hourly."
    )
    train: str = Field(
        default="0 2 * * *", description="QLoRA refresh (cron; empty: off). Default 02:00."
    )
    timezone: str = Field(default="UTC", description="Time zone of the cron expressions.")

    @field_validator("sync", "train")
    @classmethod
    def _cron(cls, value: str) -> str:
        value = value.strip()
        if value:
            cron_trigger(value, "UTC")  # raises with the reason
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.sync or self.train)


def cron_trigger(expression: str, timezone: str) -> CronTrigger:
    fields = expression.split()
    try:
        if len(fields) == 5:
            return CronTrigger(**dict(zip(_CRON_FIELDS, fields, strict=True)), timezone=timezone)
        if len(fields) == 6:
            return CronTrigger(
                second=fields[0],
                **dict(zip(_CRON_FIELDS, fields[1:], strict=True)),
                timezone=timezone,
            )
    except ValueError as exc:
        raise ValueError(f"bad cron expression {expression!r}: {exc}") from exc
    raise ValueError(
        f"bad cron expression {expression!r}: 5 fields (minute hour day month weekday) "
        "or 6 (seconds first)"
    )


def next_run(expression: str, timezone: str, after: datetime | None = None) -> datetime | None:
    trigger = cron_trigger(expression, timezone)
    now = after or datetime.now(ZoneInfo(timezone))
    fire: datetime | None = trigger.get_next_fire_time(None, now)
    return fire


def slot_of(expression: str, timezone: str, now: datetime) -> datetime:
    """The latest fire time at or before `now`: the run a (possibly late) execution belongs to."""
    trigger = cron_trigger(expression, timezone)
    for window in (
        timedelta(minutes=2),
        timedelta(hours=2),
        timedelta(days=2),
        timedelta(days=400),
    ):
        last: datetime | None = trigger.get_next_fire_time(None, now - window)
        if last is None or last > now:
            continue  # no fire time in this window: look further back
        while True:
            following: datetime | None = trigger.get_next_fire_time(
                None, last + timedelta(seconds=1)
            )
            if following is None or following > now:
                return last
            last = following
    return now


# This process's scheduler (one a process): the textual job references resolve through it.
_current: Scheduler | None = None


async def run_scheduled(job: str) -> None:
    """A scheduled run of `job` ("sync" or "train"): claim its slot, then call Ops."""
    if _current is None:
        log.warning("schedule.no_scheduler", job=job)
        return
    await _current.fire(job)


class Scheduler:
    def __init__(self, ops: Ops, *, database_url: str) -> None:
        self.ops = ops
        self.config: ScheduleConfig = ops.settings.schedule
        self.claims = EventClaims(ops.store.engine)
        self.jobstore = SQLAlchemyJobStore(url=database_url, tablename=JOB_TABLE)
        self.scheduler = AsyncIOScheduler(
            jobstores={"default": self.jobstore},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=ZoneInfo(self.config.timezone),
        )

    async def start(self) -> None:
        """Start, keeping jobs already in the store (and their pending, possibly missed, next
        run) unless their expression changed."""
        global _current
        if _current is not None:
            raise RuntimeError("one scheduler a process")
        # The job store's table and the slot claims exist: Ops' knowledge was opened, which
        # migrated the database (the `schedule` and `bot` namespaces in base/migrations/).
        _current = self
        self.scheduler.start(paused=True)
        sync = self.config.sync
        if sync and not self.ops.settings.knowledge.sources:
            # A source's access rules live in its configuration: only configured sources are
            # re-synced (folders given to `expertbot sync` once are not remembered).
            log.warning("schedule.sync_off", reason=NO_SOURCES)
            sync = ""
        wanted = self._crons() | {"sync": sync}
        for job in self.scheduler.get_jobs():  # sources whose own schedule was removed
            if job.id.startswith(_job_id(SOURCE_JOB)) and job.name not in wanted:
                self.scheduler.remove_job(job.id)
        for job, cron in wanted.items():
            job_id = _job_id(job)
            existing = self.scheduler.get_job(job_id)
            if not cron:
                if existing is not None:
                    self.scheduler.remove_job(job_id)
                continue
            trigger = cron_trigger(cron, self.config.timezone)
            kwargs = {"job": job}
            if existing is None:
                self.scheduler.add_job(  # replace: another replica may add it meanwhile
                    "bot.schedule:run_scheduled",
                    trigger,
                    id=job_id,
                    kwargs=kwargs,
                    name=job,
                    replace_existing=True,
                )
            else:
                if str(existing.trigger) != str(trigger):
                    self.scheduler.reschedule_job(job_id, trigger=trigger)
        self.scheduler.resume()
        log.info(
            "schedule.started",
            sync=self.config.sync or "off",
            train=self.config.train or "off",
            timezone=self.config.timezone,
        )

    async def stop(self) -> None:
        global _current
        self.scheduler.shutdown(wait=False)
        if _current is self:
            _current = None

    def _crons(self) -> dict[str, str]:
        """Every job's cron expression: sync, train, and `sync:<name>` for each source on a
        schedule of its own."""
        return {"sync": self.config.sync, "train": self.config.train} | {
            SOURCE_JOB + s.source_name: s.schedule
            for s in self.ops.settings.knowledge.sources
            if s.schedule
        }

    async def fire(self, job: str) -> JobResult | None:
        cron = self._crons().get(job, "")
        zone = ZoneInfo(self.config.timezone)
        slot = slot_of(cron, self.config.timezone, datetime.now(zone)) if cron else None
        stamp = slot.isoformat(timespec="seconds") if slot else "manual"
        if not await self.claims.claim("schedule", f"{job}@{stamp}"):
            log.info("schedule.already_claimed", job=job, slot=stamp)
            return None
        trigger = f"schedule@{stamp}"
        try:
            result = await self._run(job, trigger)
        except AlreadyRunningError as exc:
            log.info("schedule.refused", job=job, reason=str(exc))
            return None
        except Exception as exc:  # recorded in the job history; the next slot still runs
            log.error("schedule.job_failed", job=job, error=f"{exc.__class__.__name__}: {exc}")
            return None
        return result

    async def _run(self, job: str, trigger: str) -> JobResult:
        if job.startswith(SOURCE_JOB):
            return await self.ops.sync(trigger=trigger, sources=[job[len(SOURCE_JOB) :]])
        if job == "sync":
            own = {s.source_name for s in self.ops.settings.knowledge.sources if s.schedule}
            if own:  # the others, and the experts' answers
                rest = [
                    s.source_name
                    for s in self.ops.settings.knowledge.sources
                    if s.source_name not in own
                ]
                return await self.ops.sync(trigger=trigger, sources=rest, feeds=True)
            return await self.ops.sync(trigger=trigger)
        return await self.ops.train(trigger=trigger)

    def next_runs(self) -> dict[str, Any]:
        return {
            job.name: job.next_run_time
            for job in self.scheduler.get_jobs()
            if job.id in JOBS.values() or job.id.startswith(_job_id(SOURCE_JOB))
        }


def _job_id(job: str) -> str:
    """The job store's id of `job` ("sync", "train", "sync:<source>")."""
    return JOBS.get(job) or "expertbot." + job
