"""The in-process generator on a real (tiny, random-weight) Phi-3: streaming, batching,
timeouts, cancellation, overload, load failures and adapter hot-swap."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Literal

import pytest

from base.errors import AdapterError, GenerationTimeout, ModelLoadError, OverloadedError
from training.config import ModelConfig
from training.registry import AdapterRegistry
from training.serving.generation import (
    AdapterFollower,
    GenerationRequest,
    GenerationStream,
    Message,
)
from training.serving.local import TransformersGenerator


def request(text: str = "How do I reset my password?", **kw) -> GenerationRequest:
    return GenerationRequest((Message("user", text),), **kw)


@pytest.fixture
def registry(tmp_path: Path) -> AdapterRegistry:
    """The adapter registry `generator` serves from."""
    return AdapterRegistry(tmp_path / "adapters")


@pytest.fixture
async def generator(tiny_phi3: Path, tmp_path: Path, registry: AdapterRegistry):
    gen = TransformersGenerator(
        ModelConfig(base=str(tiny_phi3), max_new_tokens=12, batch_wait_ms=30),
        data_dir=tmp_path,
        adapter_dir=registry.path,
    )
    await gen.start()
    yield gen
    await gen.close()


async def test_tokens_stream_as_deltas_and_stats_describe_the_generation(generator) -> None:
    stream = generator.stream(request())
    deltas = [d async for d in stream]
    assert len(deltas) > 1  # streamed, not one blob
    stats = stream.stats
    assert stats.completion_tokens == 12 and stats.finish_reason == "length"
    assert stats.prompt_tokens == generator.count_tokens(generator.render(request().messages))
    assert stats.first_token_s is not None and 0 < stats.first_token_s <= stats.total_s
    assert stats.model == generator.model_name and stats.adapter is None


async def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(generator) -> None:
    streams = [generator.stream(request(f"question number {i}")) for i in range(6)]
    texts = await asyncio.gather(*(s.text() for s in streams))
    assert all(s.stats.batch_size == 6 for s in streams)
    assert all(s.stats.completion_tokens == 12 for s in streams)
    solo = await generator.stream(request("question number 0")).text()
    assert len(texts) == 6 and solo  # each stream completed with text of its own


async def test_a_request_stops_at_its_own_token_limit_inside_a_batch(generator) -> None:
    short = generator.stream(request("a", max_new_tokens=3))
    long = generator.stream(request("b", max_new_tokens=12))
    await asyncio.gather(short.text(), long.text())
    assert short.stats.completion_tokens == 3 and long.stats.completion_tokens == 12
    assert short.stats.total_s < long.stats.total_s


async def test_timeout_cancels_cleanly_and_the_generator_keeps_serving(generator) -> None:
    slow = generator.stream(request(max_new_tokens=4000, timeout_s=0.3))
    with pytest.raises(GenerationTimeout, match="longer than"):
        await slow.text()
    assert slow.stats is not None and slow.stats.finish_reason == "timeout"
    assert slow.stats.completion_tokens < 4000
    follow_up = generator.stream(request())
    assert await follow_up.text() is not None and follow_up.stats.finish_reason == "length"


async def test_leaving_a_stream_early_cancels_its_generation(generator) -> None:
    stream = generator.stream(request(max_new_tokens=2000))
    async with stream:
        async for _ in stream:
            break
    started = asyncio.get_running_loop().time()
    after = generator.stream(request(max_new_tokens=4))
    await after.text()
    # The abandoned 2000-token row stopped instead of running to its limit first.
    assert asyncio.get_running_loop().time() - started < 10
    assert after.stats.completion_tokens == 4


async def test_a_full_queue_refuses_new_requests(tiny_phi3: Path, tmp_path: Path) -> None:
    gen = TransformersGenerator(
        ModelConfig(base=str(tiny_phi3), max_queue=2, max_batch_size=1, max_new_tokens=50),
        data_dir=tmp_path,
    )
    await gen.start()
    try:
        streams = [gen.stream(request()), gen.stream(request())]
        with pytest.raises(OverloadedError, match="try again"):
            gen.stream(request())
        await asyncio.gather(*(s.text() for s in streams))
        await gen.stream(request()).text()  # room again
    finally:
        await gen.close()


async def test_a_model_that_cannot_load_fails_at_start(tmp_path: Path) -> None:
    gen = TransformersGenerator(ModelConfig(base=str(tmp_path / "nope")), data_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="EXPERTBOT_MODEL__BASE"):
        await gen.start()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    gen = TransformersGenerator(ModelConfig(base=str(broken)), data_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="cannot load the model from"):
        await gen.start()


async def test_a_base_model_without_chat_template_is_refused(tiny_phi3: Path, tmp_path: Path):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_phi3, plain)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    for extra in plain.glob("chat_template.*"):
        extra.unlink()
    gen = TransformersGenerator(ModelConfig(base=str(plain)), data_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="chat template"):
        await gen.start()


async def test_adapter_hot_swap_changes_the_output_without_a_restart(
    generator, registry: AdapterRegistry, tiny_adapters: list[Path]
) -> None:
    v1 = registry.add(tiny_adapters[0], meta={"base": generator.config.base}).version
    v2 = registry.add(tiny_adapters[1], meta={"base": generator.config.base}).version
    base_text = await generator.stream(request()).text()

    registry.promote(v1)
    follower = AdapterFollower(generator, registry.active, interval_s=60)
    assert await follower.check() is True
    s1 = generator.stream(request())
    v1_text = await s1.text()
    assert s1.stats.adapter == v1 and v1_text != base_text

    # A swap while an answer is being written: that answer finishes on the adapter it began with.
    in_flight = generator.stream(request(max_new_tokens=40))
    first = await anext(in_flight)
    registry.promote(v2)
    swap = asyncio.create_task(follower.check())
    rest = "".join([d async for d in in_flight])
    await swap
    assert in_flight.stats.adapter == v1 and in_flight.stats.finish_reason == "length"
    assert (first + rest).startswith(v1_text[: len(first)])
    s2 = generator.stream(request())
    v2_text = await s2.text()
    assert s2.stats.adapter == v2 and v2_text not in (v1_text, base_text)

    assert registry.rollback() == v1
    await follower.check()
    assert await generator.stream(request()).text() == v1_text
    assert registry.rollback() is None  # back to the base model
    await follower.check()
    assert await generator.stream(request()).text() == base_text


async def test_an_adapter_for_another_base_model_is_refused(
    generator, registry: AdapterRegistry, tiny_adapters: list[Path]
) -> None:
    version = registry.add(tiny_adapters[0], meta={"base": "some/other-model"}).version
    with pytest.raises(AdapterError, match="trained on some/other-model"):
        await generator.use_adapter(version)
    assert generator.adapter is None
    with pytest.raises(AdapterError, match="not found"):
        await generator.use_adapter("v0099")


async def test_the_follower_polls_the_registry_and_swaps_on_its_own(
    generator, registry: AdapterRegistry, tiny_adapters: list[Path]
) -> None:
    version = registry.add(tiny_adapters[0]).version
    follower = AdapterFollower(generator, registry.active, interval_s=0.05)
    follower.start()
    try:
        registry.promote(version)
        for _ in range(100):
            if generator.adapter == version:
                break
            await asyncio.sleep(0.05)
        assert generator.adapter == version
        registry.rollback()
        for _ in range(100):
            if generator.adapter is None:
                break
            await asyncio.sleep(0.05)
        assert generator.adapter is None
    finally:
        await follower.stop()


async def test_the_4bit_nf4_path_loads_and_serves_with_an_adapter(
    tiny_phi3: Path, tiny_adapters: list[Path], tmp_path: Path
) -> None:
    """The CUDA path's quantisation (bitsandbytes NF4, double quantisation) runs on the CPU too,
    so its loading, generation and adapter code is exercised without a GPU."""
    registry = AdapterRegistry(tmp_path / "adapters")
    version = registry.add(tiny_adapters[0]).version
    gen = TransformersGenerator(
        ModelConfig(base=str(tiny_phi3), quantization="4bit", max_new_tokens=6),
        data_dir=tmp_path,
        adapter_dir=registry.path,
    )
    await gen.start()
    try:
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear4bit) for m in gen._model.modules())
        base = gen.stream(request())
        assert (await base.text()) and base.stats and base.stats.completion_tokens == 6
        await gen.use_adapter(version)
        tuned = gen.stream(request())
        await tuned.text()
        assert tuned.stats and tuned.stats.adapter == version
    finally:
        await gen.close()


async def test_generation_ends_before_a_stop_string_even_split_across_tokens(generator) -> None:
    free = generator.stream(request(max_new_tokens=12))
    text = await free.text()
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert len(stop) == 3 and text.index(stop) > 0
    cut = generator.stream(request(max_new_tokens=12, stop=("never-written", stop)))
    deltas = [d async for d in cut]
    assert "".join(deltas) == text[: text.index(stop)]
    assert cut.stats.finish_reason == "stop"
    assert cut.stats.completion_tokens < 12


async def test_a_batch_waits_for_questions_still_being_retrieved(generator) -> None:
    """Questions that arrive while others are still being looked up join the same batch
    (up to model.batch_max_wait_ms) instead of waiting for the whole first batch to finish."""

    async def ask(delay: float) -> GenerationStream:
        with generator.expecting():
            await asyncio.sleep(delay)  # retrieval taking its time
            stream = generator.stream(request(f"question after {delay}"))
        await stream.text()
        return stream

    streams = await asyncio.gather(*(ask(0.05 * n) for n in range(4)))
    assert [s.stats and s.stats.batch_size for s in streams] == [4, 4, 4, 4]
    alone = generator.stream(request())  # nobody expected: it starts without the long wait
    await alone.text()
    assert alone.stats.batch_size == 1 and alone.stats.queued_s < 0.2


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
async def test_the_configured_cpu_dtype_is_used(
    tiny_phi3: Path, tmp_path: Path, dtype: Literal["float32", "bfloat16"]
):
    import torch

    gen = TransformersGenerator(
        ModelConfig(base=str(tiny_phi3), dtype=dtype, max_new_tokens=4), data_dir=tmp_path
    )
    await gen.start()
    try:
        assert gen._model.dtype == getattr(torch, dtype)
        stream = gen.stream(request())
        await stream.text()
        assert stream.stats and stream.stats.completion_tokens == 4
    finally:
        await gen.close()
