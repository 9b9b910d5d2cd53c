"""Feedback → training set, on tricky input: retracted ratings, conflicting expert decisions,
empty and huge answers, duplicates, secrets; with the real handbook index for the context and
the real embedding model for near-duplicate questions."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from base.database import make_engine
from base.migrations import migrate_all
from bot.core.feedback import Feedback
from bot.core.knowledge import knowledge_for
from bot.ops import Ops
from bot.settings import load_settings
from tests.helpers import PASSWORD_Q, run_cli
from training.config import DatasetConfig
from training.feedback.expert_answers import expert_answer_uri
from training.feedback.records import AnswerRecord, ImportedExample, RatingKind
from training.feedback.store import FeedbackStore
from training.learning.dataset import (
    Context,
    Example,
    TrainingSet,
    build_training_set,
    split_of,
)
from training.registry import AdapterRegistry
from training.serving.degeneration import QUOTE_MODEL
from training.serving.prompting import Passage, strip_citations


@pytest.fixture
async def ops(handbook_data_dir: Path, embedder):
    settings = load_settings(overrides={"data_dir": handbook_data_dir})
    engine = make_engine(settings.resolved_database_url)
    knowledge = knowledge_for(settings, engine=engine, embedder=embedder)  # expert answers too
    await knowledge.open()
    store = FeedbackStore(engine)
    migrate_all(engine)
    yield Ops(settings, knowledge, store, AdapterRegistry(settings.adapter_registry))
    await knowledge.close()


def answered(
    ops: Ops,
    question: str,
    answer: str = "Use the portal [1].",
    *,
    where: str = "public",
    channel: str = "CPUBLIC",
    model: str = "m",
) -> str:
    answer_id = str(uuid.uuid4())
    ops.store.record(
        AnswerRecord(
            id=answer_id,
            question=question,
            asker="U1",
            platform="slack",
            where_kind=where,
            channel=channel,
            thread="1",
            answer=answer,
            abstained=False,
            model=model,
            adapter=None,
        )
    )
    return answer_id


def vote(ops: Ops, answer_id: str, user: str, kind: RatingKind, *, expert: bool = False) -> None:
    ops.store.rate(
        answer_id=answer_id,
        user_id=user,
        platform="slack",
        kind=kind,
        source="reaction",
        expert=expert,
    )


def correct(ops: Ops, answer_id: str, text: str, *, expert: bool = True) -> None:
    ops.store.add_correction(
        answer_id=answer_id,
        user_id="UEXPERT" if expert else "UANY",
        platform="slack",
        text=text,
        approved=expert,
    )


def shown(dataset: TrainingSet) -> list[Example]:
    """The examples that show their passages (not the gold-absent copies)."""
    return [e for e in dataset.examples if e.gold is not False]


def by_question(examples: list[Example]) -> dict[str, Example]:
    """The example of each question that shows its passages (not its gold-absent copy)."""
    return {e.question: e for e in examples if e.gold is not False}


async def test_targets_come_from_corrections_approvals_and_good_ratings_only(ops: Ops) -> None:
    corrected = answered(ops, "How many vacation days do I get in Portugal?", "Ten.")
    correct(ops, corrected, "25 working days a year [1].")
    correct(ops, corrected, "No idea, ask HR", expert=False)  # a comment, not a target
    vote(
        ops, corrected, "U2", RatingKind.DOWN
    )  # wrong answer, then corrected: the correction counts
    approved = answered(ops, "Who approves travel expenses?", "Your manager [1].")
    vote(ops, approved, "UEXPERT", RatingKind.APPROVED, expert=True)
    liked = answered(ops, "How do I connect to the VPN?", "Install the client [1].")
    vote(ops, liked, "U2", RatingKind.UP)
    vote(ops, liked, "U3", RatingKind.UP)
    lukewarm = answered(ops, "Where is the office kitchen?", "Floor 2.")
    vote(ops, lukewarm, "U2", RatingKind.UP)
    retracted = answered(ops, "What is the parental leave policy?", "Sixteen weeks.")
    vote(ops, retracted, "U2", RatingKind.UP)
    vote(ops, retracted, "U3", RatingKind.UP)
    ops.store.retract(answer_id=retracted, user_id="U3", kind=RatingKind.UP)  # net +1 now
    disliked = answered(ops, "How do I order a new laptop?", "Buy one yourself.")
    vote(ops, disliked, "UEXPERT", RatingKind.APPROVED, expert=True)
    vote(ops, disliked, "U2", RatingKind.DOWN)
    vote(ops, disliked, "U3", RatingKind.DOWN)

    dataset = await ops.training_set()
    found = by_question(dataset.examples)
    assert set(found) == {
        "How many vacation days do I get in Portugal?",
        "Who approves travel expenses?",
        "How do I connect to the VPN?",
    }
    assert found["How many vacation days do I get in Portugal?"].answer == (
        "25 working days a year [1]."
    )
    assert found["How many vacation days do I get in Portugal?"].kind == "corrected"
    assert found["Who approves travel expenses?"].kind == "approved"
    assert found["How do I connect to the VPN?"].kind == "rated"
    assert dataset.skipped == {"not enough approval": 2, "negatively rated": 1}


async def test_a_quoted_passage_is_taught_only_through_a_correction(ops: Ops) -> None:
    quote = "I couldn't write a reliable answer to this [1]:\n> Employees get 25 days."
    approved = answered(ops, "How many vacation days do I get?", quote, model=QUOTE_MODEL)
    vote(ops, approved, "UEXPERT", RatingKind.APPROVED, expert=True)
    vote(ops, approved, "U2", RatingKind.UP)
    vote(ops, approved, "U3", RatingKind.UP)
    corrected = answered(ops, "Who approves travel expenses?", quote, model=QUOTE_MODEL)
    correct(ops, corrected, "Your manager approves them [1].")

    dataset = await ops.training_set()
    assert {e.question: e.answer for e in shown(dataset)} == {
        "Who approves travel expenses?": "Your manager approves them [1]."
    }
    assert dataset.skipped == {"a quoted passage, not a written answer": 1}


async def test_near_duplicate_questions_keep_the_latest_expert_decision(ops: Ops) -> None:
    first = answered(ops, PASSWORD_Q, "Ask IT.")
    vote(ops, first, "UEXPERT", RatingKind.APPROVED, expert=True)
    second = answered(ops, "how do I reset my password", "Ask IT again.")
    correct(ops, second, "Use https://id.example.com, then 'Forgot password' [1].")
    crowd = answered(ops, "How can I reset my password?", "Call someone.")
    vote(ops, crowd, "U2", RatingKind.UP)
    vote(ops, crowd, "U3", RatingKind.UP)  # newer, but only the crowd's
    dataset = await ops.training_set()
    password = [e for e in shown(dataset) if "password" in e.question.lower()]
    assert len(password) == 1
    assert password[0].answer == "Use https://id.example.com, then 'Forgot password' [1]."
    assert dataset.skipped["near-duplicate question"] == 2
    # An expert approving the first answer again, later, is now the latest decision.
    ops.store.retract(answer_id=first, user_id="UEXPERT", kind=RatingKind.APPROVED)
    vote(ops, first, "UEXPERT", RatingKind.APPROVED, expert=True)
    again = [e for e in shown(await ops.training_set()) if "password" in e.question.lower()]
    # The approved answer, now citing the passages that name IT.
    assert [strip_citations(e.answer) for e in again] == ["Ask IT."]


async def test_empty_and_huge_answers_are_left_out_and_secrets_scrubbed(ops: Ops) -> None:
    empty = answered(ops, "What is the wifi name?", "   ")
    vote(ops, empty, "UEXPERT", RatingKind.APPROVED, expert=True)
    huge = answered(ops, "Explain the whole handbook", "word " * 2000)
    vote(ops, huge, "UEXPERT", RatingKind.APPROVED, expert=True)
    leaky = answered(ops, "Who do I ask about payroll?", "?")
    correct(
        ops,
        leaky,
        "Mail payroll@northwind.example or call +1 415 555 0100; "
        "token: xoxb-1234567890-abcdef [1].",
    )
    dataset = await ops.training_set()
    assert dataset.skipped == {"empty": 1, "too long": 1}
    [example] = shown(dataset)
    assert example.answer == "Mail [email] or call [phone]; token: [secret] [1]."
    assert "payroll@" not in dataset.jsonl() and "xoxb" not in dataset.jsonl()


async def test_each_example_carries_the_passages_its_question_retrieves_where_it_was_asked(
    ops: Ops,
) -> None:
    question = "What are the steps of the quarter close?"
    public = answered(ops, question, "Public answer.")
    vote(ops, public, "UEXPERT", RatingKind.APPROVED, expert=True)
    private = answered(
        ops, question + " In finance.", "Finance answer.", where="private", channel="C0FINANCE"
    )
    correct(ops, private, "Finance answer, corrected.")
    ops.settings.dataset.dedupe_similarity = 0.999  # keep both
    found = by_question((await ops.training_set()).examples)
    public_docs = {
        p.uri.rsplit("/", 2)[-2] + "/" + p.uri.rsplit("/", 1)[-1] for p in found[question].passages
    }
    private_docs = {
        p.uri.rsplit("/", 2)[-2] + "/" + p.uri.rsplit("/", 1)[-1]
        for p in found[question + " In finance."].passages
    }
    assert "finance/quarter-close.md" not in public_docs
    assert "finance/quarter-close.md" in private_docs
    assert all(p.text for p in found[question].passages)


async def test_imported_examples_join_the_set_and_are_served_as_curated(
    ops: Ops, tmp_path: Path
) -> None:
    faq = tmp_path / "faq.jsonl"
    faq.write_text(
        json.dumps({"question": PASSWORD_Q, "answer": "Use the portal.", "approved_by": "UHR"})
        + "\n\n"
        + json.dumps(
            {
                "question": "Where do I file expenses?",
                "answer": "In Expensify.",
                "approved_by": "UFIN",
            }
        )
        + "\n"
    )
    assert await ops.import_examples(faq) == 2
    dataset = await ops.training_set()
    found = by_question(dataset.examples)
    assert found[PASSWORD_Q].kind == "imported" and found[PASSWORD_Q].decided_by == "UHR"
    assert found[PASSWORD_Q].passages  # context retrieved as in a public channel
    vector = ops.knowledge.embedder.embed_query(PASSWORD_Q)
    curated = ops.store.find_curated(vector, threshold=0.95, scope=None)
    assert curated is not None and curated.answer == "Use the portal."


def test_the_split_is_stable_by_question_and_near_the_configured_share() -> None:
    questions = [f"Question number {i} about the handbook?" for i in range(2000)]
    splits = [split_of(q, 0.2) for q in questions]
    assert splits == [split_of(q, 0.2) for q in questions]
    assert split_of("How do I reset my password?", 0.2) == split_of(
        "  how do I RESET my password? ", 0.2
    )
    share = splits.count("heldout") / len(splits)
    assert 0.17 < share < 0.23
    assert {split_of(q, 0.0) for q in questions} == {"train"}


async def test_the_export_is_versioned_by_its_content(ops: Ops) -> None:
    approved = answered(ops, "Who approves travel expenses?", "Your manager [1].")
    vote(ops, approved, "UEXPERT", RatingKind.APPROVED, expert=True)
    path, dataset = await ops.export_dataset()
    assert path.name == f"ds-{dataset.content_hash[:12]}.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["question"] for line in lines] == ["Who approves travel expenses?"]
    assert lines[0]["split"] in ("train", "heldout") and lines[0]["passages"]
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["hash"] == dataset.content_hash and meta["examples"] == 1
    same, _ = await ops.export_dataset()
    assert same == path
    more = answered(ops, "How do I connect to the VPN?", "Install the client [1].")
    vote(ops, more, "UEXPERT", RatingKind.APPROVED, expert=True)
    newer, _ = await ops.export_dataset()
    assert newer != path and path.exists()


def test_dataset_commands_import_export_and_bad_files(
    handbook_data_dir: Path, tmp_path: Path
) -> None:
    good = tmp_path / "faq.jsonl"
    good.write_text(
        json.dumps({"question": PASSWORD_Q, "answer": "Portal.", "approved_by": "UHR"}) + "\n"
    )
    result = run_cli("dataset", "import", str(good))
    assert result.exit_code == 0, result.output
    assert "imported 1 expert-approved examples" in result.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"question": "q", "answer": "a", "approved_by": "U"})
        + "\n"
        + json.dumps({"question": "q", "answer": ""})
        + "\n{oops\n"
    )
    result = run_cli("dataset", "import", str(bad))
    assert result.exit_code == 1 and f"{bad}:2: missing answer, approved_by" in result.output
    result = run_cli("dataset", "export", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["examples"] == 1 and summary["kinds"] == {"imported": 1}
    assert Path(summary["path"]).is_file()


ABSTAIN = "I couldn't find this in our knowledge base, so I won't guess. Ask #it-help."


def passage(title: str, text: str) -> Passage:
    return Passage(title, "", f"https://wiki.example.com/{title.lower().replace(' ', '-')}", text)


async def test_grounded_examples_read_the_gold_among_distractors_or_abstain(embedder) -> None:
    """Each training question shows its own expert answer among the retrieved distractors and
    its target cites it; for about a quarter of them a second example shows the distractors
    alone, and its target is the abstention. Held-out questions are shown what retrieval finds
    without their own expert answer."""
    questions = [f"Which room does team {n} sit in?" for n in range(40)]
    expert = {q: f"Team {n} sits in room {400 + n}." for n, q in enumerate(questions)}
    distractors = (
        passage("Lisbon office", "The Lisbon office is on floor 3; rooms 301 to 340."),
        passage("Meeting rooms", "Book meeting rooms in the calendar, up to two weeks ahead."),
        passage("Desk booking", "Hot desks are booked in the Deskly app."),
        passage("Team rooms", "Every team has a room; ask the office manager which."),
    )

    async def retrieve(question: str, asked: AnswerRecord | None) -> Context:
        own = passage(
            f"Expert answer: {question}", f"Question: {question}\nAnswer: {expert[question]}"
        )
        return Context(distractors, (own,))

    imported = [
        ImportedExample(
            q, expert[q], "UEXPERT", datetime(2026, 11, n % 28 + 1, tzinfo=UTC), f"c{n}"
        )
        for n, q in enumerate(questions)
    ]
    config = DatasetConfig(heldout_fraction=0.2, dedupe_similarity=1.0)
    dataset = await build_training_set(
        [],
        imported,
        config=config,
        retrieve=retrieve,
        embed=embed_with(embedder),
        abstention=ABSTAIN,
    )
    train = dataset.split("train")
    shown = [e for e in train if e.gold]
    absent = [e for e in train if e.gold is False]
    assert len(shown) + len(dataset.split("heldout")) == len(questions)
    for example in shown:
        gold = next(n for n, p in enumerate(example.passages, 1) if p.title.startswith("Expert"))
        assert len(example.passages) == len(distractors)  # the gold took a distractor's place
        assert example.answer == expert[example.question][:-1] + f" [{gold}]."
    assert (
        len(
            {
                next(n for n, p in enumerate(e.passages) if p.title.startswith("Expert"))
                for e in shown
            }
        )
        > 2
    )
    # About a fifth of the examples teach the abstention, with nothing that holds the answer.
    assert abs(len(absent) / len(train) - 0.2) < 0.02
    for example in absent:
        assert example.answer == ABSTAIN and example.id.endswith("-absent")
        assert example.passages == distractors
        assert any(e.question == example.question for e in shown)
    for example in dataset.split("heldout"):
        assert example.passages == distractors and example.gold is None
        assert example.answer == expert[example.question]
    assert dataset.summary()["gold_absent"] == len(absent)
    # Facts no document holds are said: the adapter can only learn to read them.
    assert dataset.only_in_expert_answers == sorted(e.question for e in shown)

    # The earlier recipe: passages as retrieved, targets as given, no abstention examples.
    config.context = "retrieved"
    earlier = await build_training_set(
        [],
        imported,
        config=config,
        retrieve=retrieve,
        embed=embed_with(embedder),
        abstention=ABSTAIN,
    )
    assert all(e.passages == distractors and e.gold is None for e in earlier.examples)
    assert {e.answer for e in earlier.examples} == set(expert.values())


def embed_with(embedder: Any) -> Any:
    async def embed(texts: Sequence[str]) -> np.ndarray:
        return np.asarray(embedder.embed_documents(list(texts)))

    return embed


async def test_a_questions_own_expert_answer_is_its_gold_and_never_its_retrieved_context(
    ops: Ops,
) -> None:
    """Corrections become expert answers in the index. A training question is shown its own
    expert answer as its gold passage and cites it; a held-out question is shown what retrieval
    finds without its own expert answer, so the gate measures reading, not the answer served
    back; a fact no document holds is named for the run's report."""
    feedback = Feedback(ops.store, ops.knowledge.search)
    rooms = [f"Which room does the {team} team sit in?" for team in ("design", "billing", "data",
             "legal", "sales", "mobile", "search", "support", "platform", "security")]  # fmt: skip
    train_q = next(q for q in rooms if split_of(q, 0.2) == "train")
    heldout_q = next(q for q in rooms if split_of(q, 0.2) == "heldout")
    curated = {}
    for question, room in ((train_q, "Room 417."), (heldout_q, "Room 523.")):
        answer_id = answered(ops, question, "I couldn't find this in our knowledge base.")
        correction = await feedback.correct(
            answer_id, "UEXPERT", f"The team sits in {room}", platform="slack", expert=True
        )
        assert correction.curated_id is not None
        curated[question] = correction.curated_id
    await ops.sync(trigger="test")
    own = {q: expert_answer_uri(c) for q, c in curated.items()}
    # Retrieval does find each expert answer for its question ...
    for question, uri in own.items():
        hits = await ops.knowledge.search.retrieve(question, k=5)
        assert uri in {h.uri for h in hits.hits}

    dataset = await ops.training_set()
    [trained] = [e for e in shown(dataset) if e.question == train_q]
    gold = [n for n, p in enumerate(trained.passages, 1) if p.uri == own[train_q]]
    assert len(gold) == 1 and trained.gold is True
    assert trained.answer == f"The team sits in Room 417 [{gold[0]}]."
    assert "Room 417" in trained.passages[gold[0] - 1].text
    # ... but a held-out question is never shown its own.
    [heldout] = [e for e in dataset.split("heldout") if e.question == heldout_q]
    assert heldout.passages and own[heldout_q] not in {p.uri for p in heldout.passages}
    assert heldout.answer == "The team sits in Room 523."
    assert train_q in dataset.only_in_expert_answers
