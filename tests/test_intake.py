"""Never losing a question, in one process: questions stored with their claims, leases taken by
one replica only, answers resumed in place, too-old questions apologized for, answers drained or
released on the way down, and jobs recorded as interrupted (real aiohttp app, bolt, SQL store,
tiny Phi-3; the fake Slack Web API and Teams connector record what is posted)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from base.database import make_engine, transaction, utcnow
from base.errors import DatabaseError
from base.locks import JobLock
from base.migrations import migrate_all
from bot.claims import ANSWERED, FAILED, EventClaims, processed_events
from bot.core.question import Answer, Question, Turn, Where, WhereKind
from bot.intake import TOO_OLD, Intake
from bot.ops import status_lines
from bot.settings import DeliveryConfig
from knowledge.config import FolderSource
from knowledge.connectors import folder as folder_module
from knowledge.sync import sync_lock
from tests.helpers import HANDBOOK, PASSWORD_Q, running_slack, settings_for
from tests.slack_fake import TEAM, Call

CHANNEL, ASKER = "CPUBLIC", "UASKER"


def asked(ts: str, *, kind: WhereKind = WhereKind.PUBLIC, channel: str = CHANNEL) -> Question:
    return Question(
        text=PASSWORD_Q,
        asker=ASKER,
        where=Where(kind=kind, channel=channel, platform="slack", thread=ts),
        history=(Turn("user", "earlier"), Turn("assistant", "an earlier answer")),
        asker_groups=frozenset({"S0STAFF"}),
    )


def state(engine: sa.engine.Engine, event_id: str) -> tuple[str, int]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(processed_events.c.state, processed_events.c.attempts).where(
                processed_events.c.event_id == event_id
            )
        ).one()
    return row.state, row.attempts


def finals(calls: list[Call]) -> list[Call]:
    """The calls that show a finished answer (its footer: sources, buttons)."""
    return [
        c
        for c in calls
        if c.method in ("chat.stopStream", "chat.update", "chat.postMessage")
        and c.body.get("blocks")
    ]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.engine.Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'claims.db'}")
    migrate_all(engine)
    yield engine
    engine.dispose()


async def test_a_question_is_kept_with_its_claim_and_comes_back_as_asked(engine) -> None:
    claims = EventClaims(engine, owner="replica-a", lease_s=30)
    question = asked("1700000000.000100", kind=WhereKind.DM, channel="D0ASKER")
    pending = await claims.claim_question("slack", "Ev1", question, {"ts": "1", "team": TEAM})
    assert pending is not None and pending.question == question
    # Every other copy of the event is dropped, whichever replica it reaches.
    other = EventClaims(engine, owner="replica-b")
    assert await other.claim_question("slack", "Ev1", question, {}) is None
    assert not await other.claim("slack", "Ev1")
    # Held and renewed by its replica: nobody else may take it.
    assert await claims.renew([pending]) == 1
    assert await other.take_expired() == []
    # Released (its replica is stopping): the next replica takes it, with the same question —
    # place, asker, groups, history: the same documents, never more.
    assert await claims.release() == 1
    [taken] = await other.take_expired()
    assert taken.question == question and taken.resumed
    assert taken.attempts == 1  # never started: waiting for the model is not a try
    assert await claims.take_expired() == []


async def test_only_questions_being_answered_keep_their_lease(engine) -> None:
    """A question whose answer ended without being recorded (its task failed) is not renewed
    with the others: its lease runs out and another replica answers it."""
    claims = EventClaims(engine, owner="busy", lease_s=0.2)
    working = await claims.claim_question("slack", "EvWorking", asked("1"), {"ts": "1"})
    orphan = await claims.claim_question("slack", "EvOrphan", asked("2"), {"ts": "2"})
    assert working is not None and orphan is not None
    await claims.answering(orphan)  # it had begun when its task failed
    for _ in range(3):
        await asyncio.sleep(0.1)
        assert await claims.renew([working]) == 1
    [taken] = await EventClaims(engine, owner="other").take_expired()
    assert taken.event_id == "EvOrphan" and taken.attempts == 2  # it had started: one try


async def test_an_expired_lease_is_taken_by_exactly_one_replica(engine) -> None:
    dead = EventClaims(engine, owner="dead", lease_s=0.05)
    for n in range(5):
        await dead.claim_question("slack", f"Ev{n}", asked(f"{n}"), {"ts": str(n)})
    await asyncio.sleep(0.1)
    replicas = [EventClaims(engine, owner=f"replica-{n}") for n in range(3)]
    taken = await asyncio.gather(*(r.take_expired() for r in replicas))
    ids = [p.event_id for batch in taken for p in batch]
    assert sorted(ids) == [f"Ev{n}" for n in range(5)]  # each once, none lost


@pytest.fixture
async def slack_env(handbook_data_dir: Path, tiny_phi3: Path, embedder, aiohttp_client):
    settings = settings_for(handbook_data_dir, str(tiny_phi3))
    settings.knowledge.sources = [FolderSource(path=HANDBOOK, name="handbook")]
    async with running_slack(settings, embedder, aiohttp_client) as made:
        yield made


async def left_by_a_dead_replica(
    env: Any, event_id: str, *, posted: tuple[str, ...] = (), age_s: float = 0.0
) -> Question:
    """A question another replica claimed (and maybe began answering) before it died."""
    ts = env.slack.next_ts()
    question = asked(ts)
    dead = EventClaims(env.core.knowledge.engine, owner="dead", lease_s=0.01)
    pending = await dead.claim_question("slack", event_id, question, {"ts": ts, "team": TEAM})
    assert pending is not None
    for message in posted:
        await dead.note_message(pending, message)
    if age_s:
        with transaction(env.core.knowledge.engine, "ageing a question") as conn:
            conn.execute(
                processed_events.update()
                .where(processed_events.c.event_id == event_id)
                .values(received_at=utcnow() - timedelta(seconds=age_s))
            )
    await asyncio.sleep(0.05)  # its lease runs out
    return question


async def test_a_question_a_dead_replica_left_is_answered_once_by_another(slack_env) -> None:
    env = slack_env
    question = await left_by_a_dead_replica(env, "EvLost")
    waiting = status_lines(await env.services.ops.status())
    assert any(line.startswith("Questions waiting: 1 received") for line in waiting)
    intake = env.services.intake
    assert await intake.resume() == 1
    await intake.idle()
    assert await intake.resume() == 0  # answered: nobody takes it again
    assert state(env.core.knowledge.engine, "EvLost") == (ANSWERED, 1)
    assert len(finals(env.slack.calls)) == 1
    [stream] = env.slack.calls_to("chat.startStream")
    assert stream.body["thread_ts"] == question.where.thread
    # Answered exactly as it was asked: the same place, asker and groups (the same documents).
    assert env.questions == [question]
    # A status while it was answered again, cleared at the end; the 👀 an earlier try may have
    # left is taken off.
    statuses = [c.body["status"] for c in env.slack.calls_to("assistant.threads.setStatus")]
    assert statuses[0] and statuses[-1] == ""
    assert [c.body["name"] for c in env.slack.calls_to("reactions.remove")] == ["eyes"]


async def test_a_half_streamed_answer_is_finished_in_place_not_beside(slack_env) -> None:
    env = slack_env
    old = env.slack.next_ts()
    await left_by_a_dead_replica(env, "EvHalf", posted=(old,))
    assert await env.services.intake.resume() == 1
    await env.services.intake.idle()
    # The stream it left open is ended, and its message becomes the answer.
    assert [c.body["ts"] for c in env.slack.calls_to("chat.stopStream")] == [old]
    [final] = finals(env.slack.calls)
    assert final.method == "chat.update" and final.body["ts"] == old
    assert env.slack.calls_to("chat.startStream") == []
    assert env.slack.calls_to("chat.postMessage") == []
    assert env.core.store.answer_for_message("slack", CHANNEL, old)


async def test_a_question_past_its_max_age_gets_the_apology_in_place(slack_env) -> None:
    env = slack_env
    old = env.slack.next_ts()
    await left_by_a_dead_replica(env, "EvOld", posted=(old,), age_s=400)
    assert await env.services.intake.resume() == 1
    await env.services.intake.idle()
    [update] = env.slack.calls_to("chat.update")
    assert update.body["ts"] == old and update.body["text"] == TOO_OLD
    assert env.questions == []  # no stale answer was written
    assert state(env.core.knowledge.engine, "EvOld")[0] == ANSWERED  # its one reply


async def test_a_question_that_keeps_failing_gets_an_apology_after_max_attempts(slack_env) -> None:
    env = slack_env
    await left_by_a_dead_replica(env, "EvCursed")
    with transaction(env.core.knowledge.engine, "counting attempts") as conn:
        conn.execute(processed_events.update().values(attempts=3, state="answering"))
    assert await env.services.intake.resume() == 1
    await env.services.intake.idle()
    [apology] = env.slack.calls_to("chat.postMessage")
    assert "couldn't answer" in apology.body["text"] and env.questions == []
    assert state(env.core.knowledge.engine, "EvCursed") == (FAILED, 4)
    # Whatever an earlier try showed is taken off: its status, and its 👀.
    [cleared] = env.slack.calls_to("assistant.threads.setStatus")
    assert cleared.body["status"] == "" and cleared.body["thread_ts"] == apology.body["thread_ts"]
    assert [c.body["name"] for c in env.slack.calls_to("reactions.remove")] == ["eyes"]


async def test_a_reply_is_recorded_even_when_the_database_is_away_for_a_while(
    slack_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Left unrecorded, an answered question would be resumed and answered a second time."""
    env = slack_env
    claims = env.services.claims
    finish = claims.finish
    refusals = 2

    async def flaky(pending: Any, *, answered: bool) -> None:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise DatabaseError("recording the reply failed: OperationalError")
        await finish(pending, answered=answered)

    monkeypatch.setattr(claims, "finish", flaky)
    await left_by_a_dead_replica(env, "EvFlaky")
    assert await env.services.intake.resume() == 1
    await env.services.intake.idle()
    assert refusals == 0 and state(env.core.knowledge.engine, "EvFlaky")[0] == ANSWERED
    assert await env.services.intake.resume() == 0
    assert len(finals(env.slack.calls)) == 1


