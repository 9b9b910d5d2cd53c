"""Latency, pipeline overhead and batching throughput of the answering core.

The whole core (`Core.build` → `answerer.answer`) with the offline demo model (SmolLM2-135M
-Instruct) on the CPU, over the example handbook synced into --work (.bench/answering).
Greedy decoding with a fixed `model.max_new_tokens` (96) so that both runs write comparable
lengths; the answers are recorded in the feedback store as in production.

1. Latency: N answerable questions answered one at a time (after one warm-up question):
   time to first token and total, split into retrieval / prompt / queued / model / tail.
2. Throughput: the same N questions at once (asyncio.gather over `answerer.answer`; the
   generator batches what arrives together) against the one-at-a-time run: answers/min and
   completion tokens/s both ways.

Definitions (per answer; "model" comes from the generator's own GenerationStats):

    model_s    = stats.total_s - stats.queued_s: from the batch starting generate() to this
                 answer's last token (prefill + decoding, as the model spent it)
    wall_s     = from calling answerer.answer() to holding the Answer
    overhead_s = wall_s - model_s
               = retrieval + prompt + queued + tail, where tail is the time between the model
                 finishing and the Answer (stream hand-off, citations, recording)
    overhead   = overhead_s / model_s (target < 5 %)

    python bench/answering.py [--work .bench/answering] [--questions 8] [--max-new-tokens 96]
                              [--batch-wait-ms MS] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from _common import ROOT, git_rev, machine

from bot.core.question import Question
from bot.core.runtime import Core
from bot.logging import configure_logging
from bot.settings import load_settings
from knowledge.config import FolderSource

EXAMPLES = ROOT / "examples"
RESTRICTED = {"people/compensation-bands.md", "finance/quarter-close.md"}  # not public

# The generation streams opened by the current asyncio task (one per answer).
_streams: ContextVar[list[Any]] = ContextVar("streams")


class RecordingGenerator:
    """The core's generator, passed through, keeping each answer's GenerationStream so that its
    GenerationStats (batch size, tokens, the model's own timings) can be read afterwards."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def stream(self, request: Any) -> Any:
        stream = self._inner.stream(request)
        _streams.get().append(stream)
        return stream


def pick_questions(n: int) -> tuple[list[str], list[str]]:
    """n public questions spread over the handbook, and the others (warm-up candidates)."""
    items = [json.loads(line) for line in (EXAMPLES / "questions.jsonl").read_text().splitlines()]
    public = [i["question"] for i in items if i["doc"] not in RESTRICTED]
    step = max(1, len(public) // n)
    chosen = public[::step][:n]
    return chosen, [q for q in public if q not in chosen]


async def timed(core: Core, text: str) -> dict:
    streams: list[Any] = []
    _streams.set(streams)
    started = time.perf_counter()
    answer = await core.answerer.answer(Question(text))
    wall = time.perf_counter() - started
    t = answer.timings
    row: dict[str, Any] = {
        "question": text,
        "abstained": answer.abstained,
        "finish_reason": answer.finish_reason,
        "retrieval_s": t.retrieval_s,
        "prompt_s": t.prompt_s,
        "queued_s": t.queued_s,
        "first_token_s": t.first_token_s,
        "generation_s": t.generation_s,
        "total_s": t.total_s,
        "wall_s": wall,
        "answer": answer.text,
    }
    stats = streams[0].stats if streams else None
    if stats is not None:
        model_s = stats.total_s - stats.queued_s
        row.update(
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            batch_size=stats.batch_size,
            model_s=model_s,
            model_first_token_s=(stats.first_token_s - stats.queued_s)
            if stats.first_token_s is not None
            else None,
            tail_s=wall - t.retrieval_s - t.prompt_s - stats.total_s,
            overhead_s=wall - model_s,
            overhead=(wall - model_s) / model_s,
        )
    return row


def mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.fmean(values) if values else float("nan")


def median(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def run_summary(rows: list[dict], wall: float) -> dict:
    tokens = sum(r.get("completion_tokens", 0) for r in rows)
    return {
        "answers": len(rows),
        "abstained": sum(r["abstained"] for r in rows),
        "wall_s": round(wall, 2),
        "completion_tokens": tokens,
        "answers_per_min": round(60 * len(rows) / wall, 2),
        "tokens_per_s": round(tokens / wall, 2),
        "batch_sizes": [r.get("batch_size") for r in rows],
    }


async def main(
    work: Path, n: int, max_new_tokens: int, model: str, batch_wait_ms: float | None, as_json: bool
) -> dict:
    configure_logging("warning")
    settings = load_settings(environ={}, overrides={"data_dir": work})
    settings.model.base = model
    settings.model.max_new_tokens = max_new_tokens
    if batch_wait_ms is not None:
        settings.model.batch_wait_ms = batch_wait_ms
    settings.model.adapters = False
    work.mkdir(parents=True, exist_ok=True)
    core = Core.build(settings)
    core.answerer.generator = RecordingGenerator(core.generator)
    t = time.perf_counter()
    await core.start()
    start_s = time.perf_counter() - t
    report = await core.knowledge.syncer.run(
        [FolderSource(path=EXAMPLES / "knowledge", name="handbook")]
    )
    questions, others = pick_questions(n)
    import torch

    results: dict[str, Any] = {
        "machine": machine(),
        "commit": git_rev(),
        "model": core.generator.model_name,
        "device": "cpu" if not torch.cuda.is_available() else "cuda",
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
        "max_new_tokens": max_new_tokens,
        "max_batch_size": settings.model.max_batch_size,
        "batch_wait_ms": settings.model.batch_wait_ms,
        "min_similarity": settings.answer.min_similarity,
        "start_s": round(start_s, 2),
        "handbook_chunks": report.chunks_written or None,
    }
    try:
        for text in others:  # warm up the embedder and the model: until one is generated
            if "model_s" in await timed(core, text):
                break

        t = time.perf_counter()
        single = [await timed(core, q) for q in questions]
        sequential_s = time.perf_counter() - t

        t = time.perf_counter()
        concurrent = await asyncio.gather(*(timed(core, q) for q in questions))
        concurrent_s = time.perf_counter() - t
    finally:
        await core.close()

    generated = [r for r in single if "model_s" in r]
    keys = (
        "completion_tokens",
        "prompt_tokens",
        "retrieval_s",
        "prompt_s",
        "queued_s",
        "model_first_token_s",
        "first_token_s",
        "model_s",
        "tail_s",
        "wall_s",
        "overhead_s",
        "overhead",
    )
    results["single"] = {
        "questions": single,
        "mean": {k: mean(generated, k) for k in keys},
        "median": {k: median(generated, k) for k in keys},
        # the overhead of all answers together: sum(overhead_s) / sum(model_s)
        "overhead_pooled": sum(r["overhead_s"] for r in generated)
        / sum(r["model_s"] for r in generated),
    }
    seq = run_summary(single, sequential_s)
    con = run_summary(list(concurrent), concurrent_s)
    results["throughput"] = {
        "sequential": seq,
        "concurrent": con,
        "concurrent_questions": list(concurrent),
        "answers_per_min_ratio": round(con["answers_per_min"] / seq["answers_per_min"], 2),
        "tokens_per_s_ratio": round(con["tokens_per_s"] / seq["tokens_per_s"], 2),
    }

    if as_json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return results

    r = results
    print(f"machine: {r['machine']}  commit {r['commit']}")
    print(
        f"model {r['model']} on {r['device']} ({r['torch_threads']} torch threads), greedy, "
        f"max_new_tokens {max_new_tokens}, max_batch_size {r['max_batch_size']}, batch wait "
        f"{r['batch_wait_ms']:.0f} ms; load average at start {r['load_average']:.2f}"
    )
    print(f"core start (index, store, model): {start_s:.1f} s")
    print()
    print(f"1. {len(single)} questions one at a time (ms; tokens = completion tokens)")
    cols = (
        "prompt tok",
        "retrieval",
        "prompt",
        "queued",
        "model 1st",
        "1st token",
        "model",
        "tail",
        "total",
    )
    print(f"{'':<44} {'tok':>4} " + " ".join(f"{c:>9}" for c in cols) + f" {'overhead':>8}")
    for row in single:
        if "model_s" not in row:
            print(f"{row['question'][:44]:<44} abstained ({row['wall_s'] * 1000:.0f} ms)")
            continue
        print(_row(row["question"][:44], row))
    print(_row("mean", r["single"]["mean"]))
    print(_row("median", r["single"]["median"]))
    print(
        "   model 1st = the model's first token after its batch started (prefill); 1st token = "
        "from the question to the first streamed text"
    )
    print(
        "   overhead = (wall - model) / model, wall - model = retrieval + prompt + queued + "
        "tail (model finished -> Answer in hand)"
    )
    print(
        f"   overhead of the {len(generated)} answers together (sum / sum): "
        f"{100 * r['single']['overhead_pooled']:.2f} %"
    )
    print()
    print(f"2. throughput, the same {len(questions)} questions")
    for name, s in (("one at a time", seq), ("concurrently", con)):
        print(
            f"   {name:<14} {s['wall_s']:>7.2f} s  {s['answers_per_min']:>6.1f} answers/min  "
            f"{s['completion_tokens']:>4} tokens  {s['tokens_per_s']:>6.1f} tokens/s  "
            f"batch sizes {s['batch_sizes']}"
        )
    tp = r["throughput"]
    print(
        f"   concurrent / one at a time: {tp['answers_per_min_ratio']:.2f}x answers/min, "
        f"{tp['tokens_per_s_ratio']:.2f}x tokens/s"
    )
    lat = [q["wall_s"] for q in concurrent]
    print(
        f"   concurrent latency per answer: {1000 * min(lat):.0f}–{1000 * max(lat):.0f} ms "
        f"(one at a time: {1000 * min(x['wall_s'] for x in single):.0f}–"
        f"{1000 * max(x['wall_s'] for x in single):.0f} ms)"
    )
    return results


def _row(label: str, row: dict) -> str:
    keys = (
        "prompt_tokens",
        "retrieval_s",
        "prompt_s",
        "queued_s",
        "model_first_token_s",
        "first_token_s",
        "model_s",
        "tail_s",
        "wall_s",
    )
    tokens = row.get("completion_tokens")
    cells = " ".join(
        f"{'-':>9}"
        if row.get(k) is None
        else f"{row[k]:>9.0f}"
        if k == "prompt_tokens"
        else f"{1000 * row[k]:>9.1f}"
        for k in keys
    )
    tok = f"{tokens:>4.0f}" if tokens is not None else f"{'':>4}"
    return f"{label:<44} {tok} {cells} {100 * row['overhead']:>7.2f}%"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "answering")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--model", default="demo", help="model.base (default: the demo model)")
    parser.add_argument(
        "--batch-wait-ms", type=float, help="model.batch_wait_ms (default: the setting's, 15)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    asyncio.run(
        main(
            args.work,
            args.questions,
            args.max_new_tokens,
            args.model,
            args.batch_wait_ms,
            args.json,
        )
    )
