"""The Slack app: slack-bolt's AsyncApp and its listeners. Each turns a Slack event into a call
of the core or of the feedback and admin jobs, and says what happened in Slack's words.

Listeners:

- `app_mention` (in channels), `message` (in DMs, and any reply in a thread where the bot
  already answered: a follow-up, with the thread's earlier turns): a question. Bots, the bot
  itself, edits and other subtypes, and channels outside `slack.channels` are ignored. While it
  is answered the thread shows a status with loading messages (`bot/slack/assistant.py`), or 👀
  on the question where Slack refuses the status; the answer goes through `bot.delivery.deliver`
  into the thread (`bot/slack/delivery.py`: streamed, or posted and updated), ending with its
  sources, the expert-approved mark of a curated answer, and Slack's feedback buttons. A thread
  reply starting with `slack.correction_prefix` is a correction instead; deleting that reply
  withdraws it.
- `app_home_opened`: the Messages tab (the agent conversation) gets its suggested prompts; the
  Home tab its view (`bot/slack/home.py`). `app_context_changed` and the context on DMs: the
  channel a person looks at, which may rank their DM answers' passages, never widen them.
- `reaction_added` / `reaction_removed`: 👍 / 👎 on an answer are ratings; the approval reaction
  counts from experts only.
- The feedback buttons (`block_actions`): a person's last vote counts, thanked in an ephemeral
  message; the plain 👍 / 👎 buttons of older answers too.
- The Home tab's buttons: an expert's Approve / Correct, an admin's Sync / Retrain / Rollback;
  the role is checked again on every click.
- The "Correct this answer" message shortcut and its modal (`view_submission`): a correction,
  which counts from experts only (others' are comments).
- `/expertbot`: `ask`, `status`, `help` for anyone; `sync`, `retrain`, `rollback` for admins only.

Exactly once: every Events API delivery is claimed by `event_id` in the shared database before
bolt acks it (bolt itself does not de-duplicate retries), and a question is stored with its
claim; bot/intake.py answers it, here or, should this process die, on another replica. Who is
an expert or an admin: `bot/slack/permissions.py`, by id or user group
(`bot/slack/directory.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError, SlackRequestError

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
from bot.claims import EventClaims, Pending
from bot.core.feedback import Feedback
from bot.core.question import Question, Turn, Where, WhereKind
from bot.core.runtime import Core
from bot.delivery import Note, Started, deliver
from bot.intake import Intake
from bot.ops import ADMIN_JOBS, JobResult, Ops, status_lines
from bot.slack import ids
from bot.slack.assistant import (
    ThreadStatus,
    Viewing,
    event_user,
    prompts_for,
    viewed_channel,
)
from bot.slack.client import error_code, make_client, post
from bot.slack.config import SlackConfig
from bot.slack.delivery import EphemeralAnswer, StreamedAnswer, UpdatedAnswer
from bot.slack.directory import Directory
from bot.slack.home import Home
from bot.slack.permissions import Permissions
from bot.slack.render import feedback_vote
from bot.slack.views import correction_view, notice_view
from training.feedback.records import AnswerRecord, RatingKind

log = structlog.get_logger("expertbot.slack")


@dataclass(frozen=True, slots=True)
class Ask:
    """A question: answered through bot/intake.py. `reply`: the asking message's ts (for 👀)
    and the workspace (whom Slack shows a stream to)."""

    question: Question
    reply: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Help:
    channel: str
    thread: str


@dataclass(frozen=True, slots=True)
class Correction:
    event: dict[str, Any]
    text: str


@dataclass(frozen=True, slots=True)
class Deleted:
    event: dict[str, Any]


PLATFORM = "slack"
PROGRESS_REACTION = "eyes"
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_SKIN_TONE = re.compile(r"::skin-tone-\d$")
_UP_REACTIONS = {"+1", "thumbsup"}
_DOWN_REACTIONS = {"-1", "thumbsdown"}
# Subtypes that are still a person writing (everything else — edits, deletions, joins, bot
# messages — is ignored).
_HUMAN_SUBTYPES = {None, "file_share", "thread_broadcast"}
_REFUSED = (SlackApiError, SlackRequestError)

LAST_VOTE = "(Your last vote on an answer is the one that counts.)"

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
        intake: Intake,
    ) -> None:
        if config.bot_token is None:
            raise ExpertbotError("Slack needs a bot token (SLACK_BOT_TOKEN)")
        self.config = config
        self.core = core
        self.ops = ops
        self.feedback = feedback
        self.claims = claims
        self.intake = intake
        intake.add(PLATFORM, self)
        self.client = make_client(config)
        self.directory = Directory(self.client, config.cache_ttl_s)
        self.permissions = Permissions(config, self.directory)
        sources = [s.source_name for s in ops.settings.knowledge.sources]
        self.status = ThreadStatus(self.client, config.cache_ttl_s, sources=sources)
        self.viewing = Viewing()
        self.home = Home(
            self.client,
            config,
            core,
            ops,
            self.permissions,
            self.directory,
            how_to_ask=help_text(config),
        )
        if config.admin_channel:
            ops.announcers.append(self.announce)
        ops.after_job.append(self._refresh_home)
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
        self._register()

    # -- wiring ------------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.app
        claimed = [self._claim]  # runs before the ack: see `_claim`
        events: dict[str, tuple[Callable[..., Awaitable[None]], list[Any]]] = {
            "app_mention": (self._on_event, claimed),
            "message": (self._on_event, claimed),
            "reaction_added": (self._on_reaction_added, claimed),
            "reaction_removed": (self._on_reaction_removed, claimed),
            # Idempotent (a view or prompts set again): no claim needed.
            "app_home_opened": (self._on_app_home_opened, []),
            "app_context_changed": (self._on_app_context_changed, []),
        }
        assert tuple(events) == ids.EVENTS, "ids.EVENTS lists what the manifest subscribes to"
        for name, (listener, middleware) in events.items():
            app.event(name, middleware=middleware)(listener)
        app.action(ids.FEEDBACK_ACTION)(self._on_button)
        app.action(ids.FEEDBACK_UP)(self._on_button)
        app.action(ids.FEEDBACK_DOWN)(self._on_button)
        app.action(ids.HOME_APPROVE)(self._on_home_review)
        app.action(ids.HOME_CORRECT)(self._on_home_review)
        app.action(re.compile(f"^{ids.HOME_JOB}_"))(self._on_home_job)
        app.shortcut(ids.CORRECT_SHORTCUT)(self._on_correct_shortcut)
        app.view(ids.CORRECTION_VIEW)(self._on_correction_submitted)
        app.command(self.config.command)(self._on_command)
        app.error(self._on_error)

    async def _claim(
        self,
        body: dict[str, Any],
        event: dict[str, Any],
        context: AsyncBoltContext,
        next: Callable[[], Awaitable[None]],
    ) -> BoltResponse | None:
        """Claim the event (the first delivery anywhere runs its listener; other copies are
        acked and dropped), storing a question with its claim: this runs before bolt acks, so
        Slack hears "200" only once the question is kept. Should the database be away, Slack
        gets a 500 and delivers the event again."""
        intent = await self._intent(event, context)
        event_id = str(body.get("event_id") or "")
        if isinstance(intent, Ask):
            key = event_id or f"{event['channel']}|{event['ts']}"
            pending = await self.claims.claim_question(
                PLATFORM, key, intent.question, intent.reply, hold=self.intake.accepting
            )
            if pending is None:
                return BoltResponse(status=200, body="")
            context["pending"] = pending
        elif event_id and not await self.claims.claim(PLATFORM, event_id):
            return BoltResponse(status=200, body="")
        context["intent"] = intent
        await next()
        return None

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.error(
            "slack.listener_failed",
            error=f"{error.__class__.__name__}: {error}",
            request_type=body.get("type"),
            exc_info=error,
        )

    # -- questions ---------------------------------------------------------------------------

    async def _on_event(self, context: AsyncBoltContext) -> None:
        """A message or mention, claimed: what `_intent` made of it."""
        intent = context.get("intent")
        if isinstance(intent, Ask):
            pending = context.get("pending")
            if isinstance(pending, Pending) and pending.held:  # answer it now
                self.intake.begin(pending)
        elif isinstance(intent, Help):
            await post(self.client, intent.channel, intent.thread, help_text(self.config))
        elif isinstance(intent, Correction):
            await self._correction_reply(intent.event, intent.text)
        elif isinstance(intent, Deleted):
            await self._on_deleted(intent.event)

    async def _intent(
        self, event: dict[str, Any], context: AsyncBoltContext
    ) -> Ask | Help | Correction | Deleted | None:
        """What a message or mention asks of the bot; None for the rest (reactions too)."""
        kind = event.get("type")
        if kind == "app_mention":
            return await self._mention_intent(event, context)
        if kind == "message":
            return await self._message_intent(event, context)
        return None

    async def _mention_intent(
        self, event: dict[str, Any], context: AsyncBoltContext
    ) -> Ask | Help | Correction | None:
        if event.get("bot_id") or event.get("subtype") not in _HUMAN_SUBTYPES:
            return None
        if not self._channel_allowed(event["channel"], None):
            return None
        text = _MENTION.sub("", event.get("text", "")).strip()
        if text.lower().startswith(self.config.correction_prefix.lower()) and event.get(
            "thread_ts"
        ):
            return Correction(event, text)
        return await self._ask(event, text, team=context.get("team_id"))

    async def _message_intent(
        self, event: dict[str, Any], context: AsyncBoltContext
    ) -> Ask | Help | Correction | Deleted | None:
        if event.get("subtype") == "message_deleted":
            return Deleted(event)
        if event.get("bot_id") or event.get("subtype") not in _HUMAN_SUBTYPES:
            return None
        user, channel = event.get("user"), event.get("channel")
        if not user or not channel or user == context.get("bot_user_id"):
            return None
        channel_type = event.get("channel_type")
        if not self._channel_allowed(channel, channel_type):
            return None
        text = event.get("text", "") or ""
        thread = event.get("thread_ts")
        bot_user = context.get("bot_user_id")
        mentioned = bool(bot_user) and f"<@{bot_user}" in text
        if mentioned and channel_type != "im":
            return None  # app_mention answers it
        if thread and text.strip().lower().startswith(self.config.correction_prefix.lower()):
            return Correction(event, _MENTION.sub("", text).strip())
        team = context.get("team_id")
        if channel_type == "im":
            self._saw_context(user, event)
            return await self._ask(event, _MENTION.sub("", text).strip(), team=team)
        if thread:
            earlier = await asyncio.to_thread(
                self.core.store.thread_answers, PLATFORM, channel, thread
            )
            if earlier:  # a follow-up in a thread we answered
                return await self._ask(event, text.strip(), team=team, earlier=earlier)
        return None

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

    async def _ask(
        self,
        event: dict[str, Any],
        text: str,
        *,
        team: str | None,
        earlier: list[AnswerRecord] | None = None,
    ) -> Ask | Help:
        """The question `event` asks, as it will be answered (here or by another replica)."""
        channel, user, ts = event["channel"], event["user"], event["ts"]
        thread = event.get("thread_ts") or ts
        if not text:
            return Help(channel, thread)
        question = await self._question(
            text,
            user,
            channel,
            thread,
            event.get("channel_type"),
            bool(event.get("thread_ts")),
            earlier=earlier,
        )
        return Ask(question, {"ts": ts, "team": team})

    # -- answering (bot/intake.py calls these, for questions claimed here or resumed) ---------

    async def answer(self, pending: Pending, note: Note, started: Started) -> bool:
        question, ts = pending.question, str(pending.reply["ts"])
        channel, thread = str(question.where.channel), str(question.where.thread)
        shown = await self.status.show(channel, thread)
        if not shown:  # no status here: 👀 on the question instead
            await self._react(channel, ts, add=True)
        if pending.messages:
            sink: StreamedAnswer | UpdatedAnswer = await self._in_place(
                channel, thread, pending.messages, note
            )
        else:
            sink = self._sink(
                channel, thread, team=pending.reply.get("team"), user=question.asker, note=note
            )
        try:
            with structlog.contextvars.bound_contextvars(platform=PLATFORM, channel=channel):
                answer = await deliver(self.core.answerer, question, sink, started=started)
        finally:
            if shown:
                await self.status.clear(channel, thread)
            if not shown or pending.resumed:  # a resumed one: an earlier try's 👀, too
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
                resumed=pending.resumed,
            )
        return answer is not None

    async def apologize(self, pending: Pending, text: str) -> None:
        channel, thread = str(pending.question.where.channel), str(pending.question.where.thread)
        if pending.messages:
            sink = await self._in_place(channel, thread, pending.messages, None)
            assert sink.ts is not None
            await self.client.chat_update(channel=channel, ts=sink.ts, text=text)
        else:
            await post(self.client, channel, thread, text)
        # An earlier try may have left either: its status, or its 👀.
        await self.status.clear(channel, thread)
        await self._react(channel, str(pending.reply["ts"]), add=False)

    async def _in_place(
        self, channel: str, thread: str, messages: Sequence[str], note: Note | None
    ) -> UpdatedAnswer:
        """Where an earlier try posted `messages`: end a stream it left open, keep its first
        message for the answer (updated in place) and delete the rest."""
        first, *others = messages
        with contextlib.suppress(*_REFUSED):  # not streaming (any more): nothing to end
            await self.client.chat_stopStream(channel=channel, ts=first)
        for ts in others:
            with contextlib.suppress(*_REFUSED):
                await self.client.chat_delete(channel=channel, ts=ts)
        sink = UpdatedAnswer(
            self.client, channel, thread, interval_s=self.config.update_interval_s, note=note
        )
        sink.ts = first
        return sink

    def _sink(
        self, channel: str, thread: str, *, team: str | None, user: str, note: Note | None
    ) -> StreamedAnswer | UpdatedAnswer:
        """Where an answer to `user` goes: streamed where configured (and Slack allows it)."""
        interval = self.config.update_interval_s
        if self.config.stream:
            return StreamedAnswer(
                self.client, channel, thread, team=team, user=user, interval_s=interval, note=note
            )
        return UpdatedAnswer(self.client, channel, thread, interval_s=interval, note=note)

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
        viewing: tuple[str, ...] = ()
        looked_at = self.viewing.channel_of(user) if kind == WhereKind.DM else None
        if looked_at:  # ranks what a DM's answer uses; its documents stay the DM's
            name = await self.directory.name_of(looked_at)
            viewing = (looked_at, name) if name else (looked_at,)
        return Question(
            text=text,
            asker=user,
            where=Where(kind=kind, channel=channel, platform=PLATFORM, thread=thread),
            history=history,
            asker_groups=await self.directory.groups_of(user),
            viewing=viewing,
        )

    # -- the agent messaging experience ------------------------------------------------------

    def _saw_context(self, user: str, event: dict[str, Any]) -> None:
        """Keep what `user` is looking at, where the event says (Slack adds the context to DMs
        and App Home visits only when the app subscribes to `app_context_changed`)."""
        if "context" in event or "app_context" in event:
            self.viewing.saw(user, viewed_channel(event))

    async def _on_app_context_changed(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        user = event_user(body, event)
        if user:
            self.viewing.saw(user, viewed_channel(event))

    async def _on_app_home_opened(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        """The Messages tab opened (the agent conversation): its suggested prompts, set with the
        channel only (a thread_ts there makes Slack drop them). The Home tab: its view."""
        user, channel = str(event.get("user") or ""), str(event.get("channel") or "")
        if not user:
            return
        self._saw_context(user, event)
        if event.get("tab") == "messages" and channel:
            await self._suggest(channel)
        elif event.get("tab") == "home":
            await self.home.opened(user)

    async def _suggest(self, channel: str) -> None:
        config = self.config
        prompts = await prompts_for(
            self.core.store, learned=config.learned_prompts, defaults=config.suggested_prompts
        )
        if not prompts:
            return  # Slack shows the manifest's prompts, if any
        try:
            await self.client.assistant_threads_setSuggestedPrompts(
                channel_id=channel, prompts=prompts, title=config.suggested_prompts_title
            )
        except _REFUSED as exc:
            log.info("slack.prompts_refused", channel=channel, error=error_code(exc))

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
        """A click on an answer's feedback buttons (or on the plain 👍 / 👎 buttons of answers
        posted before them). Slack toggles its feedback buttons and says nothing when one is
        unselected: each click is a vote, and a person's last vote replaces the earlier one."""
        await ack()
        action = body["actions"][0]
        value = str(action.get("value", ""))
        if action.get("type") == "feedback_buttons":
            vote = feedback_vote(value)
            if vote is None:
                return
            up, answer_id = vote
        else:
            up, answer_id = action["action_id"] == ids.FEEDBACK_UP, value
        kind = RatingKind.UP if up else RatingKind.DOWN
        user = body["user"]["id"]
        if not await asyncio.to_thread(self.core.store.get_answer, answer_id):
            return
        await self.feedback.rate(
            answer_id, user, kind, platform=PLATFORM, source="button", exclusive=True
        )
        channel = (body.get("channel") or {}).get("id")
        if channel:
            thanks = rating_thanks(
                up,
                f"An expert can reply `{self.config.correction_prefix} …` in the thread with the "
                "right answer.",
            )
            message = body.get("message") or {}
            await self._ephemeral(channel, user, f"{thanks} {LAST_VOTE}", message.get("thread_ts"))

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
        user = body["user"]["id"]
        await self._correct(meta["answer_id"], user, value, meta["channel"], meta.get("thread"))
        if meta.get("home"):  # corrected from the Home tab: it leaves the review list
            await self.home.publish(user)

    # -- the Home tab's buttons (every click checked again: a payload can be forged) --------

    async def _on_home_review(
        self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]
    ) -> None:
        """An expert's Approve or Correct on an answer to review."""
        await ack()
        user, action = body["user"]["id"], body["actions"][0]
        answer_id = str(action.get("value", ""))
        row = await asyncio.to_thread(self.core.store.get_answer, answer_id)
        if row is None:
            return
        if not await self.permissions.is_expert(user) or not await self.home.may_see(user, row):
            log.info("slack.home_refused", action=action.get("action_id"), user=user)
            await post(self.client, user, None, "Sorry, reviewing answers is for experts only.")
            return
        if action.get("action_id") == ids.HOME_APPROVE:
            await self.feedback.approve(answer_id, user, platform=PLATFORM, source="home")
            await self.home.publish(user)
            return
        metadata = {"answer_id": answer_id, "channel": row.channel or "", "home": True}
        view = correction_view(row.question, row.answer, json.dumps(metadata))
        await self.client.views_open(trigger_id=body["trigger_id"], view=view)

    async def _on_home_job(self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]) -> None:
        """An admin's Sync / Retrain / Rollback: the same jobs as the slash command."""
        await ack()
        user = body["user"]["id"]
        job = str(body["actions"][0].get("action_id", "")).removeprefix(f"{ids.HOME_JOB}_")
        if job not in ADMIN_JOBS:
            return
        if not await self.permissions.is_admin(user):
            log.info("slack.command_refused", command=job, user=user, via="home")
            await post(self.client, user, None, refused(job))
            return
        log.info("slack.command", command=job, user=user, via="home")

        async def report(line: str) -> None:
            await post(self.client, user, None, line)

        await report(f"Starting `{job}` …")
        await report(await run_admin_job(self.ops, job, "", trigger=f"slack:{user}", report=report))

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

    async def _refresh_home(self, _result: JobResult) -> None:
        await self.home.refresh()

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
