"""The shared SQL store: migrations, transactions and the job lease, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from base.database import connection, make_engine, redact_url, transaction, utcnow
from base.errors import AlreadyRunningError, DatabaseError
from base.locks import JobLock, job_locks
from base.migrations import HISTORY, Migration, migrate, migrate_all

EVERY_MIGRATION = sorted(f"{ns}/{m.name}" for ns, migrations in HISTORY.items() for m in migrations)


@pytest.fixture
def db(database_url):
    engine = make_engine(database_url)
    migrate_all(engine)
    yield engine
    engine.dispose()


def test_migrations_apply_once_even_when_several_processes_start_together(database_url):
    engine = make_engine(database_url)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            results.append(migrate_all(make_engine(database_url)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(len(r) for r in results) == [0, 0, 0, len(EVERY_MIGRATION)]
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT namespace, name FROM schema_migrations")).all()
        assert sorted(f"{ns}/{name}" for ns, name in rows) == EVERY_MIGRATION
    assert migrate_all(engine) == []


def test_a_failing_migration_leaves_nothing_half_done(database_url):
    engine = make_engine(database_url)

    def fine(conn):
        conn.execute(sa.text("CREATE TABLE done_first (id INTEGER)"))

    def broken(conn):
        conn.execute(sa.text("CREATE TABLE half_done (id INTEGER)"))
        conn.execute(sa.text("THIS IS NOT SQL"))

    history = {"first": [Migration("m001_fine", fine)], "demo": [Migration("m001_broken", broken)]}
    with pytest.raises(DatabaseError, match=r"^migrating demo to m001_broken failed on ") as info:
        migrate(engine, history)
    assert "\n" not in str(info.value) and "NOT SQL" not in str(info.value)
    # One transaction for the whole history: the namespace before it is undone too, and so is
    # the bookkeeping table it created.
    assert sa.inspect(engine).get_table_names() == []


def test_sql_errors_become_one_line_naming_the_work_never_the_password_or_values(database_url):
    url = sa.engine.make_url(database_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(password="s3cret-pw")  # the test server trusts loopback: any password does
    engine = make_engine(url.render_as_string(hide_password=False))
    migrate_all(engine)
    claim = sa.text(
        "INSERT INTO processed_events (platform, event_id, received_at) VALUES (:p, :e, :t)"
    )
    values = {"p": "slack", "e": "what someone wrote", "t": utcnow()}
    with transaction(engine, "claiming an event") as conn:
        conn.execute(claim, values)
    with pytest.raises(DatabaseError) as info, transaction(engine, "claiming an event") as conn:
        conn.execute(claim, values)
    message = str(info.value)
    assert message.startswith(f"claiming an event failed on {redact_url(str(engine.url))}: ")
    assert "IntegrityError" in message and "\n" not in message
    for secret in ("s3cret-pw", "what someone wrote", "INSERT", "processed_events"):
        assert secret not in message
    # What a caller answers itself reaches it as it is, and the transaction is rolled back.
    handled = (sa.exc.IntegrityError,)
    with (
        pytest.raises(sa.exc.IntegrityError),
        transaction(engine, "claiming", handled=handled) as conn,
    ):
        conn.execute(claim, values | {"e": "another"})
        conn.execute(claim, values)
    with (
        pytest.raises(DatabaseError, match=r"^reading what is not there failed on "),
        connection(engine, "reading what is not there") as conn,
    ):
        conn.execute(sa.text("SELECT * FROM no_such_table"))
    with connection(engine, "counting claims") as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM processed_events")).scalar() == 1
    engine.dispose()


def test_one_holder_at_a_time(db):
    first, second = JobLock(db, "job"), JobLock(db, "job")
    first.try_acquire()
    with pytest.raises(AlreadyRunningError) as info:
        second.try_acquire()
    assert info.value.holder == first.holder and "already running since" in str(info.value)
    first.release()
    second.try_acquire()
    current = second.current()
    assert current is not None and current[0] == second.holder


def test_an_expired_lease_is_taken_over(db):
    stale = JobLock(db, "job", holder="gone-host:123:dead")
    stale.try_acquire()
    with db.begin() as conn:
        conn.execute(job_locks.update().values(expires_at=utcnow() - timedelta(seconds=1)))
    fresh = JobLock(db, "job")
    fresh.try_acquire()
    assert fresh.previous_holder == "gone-host:123:dead"
    assert not stale.renew()  # the old holder learns it lost the lease


def test_a_dead_holder_on_this_host_is_taken_over_at_once(db):
    import socket

    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(child.stdout)
    JobLock(db, "job", lease_s=3600, holder=f"{socket.gethostname()}:{dead_pid}:x").try_acquire()
    fresh = JobLock(db, "job")
    fresh.try_acquire()
    assert fresh.previous_holder is not None
    assert fresh.previous_holder.endswith(f":{dead_pid}:x")


def test_a_live_holder_elsewhere_keeps_the_lease(db):
    JobLock(db, "job", lease_s=3600, holder="other-host:1:x").try_acquire()
    with pytest.raises(AlreadyRunningError):
        JobLock(db, "job").try_acquire()


async def test_held_renews_and_releases(db):
    lock = JobLock(db, "job", lease_s=0.3)
    async with lock.held():
        await asyncio.sleep(0.5)  # longer than the lease: the renewal keeps it
        with pytest.raises(AlreadyRunningError):
            JobLock(db, "job").try_acquire()
    assert lock.current() is None


def test_racing_acquirers_get_exactly_one_winner(db, database_url):
    winners: list[str] = []
    barrier = threading.Barrier(6)

    def contend() -> None:
        lock = JobLock(make_engine(database_url), "race")
        barrier.wait()
        try:
            lock.try_acquire()
            winners.append(lock.holder)
        except AlreadyRunningError:
            pass

    threads = [threading.Thread(target=contend) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1


def test_database_urls_never_show_passwords():
    assert (
        redact_url("postgresql+psycopg://bot:hunter2@db:5432/x")
        == "postgresql+psycopg://bot:***@db:5432/x"
    )
    with pytest.raises(DatabaseError, match="not a database URL"):
        make_engine("not a url")


def test_unreachable_database_is_a_clear_error():
    from base.database import ping

    engine = make_engine("postgresql+psycopg://nobody:pw@127.0.0.1:1/none")
    with pytest.raises(DatabaseError, match="cannot reach the database") as info:
        ping(engine)
    assert "pw" not in str(info.value).replace("postgresql", "")
    assert os.environ.get("EXPERTBOT_DATA_DIR")  # the autouse fixture is in effect
