"""Prometheus metrics, served at `GET /metrics` by `expertbot serve`.

Counters and histograms live in the process's default registry: each replica exposes its own,
and Prometheus sums them. Names follow Prometheus conventions (`_total`, `_seconds`).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

# Answer latency buckets: a curated answer takes milliseconds, a CPU answer tens of seconds.
_LATENCY = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)

QUESTIONS = Counter("expertbot_questions_total", "Questions received.", ["platform"])
RESUMED = Counter(
    "expertbot_questions_resumed_total",
    "Questions taken over from a replica that stopped or died before answering them.",
    ["platform"],
)
APOLOGIES = Counter(
    "expertbot_questions_apologized_total",
    "Questions given an apology instead of an answer when resumed: too_old (past "
    "delivery.max_age_s) or attempts (delivery.max_attempts tries failed).",
    ["platform", "reason"],
)
ANSWERS = Counter(
    "expertbot_answers_total",
    "Answers given, by kind: generated, abstained (nothing relevant, or the model declined), "
    "curated (an expert-approved answer served as is).",
    ["platform", "kind"],
)
RETRIEVAL_SECONDS = Histogram(
    "expertbot_retrieval_seconds", "Embedding the question and searching.", buckets=_LATENCY
)
GENERATION_SECONDS = Histogram(
    "expertbot_generation_seconds", "The model writing the answer.", buckets=_LATENCY
)
ANSWER_SECONDS = Histogram(
    "expertbot_answer_seconds", "From the question to the whole answer.", buckets=_LATENCY
)
FEEDBACK = Counter(
    "expertbot_feedback_total",
    "Feedback recorded: up, down, approved, correction, comment.",
    ["kind"],
)
JOB_RUNS = Counter(
    "expertbot_job_runs_total",
    "Job runs (sync, retrain, promote, rollback) by outcome: ok, failed, refused, error.",
    ["job", "outcome"],
)
JOB_SECONDS = Histogram(
    "expertbot_job_seconds",
    "Job durations.",
    ["job"],
    buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 21600),
)
ADAPTER = Gauge(
    "expertbot_serving_adapter",
    '1 for the adapter version this replica serves (version="base": no adapter).',
    ["version"],
)


def answered(
    platform: str, kind: str, retrieval_s: float, generation_s: float, total_s: float
) -> None:
    ANSWERS.labels(platform=platform, kind=kind).inc()
    RETRIEVAL_SECONDS.observe(retrieval_s)
    if kind == "generated":
        GENERATION_SECONDS.observe(generation_s)
    ANSWER_SECONDS.observe(total_s)


def serving(version: str | None) -> None:
    """Point the adapter gauge at the version served now."""
    ADAPTER.clear()
    ADAPTER.labels(version=version or "base").set(1)


def exposition() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
