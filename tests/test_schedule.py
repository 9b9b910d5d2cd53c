"""The schedule: APScheduler with its job store in the shared database, calling the same Ops
functions as the CLI and the chat; each run once across processes; the job history."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from base.database import make_engine
from base.errors import AlreadyRunningError
from base.locks import JobLock
from bot.cli import _with_ops
from bot.ops import RETRAIN_LOCK, status_lines
from bot.schedule import ScheduleConfig, Scheduler
from bot.server import schedule_mode
from knowledge.config import FolderSource
from tests.helpers import HANDBOOK, POSTGRES_URL, needs_postgres, postgres_schema, settings_for


def settings(data_dir: Path, **schedule: str) -> Any:
    made = settings_for(data_dir, "demo")
    made.knowledge.sources = [FolderSource(path=HANDBOOK, name="handbook")]
    made.schedule = ScheduleConfig(**({"sync": "", "train": ""} | schedule))
    return made


async def until(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def with_scheduler(made: Any, body: Callable[[Any, Scheduler], Awaitable[None]]) -> None:
    async def run(ops: Any) -> None:
        scheduler = Scheduler(ops, database_url=made.resolved_database_url)
        await scheduler.start()
        try:
            await body(ops, scheduler)
        finally:
            await scheduler.stop()

    await _with_ops(made, run)


async def test_jobs_fire_on_schedule_a_failure_is_recorded_and_the_next_run_happens(
    handbook_data_dir: Path,
) -> None:
    made = settings(handbook_data_dir, sync="*/2 * * * * *")

    async def body(ops: Any, scheduler: Scheduler) -> None:
        real = ops.knowledge.syncer.run
        calls = 0

        async def flaky(**kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("the document share is gone")
            return await real(**kwargs)

        ops.knowledge.syncer.run = flaky

        def runs() -> list[dict[str, Any]]:
            return [r for r in ops.history.recent(10, job="sync") if r["outcome"] != "running"]

        await until(lambda: len(runs()) >= 2)
        first, second = reversed(runs()[:2])
        assert first["outcome"] == "error" and "document share is gone" in first["summary"]
        assert second["outcome"] == "ok" and second["trigger"].startswith("schedule@")
        assert first["trigger"] != second["trigger"]  # two slots, two runs
        lines = status_lines(await ops.status())
        assert any(line.startswith("Schedule: sync `*/2 * * * * *` (next ") for line in lines)
        assert any(
            "Job: sync by schedule@" in line and ": error — RuntimeError" in line for line in lines
        )

    await with_scheduler(made, body)


async def test_a_manual_trigger_during_a_run_is_refused_and_recorded(
    handbook_data_dir: Path,
) -> None:
    made = settings(handbook_data_dir, train="0 2 * * *")

    async def body(ops: Any, scheduler: Scheduler) -> None:
        other = JobLock(ops.store.engine, RETRAIN_LOCK, holder="trainer-node:4242")
        await asyncio.to_thread(other.try_acquire)  # a run going on elsewhere
        with pytest.raises(AlreadyRunningError, match="already running since"):
            await ops.train(trigger="cli")
        assert await scheduler.fire("train") is None
        refused = ops.history.recent(5, job="retrain")
        assert [r["outcome"] for r in refused] == ["refused", "refused"]
        assert {r["trigger"].split("@")[0] for r in refused} == {"cli", "schedule"}
        assert "already running since" in refused[0]["summary"]

    await with_scheduler(made, body)


async def test_jobs_survive_a_restart_and_a_missed_nightly_run_runs_once_after_start_up(
    handbook_data_dir: Path,
) -> None:
    made = settings(handbook_data_dir, train="0 2 * * *")

    async def first(ops: Any, scheduler: Scheduler) -> None:
        job = scheduler.scheduler.get_job("expertbot.train")
        assert job.next_run_time > datetime.now(UTC)
        # The process goes down; the night passes.
        scheduler.scheduler.pause()
        scheduler.scheduler.modify_job(
            "expertbot.train", next_run_time=datetime.now(UTC) - timedelta(hours=3)
        )

    await with_scheduler(made, first)
    engine = make_engine(made.resolved_database_url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT id FROM scheduled_jobs")).scalars().all()
    assert stored == ["expertbot.train"]

    async def second(ops: Any, scheduler: Scheduler) -> None:
        await until(lambda: bool(ops.history.recent(5, job="retrain")))
        await asyncio.sleep(1.5)  # coalesced: no second catch-up run
        [run] = ops.history.recent(5, job="retrain")
        assert run["trigger"].startswith("schedule@") and run["outcome"] == "ok"
        assert run["summary"].startswith("skipped: too little data")
        job = scheduler.scheduler.get_job("expertbot.train")
        assert job.next_run_time > datetime.now(UTC)  # back on its nightly slot

    await with_scheduler(made, second)


@needs_postgres
def test_two_processes_on_one_postgresql_run_each_scheduled_run_once(
    handbook_data_dir: Path,
) -> None:
    url, schema = postgres_schema()
    env = os.environ | {
        "EXPERTBOT_DATA_DIR": str(handbook_data_dir),
        "EXPERTBOT_DATABASE_URL": url,
        "EXPERTBOT_SCHEDULE__SYNC": "",
        "EXPERTBOT_SCHEDULE__TRAIN": "*/2 * * * * *",
        "HF_HUB_OFFLINE": "1",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "jobs"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    engine = make_engine(url)
    try:
        deadline = time.monotonic() + 120
        count = 0
        while count < 4:
            assert time.monotonic() < deadline, [p.poll() for p in procs]
            time.sleep(0.5)
            try:
                with engine.connect() as conn:
                    count = conn.execute(
                        sa.text("SELECT count(*) FROM job_runs WHERE outcome <> 'running'")
                    ).scalar_one()
            except sa.exc.ProgrammingError:
                count = 0  # not migrated yet
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=60) for proc in procs]
    try:
        assert [p.returncode for p in procs] == [0, 0], outputs
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT job, trigger, outcome FROM job_runs")).all()
        per_slot = Counter(r.trigger for r in rows)
        assert len(per_slot) >= 4 and set(per_slot.values()) == {1}, rows
        assert {r.job for r in rows} == {"retrain"}
        assert all(err.count("schedule: ") == 1 for _, err in outputs)
    finally:
        engine.dispose()
        admin = sa.create_engine(POSTGRES_URL)
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


async def test_without_configured_sources_the_sync_job_is_off_and_says_why(
    handbook_data_dir: Path,
) -> None:
    made = settings(handbook_data_dir, sync="*/1 * * * * *", train="0 2 * * *")
    made.knowledge.sources = []
    assert schedule_mode(made).startswith("sync off: no knowledge.sources configured")

    async def body(ops: Any, scheduler: Scheduler) -> None:
        assert set(scheduler.next_runs()) == {"train"}
        await asyncio.sleep(2.5)
        assert ops.history.recent(5, job="sync") == []

    await with_scheduler(made, body)


async def test_a_source_with_its_own_schedule_syncs_alone_on_it(
    handbook_data_dir: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "parking.md").write_text("# Parking\n\nThe garage code is 4711.\n")
    made = settings(handbook_data_dir, sync="0 3 * * *")
    made.knowledge.sources = [
        FolderSource(path=HANDBOOK, name="handbook"),
        FolderSource(path=notes, name="notes", schedule="*/2 * * * * *"),
    ]

    async def body(ops: Any, scheduler: Scheduler) -> None:
        assert set(scheduler.next_runs()) == {"sync", "sync:notes"}

        def finished() -> list[dict[str, Any]]:
            return [r for r in ops.history.recent(5, job="sync") if r["outcome"] != "running"]

        await until(lambda: bool(finished()))
        run = finished()[-1]
        assert run["outcome"] == "ok" and run["trigger"].startswith("schedule@")
        reports = [ops.knowledge.syncer.runs.get(n) for n in range(1, 10)]
        [scheduled] = [r for r in reports if r and r.trigger == run["trigger"]]
        assert [s["name"] for s in scheduled.sources] == ["notes"]  # alone: not the handbook
        # the global job covers the others and the experts' answers
        result = await scheduler._run("sync", "test")
        assert [s["name"] for s in result.details["sources"]] == ["handbook", "expert-answers"]

    await with_scheduler(made, body)

    made.knowledge.sources[1] = FolderSource(path=notes, name="notes")  # its schedule removed

    async def after(ops: Any, scheduler: Scheduler) -> None:
        assert set(scheduler.next_runs()) == {"sync"}

    await with_scheduler(made, after)
