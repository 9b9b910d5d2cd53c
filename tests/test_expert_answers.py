"""Experts' answers become knowledge: every sync indexes the active ones as the `expert-answers`
source, with the access of what they were written from, and withdrawing one takes it out of
the index at the next sync. Real embeddings, real LanceDB, real SQLite (and PostgreSQL for the
store), the real answering core with a scripted model, and the real command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from base.database import make_engine
from bot.core.feedback import Feedback
from bot.core.question import Question, Where, WhereKind
from bot.core.runtime import Core
from knowledge.config import FolderSource, KnowledgeConfig
from knowledge.models import AccessScope, Hit, SearchFilters
from knowledge.runtime import Knowledge
from tests.fakes import FakeOpenAI
from tests.helpers import EXPERT, run_cli, settings_for
from training.feedback.expert_answers import (
    EXPERT_SOURCE,
    ExpertAnswersFeed,
    expert_answer_text,
    expert_answer_title,
    index_plan,
)
from training.feedback.records import (
    AnswerAccess,
    AnswerRecord,
    CuratedKind,
    RetrievedChunk,
    StoredSource,
    channel_access,
    combined_access,
)
from training.feedback.store import FeedbackStore, curated_answers

PUBLIC_SCOPE = SearchFilters(scope=AccessScope.public_only())
FINANCE_SCOPE = SearchFilters(scope=AccessScope(principals=frozenset({"C0FINANCE"})))

BIKE_Q = "Where can I park my bike at the office?"
BIKE_A = "Bike racks are in the basement garage, level -1; badge in at the side door."
BIKE_PARAPHRASE = "Is there somewhere to leave my bicycle at work?"

CLOSE_Q = "What are the steps of the quarter-end close procedure?"
CLOSE_A = "Finance closes the books on the third working day after the quarter ends."
CLOSE_PARAPHRASE = "On which day after the end of a quarter are the books closed?"


def passage(access: str, *allowed: str) -> StoredSource:
    return StoredSource("", "", "", access, allowed)


# -- who may find an expert answer -------------------------------------------------------------


@pytest.mark.parametrize(
    ("passages", "expected"),
    [
        ([passage("public"), passage("public")], AnswerAccess("public")),
        (
            [passage("public"), passage("restricted", "C1", "g")],
            AnswerAccess("restricted", ("C1", "g")),
        ),
        (
            [passage("restricted", "C1", "C2", "g"), passage("restricted", "C2", "g", "C3")],
            AnswerAccess("restricted", ("C2", "g")),
        ),
        ([passage("private"), passage("public"), passage("private")], AnswerAccess("private")),
    ],
)
def test_passages_give_the_narrowest_access_that_is_one_label(passages, expected) -> None:
    assert combined_access(passages) == expected


@pytest.mark.parametrize(
    ("passages", "why"),
    [
        ([passage("restricted", "C1"), passage("restricted", "C2")], "no one channel"),
        ([passage("private"), passage("restricted", "C1")], "private and restricted"),
    ],
)
def test_passages_no_label_can_cover_without_widening_leave_it_unindexed(passages, why) -> None:
    found = combined_access(passages)
    assert found is not None and found.access is None and why in (found.unindexable or "")


def test_no_passages_leave_the_decision_to_the_caller() -> None:
    assert combined_access([]) is None


def test_the_scope_of_a_channel() -> None:
    assert channel_access("public", "CPUBLIC", "U1") == AnswerAccess("public")
    assert channel_access("private", "G1", "U1") == AnswerAccess("restricted", ("G1",))
    assert channel_access("dm", "D1", "U1") == AnswerAccess("restricted", ("U1", "D1"))


# -- the store and the feed --------------------------------------------------------------------


def recorded(
    store: FeedbackStore,
    question: str,
    *,
    where: str = "public",
    channel: str = "CPUBLIC",
    asker: str = "U1",
    retrieved: tuple[RetrievedChunk, ...] = (),
) -> str:
    answer_id = f"a-{len(store.expert_answers(include_withdrawn=True))}-{abs(hash(question))}"
    store.record(
        AnswerRecord(
            id=answer_id,
            question=question,
            asker=asker,
            platform="slack",
            where_kind=where,
            channel=channel,
            thread="1",
            answer="I could not find that.",
            abstained=True,
            model="demo",
            retrieved=retrieved,
        )
    )
    return answer_id


async def test_an_answer_is_found_where_everything_it_was_written_from_is_visible(
    database_url: str,
) -> None:
    from base.migrations import migrate_all

    engine = make_engine(database_url)
    migrate_all(engine)
    store = FeedbackStore(engine)
    vector = np.ones(4, dtype=np.float32)
    finance = RetrievedChunk(
        "c1", "finance/close.md", access="restricted", allowed=("C0FINANCE", "finance-team")
    )
    cases = {
        "restricted": recorded(
            store, "q1", where="private", channel="C0FINANCE", retrieved=(finance,)
        ),
        "nothing, in a DM": recorded(store, "q2", where="dm", channel="D9", asker="U7"),
        "nothing, in a private channel": recorded(store, "q3", where="private", channel="G5"),
        "public": recorded(store, "q4", retrieved=(RetrievedChunk("c2", "it/vpn.md"),)),
    }
    made = {
        case: store.curate_answer(
            answer_id, embedding=vector, approved_by=EXPERT, kind=CuratedKind.CORRECTED, text="x"
        )
        for case, answer_id in cases.items()
    }
    found = {a.id: a.scope for a in store.expert_answers()}
    assert found[made["restricted"]] == AnswerAccess("restricted", ("C0FINANCE", "finance-team"))
    assert found[made["nothing, in a DM"]] == AnswerAccess("restricted", ("U7", "D9"))
    assert found[made["nothing, in a private channel"]] == AnswerAccess("restricted", ("G5",))
    assert found[made["public"]] == AnswerAccess("public")

    # Rows of before the access was kept: worked out from their passages, else where given.
    with engine.begin() as conn:
        conn.execute(curated_answers.update().values(access=None, allowed=None, unindexed=None))
    again = {a.id: a.scope for a in store.expert_answers()}
    assert again[made["restricted"]] == AnswerAccess("restricted", ("C0FINANCE", "finance-team"))
    assert again[made["nothing, in a DM"]] == AnswerAccess("restricted", ("U7", "D9"))
    engine.dispose()


async def test_only_the_newest_of_near_identical_questions_is_indexed(engine, embedder) -> None:
    from base.migrations import migrate_all

    migrate_all(engine)
    store = FeedbackStore(engine)
    older = store.add_curated(
        question=BIKE_Q,
        embedding=embedder.embed_query(BIKE_Q),
        answer="Outside.",
        approved_by="U1",
        kind=CuratedKind.IMPORTED,
    )
    newer = store.add_curated(
        question="Where can I park my bike at the office ?",
        embedding=embedder.embed_query("Where can I park my bike at the office ?"),
        answer=BIKE_A,
        approved_by=EXPERT,
        kind=CuratedKind.IMPORTED,
    )
    plan = {a.id: why for a, why in index_plan(store.expert_answers())}
    assert plan[newer] is None and plan[older] == f"superseded by the newer expert answer {newer}"
    listing = await ExpertAnswersFeed(store).listing()
    [document] = listing.documents
    assert document.doc_id == newer and document.source == EXPERT_SOURCE
    answer = store.expert_answer(newer)
    assert answer is not None
    assert document.title == expert_answer_title(answer) == f"Expert answer: {answer.question}"
    text = expert_answer_text(answer)
    assert document.sections[0].text == text
    assert text.startswith(
        f"Question: {answer.question}\nAnswer: {BIKE_A}\n(answered by {EXPERT} on "
    )
    assert document.uri == f"expertbot://expert-answers/{newer}"


# -- through the answering core ---------------------------------------------------------------


@pytest.fixture
async def core(handbook_data_dir: Path, embedder, aiohttp_server):
    """The real core on the synced handbook (no folder configured), with a scripted model."""
    server = FakeOpenAI()
    server.served = ["served"]
    server.reply = "I am not sure [1]."
    running = await aiohttp_server(server.app())
    settings = settings_for(handbook_data_dir, "served")
    settings.model.backend = "openai"
    settings.model.openai.base_url = str(running.make_url("/v1"))
    built = Core.build(settings, embedder=embedder)
    await built.start()
    yield built
    await built.close()


def experts(hits: list[Hit]) -> list[Hit]:
    return [h for h in hits if h.source == EXPERT_SOURCE]


async def retrieve(core: Core, question: str, filters: SearchFilters) -> list[Hit]:
    return (await core.knowledge.search.retrieve(question, k=10, filters=filters)).hits


async def test_a_correction_is_found_by_a_paraphrase_after_the_next_sync(core: Core) -> None:
    answer = await core.answerer.answer(Question(BIKE_Q))
    feedback = Feedback(core.store, core.knowledge.search)
    correction = await feedback.correct(answer.id, EXPERT, BIKE_A, platform="slack", expert=True)
    assert experts(await retrieve(core, BIKE_PARAPHRASE, PUBLIC_SCOPE)) == []

    report = await core.knowledge.syncer.run()  # no folder configured: the expert answers

    assert (report.added, report.deleted) == (1, 0)
    [hit] = experts(await retrieve(core, BIKE_PARAPHRASE, PUBLIC_SCOPE))
    assert hit.doc_id == correction.curated_id and BIKE_A in hit.text and BIKE_Q in hit.text
    assert hit.title == f"Expert answer: {BIKE_Q}" and hit.access == "public"
    # The handbook, synced before from a folder no longer configured, is left alone.
    assert (await core.knowledge.index.stats()).documents > 1
    assert (await core.knowledge.syncer.run()).unchanged == 1


async def test_a_correction_of_an_answer_from_restricted_passages_stays_where_they_may_be_seen(
    core: Core,
) -> None:
    answer = await core.answerer.answer(
        Question(CLOSE_Q, where=Where(WhereKind.PRIVATE, "C0FINANCE"))
    )
    assert any(p.doc_id == "finance/quarter-close.md" for p in answer.passages)
    feedback = Feedback(core.store, core.knowledge.search)
    await feedback.correct(answer.id, EXPERT, CLOSE_A, platform="slack", expert=True)
    await core.knowledge.syncer.run()

    [hit] = experts(await retrieve(core, CLOSE_PARAPHRASE, FINANCE_SCOPE))
    assert CLOSE_A in hit.text and hit.access == "restricted"
    assert set(hit.allowed) == {"C0FINANCE", "finance-team"}
    assert experts(await retrieve(core, CLOSE_PARAPHRASE, PUBLIC_SCOPE)) == []
    elsewhere = SearchFilters(scope=AccessScope(principals=frozenset({"C0OTHER"})))
    assert experts(await retrieve(core, CLOSE_PARAPHRASE, elsewhere)) == []


async def test_a_withdrawn_approval_leaves_the_index_at_the_next_sync(core: Core) -> None:
    answer = await core.answerer.answer(Question(BIKE_Q))
    feedback = Feedback(core.store, core.knowledge.search)
    assert await feedback.approve(answer.id, EXPERT, platform="slack", source="reaction")
    await core.knowledge.syncer.run()
    [hit] = experts(await retrieve(core, BIKE_PARAPHRASE, PUBLIC_SCOPE))
    assert "I am not sure" in hit.text and f"(approved by {EXPERT} on " in hit.text

    assert await feedback.withdraw_approval(answer.id, EXPERT)  # the ✅ removed
    report = await core.knowledge.syncer.run()

    assert report.deleted == 1
    assert experts(await retrieve(core, BIKE_PARAPHRASE, PUBLIC_SCOPE)) == []


async def test_a_sync_of_a_folder_never_deletes_the_expert_answers(
    core: Core, tmp_path: Path
) -> None:
    answer = await core.answerer.answer(Question(BIKE_Q))
    await Feedback(core.store, core.knowledge.search).correct(
        answer.id, EXPERT, BIKE_A, platform="slack", expert=True
    )
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "lunch.md").write_text("# Lunch\n\nThe canteen opens at noon.\n")
    report = await core.knowledge.syncer.run([FolderSource(path=folder)])
    assert report.added == 2 and report.deleted == 0
    (folder / "lunch.md").unlink()
    (folder / "coffee.md").write_text("# Coffee\n\nThe coffee machine is on the second floor.\n")
    report = await core.knowledge.syncer.run([FolderSource(path=folder)])
    assert (report.added, report.deleted, report.unchanged) == (1, 1, 1)
    assert experts(await retrieve(core, BIKE_PARAPHRASE, PUBLIC_SCOPE))


async def test_a_failing_feed_is_reported_and_the_folders_still_sync(
    engine, embedder, clean_environ: Path, tmp_path: Path
) -> None:
    class Broken:
        name = "broken"

        async def listing(self):
            raise RuntimeError("the store is down")

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "lunch.md").write_text("# Lunch\n\nThe canteen opens at noon.\n")
    knowledge = Knowledge.build(
        KnowledgeConfig(sources=[FolderSource(path=folder)]),
        data_dir=clean_environ,
        engine=engine,
        embedder=embedder,
        feeds=[Broken()],
    )
    await knowledge.open(index=False)
    report = await knowledge.syncer.run()
    await knowledge.close()
    assert report.status == "ok" and report.added == 1 and report.failed == 1
    [failed] = [i for i in report.items if i.action == "failed"]
    assert failed.source == "broken" and "the store is down" in (failed.reason or "")


# -- the command line -------------------------------------------------------------------------


def cli_json(*args: str) -> Any:
    result = run_cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_imports_are_indexed_with_their_access_and_withdrawn_from_the_command_line(
    tmp_path: Path,
) -> None:
    lines = tmp_path / "answers.jsonl"
    lines.write_text(
        json.dumps({"question": BIKE_Q, "answer": BIKE_A, "approved_by": "facilities"})
        + "\n"
        + json.dumps(
            {
                "question": CLOSE_Q,
                "answer": CLOSE_A,
                "approved_by": "controller",
                "access": "restricted",
                "allowed": ["C0FINANCE"],
            }
        )
        + "\n"
    )
    assert run_cli("dataset", "import", str(lines)).exit_code == 0

    synced = run_cli("sync")  # nothing configured: the expert answers alone
    assert synced.exit_code == 0, synced.output
    assert "2 added" in synced.stdout

    listed = cli_json("dataset", "list")
    assert isinstance(listed, list)
    by_question = {row["question"]: row for row in listed}
    assert by_question[BIKE_Q]["access"] == "public" and by_question[BIKE_Q]["not_indexed"] is None
    assert (by_question[CLOSE_Q]["access"], by_question[CLOSE_Q]["allowed"]) == (
        "restricted",
        ["C0FINANCE"],
    )
    table = run_cli("dataset", "list")
    assert "restricted to C0FINANCE" in table.stdout and by_question[BIKE_Q]["id"] in table.stdout

    hits = cli_json("search", BIKE_PARAPHRASE, "--public-only")
    assert (
        isinstance(hits, list) and hits[0]["source"] == EXPERT_SOURCE and BIKE_A in hits[0]["text"]
    )
    closing = cli_json("search", CLOSE_PARAPHRASE, "--public-only")
    assert isinstance(closing, list) and all(CLOSE_A not in h["text"] for h in closing)
    closing = cli_json("search", CLOSE_PARAPHRASE)  # an operator's search sees everything
    assert isinstance(closing, list) and closing[0]["access"] == "restricted"

    bike = by_question[BIKE_Q]["id"]
    withdrawn = run_cli("dataset", "withdraw", bike)
    assert withdrawn.exit_code == 0
    assert f"withdrew the imported answer {bike}" in withdrawn.stdout
    assert "leaves the index at the next sync" in withdrawn.stdout
    assert "1 deleted" in run_cli("sync").stdout
    hits = cli_json("search", BIKE_PARAPHRASE, "--public-only")
    assert isinstance(hits, list) and hits == []
    assert [row["id"] for row in cli_json("dataset", "list")] == [by_question[CLOSE_Q]["id"]]
    everything = cli_json("dataset", "list", "--all")
    assert {row["id"]: row["active"] for row in everything} == {
        bike: False,
        by_question[CLOSE_Q]["id"]: True,
    }

    unknown = run_cli("dataset", "withdraw", "no-such-id")
    assert unknown.exit_code == 1
    assert unknown.stderr.strip().splitlines() == [
        "error: no expert answer no-such-id (see `expertbot dataset list --all`)"
    ]


def test_a_bad_access_in_an_import_is_refused_naming_the_line(tmp_path: Path) -> None:
    lines = tmp_path / "answers.jsonl"
    lines.write_text(
        json.dumps({"question": "q", "answer": "a", "approved_by": "x", "access": "restricted"})
        + "\n"
    )
    result = run_cli("dataset", "import", str(lines))
    assert result.exit_code == 1
    assert f"{lines}:1: access restricted needs allowed" in result.stderr
