"""QLoRA fine-tuning of the base model on a training set, and the held-out comparison.

This module runs inside the training worker process (`training/learning/worker.py`), never in the bot:

- **Chat format.** Each example is rendered by the same `PromptBuilder` that serving uses —
  the base model's own chat template, the system prompt folded in where the template drops it
  (Phi-3), the numbered passages fitted to the budget — so the model is trained on exactly the
  prompts it will be asked. The target is the assistant turn as the template closes it (the
  answer and its end-of-turn token); the loss is on those tokens only (prompt labels are -100).
- **QLoRA.** The base is loaded in 4-bit NF4 with double quantisation (bitsandbytes; bf16
  compute on CUDA, float32 on the CPU, where bitsandbytes 0.50 runs the same 4-bit path),
  `prepare_model_for_kbit_training`, then LoRA on all linear layers, gradient checkpointing,
  and paged 8-bit AdamW on CUDA (plain AdamW on the CPU, where paged optimizers do not exist).
- **Trainer, not TRL's SFTTrainer.** We render and mask the examples ourselves (above), because
  SFTTrainer's answer-only loss relies on `{% generation %}` markers that Phi-3's chat template
  does not have, and its own rendering would not fold the system prompt the way serving does.
  What remains — the loop, accumulation, checkpointing, the optimizer — is transformers'
  `Trainer`, which needs no extra dependency.
- **Early stopping.** A share of the training questions (`training.validation_fraction`, by a
  stable hash, never the gate's held-out ones) is kept aside; its answer-token loss is measured
  once an epoch and training stops when it has not improved for `early_stopping_patience`
  evaluations, keeping the best checkpoint.
- **Replay.** Before training, the serving model answers some training questions from their
  gold passages; where it already answers well (every key fact of the reference, nothing
  invented, valid citations) its own answer joins the training set (`training.replay_share`),
  so the adapter's style does not drift from what already works.
- **Comparison.** `evaluate` scores an adapter on held-out examples as the gate reads them
  (`training.scoring.score_cases`): key-fact recall against the reference, grounding (the
  share of the answer's key facts found in its passages) and answers with invented values,
  citation validity, the answer rate, and abstention on probes — held-out questions whose
  passages do not hold the answer, and each held-out question shown another example's
  passages. Token F1 and the answer-token loss are reported, not deciding.
"""

from __future__ import annotations

import hashlib
import json
import math
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from base.errors import InputFileError
from training.config import PromptConfig, TrainingConfig
from training.devices import nf4_kwargs
from training.devices import resolve_device as _resolve_device
from training.learning.dataset import in_share
from training.scoring import (
    Case,
    case_facts,
    fact_in,
    is_abstention,
    key_fact_recall,
    key_facts,
    score_cases,
    ungrounded_facts,
)
from training.serving.citations import CitationRewriter
from training.serving.generation import Message
from training.serving.local import cut_at_stop
from training.serving.prompting import Passage, Prompt, PromptBuilder

Emit = Callable[[dict[str, Any]], None]
IGNORE = -100  # label of tokens that carry no loss


@dataclass(frozen=True, slots=True)
class TrainExample:
    id: str
    question: str
    answer: str
    passages: tuple[Passage, ...]
    split: str
    gold: bool | None = None  # see training.learning.dataset.Example


