"""The in-process generator: a transformers causal LM (Phi-3 by default), optionally with a LoRA
adapter from the registry.

- Loading: 4-bit NF4 with bitsandbytes on CUDA (double quantisation, bf16 compute); float32 (or
  the configured dtype) on the CPU. Failures raise ModelLoadError at start-up.
- Serving: requests wait in a bounded queue; one worker batches those that arrive together
  (up to `max_batch_size`, left-padded) into one `generate` call in a thread, so the event loop
  never blocks. Each request streams its own tokens and stops on its own: end of turn, its token
  limit, its deadline (`timeout_s`, queueing included) or its consumer going away.
- Adapters: `use_adapter` waits for the running batch, then loads the new version and makes it
  the one new batches get. A batch never changes adapter midway.
- Scoring (`continuation_logprobs`, `next_token_logprobs`: the generator judge's reranking): one
  forward pass over a left-padded batch, between generation batches under the same lock, in a
  thread, with the adapter new batches get.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from base.errors import (
    AdapterError,
    GenerationError,
    GenerationTimeout,
    ModelLoadError,
    OverloadedError,
)
from training.config import DEMO_MODEL, ModelConfig
from training.devices import compute_dtype, nf4_kwargs, resolve_device
from training.serving.generation import (
    FinishReason,
    GenerationRequest,
    GenerationStats,
    GenerationStream,
    Message,
)

log = structlog.get_logger("expertbot.model")

# End-of-turn tokens of common chat templates; those in the vocabulary stop generation.
_END_OF_TURN = ("<|end|>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>")
# Tokens one scoring forward pass may hold; a larger batch is scored in several passes so that
# its activations stay bounded (20 passages of 400 tokens are one pass).
_SCORING_TOKENS_PER_PASS = 16_384


@dataclass(eq=False)
class _Pending:
    prompt: str
    max_new_tokens: int
    deadline: float  # time.monotonic()
    submitted: float
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    done: bool = False
    tokens: list[int] = field(default_factory=list)
    sent: str = ""
    started: float | None = None
    first_token: float | None = None
    prompt_tokens: int = 0
    stop: tuple[str, ...] = ()

    def deliver(self, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


@dataclass(frozen=True, slots=True)
class _End:
    stats: GenerationStats


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


class TransformersGenerator:
    def __init__(
        self,
        config: ModelConfig,
        *,
        data_dir: Path,
        adapter_dir: Callable[[str], Path] | None = None,
    ) -> None:
        self.config = config
        self._data_dir = data_dir
        self._adapter_dir = adapter_dir
        self._model: Any = None
        self._tokenizer: Any = None
        # A fast tokenizer keeps its padding setting in shared state, which a call with padding
        # sets and one without resets: the generation thread and the event loop take turns.
        self._tokenizer_lock = threading.Lock()
        self._device: Any = None
        self._name = config.base
        self._adapter: str | None = None
        self._context_window = 4096
        self._stop_ids: list[int] = []
        self._repetition_penalty = config.repetition_penalty or (
            1.05 if config.base == DEMO_MODEL else 1.0
        )
        self._queue: deque[_Pending] = deque()
        self._wakeup: asyncio.Event | None = None
        self._model_lock: asyncio.Lock | None = None
        self._worker: asyncio.Task[None] | None = None
        self._expected = 0  # questions being retrieved, soon to ask for a generation

    # -- the Generator protocol -------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def adapter(self) -> str | None:
        return self._adapter

    @property
    def context_window(self) -> int:
        return self._context_window

    async def start(self) -> None:
        if self._model is not None:
            return
        path = await asyncio.to_thread(self._resolve_base)
        await asyncio.to_thread(self._load, path)
        self._wakeup = asyncio.Event()
        self._model_lock = asyncio.Lock()
        self._worker = asyncio.create_task(self._work(), name="generator")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while self._queue:
            self._queue.popleft().deliver(_Failed(GenerationError("the generator was closed")))
        self._model = None

    def _tokenize(self, *args: Any, **kwargs: Any) -> Any:
        with self._tokenizer_lock:
            return self._tokenizer(*args, **kwargs)

    def count_tokens(self, text: str) -> int:
        self._require_started()
        return len(self._tokenize(text, add_special_tokens=False)["input_ids"])

    def render(self, messages: tuple[Message, ...]) -> str:
        self._require_started()
        return str(
            self._tokenizer.apply_chat_template(
                [m.as_dict() for m in messages], tokenize=False, add_generation_prompt=True
            )
        )

    def stream(self, request: GenerationRequest) -> GenerationStream:
        self._require_started()
        assert self._wakeup is not None
        if len(self._queue) >= self.config.max_queue:
            raise OverloadedError(
                f"{len(self._queue)} questions are waiting for the model; try again shortly"
            )
        now = time.monotonic()
        pending = _Pending(
            prompt=self.render(request.messages),
            max_new_tokens=request.max_new_tokens or self.config.max_new_tokens,
            deadline=now + (request.timeout_s or self.config.timeout_s),
            submitted=now,
            loop=asyncio.get_running_loop(),
            stop=request.stop,
        )
        self._queue.append(pending)
        self._wakeup.set()
        stream = GenerationStream(self._deltas(pending, lambda s: setattr(stream, "stats", s)))
        return stream

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        self._expected += 1
        try:
            yield
        finally:
            self._expected -= 1

    async def use_adapter(self, version: str | None) -> None:
        self._require_started()
        assert self._model_lock is not None
        async with self._model_lock:  # after the running batch; before the next
            await asyncio.to_thread(self._apply_adapter, version)
            self._adapter = version
        log.info("model.adapter", adapter=version or "base")

    @property
    def can_score(self) -> bool:
        return True

    async def continuation_logprobs(self, pairs: Sequence[tuple[str, str]]) -> list[list[float]]:
        self._require_started()
        assert self._model_lock is not None
        if not pairs:
            return []
        rows = [self._encode_pair(prompt, continuation) for prompt, continuation in pairs]
        async with self._model_lock:  # between generation batches, with their adapter
            return await asyncio.to_thread(self._continuation_logprobs, rows, self._adapter)

    async def next_token_logprobs(
        self, prompts: Sequence[str], choices: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        self._require_started()
        assert self._model_lock is not None
        if not prompts:
            return []
        choice_ids = self._choice_ids(choices)
        rows = [self._with_bos(self._encode(prompt)) for prompt in prompts]
        async with self._model_lock:
            return await asyncio.to_thread(
                self._next_token_logprobs, rows, choice_ids, self._adapter
            )

    # -- loading ----------------------------------------------------------------------------

    def _require_started(self) -> None:
        if self._model is None:
            raise GenerationError("the model is not loaded (start() was not called)")

    def _resolve_base(self) -> str:
        from training.serving.demo import resolve_base

        path, self._name = resolve_base(self.config.base, self._data_dir)
        return path

    def _load(self, path: str) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        transformers.utils.logging.disable_progress_bar()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        device = resolve_device(self.config.device, key="model.device")
        quantize = self.config.quantization == "4bit" or (
            self.config.quantization == "auto" and device.type == "cuda"
        )
        dtype = compute_dtype(self.config.dtype, device)
        if self.config.base == DEMO_MODEL and self.config.dtype == "auto" and not quantize:
            # The 135M demo model's greedy answers fall apart in bfloat16 ("The passage on").
            import torch

            dtype = torch.float32
        kwargs: dict[str, Any] = {"dtype": dtype}
        if quantize:
            kwargs |= nf4_kwargs(torch.bfloat16, device)
        started = time.perf_counter()
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except Exception as exc:
            raise ModelLoadError(_load_failure(path, exc)) from exc
        if not quantize:
            model.to(device)
        model.eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
        if not getattr(tokenizer, "chat_template", None):
            raise ModelLoadError(
                f"{path} has no chat template: use an instruct (chat) model as model.base"
            )
        self._stop_ids = stop_token_ids(tokenizer, model)
        self._context_window = int(getattr(model.config, "max_position_embeddings", 4096))
        self._tokenizer, self._model, self._device = tokenizer, model, device
        log.info(
            "model.loaded",
            model=self._name,
            device=str(device),
            quantization="nf4" if quantize else "none",
            dtype=str(dtype).removeprefix("torch."),
            seconds=round(time.perf_counter() - started, 2),
        )

    def _apply_adapter(self, version: str | None) -> None:
        from peft import PeftModel

        if version is None:
            return  # batches run with the adapters disabled
        if self._adapter_dir is None:
            raise AdapterError("no adapter registry is configured")
        path = self._adapter_dir(version)
        if not (path / "adapter_config.json").is_file():
            raise AdapterError(f"adapter {version!r} not found at {path}")
        meta = _read_meta(path)
        base = meta.get("base")
        if base and base not in (self.config.base, self._name):
            raise AdapterError(
                f"adapter {version!r} was trained on {base}, but the model is {self.config.base}"
            )
        try:
            if isinstance(self._model, PeftModel):
                if version not in self._model.peft_config:
                    self._model.load_adapter(str(path), adapter_name=version, is_trainable=False)
                self._model.set_adapter(version)
                for name in list(self._model.peft_config):
                    if name != version:
                        self._model.delete_adapter(name)
            else:
                self._model = PeftModel.from_pretrained(
                    self._model, str(path), adapter_name=version, is_trainable=False
                )
            self._model.eval()
        except Exception as exc:
            raise AdapterError(f"cannot load adapter {version!r}: {exc}") from exc

    # -- serving ----------------------------------------------------------------------------

    async def _deltas(
        self, pending: _Pending, set_stats: Callable[[GenerationStats], None]
    ) -> AsyncIterator[str]:
        try:
            while True:
                remaining = pending.deadline - time.monotonic()
                try:
                    # The worker enforces the deadline between tokens; this catches a request
                    # still waiting behind a long batch (plus a grace for the last token).
                    item = await asyncio.wait_for(pending.queue.get(), max(remaining, 0) + 5.0)
                except TimeoutError:
                    raise GenerationTimeout(_timeout_message(pending)) from None
                if isinstance(item, str):
                    yield item
                elif isinstance(item, _End):
                    set_stats(item.stats)
                    if item.stats.finish_reason == "timeout":
                        raise GenerationTimeout(_timeout_message(pending))
                    return
                else:
                    raise GenerationError(
                        f"generation failed: {item.error.__class__.__name__}: {item.error}"
                    ) from item.error
        finally:
            # Consumer gone (finished, cancelled, timed out): stop its row, or drop it from
            # the queue if it never started.
            pending.cancelled = True
            with contextlib.suppress(ValueError):
                self._queue.remove(pending)

    async def _work(self) -> None:
        assert self._wakeup is not None and self._model_lock is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._queue:
                continue
            await self._gather_batch()
            async with self._model_lock:
                batch = self._take_batch()
                if batch:
                    await asyncio.to_thread(self._generate, batch, self._adapter)
            if self._queue:
                self._wakeup.set()

    async def _gather_batch(self) -> None:
        """Let a batch fill before it starts: wait `batch_wait_ms`, and longer (up to
        `batch_max_wait_ms`) while other questions are still being retrieved. A running batch
        cannot take new members, so one that starts too early leaves the rest waiting for it."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        short = start + self.config.batch_wait_ms / 1000
        cap = start + max(self.config.batch_max_wait_ms, self.config.batch_wait_ms) / 1000
        while len(self._queue) < self.config.max_batch_size:
            now = loop.time()
            if now >= cap or (now >= short and self._expected == 0):
                return
            await asyncio.sleep(0.005)

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        now = time.monotonic()
        while self._queue and len(batch) < self.config.max_batch_size:
            pending = self._queue.popleft()
            if pending.cancelled:
                continue
            if now >= pending.deadline:
                pending.deliver(_End(self._stats(pending, "timeout", 0, self._adapter)))
                continue
            batch.append(pending)
        return batch

    def _generate(self, batch: list[_Pending], adapter: str | None) -> None:
        import torch
        from peft import PeftModel
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        started = time.monotonic()
        for pending in batch:
            pending.started = started
        try:
            encoded = self._tokenize(
                [p.prompt for p in batch],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,  # the chat template already wrote BOS where needed
            ).to(self._device)
            mask = encoded["attention_mask"]
            for pending, count in zip(batch, mask.sum(dim=1).tolist(), strict=True):
                pending.prompt_tokens = int(count)
            if encoded["input_ids"].shape[1] >= self._context_window:
                raise GenerationError(
                    f"the prompt has {encoded['input_ids'].shape[1]} tokens; the model's "
                    f"window is {self._context_window}"
                )
            streamer = _BatchStreamer(self, batch, adapter)

            class _RowsDone(StoppingCriteria):
                def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                    return torch.tensor([p.done for p in batch], device=input_ids.device)

            sample = self.config.temperature > 0
            generation = GenerationConfig(
                max_new_tokens=min(
                    max(p.max_new_tokens for p in batch),
                    self._context_window - encoded["input_ids"].shape[1],
                ),
                do_sample=sample,
                temperature=self.config.temperature if sample else None,
                top_p=None,
                top_k=None,
                repetition_penalty=self._repetition_penalty,
                pad_token_id=self._tokenizer.pad_token_id,
                eos_token_id=self._stop_ids,
            )
            disable = (
                self._model.disable_adapter()
                if adapter is None and isinstance(self._model, PeftModel)
                else contextlib.nullcontext()
            )
            with torch.inference_mode(), disable:
                self._model.generate(
                    **encoded,
                    generation_config=generation,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_RowsDone()]),
                )
            for pending in batch:
                streamer.finish(pending, "length")
        except Exception as exc:
            log.error("model.generate_failed", error=f"{exc.__class__.__name__}: {exc}")
            for pending in batch:
                if not pending.done:
                    pending.done = True
                    pending.deliver(_Failed(exc))

    def _stats(
        self, pending: _Pending, reason: FinishReason, batch_size: int, adapter: str | None
    ) -> GenerationStats:
        now = time.monotonic()
        return GenerationStats(
            model=self._name,
            adapter=adapter,
            prompt_tokens=pending.prompt_tokens,
            completion_tokens=len(pending.tokens),
            queued_s=(pending.started or now) - pending.submitted,
            first_token_s=(pending.first_token - pending.submitted)
            if pending.first_token
            else None,
            total_s=now - pending.submitted,
            batch_size=batch_size,
            finish_reason=reason,
        )

    # -- scoring ----------------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return list(self._tokenize(text, add_special_tokens=False)["input_ids"])

    def _with_bos(self, ids: list[int]) -> list[int]:
        """`ids` with the BOS token in front where the tokenizer puts one and the text (a chat
        template writes it) does not already start with it: models read text after it."""
        bos = self._tokenizer.bos_token_id
        if bos is None or (ids and ids[0] == bos):
            return ids
        if self._tokenize("a", add_special_tokens=True)["input_ids"][:1] != [bos]:
            return ids
        return [bos, *ids]

    def _encode_pair(self, prompt: str, continuation: str) -> tuple[list[int], int]:
        """The token ids of prompt + continuation, tokenized together as the model would read
        them, and how many of the last ones are the continuation's."""
        if not continuation:
            return self._with_bos(self._encode(prompt)), 0
        try:
            encoded = self._tokenize(
                prompt + continuation, add_special_tokens=False, return_offsets_mapping=True
            )
        except NotImplementedError:  # a slow tokenizer has no offsets: tokenize apart
            ids = self._with_bos(self._encode(prompt))
            tail = self._encode(continuation)
            return ids + tail, len(tail)
        ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
        # The continuation begins with the first token that reaches into it (a token across the
        # boundary counts as the continuation's: it is what the model predicts there).
        first = next((i for i, (_, end) in enumerate(offsets) if end > len(prompt)), len(ids))
        full = self._with_bos(ids)
        # The very first token has nothing before it to be predicted from.
        return full, min(len(ids) - first, len(full) - 1)

    def _choice_ids(self, choices: Sequence[Sequence[str]]) -> list[list[int]]:
        """Each choice's token ids: those of its spellings that are one token (SentencePiece
        writes " yes" as "▁", "yes": that spelling is left out), less any token another choice
        has too (it would count for both)."""
        found: list[set[int]] = []
        for spellings in choices:
            encoded = [self._encode(spelling) for spelling in spellings]
            found.append({ids[0] for ids in encoded if len(ids) == 1})
        result = []
        for n, (spellings, own) in enumerate(zip(choices, found, strict=True)):
            others = set().union(*(f for m, f in enumerate(found) if m != n))
            kept = sorted(own - others)
            if not kept:
                raise GenerationError(
                    f"none of {list(spellings)} is a token of its own in this model's vocabulary"
                )
            result.append(kept)
        return result

    def _continuation_logprobs(
        self, rows: list[tuple[list[int], int]], adapter: str | None
    ) -> list[list[float]]:
        import torch

        passes = _passes([ids for ids, _ in rows])
        results: list[list[float]] = []
        for part in passes:
            batch = [rows[i] for i in part]
            # The continuation is each row's last tokens: left padding aligns them at the right
            # edge, so only the last `keep` positions' logits are needed.
            keep = max(count for _, count in batch) + 1
            logits = self._forward([ids for ids, _ in batch], keep, adapter)
            for n, (ids, count) in enumerate(batch):
                if count == 0:
                    results.append([])
                    continue
                # Positions keep-1-count … keep-2 predict the tokens at keep-count … keep-1.
                predicting = logits[n, keep - 1 - count : keep - 1]
                targets = torch.tensor(ids[-count:], device=predicting.device)
                picked = predicting.gather(1, targets[:, None])[:, 0]
                results.append((picked - predicting.logsumexp(-1)).tolist())
        return _reorder(results, passes)

    def _next_token_logprobs(
        self, rows: list[list[int]], choice_ids: list[list[int]], adapter: str | None
    ) -> list[list[float]]:
        passes = _passes(rows)
        results: list[list[float]] = []
        for part in passes:
            logits = self._forward([rows[i] for i in part], 1, adapter)[:, -1]
            total = logits.logsumexp(-1)
            for n in range(len(part)):
                results.append(
                    [float(logits[n, ids].logsumexp(-1) - total[n]) for ids in choice_ids]
                )
        return _reorder(results, passes)

    def _forward(self, rows: list[list[int]], keep: int, adapter: str | None) -> Any:
        """float32 logits of the last `keep` positions of the left-padded `rows` (in a thread,
        under the model lock)."""
        import torch
        from peft import PeftModel

        longest = max(len(row) for row in rows)
        if longest >= self._context_window:
            raise GenerationError(
                f"a text to score has {longest} tokens; the model's window is "
                f"{self._context_window}"
            )
        pad = self._tokenizer.pad_token_id
        input_ids = torch.tensor(
            [[pad] * (longest - len(row)) + row for row in rows], device=self._device
        )
        mask = torch.tensor(
            [[0] * (longest - len(row)) + [1] * len(row) for row in rows], device=self._device
        )
        # Positions count from each row's first real token, as if it had no padding: a row
        # scores the same alone as in a batch.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        disable = (
            self._model.disable_adapter()
            if adapter is None and isinstance(self._model, PeftModel)
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), disable:
            out = self._model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                logits_to_keep=keep,
                use_cache=False,
            )
        return out.logits[:, -keep:].float()


