"""The training worker: one process per run, `python -m training.learning.worker SPEC.json`.

It fine-tunes a candidate adapter (`training/learning/finetune.py`), scores it and the serving adapter on
the held-out split, writes `result.json` next to the spec and exits, so the GPU (or CPU) memory
of training is returned to the system and a crash — an exception, the OOM killer, kill -9 —
ends only this process: the bot keeps serving its adapter, and the parent reports a failed run.

Progress goes to stdout as lines `expertbot-event {json}` (anything else a library prints there
is ignored); logs and tracebacks go to stderr, which the parent keeps as `worker.log`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

EVENT_PREFIX = "expertbot-event "
RESULT = "result.json"


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    base: str  # what to load: a folder or a hub id
    dataset: str  # an exported training set (JSONL)
    output: str  # the candidate adapter is saved here
    serving: str | None  # the serving adapter's folder (None: the base model serves)
    training: dict[str, Any]  # TrainingConfig
    prompt: dict[str, Any]  # PromptConfig
    abstention: str = ""  # what serving says when it will not answer (read as an abstention)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> WorkerSpec:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(EVENT_PREFIX + json.dumps(event) + "\n")
    sys.stdout.flush()


def run(spec: WorkerSpec, run_dir: Path) -> dict[str, Any]:
    import torch

    from training.config import PromptConfig, TrainingConfig
    from training.learning.finetune import (
        ChatFormat,
        evaluate,
        load_base,
        load_examples,
        replay,
        resolve_device,
        train,
        validation_split,
        with_lora,
    )
    from training.serving.local import stop_token_ids

    config = TrainingConfig.model_validate(spec.training)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    examples = load_examples(Path(spec.dataset))
    heldout = [e for e in examples if e.split == "heldout"]
    train_split, validation = validation_split(
        [e for e in examples if e.split == "train"], config.validation_fraction
    )
    device = resolve_device(config.device)
    emit({"event": "loading", "base": spec.base, "device": str(device)})
    tokenizer, model = load_base(spec.base, config, device)
    fmt = ChatFormat(
        tokenizer,
        PromptConfig.model_validate(spec.prompt),
        max_seq_len=min(
            config.max_seq_len, int(getattr(model.config, "max_position_embeddings", 4096))
        ),
        max_new_tokens=config.gate.max_new_tokens,
    )
    stops = stop_token_ids(tokenizer, model)
    replayed: list[Any] = []
    if config.replay_share > 0:
        emit({"event": "replay", "examples": len(train_split)})
        serving = model
        if spec.serving:
            from peft import PeftModel

            serving = PeftModel.from_pretrained(model, spec.serving, is_trainable=False)
        replayed = replay(
            serving,
            fmt,
            train_split,
            share=config.replay_share,
            max_new_tokens=config.gate.max_new_tokens,
            stop_ids=stops,
            abstention=spec.abstention,
        )
        if spec.serving:
            model = serving.unload()  # the base again, for the candidate's own LoRA
    encoded = [fmt.encode(e) for e in [*train_split, *replayed]]
    model = with_lora(model, config)
    stats = train(
        model,
        tokenizer,
        encoded,
        config,
        run_dir,
        emit,
        validation=[fmt.encode(e) for e in validation],
    )
    stats.replayed = len(replayed)
    output = Path(spec.output)
    model.save_pretrained(output)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    emit({"event": "saved", "path": str(output)})

    def score(label: str) -> Any:
        return evaluate(
            model,
            fmt,
            heldout,
            max_new_tokens=config.gate.max_new_tokens,
            stop_ids=stops,
            abstention=spec.abstention,
            emit=emit,
            label=label,
        )

    after = score("candidate")
    if spec.serving:
        model.load_adapter(spec.serving, adapter_name="serving", is_trainable=False)
        model.set_adapter("serving")
        before = score("serving")
    else:
        with model.disable_adapter():
            before = score("serving")
    return {
        "train": asdict(stats),
        "before": before.metrics,
        "after": after.metrics,
        "cases": {"before": before.cases, "after": after.cases},
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m training.learning.worker SPEC.json", file=sys.stderr)
        return 2
    spec_path = Path(args[0])
    run_dir = spec_path.parent
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        spec = WorkerSpec.read(spec_path)
        result = run(spec, run_dir)
        tmp = run_dir / (RESULT + ".tmp")
        tmp.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
        tmp.replace(run_dir / RESULT)
    except Exception as exc:
        traceback.print_exc()
        emit({"event": "error", "error": f"{exc.__class__.__name__}: {exc}"})
        return 1
    emit({"event": "done"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
