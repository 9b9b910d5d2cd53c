"""Slack's agent messaging experience and the App Home tab, end to end: real bolt dispatch with
real signatures against the real aiohttp app and core, and the fake Slack Web API recording
every call (suggested prompts, the user's context, the Home tab and its buttons)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from bot.core.answering import prefer_viewed
from bot.ops import ADMIN_JOBS
from bot.slack import ids
from bot.slack.assistant import viewed_channel
from bot.slack.home import HomeData, home_view
from knowledge.config import FolderSource
from knowledge.models import Hit
from tests.helpers import (
    FINANCE_Q,
    HANDBOOK,
    PASSWORD_Q,
    TRAINING,
    envelope,
    jobs_run,
    running_slack,
    settings_for,
    settle,
    sync_runs,
)
from tests.helpers import SlackEnv as Env
from tests.slack_fake import TEAM, Call
from training.config import TrainingConfig
from training.feedback.records import (
    AnswerRecord,
    CitedSource,
    RatingKind,
    RetrievedChunk,
    StoredSource,
)

ADMIN, EXPERT, EMPLOYEE = "UADMIN", "UEXPERT", "UEMPLOYEE"
DEFAULTS = ["How do I request a laptop?", "Where is the travel policy?"]
FINANCE_DOC = "finance/quarter-close.md"


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
        suggested_prompts=DEFAULTS,
    ) as made:
        made.slack.set_channel("C0FINANCE", is_private=True, name="finance")
        yield made


def opened(user: str, tab: str, *, channel: str = "D0DM", **extra: Any) -> dict[str, Any]:
    """An app_home_opened event: `user` opens the app's `tab` (messages or home)."""
    return {
        "type": "app_home_opened",
        "user": user,
        "channel": channel,
        "tab": tab,
        "event_ts": str(time.time()),
    } | extra


def dm(text: str, *, user: str, ts: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "message",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": "D0DM",
        "channel_type": "im",
        "event_ts": ts,
    } | extra


def looking_at(channel: str) -> dict[str, Any]:
    return {"entities": [{"type": "slack#/types/channel_id", "value": channel, "team_id": TEAM}]}


def record(
    env: Env,
    question: str,
    *,
    where: str = "public",
    channel: str = "CPUBLIC",
    asker: str = EMPLOYEE,
    access: str = "public",
    allowed: tuple[str, ...] = (),
    abstained: bool = False,
) -> str:
    """An answer as the core records it, from one passage of `access`."""
    answer_id = str(uuid.uuid4())
    passage = StoredSource("Doc", "https://docs.example.com/doc", "Heading", access, allowed)
    env.core.store.record(
        AnswerRecord(
            id=answer_id,
            question=question,
            asker=asker,
            platform="slack",
            where_kind=where,
            channel=channel,
            thread="1700000000.000001",
            answer=f"The answer to: {question}",
            abstained=abstained,
            model="test",
            retrieved=(RetrievedChunk("c1", "doc.md", "Doc", 0.9, access, allowed),),
            sources=() if abstained else (CitedSource(1, passage),),
        )
    )
    return answer_id


def rate(env: Env, answer_id: str, user: str, kind: str) -> None:
    env.core.store.rate(
        answer_id=answer_id, user_id=user, platform="slack", kind=RatingKind(kind), source="t"
    )


# -- suggested prompts -------------------------------------------------------------------------


async def suggested(env: Env, user: str = EMPLOYEE, **extra: Any) -> Call:
    before = len(env.slack.calls_to("assistant.threads.setSuggestedPrompts"))
    assert (await env.event(opened(user, "messages", **extra))).status == 200
    calls = await env.slack.wait_for("assistant.threads.setSuggestedPrompts", before + 1)
    return calls[before]


async def test_opening_the_messages_tab_sets_the_configured_prompts_with_the_channel_only(
    env: Env,
) -> None:
    call = await suggested(env, app_context=looking_at("C0FINANCE"))
    assert call.body == {
        "channel_id": "D0DM",
        "title": "Try asking",
        "prompts": [{"title": q, "message": q} for q in DEFAULTS],
    }  # no thread_ts: under the agent experience it would make Slack drop them
    assert not call.failed
    # The context it came with is what the user looks at (see the next tests for its use).
    assert env.services.slack.viewing.channel_of(EMPLOYEE) == "C0FINANCE"


