"""OpenAIGenerator against a scripted local OpenAI-compatible server (the vLLM API)."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from base.errors import (
    AdapterError,
    ConfigError,
    GenerationError,
    GenerationTimeout,
    ModelLoadError,
    OverloadedError,
)
from tests.fakes import PROMPT_TOKENS, REPLY, WORDS, FakeOpenAI
from training.config import ModelConfig, OpenAIConfig
from training.serving.generation import GenerationRequest, GenerationStream, Generator, Message
from training.serving.remote import OpenAIGenerator

ASSETS = Path(__file__).parent / "assets"
KEY = "sk-test-8c1f0b5e"
QUESTION = (
    Message("system", "Answer from the passages."),
    Message("user", "[1] Overtime: 125 %.\n\nHow is overtime paid?"),
)


Make = Callable[..., Awaitable[OpenAIGenerator]]


@pytest.fixture
async def fake(aiohttp_server: Any) -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    test_server = await aiohttp_server(server.app())
    server.url = str(test_server.make_url("/v1"))
    yield server
    if server.gate is not None:
        server.gate.set()  # no handler left waiting at shutdown


@pytest.fixture
async def make(fake: FakeOpenAI) -> AsyncIterator[Make]:
    """Makes (and starts) generators pointed at the fake server; closes them afterwards."""
    made: list[OpenAIGenerator] = []

    async def _make(
        *,
        start: bool = True,
        adapter_dir: Callable[[str], Path] | None = None,
        openai: dict[str, Any] | None = None,
        **model: Any,
    ) -> OpenAIGenerator:
        config = ModelConfig(
            backend="openai",
            base="served-model",  # not on the hub: the token estimate is used
            openai=OpenAIConfig(**{"base_url": fake.url, **(openai or {})}),
            **model,
        )
        generator = OpenAIGenerator(config, adapter_dir=adapter_dir)
        made.append(generator)
        if start:
            await generator.start()
        return generator

    yield _make
    for generator in made:
        await generator.close()


def ask(max_new_tokens: int | None = None, timeout_s: float | None = None) -> GenerationRequest:
    return GenerationRequest(QUESTION, max_new_tokens=max_new_tokens, timeout_s=timeout_s)


async def wait_for(event: asyncio.Event, timeout_s: float = 3.0) -> None:
    await asyncio.wait_for(event.wait(), timeout_s)


# -- answering -------------------------------------------------------------------------------


async def test_deltas_arrive_in_order_with_usage_stats(fake: FakeOpenAI, make: Make) -> None:
    generator = await make()
    assert isinstance(generator, Generator)
    stream = generator.stream(ask())
    deltas = [delta async for delta in stream]

    assert deltas == WORDS
    assert "".join(deltas) == REPLY
    stats = stream.stats
    assert stats is not None
    assert (stats.model, stats.adapter) == ("served-model", None)
    assert (stats.prompt_tokens, stats.completion_tokens) == (PROMPT_TOKENS, len(WORDS))
    assert stats.finish_reason == "stop"
    assert stats.first_token_s is not None
    assert 0 <= stats.first_token_s <= stats.total_s


async def test_request_sends_the_messages_and_token_limit(fake: FakeOpenAI, make: Make) -> None:
    generator = await make(max_new_tokens=55, temperature=0.3)
    assert await generator.stream(ask(max_new_tokens=17)).text() == REPLY
    assert await generator.stream(ask()).text() == REPLY

    first, second = fake.chats()
    assert first.path == "/v1/chat/completions"
    assert first.body == {
        "model": "served-model",
        "messages": [m.as_dict() for m in QUESTION],
        "max_tokens": 17,
        "temperature": 0.3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert second.body["max_tokens"] == 55  # model.max_new_tokens when the request says none


async def test_length_finish_and_counts_without_usage(fake: FakeOpenAI, make: Make) -> None:
    fake.finish_reason = "length"
    fake.usage = False
    generator = await make()
    stream = generator.stream(ask())
    assert await stream.text() == REPLY

    assert stream.stats is not None
    assert stream.stats.finish_reason == "length"
    # No usage chunk: counted here instead.
    assert stream.stats.completion_tokens == generator.count_tokens(REPLY)
    assert stream.stats.prompt_tokens == generator.count_tokens(generator.render(QUESTION))


async def test_bearer_key_is_sent_and_never_shown(fake: FakeOpenAI, make: Make) -> None:
    with capture_logs() as logs:
        generator = await make(openai={"api_key": KEY})
        assert await generator.stream(ask()).text() == REPLY
        fake.chat_status = 500  # the error body echoes the Authorization header
        with pytest.raises(GenerationError) as failed:
            await generator.stream(ask()).text()

    assert {r.headers.get("Authorization") for r in fake.requests} == {f"Bearer {KEY}"}
    assert "500" in str(failed.value)
    assert KEY not in str(failed.value)
    assert KEY not in repr(logs)

    fake.models_status = 401
    with pytest.raises(ModelLoadError) as refused:
        await make(openai={"api_key": KEY})
    assert "401" in str(refused.value)
    assert KEY not in str(refused.value)


async def test_no_authorization_header_without_a_key(fake: FakeOpenAI, make: Make) -> None:
    generator = await make()
    await generator.stream(ask()).text()
    assert all("Authorization" not in r.headers for r in fake.requests)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, GenerationError),
        (400, GenerationError),
        (429, OverloadedError),
        (503, OverloadedError),
    ],
)
async def test_server_errors(fake: FakeOpenAI, make: Make, status: int, error: type) -> None:
    generator = await make()
    fake.chat_status = status
    with pytest.raises(error) as failed:
        await generator.stream(ask()).text()
    assert str(status) in str(failed.value)
    if error is GenerationError:
        assert not isinstance(failed.value, OverloadedError)
        assert "scripted failure" in str(failed.value)  # the body, cut short
        assert len(str(failed.value)) < 400


async def test_malformed_chunk_is_an_error(fake: FakeOpenAI, make: Make) -> None:
    fake.malformed = True
    generator = await make()
    deltas: list[str] = []
    with pytest.raises(GenerationError, match="malformed"):
        async for delta in generator.stream(ask()):
            deltas.append(delta)
    assert deltas == WORDS[:1]


async def test_stream_cut_short_is_an_error(fake: FakeOpenAI, make: Make) -> None:
    fake.cut = True
    generator = await make()
    with pytest.raises(GenerationError, match="before the answer was complete"):
        await generator.stream(ask()).text()


async def test_stream_before_start_is_an_error(make: Make) -> None:
    generator = await make(start=False)
    with pytest.raises(GenerationError, match="start"):
        generator.stream(ask())


# -- time limits and cancelling ----------------------------------------------------------------


async def test_slow_answer_times_out_and_disconnects(fake: FakeOpenAI, make: Make) -> None:
    fake.endless = True
    fake.word_delay_s = 0.02
    generator = await make()
    stream = generator.stream(ask(timeout_s=0.3))
    deltas: list[str] = []
    began = time.monotonic()
    with pytest.raises(
        GenerationTimeout,
        match=r"^no complete answer within 0\.3 s \(model\.timeout_s\); it was cancelled$",
    ):
        async for delta in stream:
            deltas.append(delta)

    assert 0.25 <= time.monotonic() - began < 1.5
    assert deltas  # it was answering, just too slowly
    assert stream.stats is not None
    assert stream.stats.finish_reason == "timeout"
    await wait_for(fake.disconnected)  # the server sees the client go away


async def test_model_timeout_applies_when_the_request_sets_none(
    fake: FakeOpenAI, make: Make
) -> None:
    fake.endless = True
    fake.word_delay_s = 0.02
    generator = await make(timeout_s=0.2)
    with pytest.raises(GenerationTimeout, match=r"model\.timeout_s"):
        await generator.stream(ask()).text()
    await wait_for(fake.disconnected)


async def test_server_that_does_not_answer_times_out(fake: FakeOpenAI, make: Make) -> None:
    fake.headers_delay_s = 30
    generator = await make(openai={"timeout_s": 0.2})
    began = time.monotonic()
    with pytest.raises(GenerationTimeout, match=r"model\.openai\.timeout_s"):
        await generator.stream(ask()).text()
    assert time.monotonic() - began < 1.5
    await wait_for(fake.disconnected)


async def test_aclose_mid_stream_stops_the_answer(fake: FakeOpenAI, make: Make) -> None:
    fake.endless = True
    fake.word_delay_s = 0.01
    generator = await make()
    async with generator.stream(ask()) as stream:
        async for delta in stream:
            assert delta == WORDS[0]
            break
    assert stream.stats is not None
    assert stream.stats.finish_reason == "cancelled"
    await wait_for(fake.disconnected)
    # The slot is free again and the next answer is whole.
    fake.endless = False
    assert await generator.stream(ask()).text() == REPLY


async def test_aclose_from_another_task(fake: FakeOpenAI, make: Make) -> None:
    fake.gate = asyncio.Event()  # the server stalls after the first word
    generator = await make()
    stream = generator.stream(ask())
    deltas: list[str] = []

    async def consume() -> None:
        async for delta in stream:
            deltas.append(delta)

    consumer = asyncio.create_task(consume())
    for _ in range(300):
        if deltas:
            break
        await asyncio.sleep(0.01)
    assert deltas == WORDS[:1]

    await asyncio.wait_for(stream.aclose(), 2)
    await asyncio.wait_for(consumer, 2)  # ends quietly
    assert stream.stats is not None
    assert stream.stats.finish_reason == "cancelled"
    await wait_for(fake.disconnected)


async def test_requests_beyond_max_queue_are_refused(fake: FakeOpenAI, make: Make) -> None:
    fake.gate = asyncio.Event()
    generator = await make(max_queue=2)
    running: list[GenerationStream] = [generator.stream(ask()) for _ in range(2)]
    for stream in running:
        assert await anext(stream) == WORDS[0]

    with pytest.raises(OverloadedError, match="max_queue"):
        generator.stream(ask())  # refused at once, not queued
    assert len(fake.chats()) == 2

    await running[0].aclose()
    fake.gate.set()
    assert await generator.stream(ask()).text() == REPLY  # a slot was freed
    assert "".join([WORDS[0]] + [d async for d in running[1]]) == REPLY


async def test_unread_streams_give_their_slot_back(fake: FakeOpenAI, make: Make) -> None:
    generator = await make(max_queue=1)
    await generator.stream(ask()).aclose()  # closed before reading
    generator.stream(ask())  # dropped unread
    gc.collect()
    assert await generator.stream(ask()).text() == REPLY
    assert len(fake.chats()) == 1


# -- start-up --------------------------------------------------------------------------------


async def test_missing_base_url_is_a_config_error(make: Make) -> None:
    with pytest.raises(ConfigError, match=r"model\.openai\.base_url"):
        await make(openai={"base_url": None})


async def test_unserved_model_fails_at_start(fake: FakeOpenAI, make: Make) -> None:
    with pytest.raises(ModelLoadError) as failed:
        await make(openai={"model": "phi-3-mini"})
    message = str(failed.value)
    assert "phi-3-mini" in message
    assert "served-model" in message  # what it does serve
    assert fake.url in message
    assert fake.chats() == []


async def test_unreachable_server_fails_at_start(make: Make) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(ModelLoadError, match="cannot reach") as failed:
        await make(openai={"base_url": url})
    assert f"127.0.0.1:{port}" in str(failed.value)


async def test_wrong_path_fails_at_start(fake: FakeOpenAI, make: Make) -> None:
    with pytest.raises(ModelLoadError, match="404"):
        await make(openai={"base_url": fake.url.removesuffix("/v1")})


async def test_context_window_from_the_server(fake: FakeOpenAI, make: Make) -> None:
    assert (await make()).context_window == 8192
    fake.max_model_len = None  # llama.cpp does not say
    assert (await make()).context_window == 4096


async def test_served_name_can_differ_from_the_base(fake: FakeOpenAI, make: Make) -> None:
    generator = await make(openai={"model": "other-model"})
    assert generator.model_name == "other-model"
    await generator.stream(ask()).text()
    assert fake.chats()[0].body["model"] == "other-model"


# -- tokenizer -------------------------------------------------------------------------------


async def test_token_estimate_without_a_tokenizer(make: Make) -> None:
    with capture_logs() as logs:
        generator = await make()
    assert generator.count_tokens("") == 0
    assert generator.count_tokens("abcdefghi") == 3  # ceil(9 / 4)
    rendered = generator.render(QUESTION)
    assert "system: Answer from the passages." in rendered
    assert "user: [1] Overtime" in rendered
    warnings = [e for e in logs if e["event"] == "model.tokenizer_estimate"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"


@pytest.fixture(scope="session")
def phi3_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The Phi-3 tokenizer from the GGUF asset, saved as a tokenizer folder."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("phi3-tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(ASSETS, gguf_file="ggml-vocab-phi-3.gguf")
    tokenizer.save_pretrained(folder)
    return folder, tokenizer


async def test_local_tokenizer_folder_is_used(make: Make, phi3_tokenizer: tuple[Path, Any]) -> None:
    folder, reference = phi3_tokenizer
    generator = await make(tokenizer=str(folder))
    text = "Überstunden werden mit 125 % vergütet."
    expected = len(reference.encode(text, add_special_tokens=False))
    assert generator.count_tokens(text) == expected
    assert expected != -(-len(text) // 4)  # not the estimate
    rendered = generator.render(QUESTION)
    assert "<|user|>" in rendered
    assert rendered.rstrip().endswith("<|assistant|>")


async def test_a_configured_tokenizer_that_cannot_load_fails_at_start(
    make: Make, tmp_path: Path
) -> None:
    with pytest.raises(ModelLoadError, match=r"model\.tokenizer="):
        await make(tokenizer=str(tmp_path / "no-tokenizer-here"))


# -- adapters --------------------------------------------------------------------------------


async def test_use_adapter_loads_it_and_serves_it_by_name(
    fake: FakeOpenAI, make: Make, tmp_path: Path
) -> None:
    generator = await make(
        openai={"load_adapters": True}, adapter_dir=lambda v: tmp_path / "adapters" / v
    )
    await generator.use_adapter("v3")
    assert generator.adapter == "v3"
    assert fake.loads() == [{"lora_name": "v3", "lora_path": str(tmp_path / "adapters" / "v3")}]

    stream = generator.stream(ask())
    assert await stream.text() == REPLY
    assert fake.chats()[-1].body["model"] == "v3"
    assert stream.stats is not None
    assert (stream.stats.model, stream.stats.adapter) == ("served-model", "v3")

    await generator.use_adapter(None)
    assert generator.adapter is None
    await generator.stream(ask()).text()
    assert fake.chats()[-1].body["model"] == "served-model"
    assert len(fake.loads()) == 1  # nothing to load for the base model


async def test_adapter_root_as_the_server_sees_it(fake: FakeOpenAI, make: Make) -> None:
    fake.load_status = 400  # vLLM's answer for a version it already serves
    fake.load_body = json.dumps(
        {"object": "error", "message": "The lora adapter 'v3' has already been loaded."}
    )
    generator = await make(openai={"load_adapters": True, "adapter_root": "/srv/adapters"})
    await generator.use_adapter("v3")
    assert generator.adapter == "v3"
    assert fake.loads() == [{"lora_name": "v3", "lora_path": "/srv/adapters/v3"}]


async def test_adapter_load_failure_keeps_the_current_model(fake: FakeOpenAI, make: Make) -> None:
    fake.load_status = 400
    fake.load_body = "No adapter found at /srv/adapters/v4"
    generator = await make(openai={"load_adapters": True, "adapter_root": "/srv/adapters"})
    with pytest.raises(AdapterError, match="No adapter found"):
        await generator.use_adapter("v4")
    assert generator.adapter is None


async def test_request_in_flight_keeps_its_adapter(fake: FakeOpenAI, make: Make) -> None:
    generator = await make()  # load_adapters off: the server was started with the adapters
    await generator.use_adapter("v3")
    stream = generator.stream(ask())
    await generator.use_adapter("v4")
    await stream.text()
    assert fake.chats()[-1].body["model"] == "v3"
    assert stream.stats is not None
    assert stream.stats.adapter == "v3"
    assert fake.loads() == []
