"""`OpenAIGenerator`: answers from an OpenAI-compatible chat completions server.

Works with vLLM and the llama.cpp server: `GET /models` at start-up (the model must be served),
`POST /chat/completions` streamed as server-sent events per answer, and, with
`model.openai.load_adapters`, vLLM's `POST /load_lora_adapter` when an adapter is promoted. The
served model's tokenizer is loaded locally only to count prompt budgets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from yarl import URL

from base.errors import (
    AdapterError,
    ConfigError,
    GenerationError,
    GenerationTimeout,
    ModelLoadError,
    OverloadedError,
)
from training.config import ModelConfig
from training.serving.generation import (
    GenerationRequest,
    GenerationStats,
    GenerationStream,
    Message,
)

log = structlog.get_logger("expertbot.model")

DEFAULT_CONTEXT_WINDOW = 4096
_CHARS_PER_TOKEN = 4  # the estimate when no tokenizer can be loaded
_EXCERPT = 200  # characters of a server's error body quoted in our errors
_CANNOT_SCORE = (
    "an OpenAI-compatible model server cannot score text (no prompt log-probabilities); "
    "scoring needs the in-process model (model.backend = transformers)"
)


class _Call:
    """What `aclose()` needs to reach one request while it runs."""

    __slots__ = ("busy", "cancelled", "finished", "holds_slot", "response")

    def __init__(self) -> None:
        self.response: aiohttp.ClientResponse | None = None
        self.cancelled = False
        self.busy = False  # True while the generator runs (not parked at a `yield`)
        self.holds_slot = True
        self.finished = asyncio.Event()


class OpenAIGenerator:
    """A `Generator` backed by an OpenAI-compatible server (`model.backend = "openai"`)."""

    def __init__(
        self, config: ModelConfig, *, adapter_dir: Callable[[str], Path] | None = None
    ) -> None:
        self._config = config
        self._adapter_dir = adapter_dir
        self._served = config.openai.model or config.base
        self._base_url = (config.openai.base_url or "").rstrip("/")
        key = config.openai.api_key.get_secret_value() if config.openai.api_key else ""
        self._api_key = key
        self._adapter: str | None = None
        self._context_window = DEFAULT_CONTEXT_WINDOW
        self._tokenizer: Any = None
        self._session: aiohttp.ClientSession | None = None
        # Requests in flight. A counter, not a semaphore: one beyond model.max_queue is refused
        # at once rather than made to wait, and stream() (synchronous) cannot await a slot.
        self._in_flight = 0

    # -- the Generator protocol ---------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._served

    @property
    def adapter(self) -> str | None:
        return self._adapter

    @property
    def context_window(self) -> int:
        return self._context_window

    async def start(self) -> None:
        """Check that the server serves the model and load the tokenizer; errors here, not on
        the first question."""
        if not self._base_url:
            raise ConfigError(
                "model.openai.base_url is not set (EXPERTBOT_MODEL__OPENAI__BASE_URL), "
                "e.g. http://vllm:8000/v1"
            )
        if self._session is not None:
            return
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        session = aiohttp.ClientSession(
            headers=headers,
            # Our own deadlines bound every call; the semaphore bounds the connections.
            timeout=aiohttp.ClientTimeout(total=None),
            connector=aiohttp.TCPConnector(limit=0),
        )
        try:
            self._context_window = await self._check_served_model(session)
            self._tokenizer = await asyncio.to_thread(self._load_tokenizer)
        except BaseException:
            await session.close()
            raise
        self._session = session
        log.info(
            "model.started",
            backend="openai",
            url=self._shown(self._base_url),
            model=self._served,
            context_window=self._context_window,
            tokenizer="estimate" if self._tokenizer is None else self._tokenizer_name,
        )

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            return math.ceil(len(text) / _CHARS_PER_TOKEN)
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def render(self, messages: tuple[Message, ...]) -> str:
        """The prompt as the model's chat template writes it (only used for counting: the server
        applies its own template)."""
        if self._tokenizer is not None and getattr(self._tokenizer, "chat_template", None):
            try:
                return str(
                    self._tokenizer.apply_chat_template(
                        [m.as_dict() for m in messages], add_generation_prompt=True, tokenize=False
                    )
                )
            except Exception:  # some templates refuse a role (e.g. system); count plainly
                pass
        return "\n".join(f"{m.role}: {m.content}" for m in messages)

    def stream(self, request: GenerationRequest) -> GenerationStream:
        """Starts answering when iterated; OverloadedError here if model.max_queue requests are
        already in flight."""
        self._require_session()
        if self._in_flight >= self._config.max_queue:
            raise OverloadedError(
                f"{self._in_flight} questions are already being answered (model.max_queue); "
                "try again shortly"
            )
        self._in_flight += 1
        # The adapter is fixed now: a swap while this request runs does not affect it.
        adapter = self._adapter
        call = _Call()
        stream: GenerationStream

        def publish(stats: GenerationStats) -> None:
            stream.stats = stats

        async def on_close() -> None:
            call.cancelled = True
            if call.response is not None:
                # Dropping the connection is what tells the server to stop generating.
                call.response.close()
            if call.busy:
                # Closed from another task while it awaits the server: let it wind down, since
                # an async generator cannot be closed while it runs.
                await call.finished.wait()
            self._release(call)

        stream = GenerationStream(
            self._generate(request, adapter, call, publish), on_close=on_close
        )
        # A stream dropped without being read or closed must not hold its slot for ever.
        weakref.finalize(stream, self._release, call)
        return stream

    def _release(self, call: _Call) -> None:
        if call.holds_slot:
            call.holds_slot = False
            self._in_flight -= 1

    def expecting(self) -> contextlib.AbstractContextManager[None]:
        """The server batches on its own (vLLM: continuous batching)."""
        return contextlib.nullcontext()

    @property
    def can_score(self) -> bool:
        """No: chat completions return the log-probabilities of generated tokens only, and the
        servers that can return a prompt's (vLLM) do it in their own ways."""
        return False

    async def continuation_logprobs(self, pairs: Sequence[tuple[str, str]]) -> list[list[float]]:
        raise ConfigError(_CANNOT_SCORE)

    async def next_token_logprobs(
        self, prompts: Sequence[str], choices: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        raise ConfigError(_CANNOT_SCORE)

    async def use_adapter(self, version: str | None) -> None:
        if version is not None and self._config.openai.load_adapters:
            await self._load_adapter(version)
        self._adapter = version
        log.info("model.adapter", adapter=version, model=version or self._served)

    # -- start-up ------------------------------------------------------------------------------

    async def _check_served_model(self, session: aiohttp.ClientSession) -> int:
        """The context window of the served model; ModelLoadError if it is not served."""
        url = f"{self._base_url}/models"
        shown = self._shown(url)
        limit = self._config.openai.timeout_s
        try:
            async with asyncio.timeout(limit), session.get(url) as response:
                if response.status in (401, 403):
                    raise ModelLoadError(
                        f"the model server at {shown} refused access (HTTP {response.status}); "
                        "check model.openai.api_key"
                    )
                if not 200 <= response.status < 300:
                    body = await response.text(errors="replace")
                    raise ModelLoadError(
                        f"GET {shown} answered HTTP {response.status}: {self._excerpt(body)} "
                        "(model.openai.base_url is the part before /chat/completions, "
                        "e.g. http://vllm:8000/v1)"
                    )
                listing = await response.json(content_type=None)
        except TimeoutError:
            raise ModelLoadError(
                f"the model server at {shown} did not answer within {limit:g} s "
                "(model.openai.timeout_s)"
            ) from None
        except aiohttp.ClientError as exc:
            raise ModelLoadError(
                f"cannot reach the model server at {shown}: {self._describe(exc)}"
            ) from None
        except ValueError:
            raise ModelLoadError(f"GET {shown} did not answer with JSON") from None
        entries = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(entries, list):
            raise ModelLoadError(f"GET {shown} did not answer with a model list")
        models = {str(e["id"]): e for e in entries if isinstance(e, dict) and "id" in e}
        if self._served not in models:
            raise ModelLoadError(
                f"the model server at {shown} does not serve {self._served!r} "
                f"(model.openai.model, default model.base); it serves: "
                f"{', '.join(sorted(models)) or 'nothing'}"
            )
        window = models[self._served].get("max_model_len")  # vLLM says; llama.cpp does not
        return window if isinstance(window, int) and window > 0 else DEFAULT_CONTEXT_WINDOW

    @property
    def _tokenizer_name(self) -> str:
        return self._config.tokenizer or self._config.base

    def _load_tokenizer(self) -> Any:
        """The tokenizer for prompt budgets, or None to estimate (runs in a thread)."""
        name = self._tokenizer_name
        try:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(name)
        except Exception as exc:
            if self._config.tokenizer:  # asked for by name: a misconfiguration, say so now
                raise ModelLoadError(
                    f"cannot load the tokenizer model.tokenizer={name!r}: "
                    f"{type(exc).__name__}: {str(exc)[:200]}"
                ) from exc
            log.warning(
                "model.tokenizer_estimate",
                tokenizer=name,
                error=f"{type(exc).__name__}: {exc}"[:300],
                estimate=f"{_CHARS_PER_TOKEN} characters a token",
                hint="set model.tokenizer to a hub id or folder for exact prompt budgets",
            )
            return None

    # -- adapters ------------------------------------------------------------------------------

    def _adapter_path(self, version: str) -> Path:
        root = self._config.openai.adapter_root
        if root:
            return Path(root) / version
        if self._adapter_dir is None:
            raise AdapterError(
                f"no folder is known for adapter {version!r}; set model.openai.adapter_root"
            )
        return self._adapter_dir(version)

    async def _load_adapter(self, version: str) -> None:
        session = self._require_session()
        path = self._adapter_path(version)
        url = f"{self._base_url}/load_lora_adapter"
        shown = self._shown(url)
        limit = self._config.timeout_s
        try:
            async with (
                asyncio.timeout(limit),
                session.post(url, json={"lora_name": version, "lora_path": str(path)}) as response,
            ):
                if 200 <= response.status < 300:
                    log.info("model.adapter_loaded", adapter=version, path=str(path))
                    return
                body = await response.text(errors="replace")
        except TimeoutError:
            raise AdapterError(
                f"the model server at {shown} did not load adapter {version!r} within {limit:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise AdapterError(
                f"cannot reach the model server at {shown} to load adapter {version!r}: "
                f"{self._describe(exc)}"
            ) from None
        # vLLM answers 400 "... has already been loaded" for a version it serves: that is fine.
        if "already" in body.lower():
            log.info("model.adapter_already_loaded", adapter=version)
            return
        raise AdapterError(
            f"the model server at {shown} did not load adapter {version!r} from {path} "
            f"(HTTP {response.status}): {self._excerpt(body)}"
        )

    # -- one answer ----------------------------------------------------------------------------

    async def _generate(
        self,
        request: GenerationRequest,
        adapter: str | None,
        call: _Call,
        publish: Callable[[GenerationStats], None],
    ) -> AsyncIterator[str]:
        call.busy = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        limit = request.timeout_s or self._config.timeout_s
        deadline = started + limit
        stats = GenerationStats(model=self._served, adapter=adapter)
        payload = {
            "model": adapter or self._served,
            "messages": [m.as_dict() for m in request.messages],
            "max_tokens": request.max_new_tokens or self._config.max_new_tokens,
            "temperature": self._config.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.stop:
            payload["stop"] = list(request.stop)
        parts: list[str] = []
        finish: str | None = None
        usage: dict[str, Any] | None = None
        done = False
        try:
            session = self._require_session()  # close() may have come after stream()
            call.response = response = await self._open(session, payload, deadline, limit)
            while not done and not call.cancelled:
                if loop.time() >= deadline:  # an await that does not suspend never times out
                    raise self._timed_out(limit)
                try:
                    async with asyncio.timeout_at(deadline):
                        line = await response.content.readline()
                except TimeoutError:
                    raise self._timed_out(limit) from None
                if not line:
                    break
                data = self._sse_data(line)
                if data is None:
                    continue
                if data == "[DONE]":
                    done = True
                    break
                content, reason, chunk_usage = self._parse_chunk(data)
                finish = reason or finish
                usage = chunk_usage or usage
                if content:
                    if stats.first_token_s is None:
                        stats.first_token_s = loop.time() - started
                    parts.append(content)
                    call.busy = False
                    yield content
                    call.busy = True
            if call.cancelled:
                stats.finish_reason = "cancelled"
            elif not done and finish is None:
                raise GenerationError(
                    "the model server closed the stream before the answer was complete"
                )
            else:
                stats.finish_reason = "length" if finish == "length" else "stop"
                response.release()  # complete: the connection may be reused
                call.response = None
            self._fill_counts(stats, request, parts, usage)
            stats.total_s = loop.time() - started
            publish(stats)
        except GenerationTimeout:
            stats.finish_reason = "timeout"
            stats.total_s = loop.time() - started
            publish(stats)
            raise
        except (GeneratorExit, asyncio.CancelledError):
            stats.finish_reason = "cancelled"
            stats.total_s = loop.time() - started
            publish(stats)
            raise
        except aiohttp.ClientError as exc:
            if call.cancelled:  # aclose() from another task closed the response under us
                stats.finish_reason = "cancelled"
                stats.total_s = loop.time() - started
                publish(stats)
                return
            raise GenerationError(
                f"the model server at {self._shown(self._base_url)} failed mid-answer: "
                f"{self._describe(exc)}"
            ) from None
        finally:
            if call.response is not None:
                # Unfinished: closing (not pooling) the connection makes the server stop.
                call.response.close()
            self._release(call)
            call.busy = False
            call.finished.set()

    async def _open(
        self, session: aiohttp.ClientSession, payload: dict[str, Any], deadline: float, limit: float
    ) -> aiohttp.ClientResponse:
        """POST the request; the response once its headers arrived (a 2xx one)."""
        url = f"{self._base_url}/chat/completions"
        shown = self._shown(url)
        loop = asyncio.get_running_loop()
        first_byte = self._config.openai.timeout_s
        try:
            async with asyncio.timeout_at(min(deadline, loop.time() + first_byte)):
                response = await session.post(url, json=payload)
        except TimeoutError:
            if loop.time() >= deadline:
                raise self._timed_out(limit) from None
            raise GenerationTimeout(
                f"the model server at {shown} did not answer within {first_byte:g} s "
                "(model.openai.timeout_s)"
            ) from None
        except aiohttp.ClientError as exc:
            raise GenerationError(
                f"cannot reach the model server at {shown}: {self._describe(exc)}"
            ) from None
        if 200 <= response.status < 300:
            return response
        try:
            async with asyncio.timeout_at(deadline):
                body = (await response.content.read(4 * _EXCERPT)).decode(errors="replace")
        except (TimeoutError, aiohttp.ClientError):
            body = ""
        finally:
            response.close()
        if response.status in (429, 503):
            raise OverloadedError(
                f"the model server at {shown} is overloaded (HTTP {response.status}); "
                "try again shortly"
            )
        raise GenerationError(
            f"the model server at {shown} answered HTTP {response.status}: {self._excerpt(body)}"
        )

    @staticmethod
    def _sse_data(line: bytes) -> str | None:
        """The payload of a `data:` line; None for blank lines, comments and other fields.

        Each `data:` line is taken as a whole event: these servers send single-line JSON, and
        not waiting for the blank line tolerates servers that leave it out."""
        try:
            text = line.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise GenerationError("the model server sent a stream line that is not UTF-8") from None
        field, sep, value = text.partition(":")
        if not sep or field != "data":  # blank lines, ": comments", event:/id:/retry:
            return None
        return value.removeprefix(" ").strip()

    def _parse_chunk(self, data: str) -> tuple[str, str | None, dict[str, Any] | None]:
        """(content delta, finish reason, usage) of one chunk; GenerationError if malformed."""
        malformed = GenerationError(
            f"the model server sent a malformed stream chunk: {self._excerpt(data)}"
        )
        try:
            chunk = json.loads(data)
        except ValueError:
            raise malformed from None
        if not isinstance(chunk, dict):
            raise malformed
        error = chunk.get("error") or (chunk if chunk.get("object") == "error" else None)
        if error:
            message = error.get("message", error) if isinstance(error, dict) else error
            raise GenerationError(
                f"the model server failed mid-answer: {self._excerpt(str(message))}"
            )
        usage = chunk.get("usage")
        choices = chunk.get("choices") or []
        if not isinstance(choices, list) or (choices and not isinstance(choices[0], dict)):
            raise malformed
        if not choices:  # the final usage chunk has none
            return "", None, usage if isinstance(usage, dict) else None
        delta = choices[0].get("delta") or {}
        content = delta.get("content") if isinstance(delta, dict) else None
        if content is not None and not isinstance(content, str):
            raise malformed
        reason = choices[0].get("finish_reason")
        return (
            content or "",
            reason if isinstance(reason, str) else None,
            usage if isinstance(usage, dict) else None,
        )

    def _fill_counts(
        self,
        stats: GenerationStats,
        request: GenerationRequest,
        parts: list[str],
        usage: dict[str, Any] | None,
    ) -> None:
        """Token counts from the server's usage, else our own count."""
        prompt = usage.get("prompt_tokens") if usage else None
        completion = usage.get("completion_tokens") if usage else None
        stats.prompt_tokens = (
            prompt if isinstance(prompt, int) else self.count_tokens(self.render(request.messages))
        )
        stats.completion_tokens = (
            completion if isinstance(completion, int) else self.count_tokens("".join(parts))
        )

    # -- helpers -------------------------------------------------------------------------------

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise GenerationError("the model server is not connected (start() was not called)")
        return self._session

    @staticmethod
    def _timed_out(limit: float) -> GenerationTimeout:
        return GenerationTimeout(
            f"no complete answer within {limit:g} s (model.timeout_s); it was cancelled"
        )

    def _redact(self, text: str) -> str:
        # A server may echo our headers back; the key must not reach logs or users.
        return text.replace(self._api_key, "***") if self._api_key else text

    def _excerpt(self, text: str) -> str:
        text = " ".join(self._redact(text).split())
        return (text[:_EXCERPT] + "…" if len(text) > _EXCERPT else text) or "(empty body)"

    def _describe(self, exc: BaseException) -> str:
        return self._redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    @staticmethod
    def _shown(url: str) -> str:
        """The URL without any user:password in it."""
        try:
            return str(URL(url).with_user(None))
        except ValueError:
            return url
