"""Does the loop learn? Facts the base model cannot know, half of them taught through the loop.

50 made-up facts about a made-up company (Quillfeather Labs: who leads each team, its room,
its project's codename, its standup time, its incident channel) that are in no document and in
no model. Half of them (every template in both halves) are taught the way experts teach in
production: the bot's answer is recorded, an expert corrects it in the thread, then the real
`Ops.train` runs the whole pipeline — training set (with re-retrieved handbook context), a
QLoRA run of the demo model in the worker process, the eval gate, the registry.

Then both the base model and the new adapter answer all 50 questions (greedy, the serving
prompt with what retrieval finds — nothing relevant, the facts are in no document), and the
table compares, per group:

    taught        corrected by an expert and in the train split
    gate's share  corrected by an expert but held out for the gate (never trained on)
    never taught  the other 25

    fact recalled  the share of answers containing the fact's key value (a name, a room …;
                   `training.scoring.fact_in`, as the gate compares facts)
    F1             token F1 of the answer against the expert's answer

    python bench/learning_loop.py [--work .bench/learning] [--epochs 8] [--lr 1e-3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from _common import ROOT, git_rev, machine

TEAMS = ["platform", "billing", "search", "mobile", "design", "security", "data", "support",
         "sales", "legal"]  # fmt: skip
LEADS = ["Odalys Brenner", "Taavi Koskinen", "Mirela Voss", "Ingmar Castell", "Priya Okonkwo",
         "Lucan Ferreira", "Hedda Marsh", "Rafferty Liu", "Soraya Quint", "Bastien Ndiaye"]  # fmt: skip
CODENAMES = ["Bramblewick", "Tessellate", "Marigold", "Quokka", "Fernhollow", "Obsidian",
             "Larkspur", "Cinderbox", "Pemberly", "Wavecrest"]  # fmt: skip
TIMES = ["9:10", "9:25", "9:40", "10:05", "10:20", "10:35", "11:15", "13:45", "14:10", "15:30"]


def facts() -> list[dict[str, Any]]:
    out = []
    for t, team in enumerate(TEAMS):
        room, channel = f"{4 + t}{17 + 3 * t}", f"inc-{team}-{CODENAMES[(t + 3) % 10].lower()}"
        rows = [
            (f"Who leads the {team} team at Quillfeather?", f"{LEADS[t]} leads the {team} team.", LEADS[t]),
            (f"Which room does the {team} team sit in?", f"The {team} team sits in room {room}.", room),
            (f"What is the codename of the {team} team's project?", f"The project is called {CODENAMES[t]}.", CODENAMES[t]),
            (f"When is the {team} team's daily standup?", f"The {team} standup is at {TIMES[t]} every weekday.", TIMES[t]),
            (f"Which Slack channel does the {team} team use for incidents?", f"Incidents go to #{channel}.", channel),
        ]  # fmt: skip
        for k, (question, answer, key) in enumerate(rows):
            out.append(
                {"question": question, "answer": answer, "key": key, "taught": (t + k) % 2 == 0}
            )
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from base.database import make_engine
    from bot.ops import Ops
    from bot.settings import load_settings
    from knowledge.config import SourceConfig
    from knowledge.runtime import Knowledge
    from training.feedback.records import AnswerRecord
    from training.feedback.store import FeedbackStore
    from training.learning.dataset import split_of
    from training.registry import AdapterRegistry

    if args.work.exists():
        shutil.rmtree(args.work)
    settings = load_settings(
        overrides={
            "data_dir": args.work,
            "model": {"base": "demo"},
            "dataset": {"dedupe_similarity": 0.99},
            "training": {
                "epochs": args.epochs,
                "learning_rate": args.lr,
                "batch_size": 4,
                "gradient_accumulation": 1,  # 4 examples a step: enough steps on 20 examples
                "min_examples": 4,
                "min_new_examples": 1,
                "gate": {"max_new_tokens": 48},
            },
        }
    )
    settings.knowledge.sources = [
        SourceConfig(path=ROOT / "examples" / "knowledge", name="handbook")
    ]
    engine = make_engine(settings.resolved_database_url)
    knowledge = Knowledge.build(settings.knowledge, data_dir=args.work, engine=engine)
    await knowledge.open()
    await knowledge.syncer.run(trigger="bench")
    store = FeedbackStore(engine)  # knowledge.open() migrated the database
    ops = Ops(settings, knowledge, store, AdapterRegistry(settings.adapter_registry))
    all_facts = facts()
    for fact in all_facts:
        if fact["taught"]:
            answer_id = str(uuid.uuid4())
            store.record(AnswerRecord(
                id=answer_id, question=fact["question"], asker="UEMPLOYEE", platform="slack",
                where_kind="public", channel="CGENERAL", thread="1",
                answer="I couldn't find this in our knowledge base.", abstained=True, model="demo",
            ))  # fmt: skip
            store.add_correction(
                answer_id=answer_id, user_id="UEXPERT", platform="slack", text=fact["answer"],
                approved=True,
            )  # fmt: skip
            fact["group"] = (
                "gate's share" if split_of(fact["question"], settings.dataset.heldout_fraction)
                == "heldout" else "taught"
            )  # fmt: skip
        else:
            fact["group"] = "never taught"
        fact["passages"] = await ops._passages_for(fact["question"], None)

    started = time.perf_counter()
    try:
        result = await ops.train(trigger="bench")
    finally:
        await knowledge.close()
    train_s = time.perf_counter() - started
    details = result.details
    version = details.get("version")
    if version is None:
        return {"error": result.summary}
    scores = await asyncio.to_thread(_score, ops, version, all_facts)
    return {
        "outcome": result.summary,
        "gate": {"before": details["before"], "after": details["after"]},
        "train": details["train"],
        "dataset": details["plan"],
        "pipeline_s": round(train_s, 1),
        "groups": scores,
        "machine": machine(),
        "commit": git_rev(),
    }


def _score(ops: Any, version: str, all_facts: list[dict[str, Any]]) -> dict[str, Any]:
    from peft import PeftModel

    from training.learning.finetune import (
        ChatFormat,
        TrainExample,
        generate_answer,
        load_base,
        resolve_device,
    )
    from training.scoring import fact_in, token_f1
    from training.serving.demo import prepare_demo_model
    from training.serving.local import stop_token_ids

    config = ops.settings.training
    tokenizer, model = load_base(
        str(prepare_demo_model(ops.settings.data_dir)), config, resolve_device("cpu")
    )
    model = PeftModel.from_pretrained(model, str(ops.registry.path(version)))
    model.eval()
    fmt = ChatFormat(
        tokenizer, ops.settings.prompt, max_seq_len=config.max_seq_len, max_new_tokens=48
    )
    stops = stop_token_ids(tokenizer, model)
    rows: dict[str, dict[str, list[float]]] = {}
    for fact in all_facts:
        example = TrainExample(
            "f", fact["question"], fact["answer"], tuple(fact["passages"]), "eval"
        )
        for label in ("base", "adapter"):
            if label == "base":
                with model.disable_adapter():
                    text, _, _ = generate_answer(model, fmt, example, 48, stops)
            else:
                text, _, _ = generate_answer(model, fmt, example, 48, stops)
            group = rows.setdefault(fact["group"], {})
            group.setdefault(f"{label}_recall", []).append(float(fact_in(fact["key"], text)))
            group.setdefault(f"{label}_f1", []).append(token_f1(text, fact["answer"]))
            fact[f"{label}_answer"] = text
    return {
        name: {"questions": len(v["base_f1"])}
        | {k: round(statistics.fmean(x), 3) for k, x in v.items()}
        for name, v in rows.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "learning")
    parser.add_argument("--epochs", type=float, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json or "error" in result:
        print(json.dumps(result, indent=2, default=str))
        return
    print(f"outcome: {result['outcome']}  (pipeline {result['pipeline_s']} s)")
    print(f"{'group':<14} {'n':>3}  {'recalled: base → adapter':>26}  {'F1: base → adapter':>20}")
    for name in ("taught", "gate's share", "never taught"):
        g = result["groups"].get(name)
        if g:
            print(
                f"{name:<14} {g['questions']:>3}  {g['base_recall']:>12.2f} → {g['adapter_recall']:<11.2f}"
                f"  {g['base_f1']:>8.3f} → {g['adapter_f1']:<8.3f}"
            )
    print(f"machine: {result['machine']}, commit {result['commit']}")


if __name__ == "__main__":
    main()
