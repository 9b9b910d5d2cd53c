"""Local stand-ins for services we cannot reach from tests: an OpenAI-compatible model server
(the vLLM API) that streams a scripted reply and records every request, path and body."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

REPLY = "Overtime is paid at 125 percent of the hourly wage [1]."
WORDS = re.findall(r"\S+\s*", REPLY)
PROMPT_TOKENS = 42


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeOpenAI:
    """A scripted OpenAI-compatible server; tests change its behaviour through its attributes."""

    def __init__(self) -> None:
        self.url = ""  # base_url, set once it listens
        self.served = ["served-model", "other-model"]
        self.max_model_len: int | None = 8192
        self.models_status = 200
        self.reply = REPLY
        self.chunk_chars: int | None = None  # stream the reply in pieces this long, not words
        self.chat_status = 200
        self.headers_delay_s = 0.0  # before the response starts
        self.word_delay_s = 0.0
        self.endless = False  # repeat the reply's words until the client goes away
        self.gate: asyncio.Event | None = None  # the stream waits here after `break_after` words
        self.malformed = False  # a broken chunk after `break_after` words
        self.break_after = 1  # words written before the gate, malformed chunk or cut take effect
        self.cut = False  # end the body after `break_after` words, without finish or [DONE]
        self.usage = True
        self.finish_reason = "stop"
        self.load_status = 200
        self.load_body = "Success: LoRA adapter loaded."
        self.requests: list[Recorded] = []
        self.disconnected = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/load_lora_adapter", self.load_lora_adapter)
        return app

    def pieces(self) -> list[str]:
        """The deltas the reply is streamed in."""
        if self.chunk_chars:
            n = self.chunk_chars
            return [self.reply[i : i + n] for i in range(0, len(self.reply), n)]
        return re.findall(r"\S+\s*", self.reply)

    def chats(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def loads(self) -> list[Any]:
        return [r.body for r in self.requests if r.path.endswith("/load_lora_adapter")]

    async def _record(self, request: web.Request) -> Any:
        body = await request.json() if request.can_read_body else None
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body))
        return body

    async def models(self, request: web.Request) -> web.Response:
        await self._record(request)
        if self.models_status != 200:
            return web.json_response({"error": "nope"}, status=self.models_status)
        data = [
            {"id": name, "object": "model", "owned_by": "vllm"}
            | ({"max_model_len": self.max_model_len} if self.max_model_len else {})
            for name in self.served
        ]
        return web.json_response({"object": "list", "data": data})

    async def load_lora_adapter(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=self.load_status, text=self.load_body)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        try:
            if self.headers_delay_s:
                await asyncio.sleep(self.headers_delay_s)
            if self.chat_status != 200:
                # Echoes our headers, as a careless proxy might: the key must still not leak.
                message = f"scripted failure {'x' * 500} for {request.headers.get('Authorization')}"
                return web.json_response(
                    {"object": "error", "message": message}, status=self.chat_status
                )
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b": keep-alive\n\n\n")
            await self._send(response, {"role": "assistant"})  # a delta without content
            pieces = self.pieces()
            words = itertools.cycle(pieces) if self.endless else iter(pieces)
            for i, word in enumerate(words):
                await self._send(response, {"content": word})
                if i == self.break_after - 1:
                    if self.gate is not None:
                        await self.gate.wait()
                    if self.malformed:
                        await response.write(b'data: {"choices": [{"delta": \n\n')
                    if self.cut:
                        return response
                if self.word_delay_s:
                    await asyncio.sleep(self.word_delay_s)
            await self._send(response, {}, finish_reason=self.finish_reason)
            if self.usage:
                usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": len(pieces)}
                await self._write(response, {"choices": [], "usage": usage})
            await response.write(b"data: [DONE]\n\n")
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            # The test server cancels a handler whose client went away.
            self.disconnected.set()
            raise

    async def _send(
        self, response: web.StreamResponse, delta: dict[str, str], finish_reason: str | None = None
    ) -> None:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        await self._write(response, {"object": "chat.completion.chunk", "choices": [choice]})

    @staticmethod
    async def _write(response: web.StreamResponse, chunk: dict[str, Any]) -> None:
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