async def slow(question: Question) -> AsyncIterator[str | Answer]:
    yield "Passwords are reset"
    await asyncio.sleep(60)
    raise AssertionError("never reached")


async def test_stopping_drains_answers_in_flight_then_releases_the_rest(slack_env) -> None:
    env = slack_env
    real = env.core.answerer.stream
    # In time: the answer finishes within the drain.
    response = await env.event(
        {
            "type": "app_mention",
            "user": ASKER,
            "text": f"<@UBOT> {PASSWORD_Q}",
            "ts": env.slack.next_ts(),
            "channel": CHANNEL,
        }
    )
    assert response.status == 200
    await env.services.intake.stop(drain_s=60)
    assert len(finals(env.slack.calls)) == 1
    # Too slow for the drain: released, then finished in place by the next replica.
    intake = env.services.intake = Intake(env.services.claims, DeliveryConfig())
    intake.add("slack", env.services.slack)
    env.services.slack.intake = intake
    env.core.answerer.stream = slow
    await env.event(
        {
            "type": "app_mention",
            "user": ASKER,
            "text": f"<@UBOT> {PASSWORD_Q}",
            "ts": env.slack.next_ts(),
            "channel": CHANNEL,
        },
        event_id="EvSlow",
    )
    await env.slack.wait_for("chat.startStream", 2)
    started = time.monotonic()
    await intake.stop(drain_s=0.5)
    assert time.monotonic() - started < 5
    assert len(finals(env.slack.calls)) == 1  # the slow one did not finish
    engine = env.core.knowledge.engine
    assert state(engine, "EvSlow")[0] in ("received", "answering")
    with engine.connect() as conn:
        [shown] = json.loads(
            conn.execute(
                sa.select(processed_events.c.messages).where(
                    processed_events.c.event_id == "EvSlow"
                )
            ).scalar_one()
        )

    env.core.answerer.stream = real
    successor = Intake(EventClaims(engine, owner="successor"), DeliveryConfig())
    successor.add("slack", env.services.slack)
    assert await successor.resume() == 1  # released: no lease to wait for
    await successor.idle()
    assert state(engine, "EvSlow")[0] == ANSWERED
    # In place of what the stopped replica had shown: no second message beside it.
    final = finals(env.slack.calls)[-1]
    assert final.method == "chat.update" and final.body["ts"] == shown
    assert len(env.slack.calls_to("chat.startStream")) == 2


