"""Assembling the answering core from Settings: knowledge, generator, stores, adapters.

`Core.build(settings)` wires the parts (each replaceable for tests); `await core.start()` loads
everything up front — index, SQL store, model, active adapter — so a model that cannot be
loaded is an error at start-up, not on the first question.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog

from base.database import make_engine
from base.errors import AdapterError, ModelLoadError
from bot.core.abstention import abstention_rule, reranker_name
from bot.core.answering import Answerer
from bot.core.knowledge import knowledge_for
from bot.settings import Settings
from knowledge.embedding import Embedder
from knowledge.index.base import KnowledgeIndex
from knowledge.reranking import make_reranker
from knowledge.runtime import Knowledge
from training.feedback.store import FeedbackStore
from training.registry import AdapterRegistry
from training.serving.generation import AdapterFollower, Generator, make_generator
from training.serving.judge import GeneratorJudge

log = structlog.get_logger("expertbot.core")


@dataclass
class Core:
    settings: Settings
    knowledge: Knowledge
    generator: Generator
    store: FeedbackStore
    registry: AdapterRegistry
    answerer: Answerer
    follower: AdapterFollower | None = field(default=None)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        generator: Generator | None = None,
        embedder: Embedder | None = None,
        index: KnowledgeIndex | None = None,
    ) -> Core:
        engine = make_engine(settings.resolved_database_url)
        knowledge = knowledge_for(settings, engine=engine, index=index, embedder=embedder)
        registry = AdapterRegistry(settings.adapter_registry)
        generator = generator or make_generator(
            settings.model, data_dir=settings.data_dir, adapter_dir=registry.path
        )
        store = FeedbackStore(engine)
        if settings.knowledge.rerank.kind == "generator":
            knowledge.search.reranker = make_reranker(
                settings.knowledge.rerank,
                judge=GeneratorJudge(generator, scoring=settings.knowledge.rerank.scoring),
            )
        answerer = Answerer(
            search=knowledge.search,
            generator=generator,
            config=settings.answer,
            prompt=settings.prompt,
            rule=abstention_rule(
                settings.answer,
                data_dir=settings.data_dir,
                embedder=knowledge.embedder.model_name,
                reranker=reranker_name(settings),
            ),
            store=store,
            max_new_tokens=settings.model.max_new_tokens,
        )
        return cls(settings, knowledge, generator, store, registry, answerer)

    async def start(self, *, follow_adapters: bool = False) -> None:
        """Open the index and the SQL store (migrating it), load the model and the active
        adapter.

        `follow_adapters` (long-running servers) polls the registry and hot-swaps."""
        await self.knowledge.open()
        await self.generator.start()
        if not self.settings.model.adapters:
            return
        active = await asyncio.to_thread(self.registry.active)
        if active is not None:
            try:
                await self.generator.use_adapter(active)
            except AdapterError as exc:
                raise ModelLoadError(
                    f"the active adapter {active} cannot be served: {exc}. Roll back to the "
                    "previous version, or set EXPERTBOT_MODEL__ADAPTERS=false to serve the base "
                    "model"
                ) from exc
        if follow_adapters:
            self.follower = AdapterFollower(
                self.generator, self.registry.active, self.settings.model.adapter_poll_s
            )
            self.follower.start()

    async def close(self) -> None:
        if self.follower is not None:
            await self.follower.stop()
        await self.generator.close()
        await self.knowledge.close()
