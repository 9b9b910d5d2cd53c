"""How an answer reaches Slack: the sinks `bot.delivery.deliver` shows it through.

- `StreamedAnswer`: Slack's chat streaming (`chat.startStream` / `appendStream` / `stopStream`),
  the text appended as it is written, the footer (the curated mark, sources, feedback buttons)
  given to `chat.stopStream`; a long answer goes on in a new message. Where Slack refuses to
  start a stream, the same answer goes on as an `UpdatedAnswer`.
- `UpdatedAnswer`: `chat.postMessage` at the first text, `chat.update` as more is written, then
  the final message(s) with the footer.
- `EphemeralAnswer`: `/expertbot ask`: the final answer only, seen by the asker alone.

Progress comes at most every `slack.update_interval_s` (`deliver` throttles it). Where the final
answer is not what was streamed (the core replaced a broken output), it replaces it. An answer that
breaks off keeps what was shown, its stream ended with " …"; the reason follows in the thread.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.question import Answer
from bot.delivery import Note
from bot.slack.client import error_code, post
from bot.slack.render import MESSAGE_TEXT_LIMIT, answer_messages, footer_blocks, progress_text

log = structlog.get_logger("expertbot.slack")

_REFUSED = (SlackApiError, SlackRequestError)


class UpdatedAnswer:
    """A message posted at the first text and updated as more is written; the final answer
    replaces it (and goes on in more messages where it is long)."""

    mode = "update"

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        thread: str,
        *,
        interval_s: float,
        note: Note | None = None,
    ) -> None:
        """`note`: told each message posted (a resumed answer finishes them in place)."""
        self.client, self.channel, self.thread = client, channel, thread
        self.interval_s = interval_s
        self.note = note
        self.text = ""
        self.ts: str | None = None
        self.posted: list[str] = []

    async def delta(self, text: str) -> None:
        self.text += text
        if self.ts is None:
            response = await self.client.chat_postMessage(
                channel=self.channel, thread_ts=self.thread, text=progress_text(self.text)
            )
            self.ts = str(response["ts"])
            await _noted(self.note, self.ts)
        else:
            await self.client.chat_update(
                channel=self.channel, ts=self.ts, text=progress_text(self.text)
            )

    async def finished(self, answer: Answer, unsent: str) -> list[str]:
        # The final messages hold the whole answer: what was not shown yet is in them.
        for i, message in enumerate(answer_messages(answer)):
            if i == 0 and self.ts is not None:
                await self.client.chat_update(
                    channel=self.channel, ts=self.ts, text=message.text, blocks=message.blocks
                )
                self.posted.append(self.ts)
            else:
                response = await self.client.chat_postMessage(
                    channel=self.channel,
                    thread_ts=self.thread,
                    text=message.text,
                    blocks=message.blocks,
                )
                self.posted.append(str(response["ts"]))
                await _noted(self.note, self.posted[-1])
        return self.posted

    async def failed(self, text: str | None, unsent: str) -> None:
        if text is not None:
            await post(self.client, self.channel, self.thread, text)


class StreamedAnswer:
    """Slack's chat streaming. Where Slack refuses to start a stream (a token or workspace
    without it), the answer goes on as an `UpdatedAnswer` with everything written so far."""

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        thread: str,
        *,
        team: str | None,
        user: str,
        interval_s: float,
        note: Note | None = None,
    ) -> None:
        """`team`, `user`: the asker's, whom Slack shows the stream to; `note`: told each
        message posted."""
        self.client, self.channel, self.thread = client, channel, thread
        self.team, self.user = team, user
        self.interval_s = interval_s
        self.note = note
        self.pending = ""  # written, not appended yet
        self.streamed = ""  # appended, in every streamed message
        self.sent = 0  # characters of markdown in the current streamed message
        self.ts: list[str] = []  # every streamed message (a long answer continues in a new one)
        self.stream: AsyncChatStream | None = None
        self.fallback: UpdatedAnswer | None = None

    @property
    def mode(self) -> str:
        return self.fallback.mode if self.fallback else "stream"

    @property
    def posted(self) -> list[str]:
        return self.fallback.posted if self.fallback else self.ts

    async def delta(self, text: str) -> None:
        if self.fallback is not None:
            await self.fallback.delta(text)
            return
        self.pending += text
        try:
            await self._flush()
        except _REFUSED as exc:
            if self.ts:
                raise
            await self._fall_back(exc).delta(self.pending)

    async def finished(self, answer: Answer, unsent: str) -> list[str]:
        if self.fallback is not None:
            return await self.fallback.finished(answer, unsent)
        self.pending += unsent
        if (self.streamed + self.pending).strip() != answer.text.strip():
            # The core replaced what was written (a broken output became a quote).
            if self.ts:
                return await self._replace(answer)
            self.pending = answer.text
        try:
            await self._make_room()
            assert self.stream is not None
            await self.stream.stop(markdown_text=self.pending or None, blocks=footer_blocks(answer))
        except _REFUSED as exc:
            if self.ts:
                raise
            return await self._fall_back(exc).finished(answer, "")
        await self._note_message()
        self.stream = None  # stopped: nothing left to end should anything fail after this
        return self.ts

    async def failed(self, text: str | None, unsent: str) -> None:
        if self.fallback is not None:
            await self.fallback.failed(text, unsent)
            return
        if self.stream is not None and self.ts:
            with contextlib.suppress(*_REFUSED):
                await self.stream.stop(markdown_text=self.pending + unsent + " …")
        if text is not None:
            await post(self.client, self.channel, self.thread, text)

    async def _replace(self, answer: Answer) -> list[str]:
        """Make the streamed message(s) show `answer` instead of what was streamed."""
        assert self.stream is not None
        await self.stream.stop()
        self.stream = None
        first, *others = self.ts
        for ts in others:
            await self.client.chat_delete(channel=self.channel, ts=ts)
        updated = UpdatedAnswer(
            self.client, self.channel, self.thread, interval_s=self.interval_s, note=self.note
        )
        updated.ts = first
        self.ts = await updated.finished(answer, "")
        return self.ts

    def _fall_back(self, exc: SlackApiError | SlackRequestError) -> UpdatedAnswer:
        log.info("slack.streaming_refused", channel=self.channel, error=error_code(exc))
        self.fallback = UpdatedAnswer(
            self.client, self.channel, self.thread, interval_s=self.interval_s, note=self.note
        )
        return self.fallback

    async def _open(self) -> None:
        self.stream = await self.client.chat_stream(
            channel=self.channel,
            thread_ts=self.thread,
            recipient_team_id=self.team,
            recipient_user_id=self.user,
            buffer_size=1,  # deliver batches the text, by time
        )
        self.sent = 0

    async def _make_room(self) -> None:
        """Open the stream, or go on in a new message where this one would pass Slack's limit."""
        if self.stream is None:
            await self._open()
        elif self.sent and self.sent + len(self.pending) > MESSAGE_TEXT_LIMIT:
            await self.stream.stop()
            await self._open()

    async def _note_message(self) -> None:
        assert self.stream is not None
        if self.stream.ts and str(self.stream.ts) not in self.ts:
            self.ts.append(str(self.stream.ts))
            await _noted(self.note, self.ts[-1])

    async def _flush(self) -> None:
        await self._make_room()
        assert self.stream is not None
        if self.pending:
            # Cleared only once sent: where Slack refuses, the fallback gets all of it.
            await self.stream.append(markdown_text=self.pending)
            self.streamed += self.pending
            self.sent += len(self.pending)
            self.pending = ""
            await self._note_message()


async def _noted(note: Note | None, ts: str) -> None:
    if note is not None:
        await note(ts)


class EphemeralAnswer:
    """`/expertbot ask`: the whole answer, once written, through the command's response URL,
    seen by the asker alone. An ephemeral message has no ts to link: its buttons carry the
    answer's id."""

    mode = "ephemeral"
    interval_s = math.inf  # a response URL takes a few messages, no updates: no progress

    def __init__(self, respond: Callable[..., Awaitable[Any]]) -> None:
        self.respond = respond

    async def delta(self, text: str) -> None:
        pass

    async def finished(self, answer: Answer, unsent: str) -> list[str]:
        for message in answer_messages(answer):
            await self.respond(text=message.text, blocks=message.blocks, response_type="ephemeral")
        return []

    async def failed(self, text: str | None, unsent: str) -> None:
        if text is not None:
            await self.respond(text=text, response_type="ephemeral")
