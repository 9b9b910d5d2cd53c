"""The schema history (base/migrations/) on SQLite and PostgreSQL: a fresh database is what the
live tables say, a database of the release before this history was frozen upgrades keeping
every row, and migrating is safe to repeat and to race."""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine

from base.database import make_engine, sqlite_url
from base.locks import job_locks
from base.migrations import HISTORY, migrate_all
from base.migrations.runner import schema_migrations
from bot.claims import EventClaims, processed_events
from bot.job_history import JobHistory, job_runs
from bot.schedule import JOB_TABLE
from bot.teams.references import References, conversations
from knowledge.reports import SyncRunStore
from knowledge.schema import source_states, sync_items, sync_runs
from knowledge.vocabulary import document_terms, term_frequencies
from tests.helpers import POSTGRES_URL, ROOT, postgres_schema
from training.feedback.records import RatingKind
from training.feedback.store import (
    FeedbackStore,
    answer_messages,
    answers,
    corrections,
    curated_answers,
    ratings,
)

EVERY_MIGRATION = [f"{ns}/{m.name}" for ns, migrations in HISTORY.items() for m in migrations]

# Made by scripts/make-db-fixtures.sh with the code of this release.
RELEASE = "b7b89f5"
RELEASE_SQLITE = ROOT / "tests" / "assets" / f"db-{RELEASE}.sqlite"
RELEASE_POSTGRES = ROOT / "tests" / "assets" / f"db-{RELEASE}.sql"


def live_tables() -> list[sa.Table]:
    """Every table the code queries, as it defines it."""
    jobstore = SQLAlchemyJobStore(engine=sa.create_engine("sqlite://"), tablename=JOB_TABLE)
    return [
        schema_migrations,
        job_locks,
        sync_runs,
        sync_items,
        source_states,
        answers,
        curated_answers,
        answer_messages,
        ratings,
        corrections,
        processed_events,
        job_runs,
        conversations,
        document_terms,
        term_frequencies,
        jobstore.jobs_t,  # APScheduler's, under the name bot/schedule.py gives it
    ]


def schema_of(engine: Engine, *, column_order: bool = True) -> dict[str, Any]:
    """Every table as the database itself describes it: columns (type as this dialect writes it,
    nullability, server default), primary key, indexes, unique constraints, foreign keys."""
    inspector = sa.inspect(engine)
    tables: dict[str, Any] = {}
    for name in sorted(inspector.get_table_names()):
        columns = [
            (c["name"], c["type"].compile(dialect=engine.dialect), c["nullable"], c["default"])
            for c in inspector.get_columns(name)
        ]
        primary = inspector.get_pk_constraint(name)
        tables[name] = {
            "columns": columns if column_order else sorted(columns),
            "primary_key": (primary.get("name"), primary["constrained_columns"]),
            "indexes": sorted(
                (i["name"], i["column_names"], bool(i["unique"]))
                for i in inspector.get_indexes(name)
            ),
            "unique": sorted(
                (u["name"], u["column_names"]) for u in inspector.get_unique_constraints(name)
            ),
            "foreign_keys": sorted(
                (
                    (
                        f["name"],
                        f["constrained_columns"],
                        f["referred_table"],
                        f["referred_columns"],
                        sorted((f.get("options") or {}).items()),
                    )
                    for f in inspector.get_foreign_keys(name)
                ),
                key=repr,
            ),
        }
    return tables


