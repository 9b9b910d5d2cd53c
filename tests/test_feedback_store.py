"""The feedback store on SQLite and on the PostgreSQL server: ratings with retraction, expert
corrections, curated answers that keep the access of what they were written from, and event
claims that several replicas agree on."""

from __future__ import annotations

import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from base.database import make_engine, utcnow
from base.migrations import migrate_all
from bot.claims import EventClaims
from knowledge.models import AccessScope
from training.feedback.records import (
    AnswerRecord,
    CitedSource,
    CuratedKind,
    RatingKind,
    RetrievedChunk,
    StoredSource,
)
from training.feedback.store import FeedbackStore, answers, ratings

VECTOR = np.ones(8, dtype=np.float32)


@pytest.fixture
def store(database_url: str) -> FeedbackStore:
    built = FeedbackStore(make_engine(database_url))
    migrate_all(built.engine)
    return built


def record(
    store: FeedbackStore,
    *,
    retrieved: tuple[RetrievedChunk, ...] = (),
    sources: tuple[CitedSource, ...] = (),
    question: str = "How do I reset my password?",
) -> str:
    answer_id = str(uuid.uuid4())
    store.record(
        AnswerRecord(
            id=answer_id,
            question=question,
            asker="U1",
            platform="slack",
            where_kind="dm",
            channel="D1",
            thread="1.0",
            retrieved=retrieved,
            answer="Use the self-service portal [1].",
            sources=sources,
            abstained=False,
            model="m",
            adapter=None,
        )
    )
    return answer_id


def in_force(store: FeedbackStore, answer_id: str) -> set[tuple[str, str]]:
    return {(r.user_id, r.kind) for r in store.ratings_for(answer_id) if r.retracted_at is None}


def test_an_answer_reads_back_as_recorded_and_is_stored_as_before(store: FeedbackStore) -> None:
    answer = AnswerRecord(
        id=str(uuid.uuid4()),
        question="Who signs off the quarter close?",
        asker="U1",
        platform="teams",
        where_kind="private",
        channel="19:finance",
        thread="t1",
        retrieved=(
            RetrievedChunk("c1", "finance/close.md", "Quarter close", 0.83, "restricted", ("F",)),
            RetrievedChunk("c2", "it/vpn.md", "VPN", 0.41),
        ),
        answer="The controller [1].",
        sources=(
            CitedSource(1, StoredSource("Quarter close", "u", "Sign-off", "restricted", ("F",))),
        ),
        abstained=False,
        model="phi-3",
        adapter="v0003",
        curated_id=None,
        retrieval_s=0.25,
        generation_s=1.5,
        total_s=1.75,
    )
    store.record(answer)
    assert store.get_answer(answer.id) == answer
    assert store.get_answer("no such id") is None
    # The JSON columns keep the shape they always had.
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(answers).where(answers.c.id == answer.id)).one()
    assert json.loads(row.retrieved) == [
        {
            "chunk_id": "c1",
            "doc": "finance/close.md",
            "title": "Quarter close",
            "score": 0.83,
            "access": "restricted",
            "allowed": ["F"],
        },
        {
            "chunk_id": "c2",
            "doc": "it/vpn.md",
            "title": "VPN",
            "score": 0.41,
            "access": "public",
            "allowed": [],
        },
    ]
    assert row.sources == json.dumps(
        [
            {
                "number": 1,
                "title": "Quarter close",
                "uri": "u",
                "heading": "Sign-off",
                "access": "restricted",
                "allowed": ["F"],
            }
        ]
    )


def test_kinds_are_stored_as_their_names(store: FeedbackStore) -> None:
    assert [k.value for k in RatingKind] == ["up", "down", "approved"]
    assert [k.value for k in CuratedKind] == ["approved", "corrected", "imported"]
    answer_id = record(store)
    for user, kind in (("U1", RatingKind.UP), ("U2", RatingKind.DOWN), ("U3", RatingKind.APPROVED)):
        store.rate(answer_id=answer_id, user_id=user, platform="slack", kind=kind, source="x")
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(ratings.c.user_id, ratings.c.kind)).all()
    assert sorted(stored) == [("U1", "up"), ("U2", "down"), ("U3", "approved")]
    assert [type(r.kind) for r in store.ratings_for(answer_id)] == [RatingKind] * 3
    store.curate_answer(answer_id, embedding=VECTOR, approved_by="UE", kind=CuratedKind.CORRECTED)
    found = store.find_curated(VECTOR, threshold=0.95, scope=None)
    assert found is not None and found.kind is CuratedKind.CORRECTED


def test_ratings_are_one_per_person_and_kind_and_can_be_retracted_and_revived(
    store: FeedbackStore,
) -> None:
    answer_id = record(store)
    assert store.rate(
        answer_id=answer_id, user_id="U1", platform="slack", kind=RatingKind.UP, source="reaction"
    )
    assert not store.rate(
        answer_id=answer_id, user_id="U1", platform="slack", kind=RatingKind.UP, source="button"
    )  # the same vote again
    store.rate(
        answer_id=answer_id, user_id="U2", platform="slack", kind=RatingKind.DOWN, source="reaction"
    )
    assert in_force(store, answer_id) == {("U1", "up"), ("U2", "down")}
    assert store.retract(answer_id=answer_id, user_id="U1", kind=RatingKind.UP)
    assert not store.retract(answer_id=answer_id, user_id="U1", kind=RatingKind.UP)
    assert in_force(store, answer_id) == {("U2", "down")}
    assert store.rate(
        answer_id=answer_id, user_id="U1", platform="slack", kind=RatingKind.UP, source="reaction"
    )  # revived
    assert len(store.ratings_for(answer_id)) == 2  # one row each, with its history in columns
    counts = store.feedback_counts()
    assert (counts["up"], counts["down"], counts["approved"], counts["answers"]) == (1, 1, 0, 1)
    with pytest.raises(ValueError):
        store.rate(
            answer_id=answer_id,
            user_id="U1",
            platform="slack",
            kind="meh",  # type: ignore[arg-type]  # what a bad caller could pass
            source="reaction",
        )


