"""Prefill and decode speed of the demo model on this CPU in float32 and bfloat16.

Why `model.dtype = auto` picks bfloat16 on CPUs with native bf16 (AVX-512 BF16, AMX):
prints, per dtype, the time to read a 700-token prompt (batch 1 and 4) and ms per decoded
token (batch 1 and 8, with the KV cache).

    python bench/cpu_dtype.py [--data-dir .bench/answering] [--tokens 700]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import ROOT, machine

from training.devices import cpu_has_bf16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".bench" / "answering")
    parser.add_argument("--tokens", type=int, default=700)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from training.serving.demo import prepare_demo_model

    path = prepare_demo_model(args.data_dir)
    print(
        f"machine: {machine()}; native bf16: {cpu_has_bf16()}; torch threads {torch.get_num_threads()}"
    )
    prompt = torch.randint(100, 40_000, (1, args.tokens))
    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
        row = [str(dtype).removeprefix("torch.")]
        with torch.inference_mode():
            model(prompt[:, :32])  # warm-up
            for batch in (1, 4):
                started = time.perf_counter()
                model(prompt.repeat(batch, 1))
                row.append(f"prefill x{batch} {time.perf_counter() - started:5.2f} s")
            for batch in (1, 8):
                cache = model(prompt[:, :200].repeat(batch, 1), use_cache=True).past_key_values
                step = prompt[:, :1].repeat(batch, 1)
                started = time.perf_counter()
                for _ in range(20):
                    cache = model(step, past_key_values=cache, use_cache=True).past_key_values
                per = (time.perf_counter() - started) / 20 * 1000
                row.append(f"decode x{batch} {per:5.1f} ms/step")
        print("  ".join(row))


if __name__ == "__main__":
    main()
