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
- **Comparison.** `evaluate` scores an adapter on held-out examples: mean loss on the answer
  tokens, token F1 of its greedy answer against the reference, the share of answers whose
  citations are valid, and the share of unanswerable probes (a held-out question shown another
  example's passages) on which it says it does not know.
"""

from __future__ import annotations

import json
import math
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from base.errors import InputFileError
from training.config import PromptConfig, TrainingConfig
from training.devices import nf4_kwargs
from training.devices import resolve_device as _resolve_device
from training.scoring import says_it_does_not_know, token_f1
from training.serving.citations import CitationRewriter, cited_numbers
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
                    str(data["id"]), data["question"], data["answer"], passages, data["split"]
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
) -> TrainStats:
    """Train the LoRA weights of `model` (a PeftModel) on `encoded`; emits step events."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    device = next(model.parameters()).device
    steps = plan_steps(len(encoded), config)
    optimizer = config.optimizer
    if optimizer == "auto":
        optimizer = "paged_adamw_8bit" if device.type == "cuda" else "adamw_torch"
    losses: list[dict[str, float]] = []
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

    per_device, accumulation = config.batch_size, config.gradient_accumulation
    if device.type == "cpu":
        # The same effective batch one example at a time: on the CPU as fast, and a third of
        # the memory (bench/train_throughput.py: 1.9 GB instead of 6.1 GB on the demo model).
        per_device, accumulation = 1, config.batch_size * config.gradient_accumulation
    args = TrainingArguments(
        output_dir=str(work / "checkpoints"),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        max_steps=steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=int(steps * config.warmup_ratio),
        logging_steps=1,
        save_strategy="no",
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
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encoded,
        data_collator=collate(tokenizer.pad_token_id),
        callbacks=[Progress()],
    )
    trainer.remove_callback(PrinterCallback)  # progress goes out as events, not prints
    emit({"event": "training", "total": steps, "examples": len(encoded)})
    trainer.train()
    seconds = time.perf_counter() - started
    seen = min(
        steps * config.batch_size * config.gradient_accumulation, len(encoded) * config.epochs
    )
    return TrainStats(
        examples=len(encoded),
        steps=steps,
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
class Scores:
    """An adapter's scores on the held-out split (None where nothing was measured)."""

    loss: float | None
    f1: float | None
    citation_validity: float | None
    abstention: float | None  # share of unanswerable probes abstained on
    answered: float | None  # share of held-out (answerable) questions answered
    questions: int
    probes: int
    cases: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self) -> dict[str, float | None]:
        keys = ("loss", "f1", "citation_validity", "abstention", "answered")
        return {
            k: (None if v is None else round(v, 4)) for k, v in asdict(self).items() if k in keys
        }


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


def evaluate(
    model: Any,
    fmt: ChatFormat,
    examples: Sequence[TrainExample],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    emit: Emit | None = None,
    label: str = "",
) -> Scores:
    """Score the model as it stands (its active adapter) on `examples` and their probes."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    losses: list[tuple[float, int]] = []
    cases: list[dict[str, Any]] = []
    f1s: list[float] = []
    validity: list[bool] = []
    answered: list[bool] = []
    probes = probes_for(examples)
    total = len(examples) + len(probes)
    with torch.no_grad():
        for n, example in enumerate(examples, 1):
            encoded = fmt.encode(example)
            if encoded.answer_tokens:
                out = model(
                    input_ids=torch.tensor([encoded.input_ids], device=device),
                    labels=torch.tensor([encoded.labels], device=device),
                )
                losses.append((float(out.loss), encoded.answer_tokens))
            text, cited, invalid = generate_answer(model, fmt, example, max_new_tokens, stop_ids)
            abstained = not cited and says_it_does_not_know(text)
            f1 = token_f1(text, example.answer)
            f1s.append(f1)
            answered.append(not abstained)
            if not abstained:
                wants_citation = bool(example.passages) and bool(cited_numbers(example.answer))
                validity.append(invalid == 0 and (bool(cited) or not wants_citation))
            cases.append(
                {
                    "id": example.id,
                    "question": example.question,
                    "answer": text,
                    "f1": round(f1, 4),
                    "abstained": abstained,
                    "invalid_citations": invalid,
                }
            )
            if emit:
                emit({"event": "eval", "adapter": label, "done": n, "total": total})
        abstentions = []
        for n, probe in enumerate(probes, len(examples) + 1):
            text, cited, _ = generate_answer(model, fmt, probe, max_new_tokens, stop_ids)
            abstentions.append(not cited and says_it_does_not_know(text))
            cases.append(
                {
                    "id": probe.id,
                    "question": probe.question,
                    "answer": text,
                    "probe": True,
                    "abstained": abstentions[-1],
                }
            )
            if emit:
                emit({"event": "eval", "adapter": label, "done": n, "total": total})
    weight = sum(w for _, w in losses)
    return Scores(
        loss=sum(v * w for v, w in losses) / weight if weight else None,
        f1=statistics.fmean(f1s) if f1s else None,
        citation_validity=_share(validity),
        abstention=_share(abstentions),
        answered=_share(answered),
        questions=len(examples),
        probes=len(probes),
        cases=cases,
    )


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


def _share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None
