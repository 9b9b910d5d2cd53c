"""The Slack app: slack-bolt's AsyncApp, its listeners, and how an answer reaches the thread.

- Questions: `app_mention` in channels, `message.im` in DMs, and any reply in a thread where the
  bot already answered (a follow-up, with the thread's earlier turns). Bots, the bot itself,
  edits and other subtypes, and channels outside `slack.channels` are ignored.
- Delivery: 👀 on the question at once; the answer streams into the thread through Slack's chat
  streaming (`chat.startStream` / `appendStream` / `stopStream`) or, where that is refused,
  `chat.postMessage` plus throttled `chat.update`. The final message carries the sources, the
  expert-approved mark of a curated answer, and 👍 / 👎 buttons. Any failure ends in a short
  apology in the thread, with the cause logged.
- Exactly once: every Events API delivery is claimed by `event_id` in the shared database
  before a listener runs (bolt itself does not de-duplicate retries).
- Feedback: reactions and buttons are ratings; the approval reaction and corrections (a
  thread reply with the prefix, or the "Correct this answer" shortcut) count from experts.
- `/expertbot`: ask, status, help for anyone; sync, retrain, rollback for admins only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from base.errors import ExpertbotError, OverloadedError, QueryError
from bot.chat import (
    APOLOGY,
    BUSY,
    NOT_AN_ANSWER,
    Announcement,
    cannot_answer,
    correction_thanks,
    parse_command,
    rating_thanks,
    refused,
    run_admin_job,
    thread_history,
)
from bot.claims import EventClaims
from bot.core.feedback import Feedback
from bot.core.question import Answer, Question, Turn, Where, WhereKind
from bot.core.runtime import Core
from bot.ops import ADMIN_JOBS, JobResult, Ops, status_lines
from bot.slack import ids
from bot.slack.config import SlackConfig
from bot.slack.render import (
    MESSAGE_TEXT_LIMIT,
    answer_messages,
    footer_blocks,
    progress_text,
)
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
# Message events say what kind of conversation they come from; mentions need a lookup.
_KIND_OF_CHANNEL_TYPE = {
    "im": WhereKind.DM,
    "mpim": WhereKind.PRIVATE,
    "group": WhereKind.PRIVATE,
    "channel": WhereKind.PUBLIC,
}

HELP = (
    "*Ask me* by mentioning me in a channel, in a DM, or by replying in a thread I answered.\n"
    "*Experts:* react with :{approval}: to approve an answer, or reply `{prefix} <the right "
    "answer>` in its thread (or use the message shortcut *Correct this answer*).\n"
    "*{command}* `ask <question>` · `status` · `help` — admins also: `sync` · `retrain` · "
    "`rollback [version]`"
)


@dataclass
class _Directory:
    """Channel kinds and user-group members, looked up through the Web API and cached."""

    client: AsyncWebClient
    ttl: float
    _kinds: dict[str, tuple[float, WhereKind]] = field(default_factory=dict)
    _groups: tuple[float, dict[str, tuple[str, frozenset[str]]]] | None = None

    async def where_kind(self, channel: str, channel_type: str | None) -> WhereKind:
        if channel_type in _KIND_OF_CHANNEL_TYPE:
            return _KIND_OF_CHANNEL_TYPE[channel_type]
        cached = self._kinds.get(channel)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        try:
            info = (await self.client.conversations_info(channel=channel))["channel"]
        except SlackApiError as exc:
            # Unknown means public: the most restrictive choice of documents.
            log.warning("slack.channel_info_failed", channel=channel, error=_error(exc))
            return WhereKind.PUBLIC
        if info.get("is_im"):
            kind = WhereKind.DM
        elif info.get("is_private") or info.get("is_mpim") or info.get("is_group"):
            kind = WhereKind.PRIVATE
        else:
            kind = WhereKind.PUBLIC
        self._kinds[channel] = (time.monotonic(), kind)
        return kind

    async def groups_of(self, user: str) -> frozenset[str]:
        """The ids and handles of the user groups `user` belongs to."""
        groups = await self._all_groups()
        found: set[str] = set()
        for group_id, (handle, members) in groups.items():
            if user in members:
                found.update({group_id, handle} - {""})
        return frozenset(found)

    async def _all_groups(self) -> dict[str, tuple[str, frozenset[str]]]:
        if self._groups and time.monotonic() - self._groups[0] < self.ttl:
            return self._groups[1]
        try:
            response = await self.client.usergroups_list(include_users=True)
            groups = {
                str(g["id"]): (str(g.get("handle", "")), frozenset(g.get("users") or ()))
                for g in response.get("usergroups") or []
            }
        except SlackApiError as exc:
            log.warning("slack.usergroups_failed", error=_error(exc))
            groups = self._groups[1] if self._groups else {}
        self._groups = (time.monotonic(), groups)
        return groups


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
        self.client = AsyncWebClient(
            token=config.bot_token.get_secret_value(),
            base_url=config.api_url or AsyncWebClient.BASE_URL,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(max_retry_count=config.rate_limit_retries),
                AsyncRateLimitErrorRetryHandler(max_retry_count=config.rate_limit_retries),
                AsyncServerErrorRetryHandler(max_retry_count=config.rate_limit_retries),
            ],
        )
        self.directory = _Directory(self.client, config.cache_ttl_s)
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
            await self._post(channel, thread, help_text(self.config))
            return
        await self._react(channel, ts, add=True)
        try:
            question = await self._question(
                text,
                user,
                channel,
                thread,
                event.get("channel_type"),
                bool(event.get("thread_ts")),
                earlier=earlier,
            )
            await self.deliver(question, channel=channel, thread=thread, team=team)
        except OverloadedError as exc:
            log.warning("slack.overloaded", channel=channel, error=str(exc))
            await self._post(channel, thread, BUSY)
        except QueryError as exc:  # the asker can fix it: say what is wrong
            await self._post(channel, thread, cannot_answer(exc))
        except Exception as exc:
            log.error(
                "slack.answer_failed",
                channel=channel,
                error=f"{exc.__class__.__name__}: {exc}",
                exc_info=exc,
            )
            await self._post(channel, thread, APOLOGY)
        finally:
            await self._react(channel, ts, add=False)

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

    async def deliver(
        self, question: Question, *, channel: str, thread: str, team: str | None
    ) -> Answer:
        """Answer `question` into the thread: streamed where Slack allows it, else posted and
        updated. Returns the Answer once its messages are final and linked to it."""
        stream = self.core.answerer.stream(question)
        if self.config.stream:
            delivery: _Delivery = _Streamed(self, channel, thread, team, question.asker)
        else:
            delivery = _Updated(self, channel, thread)
        answer: Answer | None = None
        try:
            async for item in stream:
                if isinstance(item, Answer):
                    answer = item
                else:
                    delivery = await delivery.add(item)
        except BaseException:
            await delivery.abort()  # never leave a stream open: the apology follows
            raise
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        assert answer is not None
        message_ids = await delivery.finish(answer)
        for message_id in message_ids:
            await asyncio.to_thread(
                self.core.store.link_message,
                platform=PLATFORM,
                conversation=channel,
                message_id=message_id,
                answer_id=answer.id,
                thread=thread,
            )
        log.info(
            "slack.answered",
            answer_id=answer.id,
            channel=channel,
            abstained=answer.abstained,
            curated=answer.curated,
            messages=len(message_ids),
            mode=delivery.mode,
        )
        return answer

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
            if not await self.is_expert(user):
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
            await self._post(
                channel, thread, "A correction needs the right answer after the prefix."
            )
            return
        await self._correct(answers[-1].id, user, body, channel, thread)

    async def _correct(
        self, answer_id: str, user: str, text: str, channel: str, thread: str | None
    ) -> None:
        expert = await self.is_expert(user)
        await self.feedback.correct(answer_id, user, text, platform=PLATFORM, expert=expert)
        reply = correction_thanks(expert, f"<@{user}>")
        if thread:
            await self._post(channel, thread, reply)

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
            view = _notice_view(NOT_AN_ANSWER)
        else:
            metadata = {
                "answer_id": answer_id,
                "channel": channel,
                "thread": message.get("thread_ts") or message.get("ts"),
            }
            view = _correction_view(row.question, row.answer, json.dumps(metadata))
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
        if sub in ADMIN_JOBS and not await self.is_admin(user):
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
        try:
            question = await self._question(text, user, channel, None, None, False)
            answer = await self.core.answerer.answer(question)
        except OverloadedError:
            await respond(text=BUSY, response_type="ephemeral")
            return
        except Exception as exc:
            log.error("slack.ask_failed", error=f"{exc.__class__.__name__}: {exc}", exc_info=exc)
            await respond(text=APOLOGY, response_type="ephemeral")
            return
        for message in answer_messages(answer):
            await respond(text=message.text, blocks=message.blocks, response_type="ephemeral")

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

    # -- who may do what ---------------------------------------------------------------------

    async def is_expert(self, user: str) -> bool:
        return user in self.config.experts or bool(
            self.config.expert_groups
            and set(self.config.expert_groups) & await self.directory.groups_of(user)
        )

    async def is_admin(self, user: str) -> bool:
        return user in self.config.admins or bool(
            self.config.admin_groups
            and set(self.config.admin_groups) & await self.directory.groups_of(user)
        )

    # -- small Web API helpers ---------------------------------------------------------------

    async def _post(self, channel: str, thread: str | None, text: str, **kwargs: Any) -> str | None:
        try:
            response = await self.client.chat_postMessage(
                channel=channel, thread_ts=thread, text=text, **kwargs
            )
            return str(response["ts"])
        except SlackApiError as exc:
            log.error("slack.post_failed", channel=channel, error=_error(exc))
            return None

    async def _ephemeral(self, channel: str, user: str, text: str, thread: str | None) -> None:
        try:
            await self.client.chat_postEphemeral(
                channel=channel, user=user, text=text, thread_ts=thread
            )
        except SlackApiError as exc:
            log.warning("slack.ephemeral_failed", channel=channel, error=_error(exc))

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
            log.info("slack.progress_reaction_failed", error=_error(exc))


def _quiet_token_warning(record: logging.LogRecord) -> bool:
    return "`token` will be unused" not in record.getMessage()


def help_text(config: SlackConfig) -> str:
    return HELP.format(
        approval=config.approval_reaction, prefix=config.correction_prefix, command=config.command
    )


# -- delivering an answer ----------------------------------------------------------------------


class _Delivery:
    mode = ""

    async def add(self, delta: str) -> _Delivery:
        raise NotImplementedError

    async def finish(self, answer: Answer) -> list[str]:
        raise NotImplementedError

    async def abort(self) -> None:
        """The answer failed midway: end what was started (best effort)."""


class _Updated(_Delivery):
    """chat.postMessage at the first text, chat.update at most every `update_interval_s`, then
    the final message(s) with sources and buttons."""

    mode = "update"

    def __init__(self, bot: SlackBot, channel: str, thread: str, text: str = "") -> None:
        self.bot, self.channel, self.thread = bot, channel, thread
        self.text = text
        self.ts: str | None = None
        self.updated = 0.0

    async def add(self, delta: str) -> _Delivery:
        self.text += delta
        now = time.monotonic()
        if self.ts is None:
            response = await self.bot.client.chat_postMessage(
                channel=self.channel, thread_ts=self.thread, text=progress_text(self.text)
            )
            self.ts, self.updated = str(response["ts"]), now
        elif now - self.updated >= self.bot.config.update_interval_s:
            self.updated = now
            await self.bot.client.chat_update(
                channel=self.channel, ts=self.ts, text=progress_text(self.text)
            )
        return self

    async def finish(self, answer: Answer) -> list[str]:
        messages = answer_messages(answer)
        posted: list[str] = []
        for i, message in enumerate(messages):
            if i == 0 and self.ts is not None:
                await self.bot.client.chat_update(
                    channel=self.channel, ts=self.ts, text=message.text, blocks=message.blocks
                )
                posted.append(self.ts)
            else:
                response = await self.bot.client.chat_postMessage(
                    channel=self.channel,
                    thread_ts=self.thread,
                    text=message.text,
                    blocks=message.blocks,
                )
                posted.append(str(response["ts"]))
        return posted


class _Streamed(_Delivery):
    """Slack's chat streaming: text appended as it is written (at most every
    `update_interval_s`), the footer blocks given to `chat.stopStream`. Where Slack refuses to
    start a stream, the same answer continues as an `_Updated` delivery."""

    mode = "stream"

    def __init__(
        self, bot: SlackBot, channel: str, thread: str, team: str | None, user: str
    ) -> None:
        self.bot, self.channel, self.thread, self.team, self.user = bot, channel, thread, team, user
        self.pending = ""
        self.sent = 0  # characters of markdown in the current streamed message
        self.ts: list[str] = []  # every streamed message (a long answer continues in a new one)
        self.stream: Any = None
        self.flushed = 0.0

    async def _open(self) -> None:
        self.stream = await self.bot.client.chat_stream(
            channel=self.channel,
            thread_ts=self.thread,
            recipient_team_id=self.team,
            recipient_user_id=self.user,
            buffer_size=1,  # we batch ourselves, by time
        )
        self.sent = 0

    async def add(self, delta: str) -> _Delivery:
        self.pending += delta
        now = time.monotonic()
        if self.stream is not None and now - self.flushed < self.bot.config.update_interval_s:
            return self
        try:
            await self._flush()
        except (SlackApiError, SlackRequestError) as exc:
            if self.ts:
                raise
            log.info("slack.streaming_refused", channel=self.channel, error=_error(exc))
            fallback = _Updated(self.bot, self.channel, self.thread)
            return await fallback.add(self.pending)
        self.flushed = now
        return self

    async def _make_room(self) -> None:
        """Open the stream, or go on in a new message where this one would pass Slack's limit."""
        if self.stream is None:
            await self._open()
        elif self.sent and self.sent + len(self.pending) > MESSAGE_TEXT_LIMIT:
            await self.stream.stop()
            await self._open()

    def _note_message(self) -> None:
        if self.stream.ts and str(self.stream.ts) not in self.ts:
            self.ts.append(str(self.stream.ts))

    async def _flush(self) -> None:
        await self._make_room()
        if self.pending:
            # Cleared only once sent: where Slack refuses, the fallback gets all of it.
            await self.stream.append(markdown_text=self.pending)
            self.sent += len(self.pending)
            self.pending = ""
            self._note_message()

    async def abort(self) -> None:
        if self.stream is not None and self.ts:
            with contextlib.suppress(SlackApiError, SlackRequestError):
                await self.stream.stop(markdown_text=self.pending + " …")

    async def finish(self, answer: Answer) -> list[str]:
        try:
            await self._make_room()
            await self.stream.stop(markdown_text=self.pending or None, blocks=footer_blocks(answer))
        except (SlackApiError, SlackRequestError) as exc:
            if self.ts:
                raise
            log.info("slack.streaming_refused", channel=self.channel, error=_error(exc))
            return await _Updated(self.bot, self.channel, self.thread).finish(answer)
        self._note_message()
        return self.ts


def _correction_view(question: str, answer: str, metadata: str) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": ids.CORRECTION_VIEW,
        "private_metadata": metadata,
        "title": {"type": "plain_text", "text": "Correct this answer"},
        "submit": {"type": "plain_text", "text": "Save correction"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*Question:* {question[:2900]}"},
            },
            {
                "type": "input",
                "block_id": ids.CORRECTION_BLOCK,
                "label": {"type": "plain_text", "text": "The right answer"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": ids.CORRECTION_INPUT,
                    "multiline": True,
                    "initial_value": answer[:3000],
                    "max_length": 3000,
                },
            },
        ],
    }


def _notice_view(text: str) -> dict[str, Any]:
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Correct this answer"},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [{"type": "section", "text": {"type": "plain_text", "text": text}}],
    }


def _error(exc: SlackApiError | SlackRequestError) -> str:
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            return str(response.get("error") or response.status_code)
        except Exception:
            pass
    return exc.__class__.__name__
