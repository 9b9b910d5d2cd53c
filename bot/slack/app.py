"""The Slack app: slack-bolt's AsyncApp and its listeners. Each turns a Slack event into a call
of the core or of the feedback and admin jobs, and says what happened in Slack's words.

Listeners:

- `app_mention` (in channels), `message` (in DMs, and any reply in a thread where the bot
  already answered: a follow-up, with the thread's earlier turns): a question. Bots, the bot
  itself, edits and other subtypes, and channels outside `slack.channels` are ignored. 👀 on the
  question while it is answered; the answer goes through `bot.delivery.deliver` into the thread
  (`bot/slack/delivery.py`: streamed, or posted and updated), ending with its sources, the
  expert-approved mark of a curated answer, and 👍 / 👎 buttons. A thread reply starting with
  `slack.correction_prefix` is a correction instead; deleting that reply withdraws it.
- `reaction_added` / `reaction_removed`: 👍 / 👎 on an answer are ratings; the approval reaction
  counts from experts only.
- The 👍 / 👎 buttons (`block_actions`): one vote per person, thanked in an ephemeral message.
- The "Correct this answer" message shortcut and its modal (`view_submission`): a correction,
  which counts from experts only (others' are comments).
- `/expertbot`: `ask`, `status`, `help` for anyone; `sync`, `retrain`, `rollback` for admins only.

Exactly once: every Events API delivery is claimed by `event_id` in the shared database before
a listener runs (bolt itself does not de-duplicate retries). Who is an expert or an admin:
`bot/slack/permissions.py`, by id or user group (`bot/slack/directory.py`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from base.errors import ExpertbotError
from bot.chat import (
    NOT_AN_ANSWER,
    Announcement,
    correction_thanks,
    parse_command,
    rating_thanks,
    refused,
    run_admin_job,
    thread_history,
)
from bot.claims import EventClaims
from bot.core.feedback import Feedback
from bot.core.question import Question, Turn, Where
from bot.core.runtime import Core
from bot.delivery import deliver
from bot.ops import ADMIN_JOBS, JobResult, Ops, status_lines
from bot.slack import ids
from bot.slack.client import error_code, make_client, post
from bot.slack.config import SlackConfig
from bot.slack.delivery import EphemeralAnswer, StreamedAnswer, UpdatedAnswer
from bot.slack.directory import Directory
from bot.slack.permissions import Permissions
from bot.slack.views import correction_view, notice_view
from training.feedback.records import AnswerRecord, RatingKind

log = structlog.get_logger("expertbot.slack")

_EventListener = Callable[[dict[str, Any], dict[str, Any]], Awaitable[None]]

PLATFORM = "slack"
PROGRESS_REACTION = "eyes"
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_SKIN_TONE = re.compile(r"::skin-tone-\d$")
_UP_REACTIONS = {"+1", "thumbsup"}
_DOWN_REACTIONS = {"-1", "thumbsdown"}
# Subtypes that are still a person writing (everything else — edits, deletions, joins, bot
# messages — is ignored).
_HUMAN_SUBTYPES = {None, "file_share", "thread_broadcast"}

HELP = (
    "*Ask me* by mentioning me in a channel, in a DM, or by replying in a thread I answered.\n"
    "*Experts:* react with :{approval}: to approve an answer, or reply `{prefix} <the right "
    "answer>` in its thread (or use the message shortcut *Correct this answer*).\n"
    "*{command}* `ask <question>` · `status` · `help` — admins also: `sync` · `retrain` · "
    "`rollback [version]`"
)


class SlackBot:
    """The bolt app with every listener; served over HTTP (`handle`) or Socket Mode."""

    def __init__(
        self,
        config: SlackConfig,
        core: Core,
        ops: Ops,
        feedback: Feedback,
        claims: EventClaims,
    ) -> None:
        if config.bot_token is None:
            raise ExpertbotError("Slack needs a bot token (SLACK_BOT_TOKEN)")
        self.config = config
        self.core = core
        self.ops = ops
        self.feedback = feedback
        self.claims = claims
        self.client = make_client(config)
        self.directory = Directory(self.client, config.cache_ttl_s)
        self.permissions = Permissions(config, self.directory)
        if config.admin_channel:
            ops.announcers.append(self.announce)
        # Bolt reads $SLACK_BOT_TOKEN itself and warns that our client (which has it) wins.
        logging.getLogger("slack_bolt.AsyncApp").addFilter(_quiet_token_warning)
        self.app = AsyncApp(
            client=self.client,
            signing_secret=(
                config.signing_secret.get_secret_value() if config.signing_secret else None
            ),
            request_verification_enabled=config.signing_secret is not None,
            process_before_response=False,
            raise_error_for_unhandled_request=False,
        )
        self.tasks: set[asyncio.Task[Any]] = set()
        self._register()

    # -- wiring ------------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.app
        app.event("app_mention")(self._once(self._on_mention))
        app.event("message")(self._once(self._on_message))
        app.event("reaction_added")(self._once(self._on_reaction_added))
        app.event("reaction_removed")(self._once(self._on_reaction_removed))
        app.action(ids.FEEDBACK_UP)(self._on_button)
        app.action(ids.FEEDBACK_DOWN)(self._on_button)
        app.shortcut(ids.CORRECT_SHORTCUT)(self._on_correct_shortcut)
        app.view(ids.CORRECTION_VIEW)(self._on_correction_submitted)
        app.command(self.config.command)(self._on_command)
        app.error(self._on_error)

    def _once(self, listener: _EventListener) -> Callable[..., Awaitable[None]]:
        """Run `listener` for the first delivery of an event only (anywhere: the claim is a row
        in the shared database). Bolt has acked by then, so the claim costs the ack nothing."""

        async def claimed(
            event: dict[str, Any], context: dict[str, Any], body: dict[str, Any]
        ) -> None:
            event_id = body.get("event_id")
            if event_id and not await self.claims.claim(PLATFORM, str(event_id)):
                return
            await listener(event, context)

        claimed.__name__ = listener.__name__
        return claimed

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.error(
            "slack.listener_failed",
            error=f"{error.__class__.__name__}: {error}",
            request_type=body.get("type"),
            exc_info=error,
        )

    # -- questions ---------------------------------------------------------------------------

    async def _on_mention(self, event: dict[str, Any], context: dict[str, Any]) -> None:
        if event.get("bot_id") or event.get("subtype") not in _HUMAN_SUBTYPES:
            return
        if not self._channel_allowed(event["channel"], None):
            return
        text = _MENTION.sub("", event.get("text", "")).strip()
        if text.lower().startswith(self.config.correction_prefix.lower()) and event.get(
            "thread_ts"
        ):
            await self._correction_reply(event, text)
            return
        await self._answer_event(event, text, team=context.get("team_id"))

    async def _on_message(self, event: dict[str, Any], context: dict[str, Any]) -> None:
        if event.get("subtype") == "message_deleted":
            await self._on_deleted(event)
            return
        if event.get("bot_id") or event.get("subtype") not in _HUMAN_SUBTYPES:
            return
        user, channel = event.get("user"), event.get("channel")
        if not user or not channel or user == context.get("bot_user_id"):
            return
        channel_type = event.get("channel_type")
        if not self._channel_allowed(channel, channel_type):
            return
        text = event.get("text", "") or ""
        thread = event.get("thread_ts")
        bot_user = context.get("bot_user_id")
        mentioned = bool(bot_user) and f"<@{bot_user}" in text
        if mentioned and channel_type != "im":
            return  # app_mention answers it
        if thread and text.strip().lower().startswith(self.config.correction_prefix.lower()):
            await self._correction_reply(event, _MENTION.sub("", text).strip())
            return
        if channel_type == "im":
            await self._answer_event(
                event, _MENTION.sub("", text).strip(), team=context.get("team_id")
            )
            return
        if thread:
            earlier = await asyncio.to_thread(
                self.core.store.thread_answers, PLATFORM, channel, thread
            )
            if earlier:  # a follow-up in a thread we answered
                await self._answer_event(
                    event, text.strip(), team=context.get("team_id"), earlier=earlier
                )

    async def _on_deleted(self, event: dict[str, Any]) -> None:
        """A deleted message: if it held a correction, the correction is withdrawn."""
        previous = event.get("previous_message") or {}
        ts, channel = previous.get("ts") or event.get("deleted_ts"), event.get("channel")
        if ts and channel:
            await self.feedback.withdraw_correction(PLATFORM, str(ts), conversation=channel)

    def _channel_allowed(self, channel: str, channel_type: str | None) -> bool:
        if channel_type == "im" or channel.startswith("D") or not self.config.channels:
            return True
        return channel in self.config.channels

    async def _answer_event(
        self,
        event: dict[str, Any],
        text: str,
        *,
        team: str | None,
        earlier: list[AnswerRecord] | None = None,
    ) -> None:
        channel, user, ts = event["channel"], event["user"], event["ts"]
        thread = event.get("thread_ts") or ts
        if not text:
            await post(self.client, channel, thread, help_text(self.config))
            return
        await self._react(channel, ts, add=True)
        sink = self._sink(channel, thread, team=team, user=user)
        question = self._question(
            text,
            user,
            channel,
            thread,
            event.get("channel_type"),
            bool(event.get("thread_ts")),
            earlier=earlier,
        )
        try:
            with structlog.contextvars.bound_contextvars(platform=PLATFORM, channel=channel):
                answer = await deliver(self.core.answerer, question, sink)
        finally:
            await self._react(channel, ts, add=False)
        if answer is not None:
            log.info(
                "slack.answered",
                answer_id=answer.id,
                channel=channel,
                abstained=answer.abstained,
                curated=answer.curated,
                messages=len(sink.posted),
                mode=sink.mode,
            )

    def _sink(
        self, channel: str, thread: str, *, team: str | None, user: str
    ) -> StreamedAnswer | UpdatedAnswer:
        """Where an answer to `user` goes: streamed where configured (and Slack allows it)."""
        interval = self.config.update_interval_s
        if self.config.stream:
            return StreamedAnswer(
                self.client, channel, thread, team=team, user=user, interval_s=interval
            )
        return UpdatedAnswer(self.client, channel, thread, interval_s=interval)

    async def _question(
        self,
        text: str,
        user: str,
        channel: str,
        thread: str | None,
        channel_type: str | None,
        in_thread: bool,
        *,
        earlier: list[AnswerRecord] | None = None,
    ) -> Question:
        """`earlier`: the thread's answers, when the caller has already read them."""
        kind = await self.directory.where_kind(channel, channel_type)
        history: tuple[Turn, ...] = ()
        if in_thread and thread:
            if earlier is None:
                earlier = await asyncio.to_thread(
                    self.core.store.thread_answers, PLATFORM, channel, thread
                )
            history = thread_history(earlier)
        return Question(
            text=text,
            asker=user,
            where=Where(kind=kind, channel=channel, platform=PLATFORM, thread=thread),
            history=history,
            asker_groups=await self.directory.groups_of(user),
        )

    # -- feedback ----------------------------------------------------------------------------

    async def _on_reaction_added(self, event: dict[str, Any], context: dict[str, Any]) -> None:
        await self._reaction(event, context, added=True)

    async def _on_reaction_removed(self, event: dict[str, Any], context: dict[str, Any]) -> None:
        await self._reaction(event, context, added=False)

    async def _reaction(
        self, event: dict[str, Any], context: dict[str, Any], *, added: bool
    ) -> None:
        item, user = event.get("item") or {}, event.get("user")
        if item.get("type") != "message" or not user or user == context.get("bot_user_id"):
            return
        reaction = _SKIN_TONE.sub("", event.get("reaction", ""))
        if reaction in _UP_REACTIONS:
            kind = RatingKind.UP
        elif reaction in _DOWN_REACTIONS:
            kind = RatingKind.DOWN
        elif reaction == self.config.approval_reaction:
            kind = RatingKind.APPROVED
        else:
            return
        answer_id = await asyncio.to_thread(
            self.core.store.answer_for_message, PLATFORM, item["channel"], item["ts"]
        )
        if answer_id is None:
            return  # not one of our answers
        if kind == RatingKind.APPROVED:
            if not await self.permissions.is_expert(user):
                log.info("slack.approval_ignored", answer_id=answer_id, reason="not an expert")
                return
            if added:
                await self.feedback.approve(answer_id, user, platform=PLATFORM, source="reaction")
            else:
                await self.feedback.withdraw_approval(answer_id, user)
        elif added:
            await self.feedback.rate(answer_id, user, kind, platform=PLATFORM, source="reaction")
        else:
            await self.feedback.retract(answer_id, user, kind)

    async def _on_button(self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()
        action = body["actions"][0]
        kind = RatingKind.UP if action["action_id"] == ids.FEEDBACK_UP else RatingKind.DOWN
        user = body["user"]["id"]
        answer_id = str(action.get("value", ""))
        if not await asyncio.to_thread(self.core.store.get_answer, answer_id):
            return
        await self.feedback.rate(
            answer_id, user, kind, platform=PLATFORM, source="button", exclusive=True
        )
        channel = (body.get("channel") or {}).get("id")
        if channel:
            thanks = rating_thanks(
                kind == RatingKind.UP,
                f"An expert can reply `{self.config.correction_prefix} …` in the thread with the "
                "right answer.",
            )
            message = body.get("message") or {}
            await self._ephemeral(channel, user, thanks, message.get("thread_ts"))

    async def _correction_reply(self, event: dict[str, Any], text: str) -> None:
        channel, thread, user = event["channel"], event["thread_ts"], event["user"]
        answers = await asyncio.to_thread(self.core.store.thread_answers, PLATFORM, channel, thread)
        if not answers:
            return  # a thread without our answers: not ours to take
        body = text[len(self.config.correction_prefix) :].strip()
        if not body:
            await post(
                self.client,
                channel,
                thread,
                "A correction needs the right answer after the prefix.",
            )
            return
        await self._correct(answers[-1].id, user, body, channel, thread, message_id=event["ts"])

    async def _correct(
        self,
        answer_id: str,
        user: str,
        text: str,
        channel: str,
        thread: str | None,
        *,
        message_id: str | None = None,
    ) -> None:
        expert = await self.permissions.is_expert(user)
        await self.feedback.correct(
            answer_id, user, text, platform=PLATFORM, expert=expert, message_id=message_id
        )
        reply = correction_thanks(expert, f"<@{user}>")
        if thread:
            await post(self.client, channel, thread, reply)

    async def _on_correct_shortcut(
        self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]
    ) -> None:
        await ack()
        message, channel = body.get("message") or {}, (body.get("channel") or {}).get("id", "")
        answer_id = await asyncio.to_thread(
            self.core.store.answer_for_message, PLATFORM, channel, message.get("ts", "")
        )
        row = await asyncio.to_thread(self.core.store.get_answer, answer_id) if answer_id else None
        if row is None:
            view = notice_view(NOT_AN_ANSWER)
        else:
            metadata = {
                "answer_id": answer_id,
                "channel": channel,
                "thread": message.get("thread_ts") or message.get("ts"),
            }
            view = correction_view(row.question, row.answer, json.dumps(metadata))
        await self.client.views_open(trigger_id=body["trigger_id"], view=view)

    async def _on_correction_submitted(
        self, ack: Callable[..., Awaitable[None]], body: dict[str, Any], view: dict[str, Any]
    ) -> None:
        value = (
            view.get("state", {})
            .get("values", {})
            .get(ids.CORRECTION_BLOCK, {})
            .get(ids.CORRECTION_INPUT, {})
            .get("value")
            or ""
        ).strip()
        if not value:
            await ack(
                response_action="errors", errors={ids.CORRECTION_BLOCK: "Write the right answer."}
            )
            return
        await ack()
        meta = json.loads(view.get("private_metadata") or "{}")
        await self._correct(
            meta["answer_id"], body["user"]["id"], value, meta["channel"], meta.get("thread")
        )

    # -- the slash command -------------------------------------------------------------------

    async def _on_command(
        self,
        ack: Callable[..., Awaitable[None]],
        command: dict[str, Any],
        respond: Callable[..., Awaitable[Any]],
    ) -> None:
        sub, rest = parse_command(command.get("text") or "")
        user = command["user_id"]
        if sub in ADMIN_JOBS and not await self.permissions.is_admin(user):
            await ack(refused(sub))
            log.info("slack.command_refused", command=sub, user=user)
            return
        if sub == "ask" and rest:
            await ack(f"Looking into: {rest[:200]}")
            await self._ask_command(rest, command, respond)
        elif sub == "status":
            await ack()
            status = await self.ops.status()
            await respond(text="\n".join(status_lines(status)), response_type="ephemeral")
        elif sub in ADMIN_JOBS:
            await ack(f"Starting `{sub}`{' ' + rest if rest else ''} …")
            log.info("slack.command", command=sub, user=user)
            await self._run_job(sub, rest, user, respond)
        else:
            await ack(help_text(self.config))

    async def _ask_command(
        self, text: str, command: dict[str, Any], respond: Callable[..., Awaitable[Any]]
    ) -> None:
        channel, user = command["channel_id"], command["user_id"]
        question = self._question(text, user, channel, None, None, False)
        with structlog.contextvars.bound_contextvars(platform=PLATFORM, channel=channel):
            await deliver(self.core.answerer, question, EphemeralAnswer(respond))

    async def _run_job(
        self, job: str, arg: str, user: str, respond: Callable[..., Awaitable[Any]]
    ) -> None:
        async def report(line: str) -> None:
            await respond(text=line, response_type="ephemeral", replace_original=False)

        await report(
            await run_admin_job(self.ops, job, arg, trigger=f"slack:{user}", report=report)
        )

    async def announce(self, result: JobResult) -> None:
        """Post a training run's outcome to the admin channel: the summary, the before/after
        metrics table and the loss curve."""
        channel = self.config.admin_channel
        if not channel:
            return
        news = Announcement.of(result)
        text = news.headline + (f"\n```{news.table}```" if news.table else "")
        await self.client.chat_postMessage(channel=channel, text=text, unfurl_links=False)
        if news.loss_curve is not None:
            await self.client.files_upload_v2(
                channel=channel,
                file=str(news.loss_curve),
                filename=news.loss_curve.name,
                title=f"{news.version}: training loss",
            )

    # -- small Web API helpers ---------------------------------------------------------------

    async def _ephemeral(self, channel: str, user: str, text: str, thread: str | None) -> None:
        try:
            await self.client.chat_postEphemeral(
                channel=channel, user=user, text=text, thread_ts=thread
            )
        except SlackApiError as exc:
            log.warning("slack.ephemeral_failed", channel=channel, error=error_code(exc))

    async def _react(self, channel: str, ts: str, *, add: bool) -> None:
        try:
            if add:
                await self.client.reactions_add(
                    channel=channel, timestamp=ts, name=PROGRESS_REACTION
                )
            else:
                await self.client.reactions_remove(
                    channel=channel, timestamp=ts, name=PROGRESS_REACTION
                )
        except SlackApiError as exc:  # progress is a courtesy: never fail the answer for it
            log.info("slack.progress_reaction_failed", error=error_code(exc))


def _quiet_token_warning(record: logging.LogRecord) -> bool:
    return "`token` will be unused" not in record.getMessage()


def help_text(config: SlackConfig) -> str:
    return HELP.format(
        approval=config.approval_reaction, prefix=config.correction_prefix, command=config.command
    )