def test_concurrent_votes_from_several_writers_keep_one_row_each(
    database_url: str, store: FeedbackStore
) -> None:
    answer_id = record(store)
    replicas = [FeedbackStore(make_engine(database_url)) for _ in range(4)]

    def vote(i: int) -> None:
        replica = replicas[i % len(replicas)]
        replica.rate(
            answer_id=answer_id,
            user_id=f"U{i % 5}",
            platform="slack",
            kind=RatingKind.UP,
            source="reaction",
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(vote, range(40)))
    assert in_force(store, answer_id) == {(f"U{i}", "up") for i in range(5)}
    assert len(store.ratings_for(answer_id)) == 5


def test_a_curated_answer_keeps_the_access_of_everything_it_was_written_from(
    store: FeedbackStore,
) -> None:
    # Cited: a public page. Also shown to the model: a document restricted to the finance team.
    answer_id = record(
        store,
        sources=(CitedSource(1, StoredSource("Passwords", "u", "", "public")),),
        retrieved=(
            RetrievedChunk("c1", "it/passwords.md"),
            RetrievedChunk(
                "c2", "finance/close.md", access="restricted", allowed=("finance-team",)
            ),
        ),
    )
    store.curate_answer(
        answer_id, embedding=VECTOR, approved_by="UEXPERT", kind=CuratedKind.APPROVED
    )
    public = AccessScope.public_only()
    finance = AccessScope(principals=frozenset({"finance-team"}))
    assert store.find_curated(VECTOR, threshold=0.95, scope=public) is None
    found = store.find_curated(VECTOR, threshold=0.95, scope=finance)
    assert found is not None and found.answer == "Use the self-service portal [1]."
    assert [s.title for s in found.sources] == ["Passwords"]  # guards are never shown


def test_a_correction_replaces_the_text_and_a_withdrawn_approval_stops_serving(
    store: FeedbackStore,
) -> None:
    answer_id = record(store)
    store.curate_answer(
        answer_id, embedding=VECTOR, approved_by="UEXPERT", kind=CuratedKind.APPROVED
    )
    scope = AccessScope.public_only()
    assert store.find_curated(VECTOR, threshold=0.95, scope=scope) is not None
    assert (
        store.deactivate_curated(
            answer_id=answer_id, approved_by="UEXPERT", kind=CuratedKind.APPROVED
        )
        == 1
    )
    assert store.find_curated(VECTOR, threshold=0.95, scope=scope) is None
    curated_id = store.curate_answer(
        answer_id,
        embedding=VECTOR,
        approved_by="UEXPERT",
        kind=CuratedKind.CORRECTED,
        text="Go to https://id.example.com.",
    )
    store.add_correction(
        answer_id=answer_id,
        user_id="UEXPERT",
        platform="slack",
        text="Go to https://id.example.com.",
        approved=True,
        curated_id=curated_id,
    )
    store.add_correction(
        answer_id=answer_id, user_id="U9", platform="slack", text="ask Bob", approved=False
    )
    found = store.find_curated(VECTOR, threshold=0.95, scope=scope)
    assert found is not None and found.answer == "Go to https://id.example.com."
    assert found.kind == "corrected"
    counts = store.feedback_counts()
    assert (counts["corrections"], counts["comments"]) == (1, 1)


def test_messages_link_to_answers_and_threads_list_their_answers(store: FeedbackStore) -> None:
    first, second = record(store), record(store, question="And how often?")
    store.link_message(
        platform="slack", conversation="D1", message_id="2.0", answer_id=first, thread="1.0"
    )
    store.link_message(
        platform="slack", conversation="D1", message_id="2.0", answer_id=first, thread="1.0"
    )  # linking twice is harmless
    assert store.answer_for_message("slack", "D1", "2.0") == first
    assert store.answer_for_message("slack", "C1", "2.0") is None
    thread = store.thread_answers("slack", "D1", "1.0")
    assert [t.id for t in thread] == [first, second]
    assert thread[1].question == "And how often?"
    third = record(store, question="And on my phone?")
    # A chat's thread is its recent turns: the last N, oldest first, and none too old.
    assert [t.id for t in store.thread_answers("slack", "D1", "1.0", last=2)] == [second, third]
    assert store.thread_answers("slack", "D1", "1.0", since=utcnow() + timedelta(seconds=5)) == []
    recent = store.thread_answers("slack", "D1", "1.0", since=utcnow() - timedelta(minutes=5))
    assert len(recent) == 3


async def test_replicas_claim_each_event_exactly_once(database_url: str) -> None:
    replicas = [EventClaims(make_engine(database_url)) for _ in range(3)]
    migrate_all(replicas[0].engine)
    claims = await asyncio.gather(
        *(replica.claim("slack", f"Ev{i % 10}") for i in range(30) for replica in replicas)
    )
    assert sum(claims) == 10
    assert not await replicas[1].claim("slack", "Ev3")
    assert await replicas[1].claim("teams", "Ev3")  # another platform's ids are separate
