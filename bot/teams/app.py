"""The Teams bot: the Microsoft 365 Agents SDK's `AgentApplication` and `CloudAdapter`, served at
`POST /api/messages` by the same aiohttp server as Slack.

Requests: the SDK validates the JWT of every request (Bot Framework / Entra, for the configured
app); anonymous requests only with `teams.anonymous`. A body that is not an activity is refused
with 400 before the SDK sees it; exactly-once per activity id, across replicas, through the
shared database (as for Slack's events). A question is stored with its claim and the turn ends
at once: the answer is posted proactively (bot/intake.py), by this replica or, should it die,
by another, so no answer runs into Teams' request limit.

Routes:

- `message`: a question, in channels and group chats when the bot is mentioned (the mention is
  removed), in 1:1 chats always. A channel is public (public documents only), a group chat
  private to itself, a 1:1 chat a DM; a follow-up carries the thread's earlier turns (in chats,
  only recent ones). The answer goes through `bot.delivery.deliver` into the same conversation
  and thread (`bot/teams/delivery.py`: streamed in 1:1 chats, else one message), ending with
  Teams citations, the AI-generated label, Teams' feedback loop and a card with the experts'
  Approve / Correct actions. The messages `status`, `sync`, `retrain`, `rollback [version]`
  are admin commands (`teams.admins`; jobs run in the background and report into the
  conversation), `help` is for anyone.
- `conversationUpdate` (members added): a welcome when the bot joins a conversation.
- `invoke` `message/submitAction`: the feedback loop's 👍 / 👎 with its comment, from anyone.
- Adaptive Card `Action.Execute` (approve, correct): count from experts (`teams.experts`, Entra
  object ids) only, with the same effects as in Slack; others' corrections are comments.

Training reports go to `teams.admin_conversation`, whose address is kept when someone writes
there.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pydantic
import structlog
from aiohttp import web
from microsoft_agents.activity import (
    Activity,
    ActivityTypes,
    AdaptiveCardInvokeResponse,
    ConversationReference,
    InvokeResponse,
)
from microsoft_agents.authentication.msal import MsalConnectionManager
from microsoft_agents.hosting.aiohttp import CloudAdapter
from microsoft_agents.hosting.core import (
    AgentApplication,
    AgentAuthConfiguration,
    ApplicationOptions,
    ClaimsIdentity,
    MemoryStorage,
    MessageFactory,
    TurnContext,
    TurnState,
)
from microsoft_agents.hosting.core.authorization import Connections

from base.database import utcnow
from bot.chat import (
    APOLOGY,
    NOT_AN_ANSWER,
    Announcement,
    correction_thanks,
    parse_command,
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
from bot.teams.config import TeamsConfig
from bot.teams.delivery import TeamsAnswer
from bot.teams.references import References
from bot.teams.render import (
    APPROVE_VERB,
    CARD_TYPE,
    CORRECT_VERB,
    CORRECTION_INPUT,
    HELP,
    TEXT_ONLY,
    WELCOME,
    answer_card,
    attachment,
    plain_text,
)
from training.feedback.records import AnswerRecord, RatingKind

log = structlog.get_logger("expertbot.teams")

PLATFORM = "teams"
_MESSAGE_TYPE = "application/vnd.microsoft.activity.message"
_KINDS = {"personal": WhereKind.DM, "groupChat": WhereKind.PRIVATE, "channel": WhereKind.PUBLIC}
_VERSION = re.compile(r"^v\d+$")
_COMMENT_LIMIT = 2000
_INLINE_IMAGE_LIMIT = 20_000  # bytes of base64 a card may carry (a Teams message is ≤ 28 KB)


def auth_configuration(config: TeamsConfig) -> AgentAuthConfiguration:
    if config.client_id is None:
        return AgentAuthConfiguration(anonymous_allowed=True)
    assert config.client_secret is not None and config.tenant_id is not None
    return AgentAuthConfiguration(
        client_id=config.client_id,
        tenant_id=config.tenant_id,
        client_secret=config.client_secret.get_secret_value(),
        anonymous_allowed=config.anonymous,
    )


class TeamsBot:
    """The agent application with every route; `handle` serves `POST /api/messages`."""

    def __init__(
        self,
        config: TeamsConfig,
        core: Core,
        ops: Ops,
        feedback: Feedback,
        claims: EventClaims,
        intake: Intake,
        references: References,
        *,
        connections: Connections | None = None,
    ) -> None:
        """`connections`: where outgoing tokens come from (default: MSAL, the app's secret)."""
        self.config = config
        self.core = core
        self.ops = ops
        self.feedback = feedback
        self.claims = claims
        self.intake = intake
        intake.add(PLATFORM, self)
        self.references = references
        self.auth = auth_configuration(config)
        manager = connections or MsalConnectionManager(
            connections_configurations={"SERVICE_CONNECTION": self.auth}
        )
        self.adapter = CloudAdapter(connection_manager=manager)
        self.adapter.on_turn_error = self._on_turn_error
        self.app = AgentApplication[TurnState](
            ApplicationOptions(
                storage=MemoryStorage(),
                bot_app_id=config.client_id or "",
                remove_recipient_mention=True,
                start_typing_timer=True,  # typing until the first message or stream update
            ),
            connection_manager=manager,
        )
        self.tasks: set[asyncio.Task[Any]] = set()
        if config.admin_conversation:
            ops.announcers.append(self.announce)
        self._register()

    def _register(self) -> None:
        app = self.app
        app.conversation_update("membersAdded")(self._on_members_added)
        app.invoke("message/submitAction")(self._on_feedback)
        app.adaptive_card.action_execute(APPROVE_VERB)(self._on_approve)
        app.adaptive_card.action_execute(CORRECT_VERB)(self._on_correct)
        app.activity(ActivityTypes.message)(self._on_message)

    # -- HTTP --------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """`POST /api/messages`, after the JWT check: refuse what is not an activity (400),
        then let the SDK run the turn."""
        try:
            body = await request.json()
        except (ValueError, LookupError, RecursionError):  # not JSON or not UTF-8 (or the
            return _bad_request("the body is not JSON")  # charset named), or nested too deeply
        problem = malformed(body)
        if problem:
            log.warning("teams.malformed_activity", problem=problem)
            return _bad_request(problem)
        response = await self.adapter.process(request, self.app)
        return response if response is not None else web.Response(status=202)

    async def _on_turn_error(self, context: TurnContext, error: Exception) -> None:
        """Whatever escaped a handler: logged with its traceback; the person gets an apology
        (never the exception's text)."""
        log.error(
            "teams.turn_failed",
            activity_type=context.activity.type,
            error=f"{error.__class__.__name__}: {error}",
            exc_info=error,
        )
        if context.activity.type == ActivityTypes.message:
            with contextlib.suppress(Exception):
                await context.send_activity(MessageFactory.text(APOLOGY))

    # -- questions and commands --------------------------------------------------------------

    async def _first_delivery(self, activity: Activity) -> bool:
        """Claim this activity (retries and replicas act once)."""
        if not activity.id:
            return True
        return await self.claims.claim(PLATFORM, claim_key(activity))

    async def _on_message(self, context: TurnContext, state: TurnState) -> None:
        activity = context.activity
        await self._remember(activity)
        text = plain_text(activity.text or "")
        word, rest = parse_command(text)
        command = (word in ("status", "sync", "retrain") and not rest) or (
            word == "rollback" and (not rest or bool(_VERSION.match(rest)))
        )
        if text and not command and not (word == "help" and not rest):
            await self._answer(context, text)  # claimed with its question
            return
        if not await self._first_delivery(activity):
            return
        if not text:
            if activity.value is None:  # a picture, a file, an empty mention
                await context.send_activity(
                    MessageFactory.text(TEXT_ONLY if activity.attachments else HELP)
                )
        elif command:
            await self._command(context, word, rest)
        else:
            await context.send_activity(MessageFactory.text(HELP))

    async def _command(self, context: TurnContext, command: str, arg: str) -> None:
        user = user_id(context.activity)
        if not self.is_admin(user):
            log.info("teams.command_refused", command=command, user=user)
            await context.send_activity(MessageFactory.text(refused(command)))
            return
        if command == "status":
            lines = status_lines(await self.ops.status())
            await context.send_activity(MessageFactory.text("\n\n".join(lines)))
            return
        assert command in ADMIN_JOBS
        log.info("teams.command", command=command, user=user)
        await context.send_activity(
            MessageFactory.text(f"Starting `{command}`{' ' + arg if arg else ''} …")
        )
        identity = context.identity or ClaimsIdentity()
        reference = context.activity.get_conversation_reference()

        async def report(line: str) -> None:
            await self._post(identity, reference, line)

        async def run() -> None:
            trigger = f"teams:{user}"
            await report(
                await run_admin_job(self.ops, command, arg, trigger=trigger, report=report)
            )

        self._spawn(run())  # a job can take hours: the turn (and its HTTP request) ends now

    async def _answer(self, context: TurnContext, text: str) -> None:
        """Store the question with the activity's claim, and answer it outside the turn: the
        turn (and its HTTP request) ends at once, and no answer runs into Teams' request
        limit."""
        activity = context.activity
        conversation = activity.conversation
        kind = _KINDS.get(conversation.conversation_type or "", WhereKind.PUBLIC)
        channel = base_conversation(conversation.id)
        question = Question(
            text=text,
            asker=user_id(activity),
            where=Where(kind=kind, channel=channel, platform=PLATFORM, thread=conversation.id),
            history=await self._history(conversation.conversation_type, channel, conversation.id),
        )
        reference = activity.get_conversation_reference()
        reply = {
            "reference": reference.model_dump(mode="json", by_alias=True, exclude_none=True),
            "stream": self.config.stream and kind == WhereKind.DM,
        }
        key = claim_key(activity) if activity.id else f"{conversation.id}|{uuid.uuid4().hex}"
        pending = await self.claims.claim_question(
            PLATFORM, key, question, reply, hold=self.intake.accepting
        )
        if pending is not None and pending.held:
            self.intake.begin(pending)

    # -- answering (bot/intake.py calls these, for questions claimed here or resumed) ---------

    async def answer(self, pending: Pending, note: Note, started: Started) -> bool:
        """Post the answer into the question's conversation, proactively: streamed where the
        question was asked in a 1:1 chat, else one message; in place of the message an earlier
        try posted, if any."""
        answered: list[bool] = []
        replaces = pending.messages[0] if pending.messages else None
        stream = bool(pending.reply.get("stream")) and replaces is None

        async def run(context: TurnContext) -> None:
            reply = TeamsAnswer(context, stream=stream, replaces=replaces, note=note)
            if reply.streamed:
                reply.searching()
            else:
                await context.send_activity(Activity(type=ActivityTypes.typing))
            channel = pending.question.where.channel
            with structlog.contextvars.bound_contextvars(platform=PLATFORM, channel=channel):
                answer = await deliver(self.core.answerer, pending.question, reply, started=started)
            answered.append(answer is not None)
            if answer is not None:
                log.info(
                    "teams.answered",
                    answer_id=answer.id,
                    abstained=answer.abstained,
                    curated=answer.curated,
                    streamed=reply.streamed,
                    resumed=pending.resumed,
                )

        await self._continue(pending, run)
        return bool(answered and answered[0])

    async def apologize(self, pending: Pending, text: str) -> None:
        replaces = pending.messages[0] if pending.messages else None

        async def run(context: TurnContext) -> None:
            message = MessageFactory.text(text)
            if replaces is not None:
                message.id = replaces
                await context.update_activity(message)
            else:
                await context.send_activity(message)

        await self._continue(pending, run)

    async def _continue(
        self, pending: Pending, run: Callable[[TurnContext], Awaitable[None]]
    ) -> None:
        reference = ConversationReference.model_validate(pending.reply["reference"])
        continuation = reference.get_continuation_activity()
        continuation.id = reference.activity_id  # replies go to the question's thread
        await self.adapter.continue_conversation_with_claims(
            self._bot_identity(), continuation, run
        )

    async def _history(
        self, conversation_type: str | None, channel: str, thread: str
    ) -> tuple[Turn, ...]:
        if not self.config.followup_turns:
            return ()
        since = None
        if conversation_type != "channel":  # a chat goes on for ever; its thread is recent turns
            since = utcnow() - timedelta(seconds=self.config.followup_window_s)
        rows = await asyncio.to_thread(
            self.core.store.thread_answers,
            PLATFORM,
            channel,
            thread,
            since=since,
            last=self.config.followup_turns,
        )
        return thread_history(rows)

    async def _on_members_added(self, context: TurnContext, state: TurnState) -> None:
        activity = context.activity
        await self._remember(activity)
        bot = activity.recipient.id if activity.recipient else None
        if any(member.id == bot for member in activity.members_added or []):
            await context.send_activity(MessageFactory.text(WELCOME))

    # -- feedback ----------------------------------------------------------------------------

    async def _on_feedback(self, context: TurnContext, state: TurnState) -> None:
        """Teams' feedback loop: 👍 / 👎 under an answer, with an optional comment."""
        activity = context.activity
        value = activity.value if isinstance(activity.value, dict) else {}
        action = value.get("actionValue") if value.get("actionName") == "feedback" else None
        kind = {"like": RatingKind.UP, "dislike": RatingKind.DOWN}.get(
            str((action or {}).get("reaction"))
        )
        if kind is None:
            await _invoke_response(context, 400, {"error": "not a feedback action"})
            return
        answer_id = await self._rated_answer(activity)
        if answer_id is None:
            log.info("teams.feedback_ignored", reason="not one of our answers")
        else:
            await self.feedback.rate(
                answer_id,
                user_id(activity),
                kind,
                platform=PLATFORM,
                source="feedback_loop",
                exclusive=True,
                comment=_feedback_comment(action),
            )
        await _invoke_response(context, 200)

    async def _rated_answer(self, activity: Activity) -> str | None:
        """The answer a feedback vote is about: the message it replies to. A client that names
        no message (Teams always does; some test clients do not) rates, in a 1:1 chat, the
        latest answer to the person voting; elsewhere nothing."""
        conversation = base_conversation(activity.conversation.id)
        if activity.reply_to_id:
            return await asyncio.to_thread(
                self.core.store.answer_for_message, PLATFORM, conversation, activity.reply_to_id
            )
        if activity.conversation.conversation_type != "personal":
            return None
        latest = await asyncio.to_thread(
            self.core.store.thread_answers,
            PLATFORM,
            conversation,
            activity.conversation.id,
            last=1,
        )
        if not latest or latest[-1].asker != user_id(activity):
            return None
        log.info("teams.feedback_without_message", answer_id=latest[-1].id)
        return latest[-1].id

    async def _on_approve(
        self, context: TurnContext, state: TurnState, data: Any
    ) -> AdaptiveCardInvokeResponse:
        activity = context.activity
        row = await self._answer_row(data)
        if row is None:
            return _message(NOT_AN_ANSWER)
        user = user_id(activity)
        if not self.is_expert(user):
            log.info("teams.approval_ignored", answer_id=row.id, reason="not an expert")
            return _message("Only experts can approve answers — nothing was recorded.")
        await self.feedback.approve(row.id, user, platform=PLATFORM, source="card")
        status = f"✅ Approved by {_name(activity)}"
        return _card(answer_card(row.id, row.answer, status=status, approvable=False))

    async def _on_correct(
        self, context: TurnContext, state: TurnState, data: Any
    ) -> AdaptiveCardInvokeResponse:
        activity = context.activity
        row = await self._answer_row(data)
        if row is None:
            return _message(NOT_AN_ANSWER)
        text = str((data or {}).get(CORRECTION_INPUT) or "").strip()
        if not text:
            return _message("Write the right answer — nothing was saved.")
        if not await self._first_delivery(activity):
            return _message("Already saved.")
        user = user_id(activity)
        expert = self.is_expert(user)
        await self.feedback.correct(row.id, user, text, platform=PLATFORM, expert=expert)
        if not expert:
            return _message(correction_thanks(False))
        status = f"✏️ Corrected by {_name(activity)}: {text[:1000]}"
        return _card(answer_card(row.id, text, status=status))

    async def _answer_row(self, data: Any) -> AnswerRecord | None:
        answer_id = (data or {}).get("answerId") if isinstance(data, dict) else None
        if not isinstance(answer_id, str) or not answer_id:
            return None
        return await asyncio.to_thread(self.core.store.get_answer, answer_id)

    # -- reports to the admin conversation ---------------------------------------------------

    async def _remember(self, activity: Activity) -> None:
        """Keep the admin conversation's address when someone writes there."""
        wanted = self.config.admin_conversation
        if not wanted or not activity.conversation:
            return
        if base_conversation(activity.conversation.id) != wanted:
            return
        reference = activity.get_conversation_reference()
        reference.conversation.id = wanted  # post new messages, not into a thread
        reference.activity_id = None
        await self.references.save(wanted, reference)

    async def announce(self, result: JobResult) -> None:
        """Post a training run's outcome to the admin conversation: the summary, the
        before/after metrics and, where it fits in a message, the loss curve."""
        conversation = self.config.admin_conversation
        if not conversation:
            return
        reference = await self.references.get(conversation)
        if reference is None:
            log.warning(
                "teams.admin_conversation_unknown",
                conversation=conversation,
                hint="mention the bot in that conversation once",
            )
            return
        news = Announcement.of(result)
        body: list[dict[str, Any]] = [
            {"type": "TextBlock", "text": news.headline, "wrap": True, "weight": "Bolder"}
        ]
        if news.table:
            body.append(
                {"type": "TextBlock", "text": news.table, "wrap": True, "fontType": "Monospace"}
            )
        if news.loss_curve is not None:
            png = base64.b64encode(news.loss_curve.read_bytes()).decode()
            if len(png) <= _INLINE_IMAGE_LIMIT:
                body.append(
                    {
                        "type": "Image",
                        "url": f"data:image/png;base64,{png}",
                        "altText": f"{news.version}: training loss",
                    }
                )
            else:
                body.append(
                    {"type": "TextBlock", "text": f"Loss curve: {news.loss_curve}", "wrap": True}
                )
        card = {"type": "AdaptiveCard", "version": "1.5", "body": body}
        message = MessageFactory.attachment(attachment(card))
        message.text = news.headline
        await self._post(self._bot_identity(), reference, message)

    def _bot_identity(self) -> ClaimsIdentity:
        if self.config.client_id is None:
            return ClaimsIdentity()  # anonymous: no token on outgoing requests
        return self.adapter.create_claims_identity(self.config.client_id)

    async def _post(
        self, identity: ClaimsIdentity, reference: ConversationReference, message: Activity | str
    ) -> None:
        """Post into a conversation outside of a turn (job progress, reports)."""
        activity = MessageFactory.text(message) if isinstance(message, str) else message

        async def send(context: TurnContext) -> None:
            await context.send_activity(activity)

        continuation = reference.get_continuation_activity()
        # A reply to the message the reference names; a new post where it names none.
        continuation.id = reference.activity_id
        try:
            await self.adapter.continue_conversation_with_claims(identity, continuation, send)
        except Exception as exc:  # a report that cannot be posted must not stop the job
            log.error("teams.post_failed", error=f"{exc.__class__.__name__}: {exc}")

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self, *, cancel: bool = False) -> None:
        """Wait for the background jobs; `cancel` first (shutdown: a training worker is killed
        and its run recorded as failed, like any interrupted run)."""
        if cancel:
            for task in self.tasks:
                task.cancel()
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    # -- who may do what ---------------------------------------------------------------------

    def is_expert(self, user: str) -> bool:
        return user in self.config.experts

    def is_admin(self, user: str) -> bool:
        return user in self.config.admins


# -- helpers -----------------------------------------------------------------------------------


def malformed(body: Any) -> str | None:
    """Why `body` is not an activity the bot can act on; None if it is one."""
    if not isinstance(body, dict):
        return "an activity must be a JSON object"
    if not isinstance(body.get("type"), str) or not body["type"]:
        return "the activity has no type"
    conversation = body.get("conversation")
    if not isinstance(conversation, dict) or not isinstance(conversation.get("id"), str):
        return "the activity has no conversation id"
    if not isinstance(body.get("serviceUrl"), str) or not body["serviceUrl"]:
        return "the activity has no serviceUrl to reply to"
    try:
        Activity.model_validate(body)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the activity"
        return f"not a valid activity: {where}: {first['msg']}"
    except (TypeError, ValueError) as exc:  # what the SDK's own validators raise (`channelId: ""`)
        return f"not a valid activity: {str(exc).strip().splitlines()[0]}"
    # What the SDK needs to run a turn at all: without it the turn fails, or the request (500).
    try:
        service = urlsplit(body["serviceUrl"])
    except ValueError:  # `http://[::1` …
        service = urlsplit("")
    if service.scheme not in ("http", "https") or not service.netloc:
        return "the activity's serviceUrl is not an http(s) URL"
    if not isinstance(body.get("channelId"), str) or not body["channelId"]:
        return "the activity has no channelId"
    for party in ("from", "recipient"):
        if not isinstance(body.get(party), dict) or not body[party].get("id"):
            return f"the activity has no {party} id"
    return None


def claim_key(activity: Activity) -> str:
    """Teams' message ids are timestamps, unique within a conversation only: the claim names
    both."""
    key = f"{activity.conversation.id}|{activity.id}"
    return hashlib.sha256(key.encode()).hexdigest() if len(key) > 200 else key


def base_conversation(conversation_id: str) -> str:
    """A channel thread's conversation id is the channel's plus `;messageid=<root>`."""
    return conversation_id.split(";", 1)[0]


def user_id(activity: Activity) -> str:
    """The Entra object id of who sent `activity` (the channel account id where it has none)."""
    sender = activity.from_property
    if sender is None:
        return "anonymous"
    return sender.aad_object_id or sender.id or "anonymous"


def _name(activity: Activity) -> str:
    sender = activity.from_property
    return (sender.name if sender else None) or "an expert"


def _feedback_comment(action: dict[str, Any] | None) -> str | None:
    raw = (action or {}).get("feedback")
    if not raw:
        return None
    text: Any = raw
    if isinstance(raw, str):
        try:
            text = json.loads(raw)
        except json.JSONDecodeError:
            text = raw
    if isinstance(text, dict):
        text = text.get("feedbackText")
    text = str(text or "").strip()
    return text[:_COMMENT_LIMIT] or None


def _message(text: str) -> AdaptiveCardInvokeResponse:
    return AdaptiveCardInvokeResponse(status_code=200, type=_MESSAGE_TYPE, value=text)


def _card(card: dict[str, Any]) -> AdaptiveCardInvokeResponse:
    return AdaptiveCardInvokeResponse(status_code=200, type=CARD_TYPE, value=card)


async def _invoke_response(context: TurnContext, status: int, body: Any = None) -> None:
    await context.send_activity(
        Activity(type=ActivityTypes.invoke_response, value=InvokeResponse(status=status, body=body))
    )


def _bad_request(reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=400)


__all__ = ["PLATFORM", "TeamsBot", "auth_configuration", "base_conversation", "malformed"]
