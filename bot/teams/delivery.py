"""How an answer reaches Teams: the sink `bot.delivery.deliver` shows it through, built on the
Agents SDK's `StreamingResponse`.

Answers are posted proactively, after the turn that asked ended (bot/teams/app.py). In 1:1
chats the answer streams (an informative update, then the text as it is written); elsewhere
Teams does not stream, so the same response sends one message. A resumed answer whose earlier
try posted a message replaces that message (Teams' update) instead of posting a second one. Either way the final
message carries Teams citations, the AI-generated label, Teams' feedback loop and the card with
the experts' Approve / Correct actions. An answer that breaks off keeps what was shown; the
reason follows it in the same message.
"""

from __future__ import annotations

from microsoft_agents.hosting.core import TurnContext
from microsoft_agents.hosting.core.app.streaming import StreamingResponse

from bot.core.question import Answer
from bot.delivery import Note
from bot.teams.render import SEARCHING, attachment, card_for, citations


class _Response(StreamingResponse):
    """The SDK's streaming response, streaming only where wanted; where not, the same object
    sends one final message (the same citations, label and card)."""

    def __init__(self, context: TurnContext, *, stream: bool, replaces: str | None) -> None:
        self._stream_wanted = stream
        self._replaces = replaces
        super().__init__(context)
        if replaces is not None:
            self._stream_id = replaces  # the final message updates it

    def _should_update_final_activity(self) -> bool:
        return self._replaces is not None or bool(super()._should_update_final_activity())

    def _set_defaults(self, context: TurnContext) -> None:
        super()._set_defaults(context)
        if not self._stream_wanted:
            self._is_streaming_channel = False

    def replace_text(self, text: str) -> None:
        """Make the final message's text `text`, whatever was streamed before it: Teams shows the
        final message in place of the streamed one."""
        self._message = text

    @property
    def message_id(self) -> str | None:
        """The id of the message the answer ends in (the stream's id while streaming)."""
        return self._stream_id


class TeamsAnswer:
    """One answer in the conversation of the turn that asked for it."""

    interval_s = 0.0  # every delta as written: the SDK batches its stream updates itself

    def __init__(
        self,
        context: TurnContext,
        *,
        stream: bool,
        replaces: str | None = None,
        note: Note | None = None,
    ) -> None:
        """`stream`: stream where Teams can (1:1 chats); else one message at the end.
        `replaces`: the message an earlier try posted, which the final message updates.
        `note`: told the id of the message the answer is shown in, once known."""
        self.response = _Response(context, stream=stream and replaces is None, replaces=replaces)
        self.note = note
        self.noted = replaces is not None

    async def _note(self) -> None:
        message_id = self.response.message_id
        if self.note is not None and message_id and not self.noted:
            self.noted = True
            await self.note(message_id)

    @property
    def streamed(self) -> bool:
        return self.response.is_streaming_channel

    def searching(self) -> None:
        """Say the documents are being searched (streamed chats; elsewhere Teams shows typing)."""
        self.response.queue_informative_update(SEARCHING)

    async def delta(self, text: str) -> None:
        self.response.queue_text_chunk(text)
        await self._note()

    async def finished(self, answer: Answer, unsent: str) -> list[str]:
        response = self.response
        if unsent:
            response.queue_text_chunk(unsent)
        if response.get_message().strip() != answer.text.strip():
            response.replace_text(answer.text)  # the core replaced a broken output
        response.set_citations(citations(answer))
        response.set_attachments([attachment(card_for(answer))])
        response.set_feedback_loop(True)
        response.set_generated_by_ai_label(True)
        await response.end_stream()
        await self._note()
        return [response.message_id] if response.message_id else []

    async def failed(self, text: str | None, unsent: str) -> None:
        if text is None:
            return  # the server is stopping: the turn goes with it
        shown = self.response.get_message() + unsent
        self.response.queue_text_chunk(unsent + ("\n\n" if shown else "") + text)
        await self.response.end_stream()
