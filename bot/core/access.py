"""Where a question was asked → which documents it may use.

- public channel: public documents only;
- private channel / group chat: plus documents restricted to that channel;
- DM: plus documents restricted to the asker or their groups, and private documents if the
  asker (or one of their groups) is in `answer.private_readers`.
"""

from __future__ import annotations

from bot.core.config import AnswerConfig
from bot.core.question import Question, WhereKind
from knowledge.models import AccessScope


def scope_for(question: Question, config: AnswerConfig) -> AccessScope:
    where = question.where
    if where.kind == WhereKind.PUBLIC:
        return AccessScope.public_only()
    if where.kind == WhereKind.PRIVATE:
        return AccessScope(principals=frozenset([where.channel] if where.channel else []))
    who = frozenset({question.asker, *question.asker_groups})
    principals = who | ({where.channel} if where.channel else set())
    return AccessScope(
        principals=frozenset(principals),
        include_private=bool(who & set(config.private_readers)),
    )
