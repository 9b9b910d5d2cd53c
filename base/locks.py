"""A named lease in the SQL store: one holder at a time, across processes and machines.

The holder renews the lease while it works; a holder that dies (kill -9, a lost node) stops
renewing, and the lease is free once it expires. A dead holder on this same host is noticed at
once (its pid is gone), so re-running after a crash on a laptop does not wait for the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from base.database import connection, transaction, utcnow
from base.errors import AlreadyRunningError

log = structlog.get_logger(__name__)

# A lease per job name (sync, train, the schedule's slots). Created by the `knowledge`
# namespace's first migration (base/migrations/knowledge.py), where it was born.
job_locks = sa.Table(
    "job_locks",
    sa.MetaData(),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("holder", sa.String(256), nullable=False),
    sa.Column("acquired_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
)


def make_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _holder_is_dead_here(holder: str) -> bool:
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class JobLock:
    def __init__(
        self, engine: Engine, name: str, *, lease_s: float = 60.0, holder: str | None = None
    ):
        self.engine = engine
        self.name = name
        self.lease = timedelta(seconds=lease_s)
        self.holder = holder or make_holder()
        self.previous_holder: str | None = None  # set when we took over a dead holder's lease

    def try_acquire(self) -> None:
        """Take the lease or raise AlreadyRunningError naming the holder and since when."""
        now = utcnow()
        try:
            with transaction(
                self.engine, f"taking the {self.name} lock", handled=(sa.exc.IntegrityError,)
            ) as conn:
                row = conn.execute(
                    sa.select(job_locks).where(job_locks.c.name == self.name)
                ).first()
                if row is None:
                    conn.execute(
                        job_locks.insert().values(
                            name=self.name,
                            holder=self.holder,
                            acquired_at=now,
                            expires_at=now + self.lease,
                        )
                    )
                    return
                if row.holder == self.holder:
                    return
                if row.expires_at > now and not _holder_is_dead_here(row.holder):
                    raise AlreadyRunningError(self.name, holder=row.holder, since=row.acquired_at)
                taken = conn.execute(
                    job_locks.update()
                    .where(job_locks.c.name == self.name, job_locks.c.holder == row.holder)
                    .values(holder=self.holder, acquired_at=now, expires_at=now + self.lease)
                ).rowcount
                if taken != 1:
                    raise AlreadyRunningError(self.name, holder="another process", since=now)
                self.previous_holder = row.holder
                log.warning("lock.taken_over", job=self.name, previous=row.holder)
        except sa.exc.IntegrityError:
            # Someone inserted between our read and our insert.
            holder, since = self.current() or ("another process", now)
            raise AlreadyRunningError(self.name, holder=holder, since=since) from None

    async def acquire(self, *, wait: bool = False, poll_s: float = 1.0) -> None:
        while True:
            try:
                await asyncio.to_thread(self.try_acquire)
                return
            except AlreadyRunningError:
                if not wait:
                    raise
                await asyncio.sleep(poll_s)

    def current(self) -> tuple[str, datetime] | None:
        """The live holder and since when, or None when the lease is free."""
        with connection(self.engine, f"reading the {self.name} lock") as conn:
            row = conn.execute(sa.select(job_locks).where(job_locks.c.name == self.name)).first()
        if row is None or row.expires_at <= utcnow():
            return None
        return row.holder, row.acquired_at

    def renew(self) -> bool:
        """Extend our lease; False when it is no longer ours (it expired and was taken)."""
        with transaction(self.engine, f"renewing the {self.name} lock") as conn:
            done = conn.execute(
                job_locks.update()
                .where(job_locks.c.name == self.name, job_locks.c.holder == self.holder)
                .values(expires_at=utcnow() + self.lease)
            ).rowcount
        return done == 1

    def release(self) -> None:
        with transaction(self.engine, f"releasing the {self.name} lock") as conn:
            conn.execute(
                job_locks.delete().where(
                    job_locks.c.name == self.name, job_locks.c.holder == self.holder
                )
            )

    @contextlib.asynccontextmanager
    async def held(self, *, wait: bool = False) -> AsyncIterator[JobLock]:
        """Hold the lease for the block, renewing it every third of the lease."""
        await self.acquire(wait=wait)
        renewer = asyncio.create_task(self._keep_renewing())
        try:
            yield self
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            await asyncio.to_thread(self.release)

    async def _keep_renewing(self) -> None:
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                if not await asyncio.to_thread(self.renew):
                    log.error("lock.lost", job=self.name, holder=self.holder)
            except Exception as exc:
                log.warning("lock.renew_failed", job=self.name, error=exc.__class__.__name__)
