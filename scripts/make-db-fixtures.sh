#!/usr/bin/env bash
# The databases the upgrade tests start from (tests/test_migrations.py): what expertbot's release
# at commit b7b89f5 leaves in a user's SQL store, with a few rows in every table.
#
#   scripts/with-services.sh scripts/make-db-fixtures.sh
#
# It exports that commit into a temporary folder (git archive: nothing is left registered in the
# repository if it is interrupted), and with that code alone (PYTHONPATH) creates a SQLite
# database and a PostgreSQL schema: every store's own migrations, then rows written through the
# stores' own methods (a lease, sync reports, answers, ratings, corrections, curated answers,
# event claims, job runs, a Teams conversation, a scheduled job). It writes
#
#   tests/assets/db-b7b89f5.sqlite   the SQLite file (WAL checkpointed)
#   tests/assets/db-b7b89f5.sql      pg_dump's plain SQL (--inserts), its schema name removed:
#                                    load it into an empty schema, e.g.
#                                    PGOPTIONS=-csearch_path=x psql -f tests/assets/db-b7b89f5.sql
#
# Needs git with the repository's history, the project's Python environment (PYTHON, default
# .venv/bin/python), pg_dump, and the test PostgreSQL (TEST_POSTGRES_URL, which
# scripts/with-services.sh exports); the schema it uses there is dropped afterwards.
# Regenerate only to change the rows: the files stand for databases made by that release, so
# their schema must stay what that release created.
set -euo pipefail

RELEASE=b7b89f5
SCHEMA=expertbot_release_fixture

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
PYTHON="${PYTHON:-$root/.venv/bin/python}"
assets="$root/tests/assets"