def _passes(rows: list[list[int]]) -> list[list[int]]:
    """Row indices grouped into forward passes of at most _SCORING_TOKENS_PER_PASS padded
    tokens, longest first (so each pass pads little)."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    passes: list[list[int]] = []
    for i in order:
        if passes and len(rows[passes[-1][0]]) * (len(passes[-1]) + 1) <= _SCORING_TOKENS_PER_PASS:
            passes[-1].append(i)
        else:
            passes.append([i])
    return passes


def _reorder(results: list[list[float]], passes: list[list[int]]) -> list[list[float]]:
    """`results`, computed in the order of `passes`, back in the rows' order."""
    order = [i for part in passes for i in part]
    out: list[list[float]] = [[] for _ in order]
    for i, result in zip(order, results, strict=True):
        out[i] = result
    return out


class _BatchStreamer:
    """Receives each step's new tokens for the whole batch (transformers' streamer interface)
    and turns them into per-request text deltas."""

    def __init__(
        self, generator: TransformersGenerator, batch: list[_Pending], adapter: str | None
    ) -> None:
        self.generator = generator
        self.batch = batch
        self.tokenizer = generator._tokenizer
        self.stop_ids = set(generator._stop_ids)
        self.adapter = adapter  # the one this batch runs with, whatever swaps meanwhile
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        tokens = value.reshape(len(self.batch), -1)[:, -1].tolist()
        now = time.monotonic()
        for pending, token in zip(self.batch, tokens, strict=True):
            if pending.done:
                continue
            if pending.cancelled:
                self.finish(pending, "cancelled")
                continue
            if token in self.stop_ids:
                self.finish(pending, "stop")
                continue
            pending.tokens.append(int(token))
            text = self.tokenizer.decode(pending.tokens, skip_special_tokens=True)
            stopped = cut_at_stop(text, pending.stop)
            if stopped is not None:
                self.send(pending, stopped, now)
                self.finish(pending, "stop", release=False)
                continue
            # Hold back an incomplete multi-byte character until its next token arrives, and
            # a tail that may be the start of a stop string.
            if not text.endswith("\ufffd"):
                self.send(pending, text[: len(text) - _held_tail(text, pending.stop)], now)
            if len(pending.tokens) >= pending.max_new_tokens:
                self.finish(pending, "length")
            elif now >= pending.deadline:
                self.finish(pending, "timeout")

    def end(self) -> None:
        pass

    @staticmethod
    def send(pending: _Pending, text: str, now: float) -> None:
        if len(text) > len(pending.sent):
            if pending.first_token is None:
                pending.first_token = now
            pending.deliver(text[len(pending.sent) :])
            pending.sent = text

    def finish(self, pending: _Pending, reason: FinishReason, *, release: bool = True) -> None:
        if pending.done:
            return
        if release:  # the tail held back in case it began a stop string
            text = self.tokenizer.decode(pending.tokens, skip_special_tokens=True)
            self.send(pending, text.rstrip("\ufffd"), time.monotonic())
        pending.done = True
        stats = self.generator._stats(pending, reason, len(self.batch), self.adapter)
        pending.deliver(_End(stats))


