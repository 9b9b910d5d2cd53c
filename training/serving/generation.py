"""The generator seam: chat messages in, a stream of text deltas out.

Two implementations: `TransformersGenerator` (in-process, training/serving/local.py) and
`OpenAIGenerator` (an OpenAI-compatible server, training/serving/remote.py). `make_generator` picks one
from the configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from training.config import ModelConfig

FinishReason = Literal["stop", "length", "timeout", "cancelled"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Literal["system", "user", "assistant"]
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    messages: tuple[Message, ...]
    max_new_tokens: int | None = None  # default: model.max_new_tokens
    timeout_s: float | None = None  # default: model.timeout_s
    # Generation ends before any of these (small models tend to echo the prompt's layout).
    stop: tuple[str, ...] = ()


@dataclass(slots=True)
class GenerationStats:
    model: str
    adapter: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    queued_s: float = 0.0  # waiting for a batch slot
    first_token_s: float | None = None  # from the request to its first delta
    total_s: float = 0.0
    batch_size: int = 1  # how many requests shared its batch
    finish_reason: FinishReason = "stop"


class GenerationStream:
    """An async iterator of text deltas; `stats` is set once it is exhausted.

    `aclose()` (or leaving an `async with`) cancels the generation if it is still running.
    """

    def __init__(
        self,
        deltas: AsyncIterator[str],
        *,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._deltas = deltas
        self._on_close = on_close
        self.stats: GenerationStats | None = None

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> str:
        return await self._deltas.__anext__()

    async def aclose(self) -> None:
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            await on_close()
        aclose = getattr(self._deltas, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> GenerationStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def text(self) -> str:
        """The whole text (consumes the stream)."""
        parts = [delta async for delta in self]
        return "".join(parts)


@runtime_checkable
class Generator(Protocol):
    """Writes answers. Loaded by `start()` (errors there, not on the first question)."""

    @property
    def model_name(self) -> str: ...

    @property
    def adapter(self) -> str | None:
        """The adapter version that new requests get (None: the base model)."""
        ...

    @property
    def context_window(self) -> int:
        """Tokens the model can attend to: prompt plus answer."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def count_tokens(self, text: str) -> int: ...

    def render(self, messages: tuple[Message, ...]) -> str:
        """The prompt text the model sees for `messages` (its own chat template)."""
        ...

    def stream(self, request: GenerationRequest) -> GenerationStream: ...

    @property
    def can_score(self) -> bool:
        """Whether `continuation_logprobs` and `next_token_logprobs` work: the in-process model
        reads its own probabilities; an OpenAI-compatible server does not return them."""
        ...

    async def continuation_logprobs(self, pairs: Sequence[tuple[str, str]]) -> list[list[float]]:
        """For each (prompt, continuation), the log-probability of each of the continuation's
        tokens after the prompt: one forward pass for the batch (split only beyond 16k tokens),
        no generation, with the active adapter. The prompt is read as is: render chat messages
        first where they should be."""
        ...

    async def next_token_logprobs(
        self, prompts: Sequence[str], choices: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """For each prompt, the log-probability that the next token is each choice; a choice is
        a set of one-token spellings (e.g. "yes", "Yes"), counted together. One forward pass."""
        ...

    def expecting(self) -> AbstractContextManager[None]:
        """Held while a question is on its way to `stream` (being retrieved): a batch about to
        start may wait for it rather than leave it for the next batch."""
        ...

    async def use_adapter(self, version: str | None) -> None:
        """Serve `version` (None: the base model) to requests from now on; requests in flight
        finish with the adapter they started with."""
        ...


@dataclass
class AdapterFollower:
    """Polls the adapter registry and hot-swaps the generator to its active version.

    With several replicas sharing the registry (shared storage), each follows on its own."""

    generator: Generator
    active: Callable[[], str | None]
    interval_s: float
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="adapter-follower")

    async def check(self) -> bool:
        """Swap now if the registry's active version changed; True if it swapped."""
        wanted = await asyncio.to_thread(self.active)
        if wanted == self.generator.adapter:
            return False
        await self.generator.use_adapter(wanted)
        return True

    async def _run(self) -> None:
        import structlog

        log = structlog.get_logger("expertbot.adapters")
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                if await self.check():
                    log.info("adapter.swapped", adapter=self.generator.adapter)
            except Exception as exc:  # keep serving the current adapter
                log.error("adapter.swap_failed", error=str(exc))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def make_generator(
    config: ModelConfig, *, data_dir: Path, adapter_dir: Callable[[str], Path] | None = None
) -> Generator:
    """The configured generator, not started yet.

    `adapter_dir(version)` is where an adapter version lives (the registry's folder for it)."""
    if config.backend == "openai":
        from training.serving.remote import OpenAIGenerator

        return OpenAIGenerator(config, adapter_dir=adapter_dir)
    from training.serving.local import TransformersGenerator

    return TransformersGenerator(config, data_dir=data_dir, adapter_dir=adapter_dir)