async def test_learned_prompts_are_well_rated_public_questions_from_public_documents_only(
    env: Env,
) -> None:
    public = record(env, PASSWORD_Q)
    rate(env, public, EMPLOYEE, "up")
    approved = record(env, "When is payday?")
    rate(env, approved, EXPERT, "approved")
    # Never suggested: asked in a private channel, in a DM, answered from a restricted or a
    # private document, rated 👎 as well, or not rated at all.
    leaks = [
        record(env, "Secret merger plans?", where="private", channel="C0FINANCE"),
        record(env, "My salary review?", where="dm", channel="D0DM"),
        record(env, "Quarter close numbers?", access="restricted", allowed=("C0FINANCE",)),
        record(env, "Board minutes?", access="private"),
        record(env, "Disputed answer?"),
    ]
    for answer_id in leaks:
        rate(env, answer_id, EMPLOYEE, "up")
    rate(env, leaks[-1], "UOTHER", "down")
    record(env, "Nobody rated this?")
    rate(env, record(env, "how do I reset my password"), EMPLOYEE, "up")  # the same question

    call = await suggested(env)
    messages = [p["message"] for p in call.body["prompts"]]
    assert messages == ["how do I reset my password", "When is payday?", *DEFAULTS]

    env.services.slack.config.learned_prompts = False
    assert [p["message"] for p in (await suggested(env)).body["prompts"]] == DEFAULTS


async def test_a_long_question_is_cut_in_the_prompts_title_not_in_its_message(env: Env) -> None:
    long = "How do I " + "really " * 30 + "reset my password?"
    rate(env, record(env, long), EMPLOYEE, "up")
    [first, *_] = (await suggested(env)).body["prompts"]
    assert first["message"] == long and len(first["title"]) == 75
    assert first["title"].endswith("…")


# -- the user's context --------------------------------------------------------------------------


async def test_what_the_user_looks_at_ranks_a_dm_answer_but_never_widens_its_documents(
    env: Env,
) -> None:
    # As Slack documents it: the event names no user; its authorization does.
    changed = {"type": "app_context_changed", "context": looking_at("C0FINANCE")}
    body = envelope(changed, "EvContext") | {
        "authorizations": [{"team_id": TEAM, "user_id": EMPLOYEE, "is_bot": False}]
    }
    assert (await env.post(json.dumps(body), content_type="application/json")).status == 200
    await settle(env)
    ts = env.slack.next_ts()
    await env.event(dm(FINANCE_Q, user=EMPLOYEE, ts=ts))
    stop = (await env.slack.wait_for("chat.stopStream"))[0]
    question = env.questions[-1]
    assert question.viewing == ("C0FINANCE", "finance")  # the context reached the core
    assert question.where.kind == "dm" and question.where.channel == "D0DM"
    answer_id = await env.linked("D0DM", stop.body["ts"])
    row = env.core.store.get_answer(answer_id)
    assert row is not None
    # Restricted to #finance only: not for a DM, whatever channel the asker looks at.
    assert FINANCE_DOC not in {c.doc for c in row.retrieved}

    # The context Slack adds to a DM replaces it; an empty one clears it.
    await env.event(dm("And the VPN?", user=EMPLOYEE, ts=env.slack.next_ts(), app_context={}))
    await env.slack.wait_for("chat.stopStream", 2)
    assert env.questions[-1].viewing == ()


def test_the_viewed_channel_is_read_from_every_shape_slack_sends_and_dms_say_nothing() -> None:
    assert viewed_channel({"context": looking_at("C1")}) == "C1"
    assert viewed_channel({"app_context": looking_at("G2")}) == "G2"
    assert viewed_channel({"context": {"channel_id": "C3"}}) == "C3"  # assistant_view's shape
    assert viewed_channel({"context": looking_at("D4")}) is None  # a DM is no topic
    canvas = {"entities": [{"type": "slack#/types/canvas_id", "value": "F5"}]}
    assert viewed_channel({"context": canvas}) is None
    assert viewed_channel({"context": {}}) is None and viewed_channel({"context": "x"}) is None