def load_examples(path: Path) -> list[TrainExample]:
    """An exported training set (`TrainingSet.export`)."""
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            passages = tuple(
                Passage(p["title"], p.get("heading", ""), p.get("uri", ""), p["text"])
                for p in data.get("passages", [])
            )
            examples.append(
                TrainExample(
                    str(data["id"]),
                    data["question"],
                    data["answer"],
                    passages,
                    data["split"],
                    data.get("gold"),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InputFileError(f"{path}:{number}: not a training example ({exc})") from exc
    return examples


@dataclass(frozen=True, slots=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def answer_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


class ChatFormat:
    """Examples as the model sees them at serving time, tokenized with answer-only labels."""

    def __init__(
        self, tokenizer: Any, prompt: PromptConfig, *, max_seq_len: int, max_new_tokens: int
    ) -> None:
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.builder = PromptBuilder(
            prompt,
            count_tokens=self.count_tokens,
            render=self.render,
            context_window=max_seq_len,
            max_new_tokens=max_new_tokens,
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render(self, messages: tuple[Message, ...], *, reply: bool = True) -> str:
        return str(
            self.tokenizer.apply_chat_template(
                [m.as_dict() for m in messages], tokenize=False, add_generation_prompt=reply
            )
        )

    def prompt(self, question: str, passages: Sequence[Passage]) -> Prompt:
        return self.builder.build(question, passages)

    def encode(self, example: TrainExample) -> Encoded:
        # An answer longer than half the window is cut first, so the passages keep their room
        # (the builder would otherwise drop them to fit the answer).
        answer_text = example.answer
        limit = self.max_seq_len // 2
        tokens = self.tokenizer(answer_text, add_special_tokens=False)["input_ids"]
        if len(tokens) > limit:
            answer_text = self.tokenizer.decode(tokens[:limit])
        prompt = self.builder.build(example.question, example.passages, answer=answer_text)
        asking = self.render(prompt.messages[:-1])
        whole = self.render(prompt.messages, reply=False)
        # The target is what the template appends for the assistant's turn: the answer and the
        # template's own end of turn. (A template whose full rendering does not extend the
        # prompt gets the answer and the end-of-sequence token.)
        target = (
            whole[len(asking) :]
            if whole.startswith(asking)
            else answer_text + (self.tokenizer.eos_token or "")
        )
        ids = self.tokenizer(asking, add_special_tokens=False)["input_ids"]
        answer = self.tokenizer(target, add_special_tokens=False)["input_ids"]
        room = max(self.max_seq_len - len(ids), 1)
        answer = answer[:room]  # a too-long answer is cut, never the prompt's end
        return Encoded(list(ids) + list(answer), [IGNORE] * len(ids) + list(answer))


def collate(pad_id: int) -> Callable[[list[Encoded]], dict[str, Any]]:
    """Right-padded batches; padding carries no loss and no attention."""

    def batch(items: list[Encoded]) -> dict[str, Any]:
        import torch

        width = max(len(e.input_ids) for e in items)
        ids = [e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in items]
        labels = [e.labels + [IGNORE] * (width - len(e.labels)) for e in items]
        mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in items]
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }

    return batch


# -- loading ---------------------------------------------------------------------------------


def resolve_device(name: str) -> Any:
    return _resolve_device(name, key="training.device")


def load_base(path: str, config: TrainingConfig, device: Any) -> tuple[Any, Any]:
    """The tokenizer and the base model, quantized to NF4 when the config says 4bit."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    compute = torch.bfloat16 if device.type == "cuda" else torch.float32
    kwargs: dict[str, Any] = {"dtype": compute}
    if config.quantization == "4bit":
        kwargs |= nf4_kwargs(compute, device)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if config.quantization != "4bit":
        model.to(device)
    return tokenizer, model


def with_lora(model: Any, config: TrainingConfig) -> Any:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.quantization == "4bit":
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    targets: str | list[str] = (
        "all-linear"
        if config.target_modules == "all-linear"
        else [m.strip() for m in config.target_modules.split(",") if m.strip()]
    )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


# -- training --------------------------------------------------------------------------------


@dataclass
class TrainStats:
    examples: int
    steps: int
    epochs: float
    seconds: float
    examples_per_s: float
    tokens: int
    answer_tokens: int
    peak_memory_mb: float  # process RSS peak on the CPU; allocated GPU memory peak on CUDA
    device: str
    quantization: str
    trainable_params: int
    losses: list[dict[str, float]] = field(default_factory=list)  # {"step", "loss", "epoch"}
    planned_steps: int = 0  # `steps` is fewer when training stopped early
    validation_examples: int = 0
    validation_losses: list[dict[str, float]] = field(default_factory=list)  # {"step", "loss"}
    best_step: int | None = None  # the checkpoint kept (None: the last step)
    replayed: int = 0  # the serving model's own answers mixed in


def validation_split(
    examples: Sequence[TrainExample], fraction: float
) -> tuple[list[TrainExample], list[TrainExample]]:
    """(train, validation): a stable share of the training questions (all examples of a
    question together) for early stopping; none when fewer than two questions would be kept."""
    if fraction <= 0:
        return list(examples), []

    def held(example: TrainExample) -> bool:
        return in_share(example.question, fraction, salt="validation")

    validation = [e for e in examples if held(e)]
    if len({e.question for e in validation}) < 2 or len(validation) == len(examples):
        return list(examples), []
    return [e for e in examples if not held(e)], validation


def plan_steps(examples: int, config: TrainingConfig) -> int:
    """Optimizer steps for `examples` over `config.epochs`."""
    per_epoch = math.ceil(math.ceil(examples / config.batch_size) / config.gradient_accumulation)
    return max(1, math.ceil(per_epoch * config.epochs))


def train(
    model: Any,
    tokenizer: Any,
    encoded: list[Encoded],
    config: TrainingConfig,
    work: Path,
    emit: Emit,
    validation: Sequence[Encoded] = (),
) -> TrainStats:
    """Train the LoRA weights of `model` (a PeftModel) on `encoded`; emits step events. With a
    `validation` split, its loss is measured once an epoch, training stops early when it stops
    improving, and the best checkpoint is what remains."""
    import torch
    from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    device = next(model.parameters()).device
    steps = plan_steps(len(encoded), config)
    optimizer = config.optimizer
    if optimizer == "auto":
        optimizer = "paged_adamw_8bit" if device.type == "cuda" else "adamw_torch"
    losses: list[dict[str, float]] = []
    validation_losses: list[dict[str, float]] = []
    started = time.perf_counter()

    class Progress(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                point = {
                    "step": int(state.global_step),
                    "loss": float(logs["loss"]),
                    "epoch": float(logs.get("epoch") or 0.0),
                }
                losses.append(point)
                emit({"event": "step", "total": steps, **point})
            if logs and "eval_loss" in logs:
                point = {"step": int(state.global_step), "loss": float(logs["eval_loss"])}
                validation_losses.append(point)
                emit({"event": "validation", "total": steps, **point})

    per_device, accumulation = config.batch_size, config.gradient_accumulation
    if device.type == "cpu":
        # The same effective batch one example at a time: on the CPU as fast, and a third of
        # the memory (bench/train_throughput.py: 1.9 GB instead of 6.1 GB on the demo model).
        per_device, accumulation = 1, config.batch_size * config.gradient_accumulation
    # One evaluation (and checkpoint of the adapter) an epoch when there is a validation split.
    per_epoch = plan_steps(len(encoded), config.model_copy(update={"epochs": 1.0}))
    checking: dict[str, Any] = (
        {
            "eval_strategy": "steps",
            "eval_steps": per_epoch,
            "save_strategy": "steps",
            "save_steps": per_epoch,
            "save_total_limit": 2,
            "load_best_model_at_end": True,
            "metric_for_best_model": "eval_loss",
            "greater_is_better": False,
            "per_device_eval_batch_size": 1,
        }
        if validation and steps > per_epoch
        else {"save_strategy": "no"}
    )
    args = TrainingArguments(
        output_dir=str(work / "checkpoints"),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        max_steps=steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=int(steps * config.warmup_ratio),
        logging_steps=1,
        **checking,
        report_to=[],
        optim=optimizer,
        bf16=device.type == "cuda",
        use_cpu=device.type == "cpu",
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        seed=config.seed,
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    callbacks: list[Any] = [Progress()]
    if "eval_strategy" in checking:
        callbacks.append(
            EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience)
        )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encoded,
        eval_dataset=list(validation) if "eval_strategy" in checking else None,
        data_collator=collate(tokenizer.pad_token_id),
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # progress goes out as events, not prints
    emit({"event": "training", "total": steps, "examples": len(encoded)})
    trainer.train()
    done = int(trainer.state.global_step)
    seconds = time.perf_counter() - started
    seen = min(
        done * config.batch_size * config.gradient_accumulation, len(encoded) * config.epochs
    )
    best = trainer.state.best_model_checkpoint
    return TrainStats(
        examples=len(encoded),
        steps=done,
        planned_steps=steps,
        validation_examples=len(validation),
        validation_losses=validation_losses,
        best_step=int(best.rsplit("-", 1)[-1]) if best else None,
        epochs=config.epochs,
        seconds=round(seconds, 2),
        examples_per_s=round(seen / seconds, 3) if seconds else 0.0,
        tokens=sum(len(e.input_ids) for e in encoded),
        answer_tokens=sum(e.answer_tokens for e in encoded),
        peak_memory_mb=round(peak_memory_mb(device), 1),
        device=str(device),
        quantization=config.quantization,
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        losses=losses,
    )


def peak_memory_mb(device: Any) -> float:
    import torch

    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device)) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# -- comparison ------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """An adapter's scores on the held-out split (`score_cases`' metrics and the answer-token
    loss) and every case, for the run's report."""

    metrics: dict[str, Any]
    cases: list[dict[str, Any]] = field(default_factory=list)


def probes_for(examples: Sequence[TrainExample]) -> list[TrainExample]:
    """Unanswerable questions: each held-out question shown another example's passages (none
    of its own documents), or no passages when every other example shares one."""
    probes = []
    for i, example in enumerate(examples):
        own = {p.uri for p in example.passages}
        other: tuple[Passage, ...] = ()
        for j in range(1, len(examples)):
            candidate = examples[(i + j) % len(examples)]
            if candidate.passages and not own & {p.uri for p in candidate.passages}:
                other = candidate.passages
                break
        probes.append(TrainExample(f"probe-{example.id}", example.question, "", other, "probe"))
    return probes


def passage_texts(passages: Sequence[Passage]) -> tuple[str, ...]:
    """The passages as the model reads them (label and text)."""
    return tuple(p.shown for p in passages)


def holds_answer(example: TrainExample) -> bool:
    """Whether the example's passages hold its reference's key facts (all of them; a
    reference without key facts counts as held)."""
    texts = "\n".join(passage_texts(example.passages))
    return all(fact_in(fact, texts) for fact in key_facts(example.answer))


def evaluate(
    model: Any,
    fmt: ChatFormat,
    examples: Sequence[TrainExample],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    abstention: str = "",
    emit: Emit | None = None,
    label: str = "",
) -> Evaluation:
    """Score the model as it stands (its active adapter) on `examples` and their probes."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    losses: list[tuple[float, int]] = []
    cases: list[Case] = []
    rows: list[dict[str, Any]] = []
    answerable = [(e, not holds_answer(e)) for e in examples]
    todo = answerable + [(p, True) for p in probes_for(examples)]
    with torch.no_grad():
        for n, (example, probe) in enumerate(todo, 1):
            if not probe and example.answer:
                encoded = fmt.encode(example)
                if encoded.answer_tokens:
                    out = model(
                        input_ids=torch.tensor([encoded.input_ids], device=device),
                        labels=torch.tensor([encoded.labels], device=device),
                    )
                    losses.append((float(out.loss), encoded.answer_tokens))
            text, cited, invalid = generate_answer(model, fmt, example, max_new_tokens, stop_ids)
            case = Case(
                question=example.question,
                reference="" if example.split == "probe" else example.answer,
                passages=passage_texts(example.passages),
                answer=text,
                cited=tuple(cited),
                invalid_citations=invalid,
                probe=probe,
                abstained=not cited and is_abstention(text, abstention),
            )
            cases.append(case)
            rows.append(
                {
                    "id": example.id,
                    "question": example.question,
                    "answer": text,
                    "probe": probe,
                    "abstained": case.abstained,
                }
                | case_facts(case)
            )
            if emit:
                emit({"event": "eval", "adapter": label, "done": n, "total": len(todo)})
    weight = sum(w for _, w in losses)
    metrics = dict(score_cases(cases)) | {
        "loss": round(sum(v * w for v, w in losses) / weight, 4) if weight else None
    }
    return Evaluation(metrics, rows)


def replay(
    model: Any,
    fmt: ChatFormat,
    examples: Sequence[TrainExample],
    *,
    share: float,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    abstention: str = "",
) -> list[TrainExample]:
    """The model's own answers to training questions it already answers well from their gold
    passages — every key fact of the reference, none that its passages and question do not
    hold, valid citations — as extra examples (`share` of `examples` at most, trying twice as
    many questions at most)."""
    wanted = int(share * len(examples))
    candidates = sorted(
        (e for e in examples if e.gold is not False and e.passages and key_facts(e.answer)),
        key=lambda e: hashlib.sha256(e.id.encode()).hexdigest(),
    )
    chosen: list[TrainExample] = []
    for example in candidates[: 2 * wanted]:
        if len(chosen) >= wanted:
            break
        text, cited, invalid = generate_answer(model, fmt, example, max_new_tokens, stop_ids)
        sources = (*passage_texts(example.passages), example.question)
        if (
            cited
            and not invalid
            and not is_abstention(text, abstention)
            and key_fact_recall(text, example.answer) == 1.0
            and not ungrounded_facts(text, sources)
        ):
            chosen.append(
                TrainExample(
                    f"{example.id}-own", example.question, text, example.passages, "train", True
                )
            )
    return chosen


def generate_answer(
    model: Any, fmt: ChatFormat, example: TrainExample, max_new_tokens: int, stop_ids: Sequence[int]
) -> tuple[str, list[int], int]:
    """The greedy answer as a user would see it: cut at the prompt's stop strings, citations
    checked and renumbered. Returns (text, cited passage numbers, invalid citations)."""
    import torch

    prompt = fmt.prompt(example.question, example.passages)
    ids = fmt.tokenizer(fmt.render(prompt.messages), add_special_tokens=False)["input_ids"]
    device = next(model.parameters()).device
    tensor = torch.tensor([ids], device=device)
    out = model.generate(
        input_ids=tensor,
        attention_mask=torch.ones_like(tensor),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=list(stop_ids),
        pad_token_id=fmt.tokenizer.pad_token_id,
        use_cache=True,
    )
    raw = fmt.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    raw = cut_at_stop(raw, prompt.stop) or raw
    rewriter = CitationRewriter(len(prompt.passages))
    text = rewriter.rewrite(raw).strip()
    return text, list(rewriter.order), rewriter.invalid
