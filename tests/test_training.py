"""The learning loop, for real: expert feedback rows → training set → a 4-bit QLoRA run of a tiny
random-weight Phi-3 (real tokenizer and chat template) in its own process on the CPU → the eval
gate → the adapter registry → hot-swap into a serving generator, rollback; and what must not
happen when a run fails."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from base.database import make_engine
from base.errors import AdapterError, AlreadyRunningError
from base.migrations import migrate_all
from bot.ops import Ops, status_lines
from bot.settings import load_settings
from knowledge.runtime import Knowledge
from tests.helpers import QUESTIONS, TAUGHT, TRAINING, corrected, run_cli
from training.config import PromptConfig, TrainingConfig
from training.feedback.store import FeedbackStore
from training.learning.dataset import split_of
from training.learning.finetune import IGNORE, ChatFormat, TrainExample
from training.registry import AdapterRegistry
from training.scoring import token_f1
from training.serving.generation import AdapterFollower, GenerationRequest
from training.serving.local import TransformersGenerator
from training.serving.prompting import Passage, PromptBuilder

pytestmark = pytest.mark.slow


def make_ops(data_dir: Path, embedder: Any, base: Path, **training: Any) -> tuple[Ops, Knowledge]:
    settings = load_settings(
        overrides={
            "data_dir": data_dir,
            "model": {"base": str(base), "device": "cpu"},
            "prompt": {"context_tokens": 160, "history_tokens": 0},
            "dataset": {"heldout_fraction": 0.25},
            "training": TRAINING | training,
        }
    )
    engine = make_engine(settings.resolved_database_url)
    knowledge = Knowledge.build(
        settings.knowledge, data_dir=data_dir, engine=engine, embedder=embedder
    )
    store = FeedbackStore(engine)
    migrate_all(engine)
    return Ops(settings, knowledge, store, AdapterRegistry(settings.adapter_registry)), knowledge


@pytest.fixture
async def ops(handbook_data_dir: Path, embedder: Any, tiny_phi3: Path):
    ops, knowledge = make_ops(handbook_data_dir, embedder, tiny_phi3)
    await knowledge.open()
    yield ops
    await knowledge.close()


def test_the_questions_give_a_held_out_split() -> None:
    heldout = [q for q in QUESTIONS if split_of(q, 0.25) == "heldout"]
    assert 2 <= len(heldout) <= 8  # the scenario below needs both splits


# -- the chat format ---------------------------------------------------------------------------


def test_examples_are_the_serving_prompt_with_loss_on_the_answer_only(tiny_phi3: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_phi3)
    fmt = ChatFormat(tokenizer, PromptConfig(), max_seq_len=512, max_new_tokens=64)
    passage = Passage("IT handbook", "Passwords", "it/passwords.md", "Reset it at id.example.com.")
    example = TrainExample(
        "a1", "How do I reset my password?", "At id.example.com [1].", (passage,), "train"
    )
    encoded = fmt.encode(example)
    answer = [
        t for t, label in zip(encoded.input_ids, encoded.labels, strict=False) if label != IGNORE
    ]
    prompt = [
        t for t, label in zip(encoded.input_ids, encoded.labels, strict=False) if label == IGNORE
    ]
    assert encoded.labels[: len(prompt)] == [IGNORE] * len(prompt)  # prompt first, then answer
    decoded = tokenizer.decode(answer)
    assert isinstance(decoded, str) and decoded.startswith("At id.example.com [1].<|end|>")
    # The prompt is exactly what serving renders: Phi-3's template, system prompt folded in.
    served = fmt.render(fmt.prompt(example.question, example.passages).messages)
    assert tokenizer.decode(prompt) == tokenizer.decode(
        tokenizer(served, add_special_tokens=False)["input_ids"]
    )
    assert "<|user|>" in served and "You are the expert assistant" in served
    assert "[1] IT handbook › Passwords" in served

    huge = TrainExample("a2", example.question, "word " * 2000, (passage,), "train")
    cut = fmt.encode(huge)
    kept = [t for t, label in zip(cut.input_ids, cut.labels, strict=True) if label == IGNORE]
    assert (
        len(cut.input_ids) <= 512 and 256 <= cut.answer_tokens <= 260
    )  # half, plus the end of turn
    assert "[1] IT handbook › Passwords" in tokenizer.decode(kept)  # the context stays


def test_a_qlora_step_trains_the_adapter_and_leaves_the_4bit_base_alone(
    tiny_phi3: Path, tmp_path: Path
) -> None:
    import bitsandbytes as bnb
    import torch

    from training.learning.finetune import load_base, resolve_device, train, with_lora

    config = TrainingConfig(**(TRAINING | {"epochs": 2}))
    tokenizer, model = load_base(str(tiny_phi3), config, resolve_device("cpu"))
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    weight = quantized[0].weight if quantized else None
    assert isinstance(weight, bnb.nn.Params4bit) and weight.quant_type == "nf4"  # real 4-bit NF4
    base_before = [m.weight.data.clone() for m in quantized]
    fmt = ChatFormat(tokenizer, PromptConfig(), max_seq_len=256, max_new_tokens=16)
    passage = Passage("Office", "Hours", "office.md", "The office opens at 9.")
    encoded = [
        fmt.encode(
            TrainExample(str(i), f"When does office {i} open?", "At 9 [1].", (passage,), "train")
        )
        for i in range(8)
    ]
    model = with_lora(model, config)
    events: list[dict[str, Any]] = []
    stats = train(model, tokenizer, encoded, config, tmp_path, events.append)

    assert stats.steps == 4 and [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3, 4]
    assert stats.losses[-1]["loss"] < stats.losses[0]["loss"]
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.requires_grad for p in lora_b)
    assert any(p.abs().sum() > 0 for p in lora_b)  # LoRA B starts at zero: it moved
    assert all(torch.equal(b, m.weight.data) for b, m in zip(base_before, quantized, strict=False))
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_training_stops_when_the_validation_loss_stops_falling_and_keeps_the_best(
    tiny_phi3: Path, tmp_path: Path
) -> None:
    """The questions set aside are scored once an epoch; a run whose validation loss has not
    improved for `early_stopping_patience` epochs stops, and what remains is the best
    checkpoint: its validation loss is the lowest measured."""
    import torch

    from training.learning.finetune import (
        load_base,
        resolve_device,
        train,
        validation_split,
        with_lora,
    )

    # A learning rate this high overfits the eight training answers within an epoch or two:
    # the validation answers (other facts) get worse from then on.
    config = TrainingConfig(
        **(TRAINING | {"epochs": 12, "learning_rate": 5e-2, "early_stopping_patience": 2})
    )
    tokenizer, model = load_base(str(tiny_phi3), config, resolve_device("cpu"))
    fmt = ChatFormat(tokenizer, PromptConfig(), max_seq_len=256, max_new_tokens=16)
    passage = Passage("Office", "Hours", "office.md", "Office 1 opens at 7, office 2 at 8.")
    examples = [
        TrainExample(
            str(i), f"When does office {i} open?", f"At {i % 5 + 5} [1].", (passage,), "train"
        )
        for i in range(20)
    ]
    kept, validation = validation_split(examples, 0.2)
    assert validation and len(kept) + len(validation) == len(examples)
    assert validation_split(examples, 0.2) == (kept, validation)  # stable
    assert validation_split(examples[:3], 0.2)[1] == []  # too few questions: no early stopping
    model = with_lora(model, config)
    held = [fmt.encode(e) for e in validation]
    stats = train(
        model, tokenizer, [fmt.encode(e) for e in kept], config, tmp_path, lambda _: None, held
    )

    assert len(stats.validation_losses) >= 2 and stats.validation_examples == len(validation)
    best = min(stats.validation_losses, key=lambda point: point["loss"])
    assert stats.best_step == best["step"]
    assert stats.steps < stats.planned_steps  # it stopped early
    model.eval()
    with torch.no_grad():
        losses = [
            float(
                model(input_ids=torch.tensor([e.input_ids]), labels=torch.tensor([e.labels])).loss
            )
            for e in held
        ]
    assert abs(sum(losses) / len(losses) - best["loss"]) < 0.05 * best["loss"]


# -- the whole loop (the gate's decisions: tests/test_scoring.py) ------------------------------- ----------------------------------------------------------------------------


async def test_feedback_becomes_a_promoted_adapter_that_serves_and_rolls_back(
    ops: Ops, tiny_phi3: Path
) -> None:
    for question in QUESTIONS[:12]:
        corrected(ops.store, question)
    said: list[str] = []

    async def report(line: str) -> None:
        said.append(line)

    announced: list[Any] = []

    async def announce(result: Any) -> None:
        announced.append(result)

    ops.announcers.append(announce)
    result = await ops.train(trigger="test", report=report)

    details = result.details
    assert result.ok and details["status"] == "promoted", result.summary
    assert details["after"]["f1"] > details["before"]["f1"] + 0.5  # it learned the answer
    assert details["after"]["loss"] < details["before"]["loss"]
    assert details["after"]["citation_validity"] > details["before"]["citation_validity"]
    registry = ops.registry
    assert registry.active() == "v0001" and result.summary.startswith("v0001 promoted")
    version = registry.get("v0001")
    dataset = await ops.training_set()
    assert version.meta["data_hash"] == dataset.content_hash
    assert version.meta["base"] == str(tiny_phi3) and version.meta["parent"] is None
    assert version.meta["training"]["lora_r"] == 8 and version.meta["gate"]["passed"]
    assert version.meta["metrics"]["f1"] == details["after"]["f1"]
    report_md = (version.path / "report.md").read_text()
    assert "| answer F1 vs reference (not deciding) |" in report_md and "promoted" in report_md
    assert "| key-fact recall vs the experts' answers |" in report_md
    assert (version.path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert said[0] == "retrain started: building the training set"
    assert any(line.startswith("training on ") for line in said)
    assert [r.summary for r in announced] == [result.summary]
    runs = registry.runs()
    assert [r["status"] for r in runs] == ["promoted"] and runs[0]["version"] == "v0001"
    assert not (Path(runs[0]["path"]) / "adapter").exists()  # one copy: the registry's

    status = status_lines(await ops.status())
    assert any(
        line.startswith("Last training run:") and "v0001 promoted" in line for line in status
    )
    assert "+ adapter v0001" in " ".join(status)

    # The same data again: nothing new to learn from, so no run.
    again = await ops.train(trigger="test")
    assert again.details["status"] == "skipped"
    assert "too little new data: 0 new or changed examples" in again.summary

    # A serving generator follows the registry: it hot-swaps to the promoted adapter.
    generator = TransformersGenerator(
        ops.settings.model, data_dir=ops.settings.data_dir, adapter_dir=registry.path
    )
    await generator.start()
    try:
        follower = AdapterFollower(generator, registry.active, 60)
        question = "How do I book a meeting room?"
        prompt = PromptBuilder(
            ops.settings.prompt,
            count_tokens=generator.count_tokens,
            render=generator.render,
            context_window=generator.context_window,
            max_new_tokens=20,
        ).build(question, (await ops._context_for(question, None)).passages)
        request = GenerationRequest(prompt.messages, max_new_tokens=20, stop=prompt.stop)
        base_text = await generator.stream(request).text()
        assert await follower.check() and generator.adapter == "v0001"
        tuned = generator.stream(request)
        tuned_text = await tuned.text()
        assert tuned.stats is not None and tuned.stats.adapter == "v0001"
        assert token_f1(tuned_text, TAUGHT) > token_f1(base_text, TAUGHT) + 0.3

        # New feedback, but a candidate that learns nothing: the gate keeps v0001 serving.
        for question in QUESTIONS[12:]:
            corrected(ops.store, question)
        worse = await _with_training(ops, learning_rate=1e-9, epochs=1)
        assert worse.ok and worse.details["status"] == "rejected", worse.summary
        assert "no gain in grounding" in worse.summary and "v0001 still serves" in worse.summary
        assert registry.active() == "v0001" and registry.get("v0002").meta["parent"] == "v0001"
        assert not await follower.check() and generator.adapter == "v0001"
        with pytest.raises(AdapterError, match=r"did not pass the eval gate.*--force"):
            await ops.promote("v0002", trigger="test")

        rolled = await ops.rollback(trigger="test")
        assert rolled.summary == "rolled back from v0001 to the base model"
        assert await follower.check() and generator.adapter is None
        assert await generator.stream(request).text() == base_text
    finally:
        await generator.close()


async def _with_training(ops: Ops, **training: Any) -> Any:
    settings = ops.settings.model_copy(
        update={"training": ops.settings.training.model_copy(update=training)}
    )
    return await Ops(settings, ops.knowledge, ops.store, ops.registry).train(trigger="test")


async def test_killing_the_training_process_leaves_serving_untouched(
    ops: Ops, tiny_adapters: list[Path]
) -> None:
    for question in QUESTIONS[:10]:
        corrected(ops.store, question)
    ops.registry.add(tiny_adapters[0], meta={"base": ops.settings.model.base})
    ops.registry.promote("v0001")
    settings = ops.settings.model_copy(
        update={"training": ops.settings.training.model_copy(update={"epochs": 100})}
    )
    slow = Ops(settings, ops.knowledge, ops.store, ops.registry)
    training = asyncio.Event()

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "step":
            training.set()

    running = asyncio.create_task(slow.train(trigger="test", on_event=on_event))
    started = asyncio.ensure_future(training.wait())
    await asyncio.wait([running, started], return_when=asyncio.FIRST_COMPLETED)
    assert training.is_set(), running.result().summary
    with pytest.raises(AlreadyRunningError):  # one run at a time, whoever asks
        await ops.train(trigger="test")
    assert slow.worker_pid is not None
    os.kill(slow.worker_pid, signal.SIGKILL)
    result = await running

    assert not result.ok and result.details["status"] == "failed"
    assert "killed (signal 9)" in result.summary and "v0001 still serves" in result.summary
    assert ops.registry.active() == "v0001"
    assert [v.version for v in ops.registry.versions()] == ["v0001"]
    [run] = ops.registry.runs()
    assert run["status"] == "failed" and "signal 9" in run["error"]
    assert (Path(run["path"]) / "worker.log").is_file()
    # The failed run taught nothing, so the next one is not "too little new data".
    plan = await ops.train(trigger="test", dry_run=True)
    planned = plan.details["plan"]
    assert plan.details["status"] == "planned" and planned["new_examples"] == planned["examples"]
    assert planned["examples"] >= 10  # ten questions, and their gold-absent copies


async def test_a_base_model_that_fails_to_load_is_a_failed_run_with_its_reason(
    handbook_data_dir: Path, embedder: Any, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    ops, knowledge = make_ops(handbook_data_dir, embedder, broken)
    await knowledge.open()
    try:
        for question in QUESTIONS[:10]:
            corrected(ops.store, question)
        result = await ops.train(trigger="test")
    finally:
        await knowledge.close()
    assert not result.ok and result.details["status"] == "failed"
    assert "training failed:" in result.summary and "worker.log" in result.summary
    assert "The base model still serves" in result.summary
    assert ops.registry.versions() == [] and ops.registry.active() is None


# -- the command line --------------------------------------------------------------------------


def test_train_dry_run_and_too_little_data(
    handbook_data_dir: Path, tiny_phi3: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_cli("train", "--dry-run", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["status"] == "skipped" and "too little data: 0 training examples" in data["summary"]
    store = FeedbackStore(make_engine(load_settings().resolved_database_url))
    for question in QUESTIONS[:10]:
        corrected(store, question)
    monkeypatch.setenv("EXPERTBOT_MODEL__BASE", str(tiny_phi3))
    monkeypatch.setenv("EXPERTBOT_TRAINING__MIN_EXAMPLES", "4")
    data = json.loads(run_cli("train", "--dry-run", "--json").stdout)
    assert data["status"] == "planned" and data["plan"]["new_examples"] == 10
    assert data["plan"]["train"] + data["plan"]["heldout"] == 10
    assert "would train on" in run_cli("train", "--dry-run").stdout
    assert AdapterRegistry(handbook_data_dir / "adapters").versions() == []  # trained nothing


def test_adapters_list_promote_and_rollback(tiny_adapters: list[Path], tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path / "data" / "adapters")
    assert "the base model serves" in run_cli("adapters", "list").stdout
    registry.add(
        tiny_adapters[0],
        meta={"gate": {"passed": True}, "metrics": {"key_fact_recall": 0.5, "grounding": 0.75}},
    )
    lost = "grounding fell from 0.90 to 0.40"
    registry.add(tiny_adapters[1], meta={"gate": {"passed": False, "reasons": [lost]}})
    assert json.loads(run_cli("adapters", "promote", "v0001", "--json").stdout)["now"] == "v0001"
    refused = run_cli("adapters", "promote", "v0002")
    assert refused.exit_code == 1 and lost in refused.stderr
    assert registry.active() == "v0001"
    assert run_cli("adapters", "promote", "v0002", "--force").exit_code == 0
    listed = json.loads(run_cli("adapters", "list", "--json").stdout)
    assert [(v["version"], v["serving"], v["gate"]) for v in listed] == [
        ("v0001", False, True),
        ("v0002", True, False),
    ]
    table = run_cli("adapters", "list").stdout
    assert "* " in table and "rejected" in table and "0.500" in table and "0.750" in table
    assert "recall" in table and "grounding" in table and "F1" not in table
    assert "rolled back from v0002 to v0001" in run_cli("adapters", "rollback").stdout
    assert json.loads(run_cli("adapters", "rollback", "--json").stdout)["now"] is None
    missing = run_cli("adapters", "promote", "v0042")
    assert missing.exit_code == 1 and "no adapter version 'v0042'" in missing.stderr