def hit(doc: str, *, access: str = "public", allowed: tuple[str, ...] = ()) -> Hit:
    return Hit("c-" + doc, "handbook", doc, doc, "", "", "text", 0.5, access, allowed)


def test_hits_about_the_viewed_channel_come_first_and_none_is_added() -> None:
    hits = [hit("it/vpn.md"), hit("finance/expenses.md"), hit("x.md", allowed=("C0FIN",))]
    ranked = prefer_viewed(hits, ("C0FIN", "finance"))
    assert [h.doc_id for h in ranked] == ["finance/expenses.md", "x.md", "it/vpn.md"]
    assert prefer_viewed(hits, ()) == hits


# -- the App Home tab ---------------------------------------------------------------------------


async def home_of(env: Env, user: str) -> list[dict[str, Any]]:
    before = len(env.slack.calls_to("views.publish"))
    assert (await env.event(opened(user, "home"))).status == 200
    call = (await env.slack.wait_for("views.publish", before + 1))[before]
    assert call.body["user_id"] == user and not call.failed
    view = call.body["view"]
    assert view["type"] == "home" and len(view["blocks"]) <= 100
    return list(view["blocks"])


def texts(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def action_ids(blocks: list[dict[str, Any]]) -> list[str]:
    return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


def reviewed(blocks: list[dict[str, Any]]) -> list[str]:
    """The answers listed for review, in order."""
    return [
        b["block_id"].removeprefix("review_")
        for b in blocks
        if str(b.get("block_id", "")).startswith("review_")
    ]


async def test_an_employees_home_says_how_to_ask_what_it_knows_and_their_questions(
    env: Env,
) -> None:
    record(env, "Where do I find the VPN guide?", asker=EMPLOYEE)
    record(env, "Someone else's question?", asker="UOTHER")
    blocks = await home_of(env, EMPLOYEE)
    shown = texts(blocks)
    assert "mentioning me in a channel" in shown
    assert "• handbook (folder): 18 documents, synced " in shown and "last sync" in shown
    assert "Where do I find the VPN guide?" in shown and "Someone else" not in shown
    assert "Answers to review" not in shown and action_ids(blocks) == []


async def test_an_experts_home_lists_only_the_answers_they_may_see_with_approve_and_correct(
    env: Env,
) -> None:
    disliked = record(env, "Public and disliked?")
    rate(env, disliked, EMPLOYEE, "down")
    unknown = record(env, "Nobody knew?", abstained=True)
    private = record(env, "In #finance?", where="private", channel="C0FINANCE")
    rate(env, private, "UOTHER", "down")
    restricted = record(
        env, "Their DM, HR only?", where="dm", channel="D0OTHER", asker="UOTHER",
        access="restricted", allowed=("hr-team",),
    )  # fmt: skip
    rate(env, restricted, "UOTHER", "down")
    liked = record(env, "Liked?")
    rate(env, liked, EMPLOYEE, "up")

    blocks = await home_of(env, EXPERT)
    assert reviewed(blocks) == [unknown, disliked]  # newest first; not #finance, not HR's
    assert action_ids(blocks) == [ids.HOME_APPROVE, ids.HOME_CORRECT] * 2
    assert "1 × 👎" in texts(blocks) and "I didn't know" in texts(blocks)

    # In #finance (and in the HR group): those are the expert's to review too.
    env.slack.set_channel("C0FINANCE", is_private=True, name="finance", members=[EXPERT])
    env.slack.set_usergroup("S0HR", "hr-team", [EXPERT])
    env.services.slack.directory.ttl = 0
    assert reviewed(await home_of(env, EXPERT)) == [restricted, private, unknown, disliked]


async def test_an_admins_home_shows_the_adapter_runs_schedule_feedback_and_job_buttons(
    env: Env,
) -> None:
    blocks = await home_of(env, ADMIN)
    shown = texts(blocks)
    assert "*Serving:*" in shown and "no adapter" in shown
    assert "Last training runs" in shown and "Scheduled" in shown and "*Feedback:*" in shown
    [buttons] = [b for b in blocks if b.get("block_id") == "admin_jobs"]
    jobs = buttons["elements"]
    assert [j["action_id"] for j in jobs] == [f"{ids.HOME_JOB}_{j}" for j in ADMIN_JOBS]
    rollback = jobs[-1]
    assert rollback["confirm"]["confirm"]["text"] == "Roll back" and rollback["style"] == "danger"
    assert "Answers to review" not in shown  # an admin, not an expert


def home_click(user: str, action_id: str, value: str) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": user},
        "team": {"id": TEAM},
        "container": {"type": "view", "view_id": "V0HOME"},
        "view": {"id": "V0HOME", "type": "home", "blocks": []},
        "trigger_id": "trig-home",
        "actions": [{"action_id": action_id, "block_id": "b", "value": value, "type": "button"}],
    }


