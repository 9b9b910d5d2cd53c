"""The configured sources as an admin sees them: when each last synced, how many documents it
listed, how old its cursor is; and a check that a source can be read at all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from base.database import utcnow
from knowledge.config import KnowledgeConfig, SourceConfig
from knowledge.connectors import connector_for
from knowledge.connectors.base import Entry
from knowledge.reports import SourceStateStore


@dataclass(frozen=True, slots=True)
class SourceStatus:
    name: str
    type: str
    location: str
    access: str
    schedule: str | None
    status: str  # never | ok | failed
    last_sync: datetime | None  # the last attempt
    documents: int | None  # listed by the last sync that finished
    cursor_age_s: float | None  # since the last sync that finished
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "location": self.location,
            "access": self.access,
            "schedule": self.schedule,
            "status": self.status,
            "last_sync": self.last_sync.isoformat() + "Z" if self.last_sync else None,
            "documents": self.documents,
            "cursor_age_s": round(self.cursor_age_s, 1) if self.cursor_age_s is not None else None,
            "error": self.error,
        }


def source_statuses(config: KnowledgeConfig, engine: Engine) -> list[SourceStatus]:
    states = SourceStateStore(engine).all()
    now = utcnow()
    rows = []
    for source in config.sources:
        state = states.get(source.source_name)
        rows.append(
            SourceStatus(
                name=source.source_name,
                type=source.type,
                location=source.location,
                access=source.access.value,
                schedule=source.schedule,
                status=state.status if state else "never",
                last_sync=state.attempted_at if state else None,
                documents=state.documents if state and state.synced_at else None,
                cursor_age_s=(now - state.synced_at).total_seconds()
                if state and state.synced_at
                else None,
                error=state.error if state and state.status == "failed" else None,
            )
        )
    return rows


async def probe(source: SourceConfig, *, max_bytes: int, limit: int = 5) -> list[Entry]:
    """Check that `source` can be read: list up to `limit` of its documents, as a first sync
    would (nothing is indexed or saved). SourceError says why it cannot."""
    connector = connector_for(source, max_bytes=max_bytes)
    found: list[Entry] = []
    try:
        async for entry in connector.entries({}, ()):
            if entry.deleted:
                continue
            found.append(entry)
            if len(found) >= limit:
                break
    finally:
        await connector.close()
    return found