def rows_of(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table (in a stable order)."""
    metadata = sa.MetaData()
    with engine.connect() as conn:
        metadata.reflect(conn)
        return {
            name: sorted((dict(r._mapping) for r in conn.execute(sa.select(table))), key=repr)
            for name, table in metadata.tables.items()
        }


@pytest.fixture
def another_database(database_url: str, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Makes more fresh databases of the kind `database_url` is (dropped afterwards)."""
    schemas: list[str] = []
    numbers = itertools.count()

    def make() -> str:
        if database_url.startswith("sqlite"):
            return sqlite_url(tmp_path / f"another-{next(numbers)}.db")
        url, schema = postgres_schema()
        schemas.append(schema)
        return url

    yield make
    if schemas:
        admin = sa.create_engine(POSTGRES_URL)
        with admin.begin() as conn:
            for schema in schemas:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def load_release(url: str) -> None:
    """Make the (empty) database at `url` the release's fixture."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(RELEASE_SQLITE, parsed.database)
        return
    engine = make_engine(url)
    raw = engine.raw_connection()
    try:
        raw.cursor().execute(RELEASE_POSTGRES.read_text())  # plain SQL, no parameters
        raw.commit()
    finally:
        raw.close()
        engine.dispose()


def test_the_history_never_uses_a_live_table() -> None:
    """Frozen: a migration imports SQLAlchemy and the runner, never a module defining live
    tables (base.locks, knowledge, training, bot) nor APScheduler's."""
    for path in sorted((ROOT / "base" / "migrations").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                root = module.split(".")[0]
                assert root not in {"knowledge", "training", "bot", "apscheduler"}, (path, module)
                if root == "base":
                    assert module in ("base.database", "base.migrations") or module.startswith(
                        "base.migrations."
                    ), (path, module)


def test_every_table_the_code_defines_is_in_the_comparison() -> None:
    defined: set[str] = set()
    for package in ("base", "knowledge", "training", "bot"):
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.relative_to(ROOT).parts:
                defined.update(re.findall(r"\bTable\(\s*\"(\w+)\"", path.read_text()))
    # Less APScheduler's table and the runner's own (defined in base/migrations/runner.py).
    assert defined == {t.name for t in live_tables()} - {JOB_TABLE, schema_migrations.name}


def test_a_fresh_database_is_what_the_live_tables_say(
    database_url: str, another_database: Callable[[], str]
) -> None:
    migrated = make_engine(database_url)
    assert migrate_all(migrated) == EVERY_MIGRATION
    live = make_engine(another_database())
    with live.begin() as conn:
        for table in live_tables():
            table.create(conn)
    try:
        # Column order aside: a live table may list a column where it reads best.
        assert schema_of(migrated, column_order=False) == schema_of(live, column_order=False)
    finally:
        migrated.dispose()
        live.dispose()


def test_migrating_twice_changes_nothing(database_url: str) -> None:
    engine = make_engine(database_url)
    assert migrate_all(engine) == EVERY_MIGRATION
    schema, rows = schema_of(engine), rows_of(engine)
    assert migrate_all(engine) == []
    assert schema_of(engine) == schema and rows_of(engine) == rows
    engine.dispose()


def test_processes_starting_together_migrate_once(database_url: str) -> None:
    code = (
        "import json, sys\n"
        "from base.database import make_engine\n"
        "from base.migrations import migrate_all\n"
        "print(json.dumps(migrate_all(make_engine(sys.argv[1]))))\n"
    )
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ | {"PYTHONPATH": path},
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, outputs
    applied = sorted((json.loads(out) for out, _ in outputs), key=len)
    assert applied == [[], [], [], EVERY_MIGRATION]


async def test_a_database_of_the_release_upgrades_keeping_every_row(
    database_url: str, another_database: Callable[[], str]
) -> None:
    load_release(database_url)
    engine = make_engine(database_url)
    before = rows_of(engine)
    release_names = {f"{r['namespace']}/{r['name']}" for r in before["schema_migrations"]}
    assert release_names <= set(EVERY_MIGRATION)  # its history is recognised, name by name

    applied = migrate_all(engine)

    assert set(applied) == set(EVERY_MIGRATION) - release_names
    after = rows_of(engine)
    for table, rows in before.items():
        assert all(rows), f"the fixture has no rows in {table}"
        kept = [{column: row[column] for column in rows[0]} for row in after[table]]
        if table == "schema_migrations":
            assert all(row in kept for row in rows)
        else:
            assert sorted(kept, key=repr) == rows, table
    fresh = make_engine(another_database())
    migrate_all(fresh)
    try:
        assert schema_of(engine) == schema_of(fresh)
    finally:
        fresh.dispose()

    # Today's stores read the release's rows and write after them.
    store = FeedbackStore(engine)
    assert {c.answer.id for c in store.training_candidates()} == {
        "a-0001",
        "a-0002",
        "a-0003",
    }
    assert store.feedback_counts() == {
        "answers": 3,
        "up": 1,
        "down": 0,
        "approved": 1,
        "corrections": 1,
        "comments": 1,
    }
    curated = store.find_curated(np.linspace(-1, 1, 8), threshold=0.99, scope=None)
    assert curated is not None and [g.access for g in curated.guards] == ["private"]
    assert store.answer_for_message("slack", "D100", "1700000000.000200") == "a-0001"
    assert store.rate(
        answer_id="a-0003", user_id="U9", platform="teams", kind=RatingKind.UP, source="button"
    )
    runs = SyncRunStore(engine)
    last, first = runs.last(), runs.get(1)
    assert last is not None and last.status == "interrupted"
    assert first is not None and (first.status, first.added, len(first.items)) == ("ok", 1, 5)
    history = JobHistory(engine)
    assert [r["job"] for r in history.recent()] == ["retrain", "sync"]
    assert await history.start("sync", "cli") == 3
    claims = EventClaims(engine)
    assert not await claims.claim("slack", "Ev0001")
    assert await claims.claim("slack", "Ev0002")
    reference = await References(engine).get("19:admin@thread.tacv2")
    assert reference is not None and reference.service_url.startswith("https://smba.")
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=database_url, tablename=JOB_TABLE)}
    )
    scheduler.start(paused=True)
    try:
        job = scheduler.get_job("expertbot.train")
        assert job is not None and job.func_ref == "bot.schedule:run_scheduled"
        assert job.kwargs == {"job": "train"}
    finally:
        scheduler.shutdown(wait=False)
    engine.dispose()


def test_m002_adds_nothing_where_m001_made_the_guards_column(
    database_url: str, another_database: Callable[[], str]
) -> None:
    """The release's m001 created curated_answers with `guards`; were its m002 not applied, the
    frozen m002 must create its tables and leave that column (and its values) as they are."""
    load_release(database_url)
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("DELETE FROM schema_migrations WHERE namespace = 'training' AND name = :n"),
            {"n": "m002_feedback"},
        )
        for table in ("answer_messages", "ratings", "corrections"):
            conn.execute(sa.text(f"DROP TABLE {table}"))
    guards = rows_of(engine)["curated_answers"]

    applied = migrate_all(engine)

    # m002 comes first of what the training namespace applies (later ones follow it).
    assert next(m for m in applied if m.startswith("training/")) == "training/m002_feedback"

    # Its columns and values as they were (later migrations may add columns).
    kept = [
        {column: row[column] for column in guards[0]} for row in rows_of(engine)["curated_answers"]
    ]
    assert kept == guards
    fresh = make_engine(another_database())
    migrate_all(fresh)
    try:
        assert schema_of(engine) == schema_of(fresh)
    finally:
        fresh.dispose()
        engine.dispose()
