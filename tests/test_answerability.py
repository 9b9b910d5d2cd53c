"""Abstention by the answerability classifier: the shipped model on the real handbook index,
which model serves (and what `status` says when it cannot), retraining it from experts'
feedback, and the vocabulary its signals read."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from pathlib import Path

import pytest

from base.database import make_engine, sqlite_url
from base.errors import ConfigError
from base.migrations import migrate_all
from bot.core.abstention import RETRAINED, abstention_rule
from bot.core.config import AnswerConfig
from bot.core.question import Question
from bot.core.runtime import Core
from knowledge.answerability import (
    DEFAULT_MODEL,
    FEATURES,
    AnswerabilityModel,
    Row,
    Signals,
    content_terms,
)
from knowledge.config import FolderSource
from knowledge.models import AccessScope, DocKey, Hit
from knowledge.search import Retrieval
from knowledge.vocabulary import Vocabulary
from tests.helpers import EXPERT, HANDBOOK, run_cli, settings_for, stored_answer
from training.feedback.records import AnswerRecord, CitedSource, RatingKind, StoredSource
from training.feedback.store import FeedbackStore

# On the handbook's subject (Northwind's benefits), close to its pages by meaning (cosine above
# answer.min_similarity), and answered by none of them.
UNANSWERED_Q = "Does Northwind offer stock options or an employee share purchase plan?"
ANSWERED_Q = "How many vacation days do I get per year on a Canadian contract?"


@pytest.fixture
async def core(handbook_data_dir: Path, tiny_phi3: Path, embedder):
    built = Core.build(settings_for(handbook_data_dir, str(tiny_phi3)), embedder=embedder)
    await built.start()
    yield built
    await built.close()


async def test_the_classifier_declines_what_similarity_alone_would_have_answered(
    core: Core,
) -> None:
    assert core.answerer.rule.kind == "classifier"
    retrieval = await core.knowledge.search.retrieve(UNANSWERED_Q)
    assert retrieval.similarity >= core.settings.answer.min_similarity  # on topic

    declined = await core.answerer.answer(Question(UNANSWERED_Q, asker="U1"))
    answered = await core.answerer.answer(Question(ANSWERED_Q, asker="U1"))

    assert declined.abstained and not declined.sources
    assert declined.text.startswith(core.settings.answer.abstain_message)
    assert not answered.abstained and answered.passages
    # Each answer keeps the signals it was decided on, for retraining.
    for answer in (declined, answered):
        signals = stored_answer(core.store, answer.id).signals
        assert signals is not None and set(FEATURES) <= set(signals)


async def test_a_threshold_setting_overrides_the_models_own(
    handbook_data_dir: Path, tiny_phi3: Path, embedder
) -> None:
    settings = settings_for(handbook_data_dir, str(tiny_phi3), answer__min_answerability=0.0)
    core = Core.build(settings, embedder=embedder)
    await core.start()
    try:
        answer = await core.answerer.answer(Question(UNANSWERED_Q, asker="U1"))
    finally:
        await core.close()
    assert not answer.abstained


def synthetic_model(embedder: str, reranker: str | None = None) -> AnswerabilityModel:
    """A model fitted on rows where answerable questions have high similarity."""
    rows = [
        Row(tuple([0.3 + 0.5 * label + 0.01 * i] * len(FEATURES)), label, f"bench:x{i % 2}:tune")
        for label in (0, 1)
        for i in range(10)
    ]
    return AnswerabilityModel.fit(rows, embedder=embedder, reranker=reranker, features=FEATURES)


def test_a_model_of_another_embedder_is_not_used_and_status_says_why(
    handbook_data_dir: Path,
) -> None:
    synthetic_model("another-embedding-model").save(handbook_data_dir / RETRAINED)

    rule = abstention_rule(
        AnswerConfig(), data_dir=handbook_data_dir, embedder="all-MiniLM-L6-v2", reranker=None
    )
    status = run_cli("status")

    assert rule.kind == "similarity" and rule.model is None
    line = next(ln for ln in status.stdout.splitlines() if ln.startswith("Abstention:"))
    assert "similarity" in line and "another-embedding-model" in line
    assert "expertbot answerability train" in line


def test_the_shipped_model_serves_and_status_names_it(handbook_data_dir: Path) -> None:
    shipped = AnswerabilityModel.load(DEFAULT_MODEL)
    status = run_cli("status", "--json")
    assert shipped.version in json.loads(status.stdout)["abstention"]
    assert shipped.embedder == "all-MiniLM-L6-v2" and shipped.reranker is None


def test_a_broken_model_file_is_a_clear_error_at_start(
    handbook_data_dir: Path, tiny_phi3: Path
) -> None:
    broken = handbook_data_dir / "broken.json"
    broken.write_text('{"format": 1, "version": "x"')
    with pytest.raises(ConfigError, match="cannot read the answerability model"):
        abstention_rule(
            AnswerConfig(answerability_model=broken),
            data_dir=handbook_data_dir,
            embedder="all-MiniLM-L6-v2",
            reranker=None,
        )
    result = run_cli("ask", "anything?", env={"EXPERTBOT_ANSWER__ANSWERABILITY_MODEL": str(broken)})
    assert result.exit_code == 1 and "broken.json" in result.stderr
    assert "Traceback" not in result.output


def test_the_generator_rule_answers_on_the_judges_yes(tmp_path: Path) -> None:
    config = AnswerConfig(abstention="generator", min_judge_score=0.5)
    with pytest.raises(ConfigError, match=r"rerank\.kind"):
        abstention_rule(config, data_dir=tmp_path, embedder="e", reranker=None)
    with pytest.raises(ConfigError, match=r"rerank\.scoring"):
        abstention_rule(
            config, data_dir=tmp_path, embedder="e", reranker="generator:m:query-likelihood"
        )
    rule = abstention_rule(config, data_dir=tmp_path, embedder="e", reranker="generator:m:yes-no")

    def retrieval(judged: float | None) -> Retrieval:
        hit = Hit("c1", "s", "d.md", "D", "file:///d.md", "", "text", 0.9, "public")
        signals = _signals(dict.fromkeys(FEATURES, 0.9) | {"rerank": judged})
        return Retrieval([hit], 0.9, signals, [hit], vocabulary_documents=1)

    assert rule.decide(retrieval(1.2)).answer
    assert not rule.decide(retrieval(0.1)).answer  # similar, but the judge says no
    assert not rule.decide(retrieval(None)).answer


def record(store: FeedbackStore, signals: dict[str, float], *, abstained: bool, cited: bool) -> str:
    answer_id = str(uuid.uuid4())
    store.record(
        AnswerRecord(
            id=answer_id,
            question=f"question {answer_id}",
            asker="U1",
            platform="slack",
            where_kind="public",
            channel="C1",
            thread="1",
            answer="...",
            abstained=abstained,
            model="tiny",
            sources=(
                (CitedSource(1, StoredSource("T", "file:///t.md", "", "public", ())),)
                if cited
                else ()
            ),
            signals={**signals, "rerank": None},
        )
    )
    return answer_id


def test_retraining_learns_from_what_experts_answered_and_rejected(
    handbook_data_dir: Path,
) -> None:
    engine = make_engine(sqlite_url(handbook_data_dir / "expertbot.db"))
    migrate_all(engine)
    store = FeedbackStore(engine)
    shipped = AnswerabilityModel.load(DEFAULT_MODEL)
    # Questions the shipped model declines (low similarity, unknown words) that experts then
    # answered: the company's documents did hold those answers.
    low = dict.fromkeys(FEATURES, 0.0) | {"top_cosine": 0.35, "known_terms": 0.5}
    assert not shipped.answerable(_signals(low))
    for _ in range(40):
        answer_id = record(store, low, abstained=True, cited=False)
        store.add_correction(
            answer_id=answer_id, user_id=EXPERT, platform="slack", text="It is X.", approved=True
        )
    # An unsupported answer rated 👎 by an expert, and feedback that says nothing about it.
    high = dict.fromkeys(FEATURES, 0.9)
    for cited in (False, True):
        store.rate(
            answer_id=record(store, high, abstained=False, cited=cited),
            user_id=EXPERT,
            platform="slack",
            kind=RatingKind.DOWN,
            source="reaction",
            expert=True,
        )
    engine.dispose()

    result = run_cli("answerability", "train", "--json")

    assert result.exit_code == 0, result.output
    details = json.loads(result.stdout)
    assert details["answerable_from_feedback"] == 40
    assert details["unanswerable_from_feedback"] == 1
    assert details["benchmark"] == sum(r.origin.startswith("bench:") for r in shipped.rows)
    retrained = AnswerabilityModel.load(handbook_data_dir / RETRAINED)
    assert retrained.version != shipped.version
    assert retrained.probability(_signals(low)) > shipped.probability(_signals(low))
    # Serving picks the retrained model from the data dir.
    rule = abstention_rule(
        AnswerConfig(), data_dir=handbook_data_dir, embedder=shipped.embedder, reranker=None
    )
    assert rule.model is not None and rule.model.version == retrained.version
    assert retrained.version in run_cli("status").stdout


def _signals(values: Mapping[str, float | None]) -> Signals:
    return Signals(**values)  # type: ignore[arg-type]


def test_fitting_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    a, b = synthetic_model("e"), synthetic_model("e")
    assert a.version == b.version
    a.save(tmp_path / "m.json")
    loaded = AnswerabilityModel.load(tmp_path / "m.json")
    assert loaded.as_json() == a.as_json()
    high = _signals(dict.fromkeys(FEATURES, 0.85))
    low = _signals(dict.fromkeys(FEATURES, 0.3))
    assert loaded.answerable(high) and not loaded.answerable(low)


def test_fitting_needs_both_kinds_of_questions() -> None:
    rows = [Row((0.5,) * len(FEATURES), 1, "bench:a:tune")] * 3
    with pytest.raises(ConfigError, match="both answerable and unanswerable"):
        AnswerabilityModel.fit(rows, embedder="e", reranker=None, features=FEATURES)


def test_vocabulary_follows_changes_and_deletions_and_hides_what_a_scope_cannot_see(
    tmp_path: Path,
) -> None:
    engine = make_engine(sqlite_url(tmp_path / "v.db"))
    migrate_all(engine)
    vocabulary = Vocabulary(engine)
    public, secret = DocKey("s", "public.md"), DocKey("s", "secret.md")
    vocabulary.update(
        {
            public: ("public", content_terms("Vacation days and holidays")),
            secret: ("private", content_terms("Project Falcon vacation plans")),
        }
    )
    everyone = AccessScope.public_only()
    terms = content_terms("falcon vacation holidays")

    seen = vocabulary.frequencies(terms, everyone)
    assert seen.documents == 1 and seen[_one("falcon")] == 0 and seen[_one("vacation")] == 1
    permitted = vocabulary.frequencies(terms, AccessScope(include_private=True))
    assert permitted.documents == 2 and permitted[_one("falcon")] == 1
    assert permitted[_one("vacation")] == 2

    vocabulary.update({public: ("public", content_terms("Parking at the office"))})
    vocabulary.update({}, [secret])
    after = vocabulary.frequencies(terms | content_terms("parking"), None)
    assert after.documents == 1 and after[_one("parking")] == 1
    assert after[_one("vacation")] == 0 and after[_one("falcon")] == 0
    engine.dispose()


def _one(word: str) -> str:
    (term,) = content_terms(word)
    return term


async def test_an_index_synced_before_the_vocabulary_was_kept_falls_back_until_the_next_sync(
    handbook_data_dir: Path, tiny_phi3: Path, embedder
) -> None:
    engine = make_engine(sqlite_url(handbook_data_dir / "expertbot.db"))
    Vocabulary(engine).clear()  # as an index synced by an earlier release leaves it
    engine.dispose()
    status = await asyncio.to_thread(run_cli, "status")  # the CLI runs its own event loop
    line = next(ln for ln in status.stdout.splitlines() if "Abstention" in ln)
    assert "until `expertbot sync`" in line

    core = Core.build(settings_for(handbook_data_dir, str(tiny_phi3)), embedder=embedder)
    await core.start()
    try:
        # Not every question declined for words the vocabulary does not hold yet: the
        # similarity rule decides (and lets this on-topic one through).
        before = await core.answerer.answer(Question(UNANSWERED_Q, asker="U1"))
        assert not before.abstained
        await core.knowledge.syncer.run(
            [FolderSource(path=HANDBOOK, name="handbook")], rebuild=True
        )
        after = await core.answerer.answer(Question(UNANSWERED_Q, asker="U1"))
    finally:
        await core.close()
    assert after.abstained
    status = await asyncio.to_thread(run_cli, "status")
    line = next(ln for ln in status.stdout.splitlines() if "Abstention" in ln)
    assert "until `expertbot sync`" not in line
