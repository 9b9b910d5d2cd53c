"""The report of a training run, stored with its adapter version: a before/after metrics table
(`report.md`) and the loss curve (`loss.png`, matplotlib without a display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.learning.pipeline import Decision

# (key, label, better): "lower" or "higher" is better. The gate decides on the first four
# (`training.learning.pipeline.judge`); the answered share may not drop far; the rest is shown.
METRICS = (
    ("key_fact_recall", "key-fact recall vs the experts' answers", "higher"),
    ("grounding", "key facts found in the passages shown", "higher"),
    ("abstention", "abstains on unanswerable probes", "higher"),
    ("citation_validity", "answers with valid citations", "higher"),
    ("answered", "answerable questions answered", "higher"),
    ("invented", "answers with invented values (lower is better)", "lower"),
    ("f1", "answer F1 vs reference (not deciding)", "higher"),
    ("loss", "loss on answer tokens", "lower"),
)
# The scores that decide, as the run's summary and the status show them.
DECIDING = (
    ("key_fact_recall", "key-fact recall"),
    ("grounding", "grounding"),
    ("abstention", "abstention"),
    ("citation_validity", "valid citations"),
)


def deciding_scores(before: dict[str, Any], after: dict[str, Any]) -> str:
    """'key-fact recall 0.20 → 0.85, grounding 0.61 → 0.93, …' (scores measured on neither side
    left out)."""
    return ", ".join(
        f"{label} {_short(before.get(key))} → {_short(after.get(key))}"
        for key, label in DECIDING
        if before.get(key) is not None or after.get(key) is not None
    )


def _short(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def metrics_rows(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, before, after, change) for every metric, formatted."""
    rows = []
    for key, label, better in METRICS:
        b, a = before.get(key), after.get(key)
        change = ""
        if isinstance(a, int | float) and isinstance(b, int | float):
            delta = a - b
            good = delta > 0 if better == "higher" else delta < 0
            change = f"{delta:+.3f}" + (" ✓" if good and abs(delta) > 1e-9 else "")
        rows.append((label, fmt_score(b), fmt_score(a), change))
    return rows


def metrics_table(before: dict[str, Any], after: dict[str, Any], *, serving: str) -> str:
    """A Markdown table (also readable as plain text in chat)."""
    lines = [
        f"| metric | {serving} (serving) | candidate | change |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {m} | {b} | {a} | {c} |" for m, b, a, c in metrics_rows(before, after)]
    return "\n".join(lines)


def write_report(
    folder: Path,
    *,
    version: str,
    parent: str | None,
    before: dict[str, Any],
    after: dict[str, Any],
    decision: Decision,
    train: dict[str, Any],
    data_hash: str,
    dataset: dict[str, Any] | None = None,
    only_in_expert_answers: Sequence[str] = (),
) -> tuple[Path, Path | None]:
    """Write report.md and loss.png into `folder`; returns their paths (no PNG without losses).
    `dataset`: the training set's summary; `only_in_expert_answers`: training questions whose
    answer's facts no document holds."""
    folder.mkdir(parents=True, exist_ok=True)
    curve = plot_losses(train.get("losses") or [], folder / "loss.png", title=version)
    serving = parent or "base model"
    verdict = "promoted" if decision.promote else "not promoted"
    lines = [
        f"# {version}: {verdict}",
        "",
        *[f"- {reason}" for reason in decision.reasons],
        "",
        f"Compared with {serving} on {after.get('questions', 0)} held-out questions and "
        f"{after.get('probes', 0)} unanswerable probes. Deciding: key-fact recall (must not "
        "fall), then a gain in grounding, abstention or valid citations with none of them, nor "
        "the share answered, falling; F1 is shown, not deciding.",
        "",
        metrics_table(before, after, serving=serving),
        "",
        "## Training",
        "",
        f"- data: {data_hash[:12]}, {train.get('examples')} examples, {train.get('steps')} steps, "
        f"{train.get('epochs')} epochs",
        f"- {train.get('seconds')} s, {train.get('examples_per_s')} examples/s, peak memory "
        f"{train.get('peak_memory_mb')} MB on {train.get('device')} ({train.get('quantization')})",
        f"- trainable parameters: {train.get('trainable_params')}",
        *_stopping(train),
        *_training_set(dataset or {}, train, only_in_expert_answers),
    ]
    if curve:
        lines += ["", f"![loss]({curve.name})"]
    report = folder / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report, curve


def _stopping(train: dict[str, Any]) -> list[str]:
    if not train.get("validation_examples"):
        return ["- no validation split (too few questions): every planned step ran"]
    losses = ", ".join(f"{p['loss']:.3f}" for p in train.get("validation_losses") or [])
    stopped = (
        f"stopped early after {train.get('steps')} of {train.get('planned_steps')} steps"
        if train.get("steps") != train.get("planned_steps")
        else f"all {train.get('steps')} steps ran"
    )
    best = train.get("best_step")
    kept = f", the checkpoint of step {best} kept" if best else ""
    return [
        f"- validation loss on {train['validation_examples']} examples set aside, once an epoch: "
        f"{losses or 'n/a'}; {stopped}{kept}"
    ]


def _training_set(
    dataset: dict[str, Any], train: dict[str, Any], only_in_expert_answers: Sequence[str]
) -> list[str]:
    lines = []
    if dataset:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted((dataset.get("kinds") or {}).items()))
        lines.append(
            f"- training set: {dataset.get('train')} training and {dataset.get('heldout')} "
            f"held-out examples ({kinds or 'none'}); {dataset.get('gold_absent', 0)} show no "
            "passage holding the answer and teach the abstention"
        )
    if train.get("replayed"):
        lines.append(
            f"- {train['replayed']} of the serving model's own answers mixed in (it already "
            "answered those questions well)"
        )
    if only_in_expert_answers:
        lines += [
            "",
            "## Facts no document holds",
            "",
            f"{len(only_in_expert_answers)} expert answers state facts found in no document. "
            "The adapter cannot learn them safely: it is taught to read them in the "
            "expert-answers source, which serves them, not to recall them. Consider adding them "
            "to the documents:",
            "",
            *[f"- {question}" for question in only_in_expert_answers[:50]],
        ]
        if len(only_in_expert_answers) > 50:
            lines.append(f"- … and {len(only_in_expert_answers) - 50} more")
    return lines


def plot_losses(losses: list[dict[str, float]], path: Path, *, title: str) -> Path | None:
    if not losses:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    try:
        ax.plot([p["step"] for p in losses], [p["loss"] for p in losses], marker=".", lw=1)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss (answer tokens)")
        ax.set_title(f"{title}: training loss")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def fmt_score(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "n/a" if value is None else str(value)
