"""Where the bot can post without being asked: Teams conversation references, kept in the
shared database.

A bot may only post into a Teams conversation it knows the address of (the service URL, the
conversation and the bot's own account in it), and it learns that address from an activity
sent there. The admin conversation's reference is saved whenever someone writes to the bot
there, so any replica can post a training report into it later, after a restart too.
"""

from __future__ import annotations

import asyncio
import json

import sqlalchemy as sa
from microsoft_agents.activity import ConversationReference
from sqlalchemy.engine import Engine

from base.database import connection, transaction, utcnow

# Created by the `teams` namespace's migrations (base/migrations/teams.py).
metadata = sa.MetaData()

conversations = sa.Table(
    "teams_conversations",
    metadata,
    sa.Column("conversation", sa.String(512), primary_key=True),
    sa.Column("reference", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)


class References:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def save(self, conversation: str, reference: ConversationReference) -> None:
        text = reference.model_dump_json(by_alias=True, exclude_none=True)
        await asyncio.to_thread(self._save, conversation, text)

    def _save(self, conversation: str, text: str) -> None:
        try:
            with transaction(
                self.engine,
                f"saving the Teams conversation {conversation}",
                handled=(sa.exc.IntegrityError,),
            ) as conn:
                updated = conn.execute(
                    conversations.update()
                    .where(conversations.c.conversation == conversation)
                    .values(reference=text, updated_at=utcnow())
                ).rowcount
                if not updated:
                    conn.execute(
                        conversations.insert().values(
                            conversation=conversation, reference=text, updated_at=utcnow()
                        )
                    )
        except sa.exc.IntegrityError:  # another replica inserted it first: theirs is as good
            pass

    async def get(self, conversation: str) -> ConversationReference | None:
        text = await asyncio.to_thread(self._get, conversation)
        return ConversationReference.model_validate(json.loads(text)) if text else None

    def _get(self, conversation: str) -> str | None:
        with connection(self.engine, f"loading the Teams conversation {conversation}") as conn:
            return conn.execute(
                sa.select(conversations.c.reference).where(
                    conversations.c.conversation == conversation
                )
            ).scalar()
