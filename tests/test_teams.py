"""Teams end to end: activities POSTed to the real aiohttp app, run by the real Microsoft 365
Agents SDK (CloudAdapter, AgentApplication, StreamingResponse, its JWT validation), answered by
the real core (handbook index, tiny Phi-3, SQL store); replies received by a local fake of the
Bot Connector service (the activities' serviceUrl)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import rsa
from microsoft_agents.hosting.core import AgentAuthConfiguration, ConnectionManager
from pydantic import SecretStr

from bot.claims import EventClaims
from bot.core.answering import QUOTE_INTRO
from bot.core.question import Answer, WhereKind
from bot.core.runtime import Core
from bot.intake import TOO_OLD
from bot.server import Services, make_app
from bot.settings import DeliveryConfig
from bot.teams.config import MESSAGES_PATH, TeamsConfig
from bot.teams.render import APPROVE_VERB, CORRECT_VERB, SEARCHING
from knowledge.config import FolderSource
from tests.fakes import FakeOpenAI
from tests.helpers import (
    CITED,
    FINANCE_Q,
    HANDBOOK,
    PASSWORD_Q,
    QUESTIONS,
    TRAINING,
    corrected,
    jobs_run,
    settings_for,
    stored_answer,
    sync_runs,
)
from tests.teams_fake import (
    OUTGOING_TOKEN,
    FakeConnector,
    FakeEntra,
    FakeTokens,
    Sent,
    activity,
)
from training.config import OpenAIConfig, TrainingConfig
from training.serving.degeneration import QUOTE_MODEL

ADMIN, EXPERT, EMPLOYEE = "aad-admin", "aad-expert", "aad-employee"
CORRECTION = "Go to https://id.example.com/reset and follow the steps; IT never asks for it."
ADMIN_CHAT = "19:admins@thread.v2"
APP_ID = "11111111-2222-3333-4444-555555555555"


@dataclass
class Env:
    connector: FakeConnector
    client: TestClient
    services: Services
    core: Core
    questions: list[Any]
    answers: list[Answer]

    async def post(
        self, body: Any, headers: dict[str, str] | None = None, *, settle: bool = True
    ) -> Any:
        """POST an activity; `settle`: wait for the answers it started (posted after the turn)."""
        response = await self.client.post(MESSAGES_PATH, json=body, headers=headers or {})
        if settle:
            await self.services.intake.idle()
        return response

    def activity(self, text: str | None, **kwargs: Any) -> dict[str, Any]:
        return activity(text, service_url=self.connector.url, **kwargs)

    async def ask(self, text: str, **kwargs: Any) -> tuple[dict[str, Any], Sent, str]:
        """Send a question; returns (the activity, the final answer message, the answer id)."""
        before = len(self.connector.messages())
        sent = self.activity(text, **kwargs)
        response = await self.post(sent)
        assert response.status == 202, await response.text()
        final = self.connector.messages()[before:]
        assert final, "no answer was sent"
        answer_id = self.answer_for(final[-1])
        return sent, final[-1], answer_id

    def answer_for(self, message: Sent) -> str:
        message_id = self.message_id(message)
        conversation = message.conversation.split(";")[0]
        found = self.core.store.answer_for_message("teams", conversation, message_id)
        assert found, f"message {message_id} is not linked to an answer"
        return found

    @staticmethod
    def message_id(message: Sent) -> str:
        return message.reply_id or ""


async def make_env(
    data_dir: Path,
    tiny_phi3: Path,
    embedder: Any,
    aiohttp_client: Any,
    teams: TeamsConfig,
    connections: Any = None,
    model: FakeOpenAI | None = None,
) -> AsyncIterator[Env]:
    """`model`: a scripted OpenAI-compatible server instead of the tiny Phi-3 (the tiny model's
    random weights never cite, so answers with sources need a scripted one)."""
    connector = FakeConnector()
    await connector.start()
    settings = settings_for(data_dir, str(tiny_phi3))
    settings.knowledge.sources = [FolderSource(path=HANDBOOK, name="handbook")]
    settings.teams = teams
    settings.training = TrainingConfig(**TRAINING)
    if model is not None:
        settings.model.backend = "openai"
        settings.model.base = "served-model"
        settings.model.openai = OpenAIConfig(base_url=model.url)
    core = Core.build(settings, embedder=embedder)
    await core.start()
    services = await Services.start(settings, core, teams_connections=connections)
    questions: list[Any] = []
    answerer_stream = core.answerer.stream

    answers: list[Answer] = []

    async def spy(question: Any) -> AsyncIterator[str | Answer]:
        questions.append(question)  # observe what Teams hands the core, and what it gets
        async with contextlib.aclosing(answerer_stream(question)) as items:  # type: ignore[type-var]
            async for item in items:
                if isinstance(item, Answer):
                    answers.append(item)
                yield item

    core.answerer.stream = spy  # type: ignore[method-assign]
    client = await aiohttp_client(make_app(services))
    yield Env(connector, client, services, core, questions, answers)
    await services.teams.drain()
    await core.close()
    await connector.close()


TEAMS: dict[str, Any] = {
    "anonymous": True,
    "admins": [ADMIN],
    "experts": [EXPERT],
    "admin_conversation": ADMIN_CHAT,
}


@pytest.fixture
async def env(handbook_data_dir: Path, tiny_phi3: Path, embedder, aiohttp_client):
    teams = TeamsConfig(**TEAMS)
    async for made in make_env(handbook_data_dir, tiny_phi3, embedder, aiohttp_client, teams):
        yield made


@pytest.fixture
async def cited(handbook_data_dir: Path, tiny_phi3: Path, embedder, aiohttp_client, aiohttp_server):
    """An env whose model answers the password question citing two passages, a word at a time
    every 0.25 s (slow enough for Teams' one-update-a-second streaming)."""
    model = FakeOpenAI()
    model.reply = CITED
    model.word_delay_s = 0.25
    model.url = str((await aiohttp_server(model.app())).make_url("/v1"))
    teams = TeamsConfig(**TEAMS)
    async for made in make_env(
        handbook_data_dir, tiny_phi3, embedder, aiohttp_client, teams, model=model
    ):
        yield made


@pytest.fixture
async def looping(
    handbook_data_dir: Path, tiny_phi3: Path, embedder, aiohttp_client, aiohttp_server
):
    """An env whose model starts like an answer, then writes the same sentence on and on."""
    model = FakeOpenAI()
    model.reply = "Passwords are reset at KeyDesk by the help desk team. "
    model.endless = True
    model.word_delay_s = 0.1
    model.url = str((await aiohttp_server(model.app())).make_url("/v1"))
    teams = TeamsConfig(**TEAMS)
    async for made in make_env(
        handbook_data_dir, tiny_phi3, embedder, aiohttp_client, teams, model=model
    ):
        yield made


def invoke(
    env: Env, invoke_name: str, value: Any, *, reply_to: str, user: str, **kwargs: Any
) -> dict:
    body = env.activity(None, user=user, **kwargs)
    return body | {"type": "invoke", "name": invoke_name, "value": value, "replyToId": reply_to}


def card_action(env: Env, verb: str, data: dict[str, Any], *, user: str, **kwargs: Any) -> dict:
    value = {"action": {"type": "Action.Execute", "verb": verb, "data": data}, "trigger": "manual"}
    return invoke(env, "adaptiveCard/action", value, reply_to="msg-x", user=user, **kwargs)


def ai_entity(message: Sent) -> dict[str, Any]:
    [entity] = [
        e
        for e in message.body.get("entities") or []
        if e.get("type") == "https://schema.org/Message"
    ]
    return entity


def card_of(message: Sent) -> dict[str, Any]:
    [card] = [
        a["content"]
        for a in message.body.get("attachments") or []
        if a["contentType"] == "application/vnd.microsoft.card.adaptive"
    ]
    return card


def ratings(env: Env, answer_id: str) -> set[tuple[str, str, bool, str | None]]:
    return {
        (r.user_id, r.kind, r.retracted_at is None, r.comment)
        for r in env.core.store.ratings_for(answer_id)
    }


def answer_count(env: Env) -> int:
    return env.core.store.feedback_counts()["answers"]


# -- answering ---------------------------------------------------------------------------------


async def test_a_1to1_question_is_streamed_then_ends_with_citations_label_feedback_and_card(
    cited: Env,
) -> None:
    env = cited
    sent, final, answer_id = await env.ask(PASSWORD_Q)
    conversation = sent["conversation"]["id"]
    replies = [s for s in env.connector.sent if s.conversation == conversation]
    assert all(
        s.path == f"/v3/conversations/{conversation}/activities/{sent['id']}" for s in replies
    )
    informative, *updates, last = replies
    assert informative.body["type"] == "typing" and informative.stream_type == "informative"
    assert informative.body["text"] == SEARCHING
    streamed = [u for u in updates if u.stream_type == "streaming"]
    assert streamed, "no streamed update"
    assert all(u.body["type"] == "typing" for u in streamed)
    answer = stored_answer(env.core.store, answer_id)
    assert answer.answer.startswith(streamed[0].body["text"])  # a prefix of the answer, early
    assert last is final and final.stream_type == "final"
    assert env.message_id(final) == "msg-1"  # the stream's id: the first reply's
    assert final.body["text"] == answer.answer
    entity = ai_entity(final)
    assert entity["additionalType"] == ["AIGeneratedContent"]
    assert final.body["text"] == CITED
    sources = [cited.source for cited in answer.sources]
    assert len(sources) == 2
    citations = sorted(entity["citation"], key=lambda c: c["position"])
    assert [c["position"] for c in citations] == [1, 2]
    assert [c["appearance"]["name"] for c in citations] == [
        s.title + (f" › {s.heading}" if s.heading else "") for s in sources
    ]
    # The pop-up shows (the start of) the passage the model was given under that number.
    [given] = env.answers
    for citation, source in zip(citations, given.sources, strict=True):
        abstract = citation["appearance"]["abstract"].rstrip("…")
        assert len(abstract) > 40 and " ".join(source.excerpt.split()).startswith(abstract)
    assert final.body["channelData"]["feedbackLoop"] == {"type": "default"}
    card = card_of(final)
    titles = [a["title"] for a in card["actions"]]
    assert titles == ["Approve", "Correct"]
    assert card["actions"][0]["data"] == {"answerId": answer_id}
    [question] = env.questions
    assert question.text == PASSWORD_Q and question.where.kind == "dm"
    assert question.asker == EMPLOYEE


async def test_a_channel_mention_is_answered_in_its_thread_with_typing_and_one_message(
    cited: Env,
) -> None:
    env = cited
    thread = "19:general@thread.tacv2;messageid=1700000000001"
    sent, final, _ = await env.ask(PASSWORD_Q, conversation=thread, kind="channel", mention=True)
    replies = [s for s in env.connector.sent if s.conversation == thread]
    assert [s.stream_type for s in replies if s.stream_type] == []  # Teams streams in 1:1 only
    assert replies[0].body["type"] == "typing"  # the typing indicator while it thinks
    assert [s.body["type"] for s in replies].count("message") == 1 and replies[-1] is final
    assert final.path == f"/v3/conversations/{thread}/activities/{sent['id']}"
    assert final.body["text"] == CITED and len(ai_entity(final)["citation"]) == 2
    assert [a["title"] for a in card_of(final)["actions"]] == ["Approve", "Correct"]
    [question] = env.questions
    assert question.text == PASSWORD_Q  # the mention is stripped
    assert question.where.kind == "public"
    assert question.where.channel == "19:general@thread.tacv2"


async def test_a_group_chat_may_use_documents_restricted_to_it_a_channel_may_not(env: Env) -> None:
    # The handbook's quarter-close procedure is restricted to "C0FINANCE".
    *_, in_chat = await env.ask(FINANCE_Q, conversation="C0FINANCE", kind="groupChat", mention=True)
    *_, in_channel = await env.ask(
        FINANCE_Q, conversation="C0FINANCE", kind="channel", mention=True
    )

    def docs(answer_id: str) -> set[str]:
        return {r.doc for r in stored_answer(env.core.store, answer_id).retrieved}

    assert "finance/quarter-close.md" in docs(in_chat)
    assert "finance/quarter-close.md" not in docs(in_channel)
    assert [q.where.kind for q in env.questions] == ["private", "public"]


async def test_follow_ups_carry_the_threads_earlier_turns(env: Env) -> None:
    await env.ask(PASSWORD_Q)
    await env.ask("And how often must I change it?")
    assert [t.role for t in env.questions[1].history] == ["user", "assistant"]
    assert env.questions[1].history[0].text == PASSWORD_Q
    root = "19:general@thread.tacv2;messageid=1"
    await env.ask(PASSWORD_Q, conversation=root, kind="channel", mention=True)
    await env.ask("and the VPN?", conversation=root, kind="channel", mention=True)
    other = "19:general@thread.tacv2;messageid=2"
    await env.ask("and the VPN?", conversation=other, kind="channel", mention=True)
    assert [len(q.history) for q in env.questions[2:]] == [0, 2, 0]


async def test_the_same_activity_delivered_three_times_gets_one_answer_per_conversation(
    env: Env,
) -> None:
    sent = env.activity(PASSWORD_Q, activity_id="dup-1")
    responses = await asyncio.gather(*(env.post(sent) for _ in range(3)))
    assert [r.status for r in responses] == [202, 202, 202]
    assert len(env.connector.messages()) == 1 and answer_count(env) == 1
    # Teams' message ids are timestamps: the same id in another conversation is another message.
    elsewhere = env.activity(PASSWORD_Q, activity_id="dup-1", conversation="a:another-chat")
    assert (await env.post(elsewhere)).status == 202
    assert len(env.connector.messages()) == 2 and answer_count(env) == 2


async def test_the_turn_ends_at_once_and_the_answer_follows_in_the_thread(cited: Env) -> None:
    """Teams gives a turn 15 s: the answer is posted after it, however long it takes (here a
    word every 0.25 s)."""
    env = cited
    thread = "19:general@thread.tacv2;messageid=1700000000001"
    body = env.activity(PASSWORD_Q, conversation=thread, kind="channel", mention=True)
    started = time.monotonic()
    response = await env.post(body, settle=False)
    assert response.status == 202 and time.monotonic() - started < 2
    assert env.connector.messages() == []  # still being written
    await env.services.intake.idle()
    [final] = env.connector.messages(thread)
    assert final.path.endswith(f"/activities/{body['id']}")  # a reply in the question's thread
    assert ai_entity(final)["citation"] and env.answer_for(final)


async def test_a_resumed_answer_replaces_what_an_earlier_try_posted(env: Env) -> None:
    """A replica on its way down stores the question for another; the one that took it posted a
    message and died; the next one updates that message instead of posting a second."""
    env.services.intake.accepting = False
    body = env.activity(PASSWORD_Q, activity_id="lost-1")
    assert (await env.post(body)).status == 202
    assert env.connector.messages() == [] and env.questions == []
    dead = EventClaims(env.core.knowledge.engine, owner="dead")
    [taken] = await dead.take_expired()
    await dead.note_message(taken, "msg-earlier")
    await dead.release(taken)

    env.services.intake.accepting = True
    assert await env.services.intake.resume() == 1
    await env.services.intake.idle()
    [update] = env.connector.messages()  # no second message beside it
    assert update.method == "PUT"
    assert update.path.endswith("/activities/msg-earlier")
    assert update.body["text"] and card_of(update)
    assert env.core.store.answer_for_message("teams", "a:personal-chat-1", "msg-earlier")
    [question] = env.questions
    assert question.where.kind == WhereKind.DM and question.asker == EMPLOYEE


async def test_a_question_resumed_past_its_max_age_gets_the_apology_in_place(env: Env) -> None:
    env.services.intake.accepting = False
    assert (await env.post(env.activity(PASSWORD_Q, activity_id="old-1"))).status == 202
    dead = EventClaims(env.core.knowledge.engine, owner="dead")
    [taken] = await dead.take_expired()
    await dead.note_message(taken, "msg-earlier")
    await dead.release(taken)
    env.services.intake.accepting = True
    env.services.intake.config = DeliveryConfig(max_age_s=0.001)
    assert await env.services.intake.resume() == 1
    await env.services.intake.idle()
    [update] = env.connector.messages()
    assert update.method == "PUT" and update.path.endswith("/activities/msg-earlier")
    assert update.body["text"] == TOO_OLD and env.questions == []


async def test_a_failure_to_answer_ends_in_an_apology_and_nothing_leaks(env: Env) -> None:
    async def broken(question: Any) -> AsyncIterator[str | Answer]:
        yield "Partial"
        raise RuntimeError("secret internals")

    env.core.answerer.stream = broken  # type: ignore[method-assign]
    response = await env.post(env.activity(PASSWORD_Q))
    assert response.status == 202
    [final] = env.connector.messages()
    assert "couldn't answer" in final.body["text"] and final.body["text"].startswith("Partial")
    assert "secret" not in json.dumps([s.body for s in env.connector.sent])


# -- feedback ----------------------------------------------------------------------------------


async def test_the_feedback_loop_records_one_vote_per_person_with_its_comment(env: Env) -> None:
    sent, final, answer_id = await env.ask(PASSWORD_Q)
    message_id = env.message_id(final)
    conversation = sent["conversation"]["id"]

    async def feedback(reaction: str, text: str | None, user: str) -> Any:
        value = {
            "actionName": "feedback",
            "actionValue": {
                "reaction": reaction,
                "feedback": json.dumps({"feedbackText": text}) if text is not None else "",
            },
        }
        body = invoke(env, "message/submitAction", value, reply_to=message_id, user=user)
        body["conversation"]["id"] = conversation
        return await env.post(body)

    assert (await feedback("like", "Clear, thanks", EMPLOYEE)).status == 200
    assert ratings(env, answer_id) == {(EMPLOYEE, "up", True, "Clear, thanks")}
    assert (await feedback("dislike", "Outdated link", EMPLOYEE)).status == 200
    assert ratings(env, answer_id) == {
        (EMPLOYEE, "up", False, "Clear, thanks"),
        (EMPLOYEE, "down", True, "Outdated link"),
    }
    assert (await feedback("like", None, "aad-other")).status == 200
    assert ("aad-other", "up", True, None) in ratings(env, answer_id)
    # Not one of our messages: acknowledged, nothing recorded.
    stray = invoke(
        env,
        "message/submitAction",
        {"actionName": "feedback", "actionValue": {"reaction": "like"}},
        reply_to="someone-elses",
        user=EMPLOYEE,
    )
    assert (await env.post(stray)).status == 200
    # Not feedback at all: refused.
    odd = invoke(
        env, "message/submitAction", {"actionName": "other"}, reply_to=message_id, user=EMPLOYEE
    )
    assert (await env.post(odd)).status == 400
    assert len(env.core.store.ratings_for(answer_id)) == 3


async def test_a_vote_naming_no_message_rates_the_voters_latest_answer_in_a_1to1_chat_only(
    env: Env,
) -> None:
    """Some clients (the Agents Playground) send the feedback loop's vote without the message
    it is about; Teams itself always names it."""
    await env.ask("What is the VPN?")
    _, _, latest = await env.ask(PASSWORD_Q)
    like = {"actionName": "feedback", "actionValue": {"reaction": "like"}}
    body = invoke(env, "message/submitAction", like, reply_to="", user=EMPLOYEE)
    del body["replyToId"]
    assert (await env.post(body)).status == 200
    assert ratings(env, latest) == {(EMPLOYEE, "up", True, None)}
    # Someone else in the chat, or a channel: nothing to go by, nothing recorded.
    other = invoke(env, "message/submitAction", like, reply_to="", user="aad-other")
    del other["replyToId"]
    assert (await env.post(other)).status == 200
    assert ratings(env, latest) == {(EMPLOYEE, "up", True, None)}


async def test_an_experts_approval_replaces_the_card_and_serves_the_answer_next_time(
    env: Env,
) -> None:
    _, _, answer_id = await env.ask(PASSWORD_Q)
    refused = await env.post(card_action(env, APPROVE_VERB, {"answerId": answer_id}, user=EMPLOYEE))
    assert refused.status == 200
    body = await refused.json()
    assert body["type"] == "application/vnd.microsoft.activity.message"
    assert "Only experts" in body["value"]
    assert ratings(env, answer_id) == set()
    approved = await env.post(
        card_action(env, APPROVE_VERB, {"answerId": answer_id}, user=EXPERT, name="Dana Expert")
    )
    body = await approved.json()
    assert body["type"] == "application/vnd.microsoft.card.adaptive"
    assert "Approved by Dana Expert" in json.dumps(body["value"])
    assert [a["title"] for a in body["value"]["actions"]] == ["Correct"]
    assert ratings(env, answer_id) == {(EXPERT, "approved", True, None)}
    _, again, again_id = await env.ask(PASSWORD_Q)
    served = stored_answer(env.core.store, again_id)
    assert served.curated_id is not None
    assert served.answer == stored_answer(env.core.store, answer_id).answer
    assert "Expert-approved answer" in json.dumps(card_of(again))


async def test_an_experts_correction_becomes_the_curated_answer_others_are_comments(
    env: Env,
) -> None:
    _, _, answer_id = await env.ask(PASSWORD_Q)
    empty = await env.post(
        card_action(env, CORRECT_VERB, {"answerId": answer_id, "correction": "  "}, user=EXPERT)
    )
    assert "nothing was saved" in (await empty.json())["value"]
    comment = await env.post(
        card_action(
            env, CORRECT_VERB, {"answerId": answer_id, "correction": "ask Bob"}, user=EMPLOYEE
        )
    )
    assert "comment" in (await comment.json())["value"]
    fixed = await env.post(
        card_action(
            env,
            CORRECT_VERB,
            {"answerId": answer_id, "correction": CORRECTION},
            user=EXPERT,
            name="Dana Expert",
        )
    )
    card = (await fixed.json())["value"]
    assert "Corrected by Dana Expert" in json.dumps(card)
    rows = sorted(env.core.store.corrections_for(answer_id), key=lambda r: r.approved)
    assert [(r.approved, r.text, bool(r.curated_id)) for r in rows] == [
        (False, "ask Bob", False),
        (True, CORRECTION, True),
    ]
    _, again, _ = await env.ask(PASSWORD_Q)
    assert again.body["text"].strip() == CORRECTION
    unknown = await env.post(card_action(env, APPROVE_VERB, {"answerId": "nope"}, user=EXPERT))
    assert "answers only" in (await unknown.json())["value"]


# -- admin commands and the welcome ------------------------------------------------------------


async def texts_after(env: Env, body: dict[str, Any], count: int) -> list[str]:
    conversation = body["conversation"]["id"]
    before = len(env.connector.messages(conversation))
    response = await env.post(body)
    assert response.status == 202
    await env.services.teams.drain()  # background jobs have reported by now
    await env.connector.wait_for(
        lambda s: s.body.get("type") == "message" and s.conversation == conversation,
        before + count,
    )
    return [s.body.get("text", "") for s in env.connector.messages(conversation)[before:]]


async def test_admins_run_sync_and_hear_its_start_progress_and_result(env: Env) -> None:
    runs, jobs = sync_runs(env), jobs_run(env)
    texts = await texts_after(env, env.activity("sync", user=ADMIN), 3)
    assert texts[0] == "Starting `sync` …"
    assert any(t.startswith("sync: ") and "/18 documents" in t for t in texts)  # progress
    assert texts[-1].startswith("✅ sync: ")
    assert (sync_runs(env), jobs_run(env)) == (runs + 1, jobs + 1)
    assert answer_count(env) == 0  # a command is not a question


@pytest.mark.parametrize("command", ["sync", "retrain", "rollback", "status", "rollback v0001"])
async def test_others_are_refused_admin_commands_and_nothing_runs(env: Env, command: str) -> None:
    runs, jobs = sync_runs(env), jobs_run(env)
    [text] = await texts_after(env, env.activity(command, user=EMPLOYEE), 1)
    assert text == f"Sorry, `{command.split()[0]}` is for admins only — nothing was run."
    assert (sync_runs(env), jobs_run(env)) == (runs, jobs) and answer_count(env) == 0


async def test_status_help_and_rollback_answer_admins_in_the_conversation(env: Env) -> None:
    [status] = await texts_after(
        env,
        env.activity(
            "status",
            user=ADMIN,
            mention=True,
            conversation="19:x@thread.tacv2;messageid=5",
            kind="channel",
        ),
        1,
    )
    assert "Index: 18 documents" in status and "Feedback: " in status
    [help_text] = await texts_after(env, env.activity("help", user=EMPLOYEE), 1)
    assert "Ask me" in help_text and "`retrain`" in help_text
    texts = await texts_after(env, env.activity("rollback", user=ADMIN), 2)
    assert "nothing to roll back" in texts[-1]
    assert answer_count(env) == 0


async def test_a_question_that_starts_like_a_command_is_answered(env: Env) -> None:
    await env.ask("status of the VPN outage?", user=EMPLOYEE)
    assert [q.text for q in env.questions] == ["status of the VPN outage?"]


async def test_the_bot_added_to_a_conversation_says_welcome_once(env: Env) -> None:
    added = env.activity(None, conversation="19:new@thread.v2", kind="groupChat")
    added |= {"type": "conversationUpdate", "membersAdded": [{"id": "28:expertbot"}]}
    [welcome] = await texts_after(env, added, 1)
    assert welcome.startswith("Hi — I'm expertbot") and "`status`" in welcome
    other = env.activity(None, conversation="19:new@thread.v2", kind="groupChat")
    other |= {"type": "conversationUpdate", "membersAdded": [{"id": "29:someone"}]}
    assert (await env.post(other)).status == 202
    assert len(env.connector.messages("19:new@thread.v2")) == 1


async def test_retrain_from_teams_promotes_and_posts_the_report_to_the_admin_conversation(
    env: Env, recorded_training: None
) -> None:
    # The admin conversation becomes known when someone writes there.
    await texts_after(env, env.activity("help", conversation=ADMIN_CHAT, kind="groupChat"), 1)
    for question in QUESTIONS[:12]:
        corrected(env.core.store, question)
    texts = await texts_after(env, env.activity("retrain", user=ADMIN), 4)
    assert texts[0] == "Starting `retrain` …"
    assert texts[1] == "retrain started: building the training set"
    assert texts[-1].startswith("✅ retrain: v0001 promoted: abstention 0.00 → 0.00, valid ")
    [report] = [s for s in env.connector.messages(ADMIN_CHAT) if s.body.get("attachments")]
    assert report.path == f"/v3/conversations/{ADMIN_CHAT}/activities"  # a new post
    card = json.dumps(card_of(report))
    assert "v0001 promoted" in card and "key-fact recall vs the experts' answers" in card
    assert env.core.registry.active() == "v0001"


# -- bad input ---------------------------------------------------------------------------------


async def test_a_message_without_text_gets_help_and_nothing_is_recorded(env: Env) -> None:
    [reply] = await texts_after(env, env.activity(None), 1)
    assert "Ask me" in reply
    picture = env.activity(None, attachments=[{"contentType": "image/png", "contentUrl": "x"}])
    [reply] = await texts_after(env, picture, 1)
    assert reply == "I read text only — ask me a question in words."
    assert answer_count(env) == 0 and env.questions == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"type": "message", "text": "hi"}', "conversation id"),
        (b'{"type": "message", "conversation": {"id": "c"}}', "serviceUrl"),
        (
            b'{"type": "message", "conversation": {"id": "c"}, "serviceUrl": "http://x", '
            b'"from": 5}',
            "not a valid activity: from",
        ),
    ],
)
async def test_a_malformed_body_gets_400_and_nothing_runs(
    env: Env, body: bytes, reason: str
) -> None:
    response = await env.client.post(
        MESSAGES_PATH, data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert reason in (await response.json())["error"]
    assert env.connector.sent == [] and answer_count(env) == 0


async def test_an_unknown_activity_type_is_accepted_and_ignored(env: Env) -> None:
    odd = env.activity(None) | {"type": "somethingNew"}
    assert (await env.post(odd)).status == 202
    unknown_invoke = env.activity(None) | {"type": "invoke", "name": "composeExtension/query"}
    assert (await env.post(unknown_invoke)).status == 501
    assert env.connector.sent == [] and answer_count(env) == 0


# -- JWT mode ----------------------------------------------------------------------------------


@pytest.fixture
async def jwt_env(handbook_data_dir: Path, tiny_phi3: Path, embedder, aiohttp_client):
    entra = FakeEntra()
    await entra.start()
    entra.install()
    teams = TeamsConfig(
        client_id=APP_ID,
        client_secret=SecretStr("s3cret-value"),
        tenant_id="tenant",
        admins=[ADMIN],
    )
    auth = AgentAuthConfiguration(client_id=APP_ID, tenant_id="tenant", client_secret="x")
    connections = ConnectionManager(
        provider_factory=FakeTokens, connections_configurations={"SERVICE_CONNECTION": auth}
    )
    try:
        async for made in make_env(
            handbook_data_dir, tiny_phi3, embedder, aiohttp_client, teams, connections
        ):
            yield made, entra
    finally:
        entra.uninstall()
        await entra.close()


async def test_jwt_mode_refuses_absent_and_bad_tokens_and_answers_a_valid_one(
    jwt_env: tuple[Env, FakeEntra],
) -> None:
    env, entra = jwt_env
    url = env.connector.url
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = {
        "absent": None,
        "not a JWT": "Bearer not-a-token",
        "not bearer": f"Basic {entra.token(APP_ID, service_url=url)}",
        "another key": f"Bearer {entra.token(APP_ID, service_url=url, key=other_key)}",
        "another app": f"Bearer {entra.token('some-other-app', service_url=url)}",
        "expired": f"Bearer {entra.token(APP_ID, service_url=url, expires_in=-3600)}",
    }
    for why, header in bad.items():
        headers = {"Authorization": header} if header else {}
        response = await env.post(env.activity(PASSWORD_Q), headers)
        assert response.status == 401, why
    assert env.connector.sent == [] and answer_count(env) == 0
    good = {"Authorization": f"Bearer {entra.token(APP_ID, service_url=url)}"}
    response = await env.post(env.activity(PASSWORD_Q), good)
    assert response.status == 202
    [final] = env.connector.messages()
    assert final.authorization == f"Bearer {OUTGOING_TOKEN}"  # replies carry the app's token
    assert answer_count(env) == 1


# -- metrics -----------------------------------------------------------------------------------


async def scrape(env: Env) -> dict[str, float]:
    response = await env.client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    values: dict[str, float] = {}
    for line in (await response.text()).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def test_metrics_count_questions_answers_latency_feedback_jobs_and_the_adapter(
    env: Env,
) -> None:
    before = await scrape(env)
    sent, final, _ = await env.ask(PASSWORD_Q)
    value = {"actionName": "feedback", "actionValue": {"reaction": "like"}}
    like = invoke(env, "message/submitAction", value, reply_to=env.message_id(final), user=EMPLOYEE)
    like["conversation"]["id"] = sent["conversation"]["id"]
    assert (await env.post(like)).status == 200
    await texts_after(env, env.activity("rollback", user=ADMIN), 2)
    after = await scrape(env)

    def grew(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert grew('expertbot_questions_total{platform="teams"}') == 1
    answered = [
        k for k in after if k.startswith("expertbot_answers_total{") and 'platform="teams"' in k
    ]
    assert sum(grew(k) for k in answered) == 1
    assert grew("expertbot_answer_seconds_count") == 1
    assert grew("expertbot_retrieval_seconds_count") == 1
    assert grew('expertbot_feedback_total{kind="up"}') == 1
    assert grew('expertbot_job_runs_total{job="rollback",outcome="error"}') == 1
    assert after['expertbot_serving_adapter{version="base"}'] == 1


async def test_a_loop_streamed_in_teams_ends_as_the_quote(looping: Env) -> None:
    env = looping
    sent, final, answer_id = await env.ask(PASSWORD_Q)
    conversation = sent["conversation"]["id"]
    streamed = [
        s
        for s in env.connector.sent
        if s.conversation == conversation and s.stream_type == "streaming"
    ]
    assert any(s.body["text"].startswith("Passwords are reset") for s in streamed)
    answer = stored_answer(env.core.store, answer_id)
    assert answer.model == QUOTE_MODEL
    assert final.stream_type == "final" and final.body["text"] == answer.answer
    assert final.body["text"].startswith(f"{QUOTE_INTRO} [1]:")
    assert "Passwords are reset at KeyDesk" not in final.body["text"]