def stop_token_ids(tokenizer: Any, model: Any) -> list[int]:
    """End-of-sequence and end-of-turn token ids: generation stops at any of them."""
    vocab = tokenizer.get_vocab()
    stop = {tokenizer.eos_token_id, *(vocab[t] for t in _END_OF_TURN if t in vocab)}
    eos = model.generation_config.eos_token_id if model.generation_config else None
    stop.update(eos if isinstance(eos, list) else [eos])
    return sorted(i for i in stop if i is not None)


def cut_at_stop(text: str, stops: tuple[str, ...]) -> str | None:
    """`text` cut before the first stop string in it, or None if there is none."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return None if cut < 0 else text[:cut]


def _held_tail(text: str, stops: tuple[str, ...]) -> int:
    """How many characters at the end of `text` could be the start of a stop string."""
    held = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), held, -1):
            if stop.startswith(text[-n:]):
                held = n
                break
    return held


def _read_meta(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _load_failure(path: str, exc: Exception) -> str:
    detail = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if Path(path).exists():
        return f"cannot load the model from {path}: {detail}"
    return (
        f"cannot load the model {path!r}: it is not a local folder and could not be had from "
        f"the Hugging Face hub ({detail}). Download it where the hub is reachable "
        f"(`hf download {path}`) and point EXPERTBOT_MODEL__BASE at the folder, or use "
        "EXPERTBOT_MODEL__BASE=demo for the offline demo model"
    )


def _timeout_message(pending: _Pending) -> str:
    limit = pending.deadline - pending.submitted
    return f"the answer took longer than {limit:.0f} s and was cancelled"
