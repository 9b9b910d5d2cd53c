"""Slack end to end: real bolt dispatch with real signatures against the real aiohttp app, the
real answering core (handbook index, tiny Phi-3, SQL store), and a local fake of Slack's Web API
that records what the bot sends."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.core.answering import QUOTE_INTRO
from bot.slack import ids
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
    envelope,
    jobs_run,
    mention,
    running_slack,
    settings_for,
    settle,
    stored_answer,
    sync_runs,
)
from tests.helpers import SlackEnv as Env
from tests.slack_fake import BOT_USER, TEAM, Call, FakeSlack
from training.config import OpenAIConfig, TrainingConfig
from training.serving.degeneration import QUOTE_MODEL

ADMIN, EXPERT, EMPLOYEE = "UADMIN", "UEXPERT", "UEMPLOYEE"


def message(
    text: str,
    *,
    channel: str,
    user: str,
    ts: str,
    channel_type: str = "channel",
    thread_ts: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    event = {
        "type": "message",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "channel_type": channel_type,
        "event_ts": ts,
    } | extra
    return event | ({"thread_ts": thread_ts} if thread_ts else {})


def reaction(kind: str, name: str, *, user: str, channel: str, ts: str) -> dict[str, Any]:
    return {
        "type": kind,
        "user": user,
        "reaction": name,
        "item": {"type": "message", "channel": channel, "ts": ts},
        "item_user": BOT_USER,
        "event_ts": str(time.time()),
    }


def block_ids(call: Call) -> list[str]:
    return [b.get("block_id", "") for b in call.body.get("blocks") or []]


def feedback_buttons(call: Call) -> dict[str, Any] | None:
    """The feedback buttons element under a message, if it has one."""
    for block in call.body.get("blocks") or []:
        if block.get("block_id") == ids.FEEDBACK_BLOCK:
            assert block["type"] == "context_actions"
            [element] = block["elements"]
            return dict(element)
    return None


def answer_of(call: Call) -> str:
    """The answer id that a message's feedback buttons carry (both buttons carry it)."""
    buttons = feedback_buttons(call)
    assert buttons is not None, call.body.get("blocks")
    assert buttons["type"] == "feedback_buttons" and buttons["action_id"] == ids.FEEDBACK_ACTION
    up, down = buttons["positive_button"]["value"], buttons["negative_button"]["value"]
    assert up.startswith("up:") and down == "down:" + up.removeprefix("up:")
    return str(up.removeprefix("up:"))


def streamed_text(slack: FakeSlack, ts: str) -> str:
    """The markdown streamed into message `ts`: its startStream, appendStreams and stopStream."""
    calls = slack.calls
    stop = max(
        i for i, c in enumerate(calls) if c.method == "chat.stopStream" and c.body["ts"] == ts
    )
    first = max(i for i in range(stop) if calls[i].method == "chat.startStream")
    text = ""
    for call in calls[first : stop + 1]:
        if call.method == "chat.startStream" or (
            call.method in ("chat.appendStream", "chat.stopStream") and call.body["ts"] == ts
        ):
            text += "".join(c.get("text", "") for c in call.body.get("chunks") or [])
            text += call.body.get("markdown_text") or ""
    return text


@pytest.fixture
async def env(handbook_data_dir: Path, tiny_phi3: Path, embedder, aiohttp_client):
    settings = settings_for(handbook_data_dir, str(tiny_phi3))
    settings.knowledge.sources = [FolderSource(path=HANDBOOK, name="handbook")]
    settings.training = TrainingConfig(**TRAINING)
    async with running_slack(
        settings,
        embedder,
        aiohttp_client,
        admins=[ADMIN],
        experts=[EXPERT],
        admin_channel="CADMIN",
    ) as made:
        made.slack.set_channel("C0FINANCE", is_private=True, name="finance")
        yield made


@pytest.fixture
async def cited(handbook_data_dir: Path, embedder, aiohttp_client, aiohttp_server):
    """An env whose model (a scripted OpenAI-compatible server: the tiny Phi-3's random weights
    never cite) answers citing two passages."""
    model = FakeOpenAI()
    model.reply = CITED
    url = str((await aiohttp_server(model.app())).make_url("/v1"))
    settings = settings_for(handbook_data_dir, "served-model")
    settings.knowledge.sources = [FolderSource(path=HANDBOOK, name="handbook")]
    settings.model.backend = "openai"
    settings.model.openai = OpenAIConfig(base_url=url)
    async with running_slack(settings, embedder, aiohttp_client) as made:
        yield made


@pytest.fixture
async def scripted(handbook_data_dir: Path, embedder, aiohttp_client, aiohttp_server):
    """An env and the scripted OpenAI-compatible model it answers with (tests set its reply)."""
    model = FakeOpenAI()
    url = str((await aiohttp_server(model.app())).make_url("/v1"))
    settings = settings_for(handbook_data_dir, "served-model")
    settings.knowledge.sources = [FolderSource(path=HANDBOOK, name="handbook")]
    settings.model.backend = "openai"
    settings.model.openai = OpenAIConfig(base_url=url)
    async with running_slack(settings, embedder, aiohttp_client) as made:
        yield made, model