async def test_an_expert_approves_from_home_and_the_answer_leaves_the_list(env: Env) -> None:
    answer_id = record(env, "Public and disliked?")
    rate(env, answer_id, EMPLOYEE, "down")
    assert reviewed(await home_of(env, EXPERT)) == [answer_id]
    published = len(env.slack.calls_to("views.publish"))
    assert (await env.interaction(home_click(EXPERT, ids.HOME_APPROVE, answer_id))).status == 200
    call = (await env.slack.wait_for("views.publish", published + 1))[-1]
    assert reviewed(call.body["view"]["blocks"]) == []
    approvals = [r for r in env.core.store.ratings_for(answer_id) if r.kind == "approved"]
    assert [(r.user_id, r.source, r.retracted_at) for r in approvals] == [(EXPERT, "home", None)]


async def test_correct_from_home_opens_the_correction_modal_and_saves_without_a_thread_reply(
    env: Env,
) -> None:
    answer_id = record(env, "Public and disliked?")
    rate(env, answer_id, EMPLOYEE, "down")
    assert (await env.interaction(home_click(EXPERT, ids.HOME_CORRECT, answer_id))).status == 200
    opened_modal = (await env.slack.wait_for("views.open"))[0]
    view = opened_modal.body["view"]
    assert view["callback_id"] == ids.CORRECTION_VIEW and opened_modal.body["trigger_id"]
    assert view["blocks"][1]["element"]["initial_value"] == "The answer to: Public and disliked?"
    values = {ids.CORRECTION_BLOCK: {ids.CORRECTION_INPUT: {"value": "The right answer."}}}
    submission = {
        "type": "view_submission",
        "user": {"id": EXPERT},
        "team": {"id": TEAM},
        "view": view | {"id": "V1", "state": {"values": values}},
    }
    assert (await env.interaction(submission)).status == 200
    await env.slack.wait_for("views.publish")
    [row] = env.core.store.corrections_for(answer_id)
    assert row.approved and row.text == "The right answer."
    assert env.slack.calls_to("chat.postMessage") == []  # nothing posted into the asker's thread


@pytest.mark.parametrize("action_id", [ids.HOME_APPROVE, ids.HOME_CORRECT])
async def test_a_forged_review_click_by_a_non_expert_is_refused(env: Env, action_id: str) -> None:
    answer_id = record(env, "Public and disliked?")
    rate(env, answer_id, EMPLOYEE, "down")
    assert (await env.interaction(home_click(EMPLOYEE, action_id, answer_id))).status == 200
    told = (await env.slack.wait_for("chat.postMessage"))[0]
    assert told.body["channel"] == EMPLOYEE and "experts only" in told.body["text"]
    await settle(env)
    assert [r.kind for r in env.core.store.ratings_for(answer_id)] == ["down"]
    assert env.slack.calls_to("views.open") == []


