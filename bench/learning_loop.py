"""Does the loop teach truth or style? Made-up facts taught through the loop, two recipes.

50 made-up facts about a made-up company (Quillfeather Labs: who leads each team, its room,
its project's codename, its standup time, its incident channel) that are in no document and in
no model. Half of them (every kind of fact in both halves) are taught the way experts teach in
production: the bot abstains, an expert corrects it in the thread (`Feedback.correct`, which
makes the correction an expert answer), and `expertbot sync` indexes the expert answers. Then
the real `Ops.train` runs the whole pipeline twice on the same feedback, once per recipe —
training set → QLoRA of the demo model in the worker process → the eval gate — each compared
with the base model:

    grounded   the default: each example shows its gold passage (its expert answer) among
               retrieved distractors and cites it; a share shows the distractors alone with the
               abstention as the target; the serving model's own good answers mixed in
    retrieved  the earlier recipe: the passages as retrieved (its own expert answer left out)
               and the expert's answer as the target: the model is taught to state values that
               no passage shows it

Then the base model and both adapters answer every question through the real answering core —
retrieval (handbook + expert answers), the abstention rule, the model — in a public channel:

    taught        the taught facts of the train split, asked in new words
    gate's share  taught facts the dataset held out for the gate, asked in new words
    never taught  the other 25, never corrected: nothing anywhere holds them

    recalled   key-fact recall of the answer against the expert's answer (training.scoring)
    abstained  the share of answers that say the bot does not know
    invented   the share of answers carrying a key fact that neither the passages it was shown
               nor the question hold

    python bench/learning_loop.py [--work .bench/learning] [--epochs 8] [--lr 1e-3]
        [--recipes grounded,retrieved] [--json]
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
RECIPES = ("grounded", "retrieved")


def facts() -> list[dict[str, Any]]:
    out = []
    for t, team in enumerate(TEAMS):
        room, channel = f"{4 + t}{17 + 3 * t}", f"inc-{team}-{CODENAMES[(t + 3) % 10].lower()}"
        rows = [
            (f"Who leads the {team} team at Quillfeather?", f"Who is in charge of the {team} team?",
             f"{LEADS[t]} leads the {team} team."),
            (f"Which room does the {team} team sit in?", f"Where do the {team} people have their desks?",
             f"The {team} team sits in room {room}."),
            (f"What is the codename of the {team} team's project?", f"What is the {team} project called internally?",
             f"The project is called {CODENAMES[t]}."),
            (f"When is the {team} team's daily standup?", f"What time does the {team} team meet every morning?",
             f"The {team} standup is at {TIMES[t]} every weekday."),
            (f"Which Slack channel does the {team} team use for incidents?", f"Where do I report a {team} incident?",
             f"Incidents go to #{channel}."),
        ]  # fmt: skip
        for k, (question, reworded, answer) in enumerate(rows):
            out.append(
                {
                    "question": question,
                    "reworded": reworded,
                    "answer": answer,
                    "taught": (t + k) % 2 == 0,
                }
            )
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from bot.core.feedback import Feedback
    from bot.core.runtime import Core
    from bot.ops import Ops
    from bot.settings import load_settings
    from knowledge.config import FolderSource
    from training.feedback.records import AnswerRecord
    from training.learning.dataset import split_of

    if args.work.exists():
        shutil.rmtree(args.work)
    settings = load_settings(
        overrides={
            "data_dir": args.work,
            "model": {"base": "demo", "max_new_tokens": 48},
            "dataset": {"dedupe_similarity": 0.99},
            "training": {
                "epochs": args.epochs,
                "learning_rate": args.lr,
                "batch_size": 4,
                "gradient_accumulation": 1,  # 4 examples a step: enough steps on 20 examples
                "min_examples": 4,
                "min_new_examples": 0,
                "gate": {"max_new_tokens": 48},
            },
        }
    )
    settings.knowledge.sources = [
        FolderSource(path=ROOT / "examples" / "knowledge", name="handbook")
    ]
    core = Core.build(settings)
    await core.start()
    try:
        ops = Ops(settings, core.knowledge, core.store, core.registry)
        feedback = Feedback(core.store, core.knowledge.search)
        all_facts = facts()
        for fact in all_facts:
            if not fact["taught"]:
                fact["group"] = "never taught"
                continue
            answer_id = str(uuid.uuid4())
            core.store.record(AnswerRecord(
                id=answer_id, question=fact["question"], asker="UEMPLOYEE", platform="slack",
                where_kind="public", channel="CGENERAL", thread="1",
                answer=settings.answer.abstention_reply, abstained=True, model="demo",
            ))  # fmt: skip
            await feedback.correct(
                answer_id, "UEXPERT", fact["answer"], platform="slack", expert=True
            )
            held = split_of(fact["question"], settings.dataset.heldout_fraction) == "heldout"
            fact["group"] = "gate's share" if held else "taught"
        await ops.sync(trigger="bench")

        runs: dict[str, Any] = {}
        for recipe in args.recipes:
            settings.dataset.context = recipe
            started = time.perf_counter()
            result = await ops.train(trigger="bench")
            details = result.details
            runs[recipe] = {
                "status": details.get("status"),
                "version": details.get("version"),
                "summary": result.summary,
                "reasons": details.get("reasons"),
                "before": details.get("before"),
                "after": details.get("after"),
                "train": details.get("train"),
                "dataset": details.get("plan"),
                "pipeline_s": round(time.perf_counter() - started, 1),
            }
            if details.get("status") == "promoted":  # the next recipe is compared with the base
                await ops.rollback(None, trigger="bench")
        models: list[tuple[str, str | None]] = [("base", None)] + [
            (recipe, runs[recipe]["version"]) for recipe in args.recipes if runs[recipe]["version"]
        ]
        groups = await _answer_all(core, models, all_facts)
    finally:
        await core.close()
    return {
        "runs": runs,
        "groups": groups,
        "machine": machine(),
        "commit": git_rev(),
        "examples": [
            {k: f.get(k) for k in ("group", "reworded", "answer")}
            | {label: f.get(f"{label}_answer") for label, _ in models}
            for f in all_facts
        ],
    }


async def _answer_all(
    core: Any, models: list[tuple[str, str | None]], all_facts: list[dict[str, Any]]
) -> dict[str, Any]:
    from bot.core.question import Question, Where
    from training.scoring import is_abstention, key_fact_recall, ungrounded_facts

    reply = core.settings.answer.abstention_reply
    rows: dict[str, dict[str, list[float]]] = {}
    for label, version in models:
        await core.generator.use_adapter(version)
        for fact in all_facts:
            answer = await core.answerer.answer(
                Question(fact["reworded"], asker="UBENCH", where=Where(channel="CGENERAL"))
            )
            abstained = answer.abstained or is_abstention(answer.text, reply)
            shown = [p.shown for p in answer.passages]
            if answer.curated:  # an expert's answer served as is: its facts are the expert's
                shown.append(answer.text)
            invented = not abstained and bool(
                ungrounded_facts(answer.text, [*shown, fact["reworded"]])
            )
            group = rows.setdefault(fact["group"], {})
            group.setdefault(f"{label}_recalled", []).append(
                0.0 if abstained else key_fact_recall(answer.text, fact["answer"]) or 0.0
            )
            group.setdefault(f"{label}_abstained", []).append(float(abstained))
            group.setdefault(f"{label}_invented", []).append(float(invented))
            fact[f"{label}_answer"] = answer.text
    return {
        name: {"questions": len(v["base_recalled"])}
        | {k: round(statistics.fmean(x), 3) for k, x in v.items()}
        for name, v in rows.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "learning")
    parser.add_argument("--epochs", type=float, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--recipes",
        type=lambda text: [r for r in text.split(",") if r],
        default=list(RECIPES),
        help="comma-separated, of: " + ", ".join(RECIPES),
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from bot.logging import configure_logging

    configure_logging("info")  # progress on stderr; stdout keeps the figures
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return
    for recipe, outcome in result["runs"].items():
        print(f"{recipe}: {outcome['summary']}  (pipeline {outcome['pipeline_s']} s)")
    labels = ["base", *[r for r in result["runs"] if result["runs"][r]["version"]]]
    print(f"{'group':<14} {'n':>3}  " + "  ".join(f"{m:>28}" for m in labels))
    print(" " * 19 + "  ".join(f"{'recalled abstained invented':>28}" for _ in labels))
    for name in ("taught", "gate's share", "never taught"):
        g = result["groups"].get(name)
        if g:
            cells = [
                f"{g[f'{m}_recalled']:>8.2f} {g[f'{m}_abstained']:>9.2f} {g[f'{m}_invented']:>9.2f}"
                for m in labels
            ]
            print(f"{name:<14} {g['questions']:>3}  " + "  ".join(f"{c:>28}" for c in cells))
    print(f"machine: {result['machine']}, commit {result['commit']}")


if __name__ == "__main__":
    main()