# -- answering ---------------------------------------------------------------------------------


async def test_a_mention_is_acked_and_answered_in_its_thread_with_progress_sources_buttons(
    cited: Env,
) -> None:
    env = cited
    ts, stop = await env.ask(PASSWORD_Q)
    slack = env.slack
    start = slack.calls_to("chat.startStream")[0]
    assert start.body["channel"] == "CPUBLIC" and start.body["thread_ts"] == ts
    assert start.body["recipient_user_id"] == EMPLOYEE and start.body["recipient_team_id"] == TEAM
    assert start.headers["Authorization"] == "Bearer xoxb-test"
    # While it works: a status with loading messages; cleared once the answer is done.
    status, cleared = await slack.wait_for("assistant.threads.setStatus", 2)
    assert status.body["channel_id"] == "CPUBLIC" and status.body["thread_ts"] == ts
    assert status.body["status"] == "is looking this up…"
    assert status.body["loading_messages"] == [
        "Searching the handbook…",
        "Reading the sources…",
        "Writing…",
    ]
    assert status.at < start.at  # progress shows before the answer starts
    assert cleared.body == {"channel_id": "CPUBLIC", "thread_ts": ts, "status": ""}
    assert cleared.at > stop.at
    assert not slack.calls_to("reactions.add")  # the status says it: no 👀
    answer_ts = stop.body["ts"]
    answer_id = answer_of(stop)
    row = env.core.store.get_answer(answer_id)
    assert row is not None and row.question == PASSWORD_Q
    assert row.platform == "slack" and row.where_kind == "public"
    assert row.channel == "CPUBLIC" and row.thread == ts
    # What was streamed is the recorded answer, and the message is linked to it.
    assert streamed_text(slack, answer_ts).strip() == row.answer.strip()
    assert env.core.store.answer_for_message("slack", "CPUBLIC", answer_ts) == answer_id
    assert row.answer == CITED and len(row.sources) == 2  # the two passages it cited
    [sources] = [b for b in stop.body["blocks"] if b.get("block_id") == "expertbot_sources"]
    shown = [line for e in sources["elements"] for line in e["text"].splitlines()]
    assert [line.split(" ", 1)[0] for line in shown] == ["[1]", "[2]"]
    assert all(s.source.title in line for s, line in zip(row.sources, shown, strict=True))


async def test_where_slack_refuses_the_status_the_question_gets_eyes_instead(env: Env) -> None:
    env.slack.fail("assistant.threads.setStatus", error="not_allowed")
    ts, _ = await env.ask(PASSWORD_Q)
    add = (await env.slack.wait_for("reactions.add"))[0]
    assert add.body == {"channel": "CPUBLIC", "timestamp": ts, "name": "eyes"}
    removed = (await env.slack.wait_for("reactions.remove"))[0]
    assert removed.body["timestamp"] == ts
    # Refused once in that channel: not asked again there for a while, 👀 at once.
    again, _ = await env.ask(PASSWORD_Q)
    await env.slack.wait_for("reactions.remove", 2)
    assert len(env.slack.calls_to("assistant.threads.setStatus")) == 1
    assert env.slack.calls_to("reactions.add")[1].body["timestamp"] == again


async def test_the_http_ack_comes_before_the_answer(env: Env) -> None:
    started = time.perf_counter()
    response = await env.event(
        mention(PASSWORD_Q, channel="CPUBLIC", user=EMPLOYEE, ts=env.slack.next_ts())
    )
    acked = time.perf_counter() - started
    assert response.status == 200
    assert not env.slack.calls_to("chat.stopStream")  # not answered yet when acked
    await env.slack.wait_for("chat.stopStream")
    assert acked < 1.0


async def test_a_dm_is_answered_in_its_thread_with_a_status_then_feedback_buttons(
    env: Env,
) -> None:
    ts = env.slack.next_ts()
    await env.event(message(PASSWORD_Q, channel="D0DM", user=EMPLOYEE, ts=ts, channel_type="im"))
    stop = (await env.slack.wait_for("chat.stopStream"))[0]
    row = stored_answer(env.core.store, answer_of(stop))
    assert row.where_kind == "dm" and row.thread == ts and row.asker == EMPLOYEE
    status, cleared = await env.slack.wait_for("assistant.threads.setStatus", 2)
    assert (status.body["channel_id"], status.body["thread_ts"]) == ("D0DM", ts)
    assert status.body["loading_messages"][-1] == "Writing…"
    assert status.at < env.slack.calls_to("chat.startStream")[0].at
    assert cleared.body == {"channel_id": "D0DM", "thread_ts": ts, "status": ""}
    assert not env.slack.calls_to("reactions.add")


async def test_a_follow_up_in_the_thread_carries_its_history(env: Env) -> None:
    ts, first = await env.ask(PASSWORD_Q)
    follow = env.slack.next_ts()
    await env.event(
        message(
            "And how often must I change it?",
            channel="CPUBLIC",
            user=EMPLOYEE,
            ts=follow,
            thread_ts=ts,
        )
    )
    stop = (await env.slack.wait_for("chat.stopStream", 2))[1]
    question = env.questions[-1]
    assert question.text == "And how often must I change it?"
    first_row = stored_answer(env.core.store, answer_of(first))
    assert [t.role for t in question.history] == ["user", "assistant"]
    assert question.history[0].text == PASSWORD_Q
    assert question.history[1].text == first_row.answer
    assert env.slack.calls_to("chat.startStream")[1].body["thread_ts"] == ts
    assert stored_answer(env.core.store, answer_of(stop)).thread == ts


