"""The SQL store's schema history: every namespace's numbered migrations, in one registry.

    knowledge   job_locks, sync_runs, sync_items           (leases, sync reports)
    training    answers, curated_answers, answer_messages,  (the feedback store)
                ratings, corrections
    bot         processed_events                           (event claims)
    jobs        job_runs                                   (the job history)
    teams       teams_conversations                        (Teams conversation references)
    schedule    scheduled_jobs                             (APScheduler 3's job store)

Each migration writes its own DDL: tables defined inside it with a MetaData of their own, or
plain SQL. It never uses the live tables that the stores query, so that editing a live table
cannot change what an applied migration did. A schema change is therefore two edits: a new
migration here, and the live table beside its store; tests/test_migrations.py fails when a
freshly migrated database and the live tables disagree.

`migrate_all(engine)` runs once at start-up (`Knowledge.open`, which every command and the
server go through); the stores never migrate themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Engine

from base.migrations import bot, jobs, knowledge, schedule, teams, training
from base.migrations.runner import Migration, migrate

# The order they are applied in. Names are recorded in schema_migrations: never rename one.
HISTORY: dict[str, Sequence[Migration]] = {
    "knowledge": knowledge.MIGRATIONS,
    "training": training.MIGRATIONS,
    "bot": bot.MIGRATIONS,
    "jobs": jobs.MIGRATIONS,
    "teams": teams.MIGRATIONS,
    "schedule": schedule.MIGRATIONS,
}


def migrate_all(engine: Engine) -> list[str]:
    """Apply every pending migration of every namespace, in one transaction; returns them as
    "namespace/name" (none when the database is up to date)."""
    return migrate(engine, HISTORY)


__all__ = ["HISTORY", "Migration", "migrate", "migrate_all"]