async def test_an_expert_cannot_open_an_answer_they_may_not_see(env: Env) -> None:
    private = record(env, "In #finance?", where="private", channel="C0FINANCE")
    rate(env, private, "UOTHER", "down")
    await env.interaction(home_click(EXPERT, ids.HOME_CORRECT, private))
    await env.slack.wait_for("chat.postMessage")
    assert env.slack.calls_to("views.open") == []


async def test_an_admin_runs_sync_from_home_and_homes_are_refreshed(env: Env) -> None:
    await home_of(env, EMPLOYEE)  # a recent viewer
    before = (sync_runs(env), jobs_run(env))
    published = len(env.slack.calls_to("views.publish"))
    click = home_click(ADMIN, f"{ids.HOME_JOB}_sync", "sync")
    assert (await env.interaction(click)).status == 200
    await env.slack.wait_for("views.publish", published + 2)
    await settle(env)
    assert (sync_runs(env), jobs_run(env)) == (before[0] + 1, before[1] + 1)
    said = [c.body["text"] for c in env.slack.calls_to("chat.postMessage")]
    assert all(c.body["channel"] == ADMIN for c in env.slack.calls_to("chat.postMessage"))
    assert said[0] == "Starting `sync` …" and said[-1].startswith("✅ sync: ")
    refreshed = {c.body["user_id"] for c in env.slack.calls_to("views.publish")[published:]}
    assert refreshed == {ADMIN, EMPLOYEE}


async def test_a_scheduled_job_refreshes_the_admins_home_too(env: Env) -> None:
    published = len(env.slack.calls_to("views.publish"))
    await env.services.ops.sync(trigger="schedule@2026-11-30T03:00:00+00:00")
    refreshed = {c.body["user_id"] for c in env.slack.calls_to("views.publish")[published:]}
    assert refreshed == {ADMIN}  # nobody else opened the tab lately


@pytest.mark.parametrize("job", ADMIN_JOBS)
async def test_a_forged_admin_button_from_a_non_admin_is_refused_and_nothing_runs(
    env: Env, job: str
) -> None:
    before = (sync_runs(env), jobs_run(env), env.core.registry.active())
    click = home_click(EMPLOYEE, f"{ids.HOME_JOB}_{job}", job)
    assert (await env.interaction(click)).status == 200
    told = (await env.slack.wait_for("chat.postMessage"))[0]
    assert told.body["channel"] == EMPLOYEE and "admins only" in told.body["text"]
    await settle(env)
    assert (sync_runs(env), jobs_run(env), env.core.registry.active()) == before
    assert len(env.slack.calls_to("chat.postMessage")) == 1


def test_the_admin_section_shows_each_runs_verdict_and_scores_and_lists_are_cut() -> None:
    status: dict[str, Any] = {
        "model": "phi-3",
        "adapter": {"version": "v0002", "metrics": {"grounding": 0.9}, "baseline": {}},
        "schedule": {"timezone": "UTC", "jobs": {"sync": {"cron": "0 3 * * *", "next": "x"}}},
        "feedback": {"answers": 7, "up": 3, "down": 1},
    }
    runs: list[dict[str, Any]] = [
        {
            "status": "promoted",
            "version": "v0002",
            "finished_at": "t2",
            "metrics": {"grounding": 0.9},
        },
        {"status": "skipped", "reason": "too little data", "finished_at": "t1"},
    ]
    rows = [
        (
            AnswerRecord(
                str(n), f"Question {n}?", "U1", "slack", "public", "C", None, "A", False, "m"
            ),
            1,
        )
        for n in range(60)
    ]
    view = home_view(HomeData("Ask me.", ["handbook"], "18 documents", [], rows, status, runs))
    shown = texts(view["blocks"])
    assert "adapter `v0002` — grounding 0.90" in shown
    assert "*promoted* `v0002` — grounding 0.90" in shown
    assert "too little data" in shown and "next x UTC" in shown and "7 answers, 3 👍, 1 👎" in shown
    assert len(view["blocks"]) <= 100 and len(reviewed(view["blocks"])) == 10
    assert "… and 50 more." in shown