async def test_threads_the_bot_did_not_answer_and_bots_and_edits_are_ignored(env: Env) -> None:
    root = env.slack.next_ts()
    for event in (
        message(
            "What is the VPN?",
            channel="CPUBLIC",
            user=EMPLOYEE,
            ts=env.slack.next_ts(),
            thread_ts=root,
        ),
        message(
            "What is the VPN?",
            channel="CPUBLIC",
            user="UOTHERBOT",
            ts=env.slack.next_ts(),
            bot_id="B0OTHER",
            channel_type="im",
        ),
        message(
            "What is the VPN?",
            channel="D0DM",
            user=EMPLOYEE,
            ts=env.slack.next_ts(),
            channel_type="im",
            subtype="message_changed",
        ),
        message("plain chatter", channel="CPUBLIC", user=EMPLOYEE, ts=env.slack.next_ts()),
    ):
        assert (await env.event(event)).status == 200
    await settle(env)
    assert env.questions == []
    assert not env.slack.calls_to("chat.startStream") and not env.slack.calls_to("reactions.add")


async def test_channels_outside_the_allowed_list_are_ignored(env: Env) -> None:
    env.services.slack.config.channels = ["C0FINANCE"]
    await env.event(mention(PASSWORD_Q, channel="CPUBLIC", user=EMPLOYEE, ts=env.slack.next_ts()))
    await settle(env)
    assert env.questions == []
    await env.ask(PASSWORD_Q, channel="C0FINANCE")
    assert env.questions[-1].where.channel == "C0FINANCE"


def retrieved_docs(env: Env, stop: Call) -> set[str]:
    row = stored_answer(env.core.store, answer_of(stop))
    return {r.doc for r in row.retrieved}


async def test_a_private_channel_may_use_documents_restricted_to_it_a_public_one_may_not(
    env: Env,
) -> None:
    _, public = await env.ask(FINANCE_Q, channel="CPUBLIC")
    _, private = await env.ask(FINANCE_Q, channel="C0FINANCE")
    assert "finance/quarter-close.md" not in retrieved_docs(env, public)
    assert "finance/quarter-close.md" in retrieved_docs(env, private)
    assert env.questions[-1].where.kind == "private"


# -- exactly once, signatures, rate limits, failures -------------------------------------------


