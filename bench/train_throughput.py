"""QLoRA training throughput and peak memory of the training worker's code path.

The demo model (SmolLM2-135M-Instruct, offline) on the CPU by default, or any `--base`; the
examples are question/answer pairs with two handbook passages each, rendered in the model's chat
format exactly as `expertbot train` renders them (`training/learning/finetune.py`), loss on the answer
tokens only. It runs what the worker runs — load in 4-bit NF4, `prepare_model_for_kbit_training`,
LoRA on all linear layers, gradient checkpointing, Trainer — for one epoch, and prints:

    examples/s, seconds, optimizer steps, tokens per example, peak memory (process RSS on the
    CPU; allocated GPU memory on CUDA), trainable parameters

    python bench/train_throughput.py [--examples 200] [--base demo] [--quantization 4bit]
                                     [--max-seq-len 512] [--device auto] [--json]

With `--phi3` it builds Phi-3-mini at full size with random weights instead, from the real
config and tokenizer (llama.cpp's Phi-3 vocabulary file in tests/assets): the real-size memory
and step time on a GPU (`--device cuda --max-seq-len 1024`), where the weights don't matter.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, git_rev, machine

HANDBOOK = ROOT / "examples" / "knowledge"


def examples(count: int) -> list[Any]:
    from training.learning.finetune import TrainExample
    from training.serving.prompting import Passage

    texts = sorted(HANDBOOK.rglob("*.md"))
    passages = []
    for path in texts:
        body = path.read_text(encoding="utf-8")
        passages.append(Passage(path.stem.replace("-", " ").title(), "", path.name, body[:600]))
    made = []
    for i in range(count):
        first, second = passages[i % len(passages)], passages[(i * 7 + 3) % len(passages)]
        made.append(
            TrainExample(
                f"ex{i}",
                f"Question {i}: what does the handbook say about {first.title.lower()}?",
                f"According to the handbook, {first.text[:220].strip()} [1]. See also "
                f"{second.title} [2].",
                (first, second),
                "train",
            )
        )
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--base", default="demo")
    parser.add_argument("--phi3", action="store_true", help="Full-size Phi-3-mini, random weights.")
    parser.add_argument("--quantization", choices=["4bit", "none"], default="4bit")
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--accumulation", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from training.config import PromptConfig, TrainingConfig
    from training.learning.finetune import ChatFormat, load_base, resolve_device, train, with_lora

    config = TrainingConfig(
        quantization=args.quantization,
        device=args.device,
        epochs=1,
        batch_size=args.batch_size,
        gradient_accumulation=args.accumulation,
        max_seq_len=args.max_seq_len,
    )
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        base = args.base
        if args.phi3:
            base = str(_random_phi3(Path(tmp) / "phi3"))
        elif base == "demo":
            from training.serving.demo import prepare_demo_model

            base = str(prepare_demo_model(ROOT / ".bench" / "data"))
        loaded = time.perf_counter()
        tokenizer, model = load_base(base, config, device)
        load_s = time.perf_counter() - loaded
        fmt = ChatFormat(tokenizer, PromptConfig(), max_seq_len=args.max_seq_len, max_new_tokens=64)
        encoded = [fmt.encode(e) for e in examples(args.examples)]
        model = with_lora(model, config)
        stats = train(model, tokenizer, encoded, config, Path(tmp), lambda _e: None)
    result = {
        "base": "Phi-3-mini (real config, random weights)" if args.phi3 else args.base,
        "device": stats.device,
        "quantization": stats.quantization,
        "examples": stats.examples,
        "steps": stats.steps,
        "seconds": stats.seconds,
        "examples_per_s": stats.examples_per_s,
        "tokens_per_example": round(stats.tokens / stats.examples, 1),
        "answer_tokens_per_example": round(stats.answer_tokens / stats.examples, 1),
        "peak_memory_mb": stats.peak_memory_mb,
        "trainable_params": stats.trainable_params,
        "first_loss": stats.losses[0]["loss"] if stats.losses else None,
        "last_loss": stats.losses[-1]["loss"] if stats.losses else None,
        "load_s": round(load_s, 1),
        "machine": machine(),
        "commit": git_rev(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        print(f"{key:>26}: {value}")


def _random_phi3(dest: Path) -> Path:
    """Phi-3-mini (hidden 3072, 32 layers, the real vocabulary) with random bf16 weights."""
    from transformers import AutoConfig, AutoTokenizer, Phi3ForCausalLM

    assets = ROOT / "tests" / "assets"
    config = AutoConfig.from_pretrained(assets, gguf_file="ggml-vocab-phi-3.gguf")
    tokenizer = AutoTokenizer.from_pretrained(assets, gguf_file="ggml-vocab-phi-3.gguf")
    model = Phi3ForCausalLM(config).bfloat16()
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


if __name__ == "__main__":
    main()
