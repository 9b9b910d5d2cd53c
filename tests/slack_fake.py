"""A local fake of Slack's Web API and Socket Mode, for integration tests with the real slack_sdk.

`FakeSlack` is an aiohttp server on 127.0.0.1 (a free port). Point `AsyncWebClient(base_url=
slack.api_url)` at it: every Web API call (and every POST to a `response_url(...)`) is recorded as
a `Call` with its JSON, form and query parameters merged into one `body` (form values that hold
JSON, like `blocks`, are decoded). `fail()` queues rate limits or `ok: false` answers; `hold()`
keeps a method's calls waiting. The agent messaging calls (`assistant.threads.setStatus`,
`assistant.threads.setSuggestedPrompts`) and `views.publish` refuse what Slack documents as
invalid (more than four prompts, a view over 100 blocks); `users.conversations` lists the
channels `set_channel(..., members=...)` puts a user in. Socket
Mode: `apps.connections.open` hands out `socket_url`; `send_envelope()` pushes an envelope to the
connected client and returns its ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import WSMsgType, web

from tests.local_server import serve_locally

BOT_USER = "UBOT"
BOT_ID = "BBOT"
TEAM = "T0TEAM"
AUTH = {"user": "expertbot", "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID}
JSON_FIELDS = {"blocks", "attachments", "view", "chunks", "metadata", "unfurls", "options", "files"}


@dataclass
class Call:
    method: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    failed: bool = False  # answered by a failure queued with `fail()`


@dataclass
class _Failure:
    status: int
    error: str | None
    retry_after: int


class FakeSlack:
    """Slack's Web API and Socket Mode, scripted through attributes and methods; see the module."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.acks: list[dict[str, Any]] = []  # every message a socket-mode client sent us
        self.api_url = self.socket_url = self.base_url = ""
        self._failures: dict[str, deque[_Failure]] = defaultdict(deque)
        self._holds: dict[str, asyncio.Event] = {}
        self._channels: dict[str, dict[str, Any]] = {}
        self._groups: dict[str, dict[str, Any]] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._changed = asyncio.Condition()
        self._ts = 0  # next_ts(): 1700000000.000100, .000200, ...
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{key}", self._response_url)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/socket", self._socket)
        self._runner, self.base_url = await serve_locally(app)
        self.api_url = f"{self.base_url}/api/"
        self.socket_url = f"{self.base_url.replace('http://', 'ws://')}/socket"

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- scripting -------------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(self, method: str, count: int = 1, timeout: float = 15.0) -> list[Call]:
        """Wait until `method` was called at least `count` times; return those calls."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: len(self.calls_to(method)) >= count)
        except TimeoutError:
            seen = ", ".join(f"{c.method}{'(failed)' if c.failed else ''}" for c in self.calls)
            raise AssertionError(
                f"{method} called {len(self.calls_to(method))} times, not {count}, "
                f"within {timeout}s; calls seen: [{seen}]"
            ) from None
        return self.calls_to(method)

    def fail(
        self,
        method: str,
        *,
        status: int = 200,
        error: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls of `method` with a 429 (status=429) or `ok: false`."""
        if status != 429 and error is None:
            raise ValueError("give an error, or status=429")
        failure = _Failure(status, error, 1 if retry_after is None else retry_after)
        self._failures[method].extend(failure for _ in range(times))

    def hold(self, method: str) -> None:
        """Keep every call of `method` waiting (recorded, unanswered) until `release(method)`:
        a Slack that is slow, or a process killed while it waits."""
        self._holds.setdefault(method, asyncio.Event())

    def release(self, method: str) -> None:
        held = self._holds.pop(method, None)
        if held is not None:
            held.set()

    def set_channel(
        self,
        channel: str,
        *,
        is_private: bool = False,
        is_im: bool = False,
        is_mpim: bool = False,
        name: str | None = None,
        members: list[str] | None = None,
    ) -> None:
        self._channels[channel] = {
            "id": channel,
            "name": name or channel.lower(),
            "is_channel": not (is_private or is_im or is_mpim),
            "is_group": is_private and not (is_im or is_mpim),
            "is_private": is_private or is_im or is_mpim,
            "is_im": is_im,
            "is_mpim": is_mpim,
            "members": list(members or ()),
        }

    def set_usergroup(self, group_id: str, handle: str, users: list[str]) -> None:
        self._groups[group_id] = {"id": group_id, "handle": handle, "users": list(users)}

    def response_url(self, key: str) -> str:
        return f"{self.base_url}/response/{key}"

    # --- Web API ---------------------------------------------------------------------------

    def next_ts(self) -> str:
        self._ts += 100
        return f"{1_700_000_000 + self._ts // 1_000_000}.{self._ts % 1_000_000:06d}"

    async def _record(self, method: str, request: web.Request) -> tuple[Call, _Failure | None]:
        body: dict[str, Any] = dict(request.query)  # slack_sdk sends `params` as a query string
        if request.content_type == "application/json" and request.can_read_body:
            body.update(await request.json())
        else:
            body.update(await request.post())  # form-urlencoded or multipart
            for key in JSON_FIELDS & body.keys():
                if isinstance(body[key], str):
                    with contextlib.suppress(ValueError):
                        body[key] = json.loads(body[key])
        queue = self._failures.get(method)
        failure = queue.popleft() if queue else None
        call = Call(method, body, dict(request.headers), failed=failure is not None)
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        return call, failure

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        call, failure = await self._record(method, request)
        held = self._holds.get(method)
        if held is not None:
            await held.wait()
        if failure is not None and failure.status == 429:
            body = {"ok": False, "error": "ratelimited"}
            headers = {"Retry-After": str(failure.retry_after)}
            return web.json_response(body, status=429, headers=headers)
        if failure is not None:
            return web.json_response({"ok": False, "error": failure.error}, status=failure.status)
        answer = self._answer(method, call.body)
        if "error" in answer:
            return web.json_response({"ok": False, "error": answer["error"]})
        return web.json_response({"ok": True, **answer})

    def _answer(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        channel = body.get("channel")
        if method == "auth.test":
            return {"url": "https://fake.slack.com/", "team": "Fake Team", **AUTH}
        if method == "chat.postMessage":
            ts = self.next_ts()
            message = {"text": body.get("text", ""), "ts": ts, "user": BOT_USER, "bot_id": BOT_ID}
            return {"channel": channel, "ts": ts, "message": message}
        if method == "chat.update":
            return {"channel": channel, "ts": body.get("ts"), "text": body.get("text", "")}
        if method == "chat.startStream":
            return {"channel": channel, "ts": self.next_ts()}
        if method in ("chat.appendStream", "chat.stopStream"):
            return {"channel": channel, "ts": body.get("ts")}
        if method == "chat.postEphemeral":
            return {"message_ts": self.next_ts()}
        if method == "conversations.info":
            info = self._channels.get(str(channel))
            if info is None:  # D... is a direct message, anything else a public channel
                is_im = str(channel).startswith("D")
                info = {"id": channel, "name": str(channel).lower(), "is_channel": not is_im}
                info |= {"is_group": False, "is_private": is_im, "is_im": is_im, "is_mpim": False}
            return {"channel": {k: v for k, v in info.items() if k != "members"}}
        if method == "usergroups.list":
            with_users = str(body.get("include_users", "")).lower() in ("1", "true")
            groups = [
                {k: v for k, v in g.items() if with_users or k != "users"}
                for g in self._groups.values()
            ]
            return {"usergroups": groups}
        if method == "usergroups.users.list":
            group = self._groups.get(str(body.get("usergroup")))
            return {"users": group["users"] if group else []}
        if method.startswith("assistant.threads.") or method == "views.publish":
            return self._agent(method, body)
        if method == "users.conversations":
            user, kinds = str(body.get("user")), str(body.get("types") or "public_channel")
            found = [
                {k: v for k, v in info.items() if k != "members"}
                for info in self._channels.values()
                if user in info.get("members", ())
                and ("private_channel" if info["is_private"] else "public_channel") in kinds
            ]
            return {"channels": found, "response_metadata": {"next_cursor": ""}}
        if method == "views.open":
            return {"view": {**(body.get("view") or {}), "id": f"V{uuid.uuid4().hex[:10]}"}}
        if method == "apps.connections.open":
            return {"url": self.socket_url}
        if method == "files.getUploadURLExternal":
            file_id = f"F{uuid.uuid4().hex[:10].upper()}"
            return {"file_id": file_id, "upload_url": f"{self.base_url}/upload/{file_id}"}
        if method == "files.completeUploadExternal":
            return {"files": [{"id": f["id"], "title": f.get("title")} for f in body["files"]]}
        if method == "users.info":
            return {"user": {"id": body.get("user"), "name": str(body.get("user")).lower()}}
        return {}

    def _agent(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """The agent messaging calls and `views.publish`, refusing what Slack refuses; a
        refusal is `{"error": ...}`, answered as `ok: false`."""
        if method == "assistant.threads.setStatus":
            if not body.get("channel_id") or not body.get("thread_ts") or "status" not in body:
                return {"error": "invalid_arguments"}
            return {}
        if method == "assistant.threads.setSuggestedPrompts":
            prompts = body.get("prompts") or []
            if not body.get("channel_id") or not 0 < len(prompts) <= 4:
                return {"error": "invalid_arguments"}
            if not all(p.get("title") and p.get("message") for p in prompts):
                return {"error": "invalid_arguments"}
            return {}
        if method == "views.publish":
            view = body.get("view") or {}
            if isinstance(view, str):
                view = json.loads(view)
            blocks = view.get("blocks") or []
            if not body.get("user_id") or view.get("type") != "home" or len(blocks) > 100:
                return {"error": "invalid_arguments"}
            return {"view": {**view, "id": f"V{uuid.uuid4().hex[:10]}"}}
        return {}

    async def _upload(self, request: web.Request) -> web.Response:
        """Step 2 of files_upload_v2: the file's bytes, posted to the URL step 1 handed out."""
        data = await request.read()
        call = Call(
            f"upload:{request.match_info['file_id']}", {"data": data}, dict(request.headers)
        )
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        return web.Response(text="OK - " + str(len(data)))

    async def _response_url(self, request: web.Request) -> web.Response:
        _, failure = await self._record(f"response_url:{request.match_info['key']}", request)
        if failure is not None:  # Slack answers response_url posts in plain text
            status = 404 if failure.status == 200 else failure.status
            return web.Response(status=status, text=failure.error or "ratelimited")
        return web.Response(text="ok")

    # --- Socket Mode -----------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "hello", "num_connections": len(self._sockets) + 1})
        async with self._changed:
            self._sockets.append(ws)
            self._changed.notify_all()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                message = json.loads(msg.data)
                self.acks.append(message)
                waiter = self._acks.pop(message.get("envelope_id", ""), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
        finally:
            self._sockets.remove(ws)
        return ws

    async def send_envelope(
        self,
        type: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool = False,
        timeout: float = 10,
    ) -> dict[str, Any]:
        """Push an envelope to the newest connected client (waiting for one); return its ack."""
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": type,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        ack = self._acks[envelope_id] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(lambda: any(not s.closed for s in self._sockets))
                    ws = [s for s in self._sockets if not s.closed][-1]
                await ws.send_json(envelope)
                return await ack
        except TimeoutError:
            raise AssertionError(f"no ack for {type} envelope within {timeout}s") from None
        finally:
            self._acks.pop(envelope_id, None)