say() { echo "make-db-fixtures.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

[[ -x "$PYTHON" ]] || die "no Python at $PYTHON (make install-dev, or set PYTHON)"
[[ -n "${TEST_POSTGRES_URL:-}" ]] || die "TEST_POSTGRES_URL is not set (run it under scripts/with-services.sh)"
command -v pg_dump >/dev/null 2>&1 || die "pg_dump is not installed"

work="$(mktemp -d)"
pg_url="$TEST_POSTGRES_URL?options=-csearch_path%3D$SCHEMA"
libpq_url="${TEST_POSTGRES_URL/postgresql+psycopg:\/\//postgresql://}"
export PGOPTIONS=--client-min-messages=warning
cleanup() {
  psql -q "$libpq_url" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

say "exporting $RELEASE"
mkdir "$work/release"
git -C "$root" archive "$RELEASE" | tar -x -C "$work/release"

psql -q "$libpq_url" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" -c "CREATE SCHEMA $SCHEMA" >/dev/null

say "filling a SQLite database and a PostgreSQL schema with the release's code"
# From the temporary folder, so that only the release's packages can be imported.
(cd "$work" && PYTHONPATH="$work/release" HF_HUB_OFFLINE=1 "$PYTHON" - "$work/db.sqlite" "$pg_url") <<'PY'
import asyncio
import sys
from datetime import timedelta

import numpy as np
import sqlalchemy as sa
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from microsoft_agents.activity import ChannelAccount, ConversationAccount, ConversationReference

from base.database import Migration, make_engine, migrate, sqlite_url, utcnow
from base.locks import JobLock
from bot.claims import EventClaims
from bot.job_history import JobHistory
from bot.schedule import cron_trigger
from bot.teams.references import References
from knowledge.reports import SyncReport, SyncRunStore
from knowledge.schema import migrate_knowledge
from training.feedback.store import FeedbackStore, StoredSource


def fill(url: str) -> None:
    engine = make_engine(url)
    store, claims, history, references = (
        FeedbackStore(engine), EventClaims(engine), JobHistory(engine), References(engine)
    )
    # Every store's migrations, as the release's entry points run them.
    migrate_knowledge(engine)
    store.migrate()
    claims.migrate()
    history.migrate()
    references.migrate()
    jobstore = SQLAlchemyJobStore(url=url, tablename="scheduled_jobs")
    table = jobstore.jobs_t  # bot/schedule.py's Scheduler.start, as it is in the release
    migrate(engine, "schedule", [Migration("m001_scheduled_jobs", lambda conn: table.create(conn, checkfirst=True))])

    JobLock(engine, "knowledge.sync", lease_s=3600, holder="release-host:4242:fixture").try_acquire()
    runs = SyncRunStore(engine)
    report = SyncReport(trigger="cli", store="lancedb", sources=[{"name": "handbook", "path": "/srv/handbook"}])
    runs.start(report, "release-host:4242:fixture")
    report.record("handbook", "it/passwords.md", "added")
    report.record("handbook", "hr/leave.md", "updated")
    report.record("handbook", "old/vpn.md", "deleted")
    report.record("handbook", "scan.pdf", "skipped", "no text in the file")
    report.record("handbook", "broken.docx", "failed", "not a zip file")
    report.record("handbook", "it/laptops.md", "unchanged")
    report.status, report.finished_at, report.duration_s = "ok", utcnow(), 1.5
    report.chunks_written, report.chunks_embedded = 12, 9
    runs.finish(report)
    runs.start(SyncReport(trigger="schedule@2025-01-01T03:00:00+00:00", store="lancedb", sources=[]), "gone-host:1:x")
    runs.mark_interrupted("gone-host:1:x")

    public = {"title": "Passwords", "uri": "file:///srv/handbook/it/passwords.md", "heading": "Reset"}
    private = {"chunk_id": "c2", "doc": "hr/salaries.md", "title": "Salaries", "score": 0.4, "access": "private"}
    for answer_id, question in (("a-0001", "How do I reset my password?"), ("a-0002", "What is the salary band of a senior engineer?")):
        store.record(
            id=answer_id, question=question, asker="U100", platform="slack", where_kind="dm",
            channel="D100", thread="1700000000.000100",
            retrieved=[{"chunk_id": "c1", "doc": "it/passwords.md", "title": "Passwords", "score": 0.9}, private],
            answer="Open the self-service portal [1].", sources=[{"number": 1, **public}], abstained=False,
            model="microsoft/Phi-3-mini-4k-instruct", adapter="v0001",
            retrieval_s=0.05, generation_s=1.2, total_s=1.3,
        )
    store.record(
        id="a-0003", question="Who won the match?", asker="29:teams-user", platform="teams",
        where_kind="public", channel="19:general@thread.tacv2", thread=None, retrieved=[], answer="I don't know.",
        sources=[], abstained=True, model="microsoft/Phi-3-mini-4k-instruct", adapter=None,
        retrieval_s=None, generation_s=None, total_s=None,
    )
    store.link_message(platform="slack", conversation="D100", message_id="1700000000.000200", answer_id="a-0001", thread="1700000000.000100")
    store.link_message(platform="teams", conversation="19:general@thread.tacv2", message_id="1700000001", answer_id="a-0003")
    store.rate(answer_id="a-0001", user_id="U100", platform="slack", kind="up", source="reaction")
    store.rate(answer_id="a-0001", user_id="UEXPERT", platform="slack", kind="approved", source="button", expert=True)
    store.rate(answer_id="a-0002", user_id="U200", platform="slack", kind="down", source="feedback", comment="out of date")
    store.retract(answer_id="a-0002", user_id="U200", kind="down")
    store.add_correction(answer_id="a-0002", user_id="UEXPERT", platform="slack", text="See the 2025 salary grid.", approved=True)
    store.add_correction(answer_id="a-0003", user_id="29:teams-user", platform="teams", text="It was a draw.", approved=False)
    vector = np.linspace(-1, 1, 8, dtype=np.float32)
    store.curate_answer("a-0001", embedding=vector, approved_by="UEXPERT", kind="approved")
    store.curate_answer("a-0002", embedding=-vector, approved_by="UEXPERT", kind="corrected", text="See the 2025 salary grid.")
    store.add_curated(
        question="Where is the VPN guide?", embedding=np.ones(8, dtype=np.float32), answer="In the IT handbook.",
        sources=[StoredSource("VPN", "file:///srv/handbook/it/vpn.md", "", "restricted", ("finance",))],
        approved_by="import", kind="imported",
    )
    store.deactivate_curated(answer_id="a-0002", approved_by="UEXPERT", kind="corrected")

    assert claims._claim("slack", "Ev0001") and claims._claim("schedule", "train@2025-01-01T02:00:00+00:00")
    sync_run = history._start("sync", "cli")
    history._finish(sync_run, "ok", "sync ok: 1 added, 1 updated")
    history._start("retrain", "slack:UADMIN")
    asyncio.run(
        references.save(
            "19:admin@thread.tacv2",
            ConversationReference(
                activity_id="f:1", user=ChannelAccount(id="29:admin", name="Admin"),
                agent=ChannelAccount(id="28:bot", name="expertbot"),
                conversation=ConversationAccount(id="19:admin@thread.tacv2", conversation_type="channel"),
                channel_id="msteams", service_url="https://smba.trafficmanager.net/emea/",
            ),
        )
    )

    scheduler = BackgroundScheduler(jobstores={"default": jobstore}, timezone="UTC")
    scheduler.start(paused=True)
    scheduler.add_job(
        "bot.schedule:run_scheduled", cron_trigger("0 2 * * *", "UTC"), id="expertbot.train",
        kwargs={"job": "train"}, name="train", replace_existing=True,
    )
    scheduler.shutdown(wait=False)
    jobstore.engine.dispose()
    with engine.connect() as conn:
        counts = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in sa.inspect(conn).get_table_names()}
    assert all(counts.values()), counts
    engine.dispose()
    print(f"{engine.url.get_backend_name()}: {counts}", file=sys.stderr)


fill(sqlite_url(sys.argv[1]))
fill(sys.argv[2])
PY

say "writing $assets/db-$RELEASE.sqlite"
"$PYTHON" - "$work/db.sqlite" <<'PY'
import sqlite3
import sys

# Smaller pages make a file of a few KB; the release's WAL mode stays.
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
for pragma in ("journal_mode=DELETE", "page_size=1024", "journal_mode=WAL"):
    conn.execute(f"PRAGMA {pragma}")
    if pragma.startswith("page_size"):
        conn.execute("VACUUM")
conn.close()
PY
cp "$work/db.sqlite" "$assets/db-$RELEASE.sqlite"

say "writing $assets/db-$RELEASE.sql"
pg_dump --schema="$SCHEMA" --no-owner --no-privileges --inserts "$libpq_url" >"$work/dump.sql"
"$PYTHON" - "$work/dump.sql" "$assets/db-$RELEASE.sql" "$SCHEMA" "$RELEASE" <<'PY'
import sys

source, target, schema, release = sys.argv[1:]
kept = [
    f"-- The SQL store of expertbot's release {release}, with a few rows in every table",
    "-- (scripts/make-db-fixtures.sh). Load it into an empty schema on the search_path.",
    "",
]
lines = iter(open(source, encoding="utf-8").read().splitlines())
for line in lines:
    if line.startswith("\\"):  # psql's \restrict / \unrestrict: not SQL
        continue
    if line.startswith("SELECT pg_catalog.set_config('search_path'") or line == f"CREATE SCHEMA {schema};":
        continue
    if line.startswith(f"-- Name: {schema}; Type: SCHEMA;"):  # its comment block
        kept.pop()
        next(lines)
        continue
    kept.append(line.replace(f"{schema}.", "").replace(f"Schema: {schema};", "Schema: -;"))
open(target, "w", encoding="utf-8").write("\n".join(kept) + "\n")
PY
ls -l "$assets/db-$RELEASE.sqlite" "$assets/db-$RELEASE.sql" >&2