async def test_a_sync_running_when_the_server_stops_is_recorded_interrupted(
    slack_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = slack_env
    scan = folder_module.scan

    def slow_scan(source: Any) -> Any:
        time.sleep(1.0)
        return scan(source)

    monkeypatch.setattr(folder_module, "scan", slow_scan)
    ops = env.services.ops
    job = asyncio.create_task(ops.sync(trigger="test"))
    lock = JobLock(env.core.knowledge.engine, sync_lock("handbook"))
    for _ in range(100):
        if await asyncio.to_thread(lock.current):
            break
        await asyncio.sleep(0.02)
    assert await ops.interrupt() == 1
    assert job.cancelled()
    [run] = ops.history.recent(limit=1)
    assert run["outcome"] == "interrupted" and "stopping" in run["summary"]
    assert await asyncio.to_thread(lock.current) is None  # its lock is free for the next run


def test_delivery_settings_refuse_a_renewal_slower_than_the_lease() -> None:
    with pytest.raises(ValueError, match="renew_s must be shorter"):
        DeliveryConfig(lease_s=5, renew_s=10)


async def test_a_replica_takes_over_no_more_questions_than_it_has_room_for(engine) -> None:
    """Taking over a dead replica's whole backlog would only get the excess turned away as
    busy: the rest waits for a replica with room."""
    dead = EventClaims(engine, owner="dead", lease_s=0.01)
    for n in range(3):
        await dead.claim_question("slack", f"EvBacklog{n}", asked(str(n)), {"ts": str(n)})
    await asyncio.sleep(0.05)
    release = asyncio.Event()
    answered: list[str] = []

    class Waiting:  # a platform whose answers take as long as the test says
        async def answer(self, pending: Any, note: Any, started: Any) -> bool:
            await release.wait()
            answered.append(pending.event_id)
            return True

        async def apologize(self, pending: Any, text: str) -> None:
            raise AssertionError("nothing here is too old")

    intake = Intake(EventClaims(engine, owner="small"), DeliveryConfig(), capacity=2)
    intake.add("slack", Waiting())
    assert await intake.resume() == 2
    assert await intake.resume() == 0  # full
    release.set()
    await intake.idle()
    assert await intake.resume() == 1
    await intake.idle()
    assert sorted(answered) == [f"EvBacklog{n}" for n in range(3)]


async def test_leases_are_renewed_while_answers_drain(engine) -> None:
    """A drain longer than the lease must not let another replica answer the same question."""
    config = DeliveryConfig(lease_s=0.3, renew_s=0.1, scan_s=0.1)
    claims = EventClaims(engine, owner="stopping", lease_s=config.lease_s)
    pending = await claims.claim_question("slack", "EvDraining", asked("1"), {"ts": "1"})
    assert pending is not None
    other = EventClaims(engine, owner="other")
    stolen: list[object] = []

    class Slow:
        async def answer(self, pending: Any, note: Any, started: Any) -> bool:
            for _ in range(8):  # 0.8 s: well past the 0.3 s lease
                await asyncio.sleep(0.1)
                stolen.extend(await other.take_expired())
            return True

        async def apologize(self, pending: Any, text: str) -> None:
            raise AssertionError("not too old")

    intake = Intake(claims, config)
    intake.add("slack", Slow())
    await intake.start()
    intake.begin(pending)
    await intake.stop(drain_s=5)
    assert stolen == [] and state(engine, "EvDraining")[0] == ANSWERED
