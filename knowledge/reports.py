"""Sync reports (what each sync did) and each source's cursor, kept in the SQL store."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from base.database import connection, transaction, utcnow
from knowledge.schema import source_states, sync_items, sync_runs

ACTIONS = ("added", "updated", "deleted", "unchanged", "skipped", "failed")


@dataclass(slots=True)
class SyncItem:
    source: str
    doc_id: str
    action: str
    reason: str | None = None


@dataclass(slots=True)
class SyncReport:
    trigger: str
    store: str
    sources: list[dict[str, Any]]
    started_at: datetime = field(default_factory=utcnow)
    run_id: int | None = None
    status: str = "running"
    finished_at: datetime | None = None
    duration_s: float | None = None
    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    chunks_written: int = 0
    chunks_embedded: int = 0
    error: str | None = None
    items: list[SyncItem] = field(default_factory=list)

    def record(self, source: str, doc_id: str, action: str, reason: str | None = None) -> None:
        setattr(self, action, getattr(self, action) + 1)
        if action != "unchanged":
            self.items.append(SyncItem(source, doc_id, action, reason))

    def source(self, name: str) -> dict[str, Any]:
        """This report's entry for the source `name` (what it listed, whether its cursor was
        saved)."""
        return next(s for s in self.sources if s["name"] == name)

    @property
    def failed_sources(self) -> list[str]:
        """Sources that could not be listed at all (their documents were kept)."""
        return [i.source for i in self.items if i.action == "failed" and i.doc_id == "*"]

    @property
    def documents(self) -> int:
        return self.added + self.updated + self.unchanged + self.skipped + self.failed

    def summary(self) -> str:
        took = f" in {self.duration_s:.1f}s" if self.duration_s is not None else ""
        head = "sync failed" if self.status == "failed" else f"sync {self.status}"
        return (
            f"{head}: {self.added} added, {self.updated} updated, {self.deleted} deleted, "
            f"{self.unchanged} unchanged, {self.skipped} skipped, {self.failed} failed; "
            f"{self.chunks_written} chunks written ({self.chunks_embedded} embedded){took}"
            + (
                f"; could not read {', '.join(self.failed_sources)} (its documents were kept)"
                if self.failed_sources
                else ""
            )
        )

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("started_at", "finished_at"):
            data[key] = data[key].isoformat() + "Z" if data[key] else None
        return data


class SyncRunStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def start(self, report: SyncReport, holder: str) -> int:
        with transaction(self.engine, "starting the sync report") as conn:
            result = conn.execute(
                sync_runs.insert().values(
                    started_at=report.started_at,
                    status="running",
                    trigger=report.trigger,
                    holder=holder,
                    store=report.store,
                    sources=json.dumps(report.sources),
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            run_id = int(key[0])
        report.run_id = run_id
        return run_id

    def mark_interrupted(self, holder: str) -> int:
        """Runs left 'running' by a holder that died are closed as interrupted."""
        with transaction(self.engine, "closing interrupted sync reports") as conn:
            return conn.execute(
                sync_runs.update()
                .where(sync_runs.c.holder == holder, sync_runs.c.status == "running")
                .values(
                    status="interrupted", finished_at=utcnow(), error="the process stopped mid-sync"
                )
            ).rowcount

    def finish(self, report: SyncReport) -> None:
        assert report.run_id is not None
        counts = {a: getattr(report, a) for a in ACTIONS}
        with transaction(self.engine, "finishing the sync report") as conn:
            conn.execute(
                sync_runs.update()
                .where(sync_runs.c.id == report.run_id)
                .values(
                    status=report.status,
                    sources=json.dumps(report.sources),
                    finished_at=report.finished_at,
                    duration_s=report.duration_s,
                    chunks_written=report.chunks_written,
                    chunks_embedded=report.chunks_embedded,
                    error=report.error,
                    **counts,
                )
            )
            if report.items:
                conn.execute(
                    sync_items.insert(),
                    [{"run_id": report.run_id, **asdict(item)} for item in report.items],
                )

    def last(self, *, finished: bool = True) -> SyncReport | None:
        query = sa.select(sync_runs).order_by(sync_runs.c.id.desc()).limit(1)
        if finished:
            query = query.where(sync_runs.c.status != "running")
        with connection(self.engine, "loading the last sync report") as conn:
            row = conn.execute(query).first()
        return self._load(row) if row else None

    def get(self, run_id: int) -> SyncReport | None:
        with connection(self.engine, "loading a sync report") as conn:
            row = conn.execute(sa.select(sync_runs).where(sync_runs.c.id == run_id)).first()
        return self._load(row) if row else None

    def _load(self, row: Any) -> SyncReport:
        report = SyncReport(
            trigger=row.trigger,
            store=row.store,
            sources=json.loads(row.sources),
            started_at=row.started_at,
            run_id=row.id,
            status=row.status,
            finished_at=row.finished_at,
            duration_s=row.duration_s,
            chunks_written=row.chunks_written or 0,
            chunks_embedded=row.chunks_embedded or 0,
            error=row.error,
        )
        for action in ACTIONS:
            setattr(report, action, getattr(row, action) or 0)
        with connection(self.engine, "loading a sync report's documents") as conn:
            items = conn.execute(
                sa.select(sync_items).where(sync_items.c.run_id == row.id).order_by(sync_items.c.id)
            ).all()
        report.items = [SyncItem(i.source, i.doc_id, i.action, i.reason) for i in items]
        return report


@dataclass(frozen=True, slots=True)
class SourceState:
    name: str
    type: str
    location: str
    cursor: dict[str, Any]
    synced_at: datetime | None
    run_id: int | None
    documents: int
    attempted_at: datetime
    status: str
    error: str | None


class SourceStateStore:
    """Each source's cursor, saved when its listing finished (a failed listing keeps the last
    good one), and how its last sync went."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def cursor(self, name: str) -> dict[str, Any]:
        with connection(self.engine, "loading a source's cursor") as conn:
            text = conn.execute(
                sa.select(source_states.c.cursor).where(source_states.c.name == name)
            ).scalar()
        return json.loads(text) if text else {}

    def saved(
        self, source: Any, cursor: dict[str, Any], documents: int, run_id: int | None
    ) -> None:
        now = utcnow()
        self._put(
            source,
            cursor=json.dumps(cursor, sort_keys=True),
            synced_at=now,
            documents=documents,
            attempted_at=now,
            run_id=run_id,
            status="ok",
            error=None,
        )

    def failed(self, source: Any, error: str, run_id: int | None) -> None:
        self._put(source, attempted_at=utcnow(), run_id=run_id, status="failed", error=error[:2000])

    def _put(self, source: Any, **values: Any) -> None:
        name = source.source_name
        with transaction(self.engine, "saving a source's cursor") as conn:
            exists = conn.execute(
                sa.select(source_states.c.name).where(source_states.c.name == name)
            ).first()
            values |= {"type": source.type, "location": source.location}
            if exists:
                conn.execute(
                    source_states.update().where(source_states.c.name == name).values(**values)
                )
            else:
                conn.execute(
                    source_states.insert().values(
                        name=name, **({"cursor": "{}", "documents": 0} | values)
                    )
                )

    def all(self) -> dict[str, SourceState]:
        with connection(self.engine, "loading the sources' states") as conn:
            rows = conn.execute(sa.select(source_states)).all()
        return {
            row.name: SourceState(
                row.name,
                row.type,
                row.location,
                json.loads(row.cursor or "{}"),
                row.synced_at,
                row.run_id,
                row.documents,
                row.attempted_at,
                row.status,
                row.error,
            )
            for row in rows
        }

    def clear(self) -> None:
        """Forget every cursor (a rebuild reads every document again)."""
        with transaction(self.engine, "clearing the sources' cursors") as conn:
            conn.execute(source_states.delete())