async def test_the_same_event_delivered_three_times_concurrently_gets_one_answer(env: Env) -> None:
    event = mention(PASSWORD_Q, channel="CPUBLIC", user=EMPLOYEE, ts=env.slack.next_ts())
    responses = await asyncio.gather(
        env.event(event, event_id="EvSAME"),
        env.event(
            event,
            event_id="EvSAME",
            headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
        ),
        env.event(
            event,
            event_id="EvSAME",
            headers={"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "http_timeout"},
        ),
    )
    assert [r.status for r in responses] == [200, 200, 200]
    await env.slack.wait_for("chat.stopStream")
    await settle(env)
    assert len(env.slack.calls_to("chat.startStream")) == 1
    assert len(env.questions) == 1


@pytest.mark.parametrize("problem", ["bad", "expired", "missing", "other secret"])
async def test_unsigned_or_badly_signed_requests_get_401_and_do_nothing(
    env: Env, problem: str
) -> None:
    body = json.dumps(
        envelope(
            mention(PASSWORD_Q, channel="CPUBLIC", user=EMPLOYEE, ts=env.slack.next_ts()), "EvBAD"
        )
    )
    if problem == "missing":
        response = await env.client.post(
            ids.EVENTS_PATH, data=body, headers={"Content-Type": "application/json"}
        )
    elif problem == "bad":
        response = await env.post(
            body, content_type="application/json", headers={"X-Slack-Signature": "v0=" + "0" * 64}
        )
    elif problem == "expired":
        response = await env.post(
            body, content_type="application/json", timestamp=int(time.time()) - 600
        )
    else:
        response = await env.post(body, content_type="application/json", secret="not-ours")
    assert response.status == 401
    await settle(env)
    assert env.slack.calls == [] and env.questions == []
    with env.core.knowledge.engine.connect() as conn:
        claimed = conn.execute(sa.text("SELECT count(*) FROM processed_events")).scalar()
    assert claimed == 0


async def test_a_malformed_body_is_refused_and_nothing_runs(env: Env) -> None:
    response = await env.post("{not json", content_type="application/json")
    assert response.status == 400
    unsigned = await env.client.post(
        ids.EVENTS_PATH, data="{not json", headers={"Content-Type": "application/json"}
    )
    assert unsigned.status == 401
    huge = await env.post("x" * (2 << 20), content_type="application/json")
    assert huge.status == 413
    await settle(env)
    assert env.slack.calls == [] and env.questions == []


async def test_a_rate_limited_call_is_retried_after_retry_after(env: Env) -> None:
    env.slack.fail("chat.startStream", status=429, retry_after=0)
    await env.ask(PASSWORD_Q)
    starts = env.slack.calls_to("chat.startStream")
    assert [c.failed for c in starts] == [True, False]


async def test_where_streaming_is_refused_the_answer_is_posted_and_updated(env: Env) -> None:
    env.slack.fail("chat.startStream", error="not_allowed_token_type")
    ts = env.slack.next_ts()
    await env.event(mention(PASSWORD_Q, channel="CPUBLIC", user=EMPLOYEE, ts=ts))
    updates = await env.slack.wait_for("chat.update")
    await settle(env)
    posted = env.slack.calls_to("chat.postMessage")[0]
    assert posted.body["thread_ts"] == ts
    final = env.slack.calls_to("chat.update")[-1]
    answer_id = answer_of(final)
    assert env.core.store.answer_for_message("slack", "CPUBLIC", final.body["ts"]) == answer_id
    assert updates and not env.slack.calls_to("chat.stopStream")


async def test_a_failure_to_answer_ends_in_an_apology_in_the_thread(env: Env) -> None:
    def broken(question: Any) -> Any:
        raise RuntimeError("the model fell over")

    env.core.answerer.stream = broken  # type: ignore[method-assign]
    ts = env.slack.next_ts()
    await env.event(mention(PASSWORD_Q, channel="CPUBLIC", user=EMPLOYEE, ts=ts))
    posted = (await env.slack.wait_for("chat.postMessage"))[0]
    assert posted.body["thread_ts"] == ts and "Sorry" in posted.body["text"]
    _, cleared = await env.slack.wait_for("assistant.threads.setStatus", 2)
    assert cleared.body == {"channel_id": "CPUBLIC", "thread_ts": ts, "status": ""}


# -- feedback ----------------------------------------------------------------------------------


def ratings(env: Env, answer_id: str) -> set[tuple[str, str, bool]]:
    return {
        (r.user_id, r.kind, r.retracted_at is None) for r in env.core.store.ratings_for(answer_id)
    }


async def test_reactions_on_answers_become_ratings_and_approvals_only_from_experts(
    env: Env,
) -> None:
    _, stop = await env.ask(PASSWORD_Q)
    answer_ts, answer_id = stop.body["ts"], answer_of(stop)
    for user, name in [
        (EMPLOYEE, "+1"),
        ("UOTHER", "-1::skin-tone-3"),
        (EMPLOYEE, "white_check_mark"),
        (EXPERT, "white_check_mark"),
        (EMPLOYEE, "tada"),
    ]:
        await env.event(
            reaction("reaction_added", name, user=user, channel="CPUBLIC", ts=answer_ts)
        )
    await env.event(
        reaction("reaction_added", "+1", user=EMPLOYEE, channel="CPUBLIC", ts="1.000001")
    )  # not an answer
    await settle(env)
    assert ratings(env, answer_id) == {
        (EMPLOYEE, "up", True),
        ("UOTHER", "down", True),
        (EXPERT, "approved", True),
    }
    assert env.core.store.feedback_counts() | {"answers": 0} == {
        "answers": 0,
        "up": 1,
        "down": 1,
        "approved": 1,
        "corrections": 0,
        "comments": 0,
    }
    await env.event(
        reaction("reaction_removed", "+1", user=EMPLOYEE, channel="CPUBLIC", ts=answer_ts)
    )
    await settle(env)
    assert (EMPLOYEE, "up", False) in ratings(env, answer_id)


async def test_an_expert_approval_serves_the_answer_to_the_next_identical_question_until_withdrawn(
    env: Env,
) -> None:
    _, stop = await env.ask(PASSWORD_Q)
    answer_ts, answer_id = stop.body["ts"], answer_of(stop)
    await env.event(
        reaction("reaction_added", "white_check_mark", user=EXPERT, channel="CPUBLIC", ts=answer_ts)
    )
    await settle(env)
    _, again = await env.ask(PASSWORD_Q)
    served = stored_answer(env.core.store, answer_of(again))
    assert served.curated_id is not None
    assert served.answer == stored_answer(env.core.store, answer_id).answer
    assert "Expert-approved" in json.dumps(again.body["blocks"])
    await env.event(
        reaction(
            "reaction_removed", "white_check_mark", user=EXPERT, channel="CPUBLIC", ts=answer_ts
        )
    )
    await settle(env)
    _, third = await env.ask(PASSWORD_Q)
    assert stored_answer(env.core.store, answer_of(third)).curated_id is None


def click(
    env: Env, stop: Call, user: str, *, value: str, action_id: str = ids.FEEDBACK_ACTION
) -> dict[str, Any]:
    """A block_actions payload: `user` clicks a button under the answer message `stop`."""
    kind = "feedback_buttons" if action_id == ids.FEEDBACK_ACTION else "button"
    return {
        "type": "block_actions",
        "user": {"id": user},
        "team": {"id": TEAM},
        "channel": {"id": "CPUBLIC"},
        "message": {"ts": stop.body["ts"], "thread_ts": "1"},
        "container": {"type": "message", "message_ts": stop.body["ts"], "channel_id": "CPUBLIC"},
        "trigger_id": "trig",
        "response_url": env.slack.response_url("button"),
        "actions": [
            {
                "action_id": action_id,
                "block_id": ids.FEEDBACK_BLOCK,
                "value": value,
                "type": kind,
                "action_ts": str(time.time()),
            }
        ],
    }


async def test_feedback_buttons_record_a_vote_and_a_second_click_replaces_it(env: Env) -> None:
    _, stop = await env.ask(PASSWORD_Q)
    answer_id = answer_of(stop)
    buttons = feedback_buttons(stop)
    assert buttons is not None
    up, down = buttons["positive_button"]["value"], buttons["negative_button"]["value"]

    assert (await env.interaction(click(env, stop, EMPLOYEE, value=up))).status == 200
    await settle(env)
    assert ratings(env, answer_id) == {(EMPLOYEE, "up", True)}
    assert (await env.interaction(click(env, stop, EMPLOYEE, value=down))).status == 200
    await settle(env)
    assert ratings(env, answer_id) == {(EMPLOYEE, "up", False), (EMPLOYEE, "down", True)}
    await env.interaction(click(env, stop, "UOTHER", value=up))
    await settle(env)
    counts = env.core.store.feedback_counts()
    assert (counts["up"], counts["down"]) == (1, 1)  # one vote per person, the last one
    thanks = env.slack.calls_to("chat.postEphemeral")
    assert [c.body["user"] for c in thanks] == [EMPLOYEE, EMPLOYEE, "UOTHER"]
    assert all("last vote" in c.body["text"] for c in thanks)
    # A forged value (not one of our answers, or no vote) records nothing.
    await env.interaction(click(env, stop, "UTHIRD", value="up:not-an-answer"))
    await env.interaction(click(env, stop, "UTHIRD", value=answer_id))
    await settle(env)
    assert {r.user_id for r in env.core.store.ratings_for(answer_id)} == {EMPLOYEE, "UOTHER"}


async def test_the_plain_buttons_of_answers_posted_before_still_count(env: Env) -> None:
    _, stop = await env.ask(PASSWORD_Q)
    answer_id = answer_of(stop)
    for action_id in (ids.FEEDBACK_UP, ids.FEEDBACK_DOWN):
        payload = click(env, stop, EMPLOYEE, value=answer_id, action_id=action_id)
        assert (await env.interaction(payload)).status == 200
        await settle(env)
    assert ratings(env, answer_id) == {(EMPLOYEE, "up", False), (EMPLOYEE, "down", True)}


CORRECTION = "Open https://password.example.com and choose Forgot password [1]."


async def test_an_experts_thread_correction_becomes_the_curated_answer(env: Env) -> None:
    ts, stop = await env.ask(PASSWORD_Q)
    answer_id = answer_of(stop)
    await env.event(
        message(
            f"Correction: {CORRECTION}",
            channel="CPUBLIC",
            user=EXPERT,
            ts=env.slack.next_ts(),
            thread_ts=ts,
        )
    )
    ack = (await env.slack.wait_for("chat.postMessage"))[0]
    assert ack.body["thread_ts"] == ts and "correction saved" in ack.body["text"]
    [row] = env.core.store.corrections_for(answer_id)
    assert row.approved is True and row.text == CORRECTION and row.curated_id
    assert len(env.questions) == 1  # a correction is not a follow-up question
    _, again = await env.ask(PASSWORD_Q)
    assert streamed_text(env.slack, again.body["ts"]).strip() == CORRECTION


async def test_deleting_a_correction_message_withdraws_it(env: Env) -> None:
    ts, stop = await env.ask(PASSWORD_Q)
    answer_id = answer_of(stop)
    reply_ts = env.slack.next_ts()
    await env.event(
        message(
            f"Correction: {CORRECTION}",
            channel="CPUBLIC",
            user=EXPERT,
            ts=reply_ts,
            thread_ts=ts,
        )
    )
    await env.slack.wait_for("chat.postMessage")
    [row] = env.core.store.corrections_for(answer_id)
    assert [a.id for a in env.core.store.expert_answers()] == [row.curated_id]

    deleted = {
        "type": "message",
        "subtype": "message_deleted",
        "hidden": True,
        "channel": "CPUBLIC",
        "channel_type": "channel",
        "ts": env.slack.next_ts(),
        "deleted_ts": reply_ts,
        "event_ts": reply_ts,
        "previous_message": {
            "type": "message",
            "user": EXPERT,
            "text": f"Correction: {CORRECTION}",
            "ts": reply_ts,
            "thread_ts": ts,
        },
    }
    assert (await env.event(deleted)).status == 200
    await settle(env)

    assert env.core.store.expert_answers() == []  # no longer served, nor indexed at the sync
    assert env.core.store.feedback_counts()["corrections"] == 0
    _, again = await env.ask(PASSWORD_Q)
    assert stored_answer(env.core.store, answer_of(again)).curated_id is None


async def test_a_non_experts_correction_is_only_a_comment(env: Env) -> None:
    ts, stop = await env.ask(PASSWORD_Q)
    answer_id = answer_of(stop)
    await env.event(
        message(
            "correction: just ask Bob",
            channel="CPUBLIC",
            user=EMPLOYEE,
            ts=env.slack.next_ts(),
            thread_ts=ts,
        )
    )
    ack = (await env.slack.wait_for("chat.postMessage"))[0]
    assert "comment" in ack.body["text"]
    [row] = env.core.store.corrections_for(answer_id)
    assert row.approved is False and row.curated_id is None
    _, again = await env.ask(PASSWORD_Q)
    assert stored_answer(env.core.store, answer_of(again)).curated_id is None


async def test_the_correct_this_answer_shortcut_opens_a_prefilled_modal_and_saves(env: Env) -> None:
    ts, stop = await env.ask(PASSWORD_Q)
    answer_id = answer_of(stop)
    original = stored_answer(env.core.store, answer_id).answer
    shortcut = {
        "type": "message_action",
        "callback_id": ids.CORRECT_SHORTCUT,
        "trigger_id": "trig-1",
        "user": {"id": EXPERT},
        "team": {"id": TEAM},
        "channel": {"id": "CPUBLIC"},
        "message": {"ts": stop.body["ts"], "thread_ts": ts, "text": original},
        "response_url": env.slack.response_url("shortcut"),
    }
    assert (await env.interaction(shortcut)).status == 200
    opened = (await env.slack.wait_for("views.open"))[0]
    view = opened.body["view"]
    assert opened.body["trigger_id"] == "trig-1" and view["callback_id"] == ids.CORRECTION_VIEW
    field = view["blocks"][1]["element"]
    assert field["initial_value"] == original[:3000]
    submission = {
        "type": "view_submission",
        "user": {"id": EXPERT},
        "team": {"id": TEAM},
        "view": view
        | {
            "id": "V1",
            "state": {
                "values": {
                    ids.CORRECTION_BLOCK: {
                        ids.CORRECTION_INPUT: {"type": "plain_text_input", "value": CORRECTION}
                    }
                }
            },
        },
    }
    assert (await env.interaction(submission)).status == 200
    ack = (await env.slack.wait_for("chat.postMessage"))[0]
    assert ack.body["thread_ts"] == ts and "correction saved" in ack.body["text"]
    [row] = env.core.store.corrections_for(answer_id)
    assert row.approved is True and row.text == CORRECTION
    _, again = await env.ask(PASSWORD_Q)
    assert streamed_text(env.slack, again.body["ts"]).strip() == CORRECTION


async def test_an_empty_modal_correction_is_refused_in_the_modal(env: Env) -> None:
    submission: dict[str, Any] = {
        "type": "view_submission",
        "user": {"id": EXPERT},
        "team": {"id": TEAM},
        "view": {
            "id": "V1",
            "type": "modal",
            "callback_id": ids.CORRECTION_VIEW,
            "private_metadata": json.dumps({"answer_id": "x", "channel": "C", "thread": "1"}),
            "state": {
                "values": {
                    ids.CORRECTION_BLOCK: {
                        ids.CORRECTION_INPUT: {"type": "plain_text_input", "value": "  "}
                    }
                }
            },
        },
    }
    response = await env.interaction(submission)
    assert response.status == 200
    assert (await response.json())["response_action"] == "errors"
    del submission["view"]["type"]  # signed, but not a shape Slack sends
    assert (await env.interaction(submission)).status == 400


# -- the slash command -------------------------------------------------------------------------


async def command(env: Env, text: str, user: str) -> tuple[Any, str]:
    key = f"cmd-{time.monotonic_ns()}"
    response = await env.form(
        {
            "command": "/expertbot",
            "text": text,
            "user_id": user,
            "user_name": user.lower(),
            "channel_id": "CPUBLIC",
            "team_id": TEAM,
            "trigger_id": "trig",
            "response_url": env.slack.response_url(key),
        }
    )
    return response, f"response_url:{key}"


async def test_admins_run_sync_and_hear_its_start_and_result(env: Env) -> None:
    before = (sync_runs(env), jobs_run(env))
    response, key = await command(env, "sync", ADMIN)
    assert response.status == 200 and "Starting `sync`" in await response.text()
    replies = await env.slack.wait_for(key, 2)
    await settle(env)
    texts = [c.body.get("text", "") for c in env.slack.calls_to(key)]
    assert texts[0] == "sync started"
    assert texts[-1].startswith("✅ sync: ") and "unchanged" in texts[-1]
    assert (sync_runs(env), jobs_run(env)) == (before[0] + 1, before[1] + 1)
    assert replies


@pytest.mark.parametrize("job", ["sync", "retrain", "rollback", "rollback v0001"])
async def test_others_are_refused_admin_commands_and_nothing_runs(env: Env, job: str) -> None:
    before = (sync_runs(env), jobs_run(env))
    response, key = await command(env, job, EMPLOYEE)
    assert response.status == 200 and "admins only" in await response.text()
    await settle(env)
    assert (sync_runs(env), jobs_run(env)) == before and env.slack.calls_to(key) == []


@pytest.mark.parametrize("text", ["", "help", "frobnicate now"])
async def test_help_and_unknown_subcommands_answer_with_help(env: Env, text: str) -> None:
    response, _ = await command(env, text, EMPLOYEE)
    body = await response.text()
    assert response.status == 200 and "`ask <question>`" in body and "`rollback [version]`" in body


async def test_status_shows_index_adapter_and_feedback(env: Env) -> None:
    _, key = await command(env, "status", EMPLOYEE)
    [reply] = await env.slack.wait_for(key)
    text = reply.body["text"]
    assert "Index: 18 documents" in text and "no adapter serving" in text
    assert "Feedback: 0 answers" in text


async def test_ask_answers_anyone_through_the_response_url(env: Env) -> None:
    response, key = await command(env, f"ask {PASSWORD_Q}", EMPLOYEE)
    assert response.status == 200
    [reply] = await env.slack.wait_for(key)
    answer_id = answer_of(reply)
    assert stored_answer(env.core.store, answer_id).question == PASSWORD_Q
    assert reply.body["response_type"] == "ephemeral"


async def test_ask_tells_the_asker_what_to_fix_or_apologises_never_showing_the_cause(
    env: Env,
) -> None:
    _, key = await command(env, "ask " + "why " * 2000, EMPLOYEE)
    [reply] = await env.slack.wait_for(key)
    assert reply.body["text"].startswith("I can't answer that: the question is too long")
    assert reply.body["response_type"] == "ephemeral"

    def broken(question: Any) -> Any:
        raise RuntimeError("secret internals")

    env.core.answerer.stream = broken  # type: ignore[method-assign]
    _, key = await command(env, f"ask {PASSWORD_Q}", EMPLOYEE)
    [reply] = await env.slack.wait_for(key)
    assert "Sorry" in reply.body["text"] and "secret" not in json.dumps(reply.body)
    assert reply.body["response_type"] == "ephemeral"
    assert env.core.store.feedback_counts()["answers"] == 0


async def test_rollback_and_retrain_report_clearly_when_they_cannot_run(env: Env) -> None:
    _, key = await command(env, "rollback", ADMIN)
    [reply] = await env.slack.wait_for(key)
    assert "nothing to roll back" in reply.body["text"]
    _, key = await command(env, "retrain", ADMIN)
    replies = await env.slack.wait_for(key, 2)
    assert replies[-1].body["text"].startswith("✅ retrain: skipped: too little data: 0 training")
    assert env.slack.calls_to("chat.postMessage") == []  # a skipped run is not announced


async def test_retrain_from_slack_promotes_and_posts_the_report_to_the_admin_channel(
    env: Env, recorded_training: None
) -> None:
    for question in QUESTIONS[:12]:
        corrected(env.core.store, question)
    _, key = await command(env, "retrain", ADMIN)
    [upload] = await env.slack.wait_for("files.completeUploadExternal", timeout=600)
    replies = [c.body["text"] for c in await env.slack.wait_for(key, 5)]
    assert replies[0] == "retrain started: building the training set"
    assert any(r.startswith("training on ") for r in replies)
    # The recorded run measured citations and abstention (no key facts in its answers).
    assert replies[-1].startswith("✅ retrain: v0001 promoted: abstention 0.00 → 0.00, valid ")
    assert "valid citations 0.00 → 0.50 on 2 held-out questions" in replies[-1]
    [post] = env.slack.calls_to("chat.postMessage")
    assert post.body["channel"] == "CADMIN" and "v0001 promoted" in post.body["text"]
    assert "| answers with valid citations | 0.000 | 0.500 | +0.500 ✓ |" in post.body["text"]
    assert "| answer F1 vs reference (not deciding) |" in post.body["text"]
    assert upload.body["channel_id"] == "CADMIN" and upload.body["files"][0]["title"] == (
        "v0001: training loss"
    )
    [sent] = [c for c in env.slack.calls if c.method.startswith("upload:")]
    assert sent.body["data"][:8] == b"\x89PNG\r\n\x1a\n"
    assert env.core.registry.active() == "v0001"


# -- Socket Mode -------------------------------------------------------------------------------


async def test_socket_mode_shares_the_listeners(env: Env) -> None:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    bot = env.services.slack
    handler = AsyncSocketModeHandler(bot.app, "xapp-test", web_client=bot.client)
    await handler.connect_async()
    try:
        ts = env.slack.next_ts()
        ack = await env.slack.send_envelope(
            "events_api",
            envelope(mention(PASSWORD_Q, channel="CPUBLIC", user=EMPLOYEE, ts=ts), "EvSOCKET"),
        )
        assert ack["envelope_id"]
        stop = (await env.slack.wait_for("chat.stopStream"))[0]
        assert stored_answer(env.core.store, answer_of(stop)).thread == ts
        opened = env.slack.calls_to("apps.connections.open")[0]
        assert opened.headers["Authorization"] == "Bearer xapp-test"
    finally:
        await handler.close_async()


# -- the server --------------------------------------------------------------------------------


async def test_health_and_readiness(env: Env) -> None:
    assert (await env.client.get("/healthz")).status == 200
    ready = await env.client.get("/readyz")
    body = await ready.json()
    assert ready.status == 200 and body["checks"]["database"] == "ok"
    assert body["checks"]["index"].endswith("chunks")
    engine = env.core.knowledge.engine
    env.core.knowledge.engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        down = await env.client.get("/readyz")
        assert down.status == 503 and (await down.json())["status"] == "not ready"
    finally:
        env.core.knowledge.engine = engine


async def test_an_answer_failing_midway_ends_its_stream_and_apologises(env: Env) -> None:
    async def half(question: Any) -> Any:
        yield "Reset it in the portal"
        raise TimeoutError("the model stalled")

    env.core.answerer.stream = half  # type: ignore[method-assign]
    ts = env.slack.next_ts()
    await env.event(mention(PASSWORD_Q, channel="CPUBLIC", user=EMPLOYEE, ts=ts))
    stop = (await env.slack.wait_for("chat.stopStream"))[0]
    assert (
        "blocks" not in stop.body or feedback_buttons(stop) is None
    )  # no buttons on a broken answer
    apology = (await env.slack.wait_for("chat.postMessage"))[0]
    assert apology.body["thread_ts"] == ts and "Sorry" in apology.body["text"]
    assert env.core.store.answer_for_message("slack", "CPUBLIC", stop.body["ts"]) is None


async def test_a_huge_question_gets_told_why_in_the_thread_and_nothing_is_recorded(
    env: Env,
) -> None:
    ts = env.slack.next_ts()
    await env.event(mention("why " * 2000, channel="CPUBLIC", user=EMPLOYEE, ts=ts))
    reply = (await env.slack.wait_for("chat.postMessage"))[0]
    assert reply.body["thread_ts"] == ts
    assert reply.body["text"].startswith("I can't answer that: the question is too long")
    assert env.core.store.feedback_counts()["answers"] == 0


async def test_experts_and_admins_may_come_from_slack_user_groups(env: Env) -> None:
    env.slack.set_usergroup("S0EXPERTS", "it-experts", ["UGROUPIE"])
    env.slack.set_usergroup("S0ADMINS", "bot-admins", ["UOPS"])
    config = env.services.slack.config
    config.expert_groups, config.admin_groups = ["S0EXPERTS"], ["S0ADMINS"]
    _, stop = await env.ask(PASSWORD_Q)
    answer_id = answer_of(stop)
    await env.event(
        reaction(
            "reaction_added",
            "white_check_mark",
            user="UGROUPIE",
            channel="CPUBLIC",
            ts=stop.body["ts"],
        )
    )
    await settle(env)
    assert ("UGROUPIE", "approved", True) in ratings(env, answer_id)
    response, _ = await command(env, "rollback", "UOPS")
    assert "admins only" not in await response.text()
    response, _ = await command(env, "rollback", "UGROUPIE")
    assert "admins only" in await response.text()
    # The asker's groups travel with the question (restricted documents may name them).
    await env.ask("Who are the IT experts?", user="UGROUPIE")
    assert {"S0EXPERTS", "it-experts"} <= env.questions[-1].asker_groups


async def test_a_broken_model_reply_is_never_shown_the_best_passage_is_quoted(scripted) -> None:
    env, model = scripted
    model.reply = "1."
    _, stop = await env.ask(PASSWORD_Q)
    answer_ts = stop.body["ts"]
    row = stored_answer(env.core.store, answer_of(stop))
    assert row.model == QUOTE_MODEL and row.answer.startswith(f"{QUOTE_INTRO} [1]:")
    # The streamed message is the quote, whole; "1." was never in it.
    streamed = streamed_text(env.slack, answer_ts)
    assert streamed.strip() == row.answer and "\n> " in streamed
    [sources] = [b for b in stop.body["blocks"] if b.get("block_id") == "expertbot_sources"]
    [line] = [line for e in sources["elements"] for line in e["text"].splitlines()]
    assert line.startswith("[1]") and row.sources[0].source.title in line
    assert env.core.store.answer_for_message("slack", "CPUBLIC", answer_ts) == row.id


async def test_a_loop_shown_while_streaming_is_replaced_by_the_quote(scripted) -> None:
    env, model = scripted
    model.reply = "Passwords are reset at KeyDesk by the help desk team. "
    model.endless = True
    _, stop = await env.ask(PASSWORD_Q)
    answer_ts = stop.body["ts"]
    assert model.disconnected.is_set()  # the model was stopped
    streamed = streamed_text(env.slack, answer_ts)
    assert streamed.startswith("Passwords are reset")  # it looked like an answer at first
    # ... and the message now shows the quote, with its sources and buttons, and is linked.
    [update] = [c for c in env.slack.calls_to("chat.update") if c.body["ts"] == answer_ts]
    answer_id = env.core.store.answer_for_message("slack", "CPUBLIC", answer_ts)
    row = stored_answer(env.core.store, answer_id)
    assert row.model == QUOTE_MODEL
    assert update.body["text"].startswith(f"{QUOTE_INTRO} [1]:\n\n&gt; ")
    assert "Passwords are reset at KeyDesk" not in update.body["text"]
    assert answer_of(update) == answer_id
    assert any(b.get("block_id") == "expertbot_sources" for b in update.body["blocks"])
