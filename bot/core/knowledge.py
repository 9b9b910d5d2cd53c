"""The knowledge the bot serves: the configured folders and the experts' answers.

Every process that syncs or searches builds it here, so the CLI, the server, the scheduler and
the benchmarks index the same sources: `expert-answers` among them, whatever folders are set.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from base.database import make_engine
from bot.settings import Settings
from knowledge.embedding import Embedder
from knowledge.index.base import KnowledgeIndex
from knowledge.runtime import Knowledge
from training.feedback.expert_answers import ExpertAnswersFeed
from training.feedback.store import FeedbackStore


def knowledge_for(
    settings: Settings,
    *,
    engine: Engine | None = None,
    index: KnowledgeIndex | None = None,
    embedder: Embedder | None = None,
) -> Knowledge:
    """The knowledge services of `settings`, syncing the experts' answers with the folders."""
    engine = engine or make_engine(settings.resolved_database_url)
    return Knowledge.build(
        settings.knowledge,
        data_dir=settings.data_dir,
        engine=engine,
        index=index,
        embedder=embedder,
        feeds=[ExpertAnswersFeed(FeedbackStore(engine))],
    )
