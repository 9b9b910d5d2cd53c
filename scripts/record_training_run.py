"""Record a real run of the training worker for the tests that replay it.

The Slack and Teams retrain tests replay `tests/assets/recorded_training_run.json` (the worker's
events and result) instead of training, so they stay fast; `tests/test_training.py` trains for
real. Re-record it when the worker's events or scores change:

    python scripts/record_training_run.py

It syncs the example handbook, records the twelve expert corrections the tests use, and runs
the real learning loop (QLoRA of a tiny random-weight Phi-3 in the worker process, on the CPU)
with the worker wrapped so that what it emits and returns is kept.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "tests" / "assets" / "recorded_training_run.json"


async def record(work: Path) -> dict[str, Any]:
    import training.learning.pipeline as pipeline
    from bot.core.knowledge import knowledge_for
    from bot.ops import Ops
    from bot.settings import load_settings
    from knowledge.config import FolderSource
    from tests.helpers import QUESTIONS, TRAINING, corrected
    from tests.models import build_tiny_phi3
    from training.feedback.store import FeedbackStore
    from training.registry import AdapterRegistry

    base = build_tiny_phi3(work / "tiny-phi3")
    settings = load_settings(
        overrides={
            "data_dir": work / "data",
            "model": {"base": str(base), "device": "cpu"},
            "prompt": {"context_tokens": 160, "history_tokens": 0},
            "dataset": {"heldout_fraction": 0.25},
            "training": TRAINING,
        }
    )
    settings.knowledge.sources = [
        FolderSource(path=ROOT / "examples" / "knowledge", name="handbook")
    ]
    knowledge = knowledge_for(settings)
    await knowledge.open()
    try:
        ops = Ops(settings, knowledge, FeedbackStore(knowledge.engine), AdapterRegistry(
            settings.adapter_registry
        ))  # fmt: skip
        await ops.sync(trigger="record")
        for question in QUESTIONS[:12]:
            corrected(ops.store, question)
        events: list[dict[str, Any]] = []
        real = pipeline.run_worker

        async def kept(spec: Any, run_dir: Path, **kwargs: Any) -> dict[str, Any]:
            then = kwargs.get("on_event")

            def on_event(event: dict[str, Any]) -> None:
                events.append(event)
                if then is not None:
                    then(event)

            kwargs["on_event"] = on_event
            result = await real(spec, run_dir, **kwargs)
            kept.result = result  # type: ignore[attr-defined]
            return result

        pipeline.run_worker = kept  # type: ignore[assignment]
        outcome = await ops.train(trigger="record")
        print(outcome.summary, file=sys.stderr)
        return {"events": events, "result": kept.result}  # type: ignore[attr-defined]
    finally:
        await knowledge.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        recording = asyncio.run(record(Path(work)))
    OUT.write_text(
        json.dumps(recording, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8"
    )
    print(f"recorded {len(recording['events'])} events into {OUT}")


if __name__ == "__main__":
    main()
